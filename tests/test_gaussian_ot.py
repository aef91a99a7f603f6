"""pyinverse.ot.gaussian against closed forms and references on fresh seeded inputs: the map pushes
N(mu_s, S_s) to N(mu_t, S_t) exactly (A S_s A = S_t), agrees with the target-side formula through
scipy.linalg.sqrtm and with POT's bures_wasserstein_mapping, W2 closed forms, d = 1, scales
1e-4..1e4, condition numbers up to 1e8, rank-deficient covariances and more dimensions than
samples (never NaN), batched (patch-wise) fits, Ledoit-Wolf against scikit-learn, bad input."""
import numpy as np
import pytest
import torch

from pyinverse.ot import GaussianMoments
from pyinverse.ot.gaussian import GaussianOT, gaussian_ot_matrix, ledoit_wolf_shrinkage
from tests.reference import frechet_distance_reference, gaussian_ot_matrix_reference

SEEDS = [0, 1, 2]


def random_spd(rng, d, cond=None, rank=None, scale=1.0):
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    values = np.logspace(0, -np.log10(cond), d) if cond is not None else rng.uniform(0.1, 2.0, d)
    if rank is not None:
        values[rank:] = 0.0
    cov = (q * (scale * values)) @ q.T
    return 0.5 * (cov + cov.T)


def relative(a, b):
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-300)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("d", [1, 2, 7, 40, 65, 120])
@pytest.mark.parametrize("scale", [1e-4, 1.0, 1e4])
def test_map_pushes_source_gaussian_to_target_exactly(seed, d, scale):
    rng = np.random.default_rng(seed)
    s_s, s_t = random_spd(rng, d, scale=scale), random_spd(rng, d, scale=scale * rng.uniform(0.2, 5))
    mu_s, mu_t = rng.standard_normal(d) * scale, rng.standard_normal(d)
    ot_map = GaussianOT().fit((mu_s, s_s), (mu_t, s_t))
    a = ot_map.matrix_
    assert np.array_equal(a, a.T)
    assert np.linalg.eigvalsh(a).min() > 0  # PSD (here PD: both covariances are)
    assert relative(a @ s_s @ a, s_t) < 1e-10
    assert relative(a, gaussian_ot_matrix_reference(s_s, s_t)) < 1e-8
    # the mean goes to the mean
    np.testing.assert_allclose(ot_map.transform(mu_s[None])[0], mu_t, rtol=0, atol=1e-12 * (1 + np.abs(mu_t).max()))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("d", [1, 5, 40, 100])
def test_agrees_with_pot(seed, d):
    ot = pytest.importorskip("ot")
    rng = np.random.default_rng(seed)
    s_s, s_t = random_spd(rng, d), random_spd(rng, d)
    mu_s, mu_t = rng.standard_normal(d), rng.standard_normal(d)
    a_pot, b_pot = ot.gaussian.bures_wasserstein_mapping(mu_s, mu_t, s_s, s_t)
    ot_map = GaussianOT().fit((mu_s, s_s), (mu_t, s_t))
    assert np.abs(ot_map.matrix_ - a_pot).max() < 1e-6
    x = rng.standard_normal((50, d))
    assert np.abs(ot_map.transform(x) - (x @ a_pot + b_pot)).max() < 1e-6
    w2_pot = float(ot.gaussian.bures_wasserstein_distance(mu_s, mu_t, s_s, s_t))
    assert abs(ot_map.w2_ - w2_pot) < 1e-6


@pytest.mark.parametrize("seed", SEEDS)
def test_d1_closed_form(seed):
    rng = np.random.default_rng(seed)
    var_s, var_t = rng.uniform(1e-3, 1e3, 2)
    mu_s, mu_t = rng.standard_normal(2) * 10
    ot_map = GaussianOT().fit((np.array([mu_s]), np.array([[var_s]])), (np.array([mu_t]), np.array([[var_t]])))
    np.testing.assert_allclose(ot_map.matrix_, [[np.sqrt(var_t / var_s)]], rtol=1e-12)
    np.testing.assert_allclose(ot_map.w2_, np.hypot(mu_s - mu_t, np.sqrt(var_s) - np.sqrt(var_t)), rtol=1e-10)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("d", [3, 30, 80])
def test_w2_closed_forms(seed, d):
    rng = np.random.default_rng(seed)
    s_s, s_t = random_spd(rng, d), random_spd(rng, d)
    mu_s, mu_t = rng.standard_normal(d), rng.standard_normal(d)
    ot_map = GaussianOT().fit((mu_s, s_s), (mu_t, s_t))
    assert abs(ot_map.w2_ ** 2 - frechet_distance_reference(mu_s, s_s, mu_t, s_t)) < 1e-8 * d
    # W2 is the cost of the map itself: E ||T(x) - x||^2 = ||dmu||^2 + tr((A - I) S_s (A - I))
    a = ot_map.matrix_
    cost = np.sum((mu_t - mu_s) ** 2) + np.trace((a - np.eye(d)) @ s_s @ (a - np.eye(d)))
    assert abs(ot_map.w2_ ** 2 - cost) < 1e-9 * d
    # commuting covariances: W2^2 = ||dmu||^2 + ||S_s^1/2 - S_t^1/2||_F^2
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    ls, lt = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)
    commuting = GaussianOT().fit((mu_s, (q * ls) @ q.T), (mu_t, (q * lt) @ q.T))
    expected = np.sum((mu_s - mu_t) ** 2) + np.sum((np.sqrt(ls) - np.sqrt(lt)) ** 2)
    assert abs(commuting.w2_ ** 2 - expected) < 1e-9 * d
    np.testing.assert_allclose(commuting.matrix_, (q * np.sqrt(lt / ls)) @ q.T, atol=1e-10)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("cond", [1e4, 1e8])
def test_ill_conditioned(seed, cond):
    rng = np.random.default_rng(seed)
    d = 12
    s_s, s_t = random_spd(rng, d, cond=cond), random_spd(rng, d, cond=cond)
    ot_map = GaussianOT().fit((np.zeros(d), s_s), (np.zeros(d), s_t))
    assert np.isfinite(ot_map.matrix_).all()
    # rounding in S_s^-1/2 grows like sqrt(cond) * eps per factor; a symmetric PSD A with
    # A S_s A = S_t is unique, so this pins A down
    assert relative(ot_map.matrix_ @ s_s @ ot_map.matrix_, s_t) < 1e-15 * cond * 10
    if cond <= 1e4:  # beyond, the scipy.linalg.sqrtm reference itself loses digits (cond^1.5 eps)
        assert relative(ot_map.matrix_, gaussian_ot_matrix_reference(s_s, s_t)) < 1e-7


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("cond", [1e3, 1e6, 1e10, 1e12])
def test_ill_conditioned_commuting_closed_form(seed, cond):
    """S_s = Q diag(s) Q^T, S_t = Q diag(s r) Q^T: A = Q diag(sqrt r) Q^T, well-conditioned however
    ill-conditioned S_s is; errors may grow like eps * cond(S_s), not like cond^2 (the explicit
    S_s^-1/2 form was off by 1.5 at 1e12). In a batch with a well-conditioned and a singular S_s,
    each map equals its own fit."""
    rng = np.random.default_rng(seed)
    d = 10
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    spectrum, ratios = np.geomspace(1 / cond, 1, d), rng.uniform(0.25, 4.0, d)
    s_s, s_t = (q * spectrum) @ q.T, (q * (spectrum * ratios)) @ q.T
    s_s, s_t = 0.5 * (s_s + s_s.T), 0.5 * (s_t + s_t.T)
    a, cross = gaussian_ot_matrix(s_s, s_t)
    bound = max(1e-10, 1e-15 * cond * 100)
    np.testing.assert_allclose(a, (q * np.sqrt(ratios)) @ q.T, atol=bound)
    assert cross == pytest.approx(np.sum(spectrum * np.sqrt(ratios)), rel=1e-12)
    identity, _ = gaussian_ot_matrix(s_s, s_s)
    np.testing.assert_allclose(identity, np.eye(d), atol=bound)
    # the map back is A^-1 = Q diag(1 / sqrt r) Q^T, as well-conditioned (it was a projector from
    # condition 1e8 on, through a middle factor of condition cond(S_s) cond(S_t))
    ot_map = GaussianOT().fit((np.zeros(d), s_s), (np.zeros(d), s_t))
    np.testing.assert_allclose(ot_map.inverse_matrix_, (q / np.sqrt(ratios)) @ q.T, atol=bound)
    x = rng.standard_normal((20, d))
    np.testing.assert_allclose(ot_map.inverse_transform(ot_map.transform(x)), x, atol=bound * 10)
    singular = (q[:, 1:] * spectrum[1:]) @ q[:, 1:].T
    batch_s = np.stack([s_s, np.eye(d) + 0.1 * s_s, 0.5 * (singular + singular.T)])
    batch_a, batch_cross = gaussian_ot_matrix(batch_s, np.stack([s_t, s_t, s_t]))
    for i in range(3):
        alone, alone_cross = gaussian_ot_matrix(batch_s[i], s_t)
        np.testing.assert_allclose(batch_a[i], alone, rtol=0, atol=1e-12 * np.abs(alone).max())
        assert batch_cross[i] == pytest.approx(alone_cross, rel=1e-13)


@pytest.mark.parametrize("scale_s, scale_t", [(1e-200, 1e-200), (1e-160, 4e-160), (1e160, 1e160), (1e200, 1e-200),
                                               (1.0, 1e250)])
def test_extreme_scales_scale_exactly(scale_s, scale_t):
    """Commuting covariances c_s Q diag(l_s) Q^T and c_t Q diag(l_t) Q^T at float64's ends: A =
    sqrt(c_t / c_s) Q diag(sqrt(l_t / l_s)) Q^T and cross = sqrt(c_s c_t) sum sqrt(l_s l_t) (the
    products of the formula underflowed to A = 0 at 1e-200 and overflowed at 1e160)."""
    rng = np.random.default_rng(int(-np.log10(scale_s) + 7 * np.log10(scale_t)) % 1000)
    d = 6
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    l_s, l_t = rng.uniform(0.1, 2.0, d), rng.uniform(0.1, 2.0, d)
    s_s, s_t = scale_s * (q * l_s) @ q.T, scale_t * (q * l_t) @ q.T
    s_s, s_t = 0.5 * (s_s + s_s.T), 0.5 * (s_t + s_t.T)
    expected = np.sqrt(scale_t) / np.sqrt(scale_s) * (q * np.sqrt(l_t / l_s)) @ q.T
    a, cross = gaussian_ot_matrix(s_s, s_t)
    assert relative(a, expected) < 1e-12
    assert cross == pytest.approx(np.sqrt(scale_s) * np.sqrt(scale_t) * np.sqrt(l_s * l_t).sum(), rel=1e-12)
    # in a batch with a matrix of scale 1: each scales on its own
    unit_s, unit_t = random_spd(rng, d), random_spd(rng, d)
    batch_a, _ = gaussian_ot_matrix(np.stack([s_s, unit_s]), np.stack([s_t, unit_t]))
    assert relative(batch_a[0], expected) < 1e-12
    assert relative(batch_a[1], gaussian_ot_matrix_reference(unit_s, unit_t)) < 1e-10
    ot_map = GaussianOT().fit((np.zeros(d), s_s), (np.zeros(d), s_t))
    w2 = np.sqrt(np.sum((np.sqrt(scale_s * l_s) - np.sqrt(scale_t * l_t)) ** 2))
    assert ot_map.w2_ == pytest.approx(w2, rel=1e-10)
    inverse = np.sqrt(scale_s) / np.sqrt(scale_t) * (q * np.sqrt(l_s / l_t)) @ q.T
    assert relative(ot_map.inverse_matrix_, inverse) < 1e-12


def test_indefinite_covariances_are_refused():
    """Clipping their negative eigenvalues gave W2 = 0 between different laws."""
    from pyinverse.ops.sqrtm import frechet_distance, wasserstein2_gaussian

    indefinite = np.array([[1.0, 2.0], [2.0, 1.0]])  # eigenvalues 3 and -1, positive diagonal
    with pytest.raises(ValueError, match="'cov_source' must be positive semi-definite.*eigenvalue -5"):
        gaussian_ot_matrix(np.diag([1.0, -5.0]), np.eye(2))
    with pytest.raises(ValueError, match="'cov_target' must be positive semi-definite"):
        gaussian_ot_matrix(np.eye(2), indefinite)
    with pytest.raises(ValueError, match=r"'source\[1\] \(cov\)' must be positive semi-definite"):
        GaussianOT(shrinkage=None).fit((np.zeros(2), np.diag([1.0, -1.0])), (np.zeros(2), np.eye(2)))
    with pytest.raises(ValueError, match="wasserstein2_gaussian|frechet_distance"):
        wasserstein2_gaussian(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2))
    for sigma2 in (indefinite, torch.from_numpy(indefinite)):
        sigma1 = np.eye(2) if isinstance(sigma2, np.ndarray) else torch.eye(2, dtype=torch.float64)
        mu = np.zeros(2) if isinstance(sigma2, np.ndarray) else torch.zeros(2, dtype=torch.float64)
        with pytest.raises(ValueError, match="frechet_distance: .*'sigma2' is indefinite"):
            frechet_distance(mu, sigma1, mu, sigma2)
    # rounding-level negative eigenvalues of a PSD covariance are not refused
    x = np.random.default_rng(0).standard_normal((5, 20))
    rank_deficient = np.cov(x, rowvar=False)  # 20 x 20 of rank 4
    assert np.isfinite(frechet_distance(np.zeros(20), rank_deficient, np.zeros(20), rank_deficient))
    assert np.isfinite(gaussian_ot_matrix(rank_deficient, rank_deficient)[0]).all()


@pytest.mark.parametrize("seed", SEEDS)
def test_float32_rank_deficient_covariances_are_accepted(seed):
    """Covariances of float32 features from fewer samples than dimensions are PSD only to float32
    rounding (eigenvalues near -eps_32 times the largest); a float64 tolerance refused them."""
    rng = np.random.default_rng(seed)
    d = 40
    features = [rng.standard_normal((15, d)).astype(np.float32) for _ in range(2)]
    low = [np.cov(f, rowvar=False).astype(np.float32) for f in features]
    clipped = [np.linalg.eigh(c.astype(np.float64)) for c in low]
    clipped = [(v * np.clip(w, 0, None)) @ v.T for w, v in clipped]
    # (the map itself is defined on the range of S_s only, which rounding blurs: its trace term is not)
    matrix, cross = gaussian_ot_matrix(low[0], low[1])
    assert np.isfinite(matrix).all() and cross == pytest.approx(gaussian_ot_matrix(clipped[0], clipped[1])[1], rel=1e-6)
    fitted = GaussianOT(shrinkage=None).fit((features[0].mean(0), torch.from_numpy(low[0])),
                                            (features[1].mean(0), low[1]))
    assert fitted.w2_ ** 2 == pytest.approx(frechet_distance_reference(features[0].mean(0), clipped[0],
                                                                       features[1].mean(0), clipped[1]), rel=1e-5)


@pytest.mark.parametrize("seed", SEEDS)
def test_rank_deficient_covariances_are_finite_and_exact_where_defined(seed):
    rng = np.random.default_rng(seed)
    d, rank = 10, 4
    full, low = random_spd(rng, d), random_spd(rng, d, rank=rank)
    # singular target: the pushforward is still exact
    to_low = GaussianOT().fit((np.zeros(d), full), (np.zeros(d), low))
    assert relative(to_low.matrix_ @ full @ to_low.matrix_, low) < 1e-10
    # zero eigenvalues of S_t become sqrt(rounding) ~ 1e-8 in A: count rank above 1e-6
    assert np.linalg.matrix_rank(to_low.matrix_, tol=1e-6) == rank
    # singular source: finite; the map acts on range(S_s) and pushes to P S_t P
    from_low = GaussianOT().fit((np.zeros(d), low), (np.zeros(d), full))
    assert np.isfinite(from_low.matrix_).all() and np.isfinite(from_low.w2_)
    values, vectors = np.linalg.eigh(low)
    basis = vectors[:, values > 1e-10]
    projector = basis @ basis.T
    assert relative(from_low.matrix_ @ low @ from_low.matrix_, projector @ full @ projector) < 1e-8
    # both singular: W2 still matches the reference trace formula
    assert abs(from_low.w2_ ** 2 - frechet_distance_reference(np.zeros(d), low, np.zeros(d), full)) < 1e-6


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n, d", [(10, 50), (50, 50), (3, 200)])
def test_more_dimensions_than_samples_never_nan(seed, n, d):
    rng = np.random.default_rng(seed)
    source = rng.standard_normal((n, d))
    target = 2.0 * rng.standard_normal((n + 5, d)) + 1.0
    for shrinkage in ("auto", None, 0.5):
        ot_map = GaussianOT(shrinkage=shrinkage).fit(source, target)
        moved = ot_map.transform(source)
        assert np.isfinite(ot_map.matrix_).all() and np.isfinite(moved).all() and np.isfinite(ot_map.w2_)
        assert np.isfinite(ot_map.inverse_transform(moved)).all()
    shrunk = GaussianOT().fit(source, target)
    assert 0 < shrunk.shrinkage_source_ <= 1 and 0 < shrunk.shrinkage_target_ <= 1
    assert np.linalg.eigvalsh(shrunk.cov_source_).min() > 0  # Ledoit-Wolf made it PD
    assert relative(shrunk.matrix_ @ shrunk.cov_source_ @ shrunk.matrix_, shrunk.cov_target_) < 1e-8


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("d", [1, 6, 70])
def test_samples_are_mapped_onto_target_moments(seed, d):
    """No shrinkage: the sample covariance of T(source) is exactly A S_s A = S_t (the map is linear)."""
    rng = np.random.default_rng(seed)
    source = rng.standard_normal((300, d)) @ rng.standard_normal((d, d)) + 3.0
    target = rng.standard_normal((200, d)) * rng.uniform(0.5, 2.0, d) - 1.0
    ot_map = GaussianOT(shrinkage=None).fit(source, target)
    moved = ot_map.transform(source)
    np.testing.assert_allclose(moved.mean(0), target.mean(0), atol=1e-9)
    assert relative(np.atleast_2d(np.cov(moved, rowvar=False)), np.atleast_2d(np.cov(target, rowvar=False))) < 1e-8
    np.testing.assert_allclose(ot_map.inverse_transform(moved), source, atol=1e-8)
    np.testing.assert_allclose(ot_map.inverse_matrix_ @ ot_map.matrix_, np.eye(d), atol=1e-8)


@pytest.mark.parametrize("seed", SEEDS)
def test_ddof_and_ridge_match_pot_empirical_mapping(seed):
    ot = pytest.importorskip("ot")
    rng = np.random.default_rng(seed)
    xs, xt = rng.standard_normal((80, 20)), rng.standard_normal((60, 20)) * 2 + 1
    a_pot, b_pot = ot.gaussian.empirical_bures_wasserstein_mapping(xs, xt, reg=1e-3)
    ot_map = GaussianOT(shrinkage=None, ridge=1e-3, ddof=0).fit(xs, xt)
    assert np.abs(ot_map.matrix_ - a_pot).max() < 1e-6
    assert np.abs(ot_map.transform(xs) - (xs @ a_pot + b_pot)).max() < 1e-6


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n", [4, 16, 65])
def test_batched_equals_separate_fits(seed, n):
    rng = np.random.default_rng(seed)
    patches, count = 9, 3 * n
    source = rng.standard_normal((patches, count, n)) * rng.uniform(0.5, 2, (patches, 1, n))
    target = rng.standard_normal((patches, count + 7, n)) + rng.standard_normal((patches, 1, n))
    batched = GaussianOT().fit(source, target)
    assert batched.batched_ and batched.matrix_.shape == (patches, n, n) and batched.w2_.shape == (patches,)
    moved = batched.transform(source)
    for p in range(patches):
        single = GaussianOT().fit(source[p], target[p])
        np.testing.assert_allclose(batched.matrix_[p], single.matrix_, atol=1e-10)
        np.testing.assert_allclose(batched.w2_[p], single.w2_, rtol=1e-10)
        np.testing.assert_allclose(moved[p], single.transform(source[p]), atol=1e-9)
    # moments form of the same fit
    moments = GaussianOT(shrinkage=None).fit((batched.mean_source_, batched.cov_source_),
                                             (batched.mean_target_, batched.cov_target_))
    np.testing.assert_allclose(moments.matrix_, batched.matrix_, atol=1e-10)
    np.testing.assert_allclose(batched.inverse_transform(moved), source, atol=1e-8)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("d", [1, 3, 12])
@pytest.mark.parametrize("shrinkage", ["auto", None, 0.3])
def test_grouped_fit_equals_one_fit_per_group(seed, d, shrinkage):
    rng = np.random.default_rng(seed)
    groups = 4
    source_groups = rng.permutation(np.repeat(np.arange(groups), rng.integers(2, 40, groups)))
    target_groups = rng.permutation(np.repeat(np.arange(groups), rng.integers(2, 40, groups)))
    offsets = 3.0 * rng.standard_normal((groups, d))
    source = rng.standard_normal((source_groups.size, d)) * rng.uniform(0.2, 2, d) + offsets[source_groups]
    target = rng.standard_normal((target_groups.size, d)) - offsets[target_groups]
    grouped = GaussianOT(shrinkage=shrinkage).fit(source, target, source_groups=source_groups,
                                                  target_groups=target_groups)
    assert grouped.batched_ and grouped.num_groups_ == groups and grouped.matrix_.shape == (groups, d, d)
    moved = grouped.transform(source, source_groups)
    for g in range(groups):
        single = GaussianOT(shrinkage=shrinkage).fit(source[source_groups == g], target[target_groups == g])
        np.testing.assert_allclose(grouped.matrix_[g], single.matrix_, atol=1e-10)
        np.testing.assert_allclose(grouped.w2_[g], single.w2_, rtol=1e-10)
        np.testing.assert_allclose(grouped.shrinkage_source_[g], single.shrinkage_source_, atol=1e-12)
        np.testing.assert_allclose(moved[source_groups == g], single.transform(source[source_groups == g]),
                                   atol=1e-9)
    if shrinkage is not None:  # else groups of <= d samples have singular covariances: no inverse
        np.testing.assert_allclose(grouped.inverse_transform(moved, source_groups), source, atol=1e-7)
    as_torch = grouped.transform(torch.from_numpy(source), torch.from_numpy(source_groups))
    assert isinstance(as_torch, torch.Tensor) and as_torch.dtype == torch.float64
    np.testing.assert_allclose(as_torch.numpy(), moved, atol=1e-12)
    assert grouped.transform(source[:0], source_groups[:0]).shape == (0, d)


def test_grouped_bad_input():
    rng = np.random.default_rng(0)
    x, labels = rng.standard_normal((10, 2)), np.array([0, 1] * 5)
    with pytest.raises(ValueError, match="both 'source_groups' and 'target_groups'"):
        GaussianOT().fit(x, x, source_groups=labels)
    with pytest.raises(ValueError, match=r"'target_groups' must be ints of shape \(10,\)"):
        GaussianOT().fit(x, x, source_groups=labels, target_groups=labels[:4])
    with pytest.raises(ValueError, match="'source_groups' must be ints"):
        GaussianOT().fit(x, x, source_groups=labels.astype(float), target_groups=labels)
    with pytest.raises(ValueError, match=">= 0"):
        GaussianOT().fit(x, x, source_groups=labels - 1, target_groups=labels)
    lonely = labels.copy()
    lonely[0] = 2
    with pytest.raises(ValueError, match="group 2 has 0 source and 1 target"):
        GaussianOT().fit(x, x, source_groups=labels, target_groups=lonely)
    with pytest.raises(ValueError, match=r"with groups, 'source' must be samples \(N, d\)"):
        GaussianOT().fit(x[None], x, source_groups=labels, target_groups=labels)
    with pytest.raises(ValueError, match="same dimension"):
        GaussianOT().fit(x, x[:, :1], source_groups=labels, target_groups=labels)
    grouped = GaussianOT().fit(x, x, source_groups=labels, target_groups=labels)
    with pytest.raises(ValueError, match="'groups'.*required"):
        grouped.transform(x)
    with pytest.raises(ValueError, match=r"'groups' must be in \[0, 2\)"):
        grouped.transform(x, labels + 1)
    with pytest.raises(ValueError, match="'groups'.*refused"):
        GaussianOT().fit(x, x).transform(x, labels)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n, d", [(20, 50), (500, 3), (5, 1), (100, 100), (2, 4)])
def test_ledoit_wolf_matches_scikit_learn(seed, n, d):
    covariance = pytest.importorskip("sklearn.covariance")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)) * rng.uniform(0.1, 3, d) + rng.standard_normal(d)
    assert abs(ledoit_wolf_shrinkage(x) - covariance.ledoit_wolf_shrinkage(x)) < 1e-10
    batch = np.stack([x, x[::-1] * 2.0])
    np.testing.assert_allclose(ledoit_wolf_shrinkage(batch), [covariance.ledoit_wolf_shrinkage(x)] * 2, atol=1e-10)


def test_gaussian_moments_and_torch_inputs(rng):
    d = 5
    source = rng.standard_normal((200, d))
    target = rng.standard_normal((150, d)) * 3
    moments_s, moments_t = GaussianMoments().update(source), GaussianMoments().update(target)
    from_moments = GaussianOT().fit(moments_s, moments_t)
    from_samples = GaussianOT(shrinkage=None).fit(source, target)
    np.testing.assert_allclose(from_moments.matrix_, from_samples.matrix_, atol=1e-12)
    tensor = torch.from_numpy(source).float().requires_grad_(True)
    moved = from_samples.transform(tensor)
    assert isinstance(moved, torch.Tensor) and moved.dtype == torch.float32 and moved.shape == (200, d)
    np.testing.assert_allclose(moved.detach().numpy(), from_samples.transform(source), atol=1e-5)
    moved.sum().backward()  # differentiable: d/dx sum(x A) = A 1
    np.testing.assert_allclose(tensor.grad[0].numpy(), from_samples.matrix_.sum(1), rtol=1e-5)
    assert from_samples.transform(source.astype(np.float32)).dtype == np.float32
    # torch moments, batched: (P, d) means with (P, d, d) covariances
    means, covs = torch.zeros(3, 2, dtype=torch.float64), torch.eye(2, dtype=torch.float64).repeat(3, 1, 1)
    batched = GaussianOT().fit((means, covs), (means + 1, 4 * covs))
    assert batched.batched_ and batched.matrix_.shape == (3, 2, 2)
    np.testing.assert_allclose(batched.matrix_, 2 * np.eye(2)[None].repeat(3, 0), atol=1e-12)
    np.testing.assert_allclose(batched.w2_, np.sqrt(2 + 2), rtol=1e-12)  # |dmu|^2 = 2, tr(2I - I)^2 = 2


def test_gaussian_ot_matrix_function(rng):
    s_s, s_t = random_spd(rng, 6), random_spd(rng, 6)
    matrix, cross = gaussian_ot_matrix(s_s, s_t)
    assert relative(matrix @ s_s @ matrix, s_t) < 1e-10
    np.testing.assert_allclose(cross, np.sqrt(np.clip(np.linalg.eigvals(s_s @ s_t).real, 0, None)).sum(), rtol=1e-9)


@pytest.mark.parametrize("arguments,match", [
    ((np.eye(2), np.array([[1.0, 0.5], [-0.5, 1.0]])), "'cov_target' must be symmetric"),
    ((np.array([[1.0, 0.3], [0.0, 1e-6]]), np.eye(2)), "'cov_source' must be symmetric"),  # not half read
    ((np.eye(2), np.eye(2), -1.0), "'eps' must be a finite number >= 0"),
    ((np.eye(2), np.eye(2), "a"), "'eps' must be a finite number >= 0"),
    ((np.zeros((0, 0)), np.zeros((0, 0))), "with d >= 1"),
])
def test_gaussian_ot_matrix_refuses_asymmetric_covariances_bad_eps_and_empty(arguments, match):
    with pytest.raises(ValueError, match="gaussian_ot_matrix: .*" + match):
        gaussian_ot_matrix(*arguments)


def test_bad_input():
    with pytest.raises(ValueError, match="shrinkage"):
        GaussianOT(shrinkage=1.5)
    with pytest.raises(ValueError, match="shrinkage"):
        GaussianOT(shrinkage="oas")
    with pytest.raises(ValueError, match="ridge"):
        GaussianOT(ridge=-1.0)
    with pytest.raises(ValueError, match="ddof"):
        GaussianOT(ddof=2)
    ot_map = GaussianOT()
    with pytest.raises(RuntimeError, match="fit"):
        ot_map.transform(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="same dimension"):
        ot_map.fit(np.zeros((5, 3)) + np.arange(15).reshape(5, 3), np.ones((5, 4)))
    with pytest.raises(ValueError, match="NaN"):
        ot_map.fit(np.full((5, 3), np.nan), np.ones((5, 3)))
    with pytest.raises(ValueError, match="more than ddof"):
        ot_map.fit(np.ones((1, 3)), np.ones((5, 3)))
    with pytest.raises(ValueError, match=r"\(N, d\) or \(P, N, d\)"):
        ot_map.fit(np.ones((2, 2, 2, 2)), np.ones((5, 3)))
    with pytest.raises(ValueError, match="symmetric"):
        ot_map.fit((np.zeros(2), np.array([[1.0, 0.5], [0.0, 1.0]])), (np.zeros(2), np.eye(2)))
    with pytest.raises(ValueError, match="ledoit_wolf"):
        GaussianOT(shrinkage="ledoit_wolf").fit((np.zeros(2), np.eye(2)), (np.zeros(2), np.eye(2)))
    with pytest.raises(TypeError, match="real numbers"):
        ot_map.fit(np.array([["a", "b"]]), np.ones((5, 2)))
    fitted = GaussianOT().fit((np.zeros(2), np.eye(2)), (np.zeros(2), np.eye(2)))
    with pytest.raises(ValueError, match=r"GaussianOT.transform: 'x' must have shape \(N, d\)"):
        fitted.transform(np.zeros((4, 3)))
    with pytest.raises(TypeError, match="floats"):
        fitted.transform(np.zeros((4, 2), dtype=np.int64))


def test_lists_are_samples_and_tuples_are_moments(rng):
    """A list of samples (array-like) was taken as a (mean, cov) pair and refused for N != 2."""
    source, target = rng.standard_normal((50, 3)), 2 + rng.standard_normal((40, 3))
    from_arrays = GaussianOT().fit(source, target)
    from_lists = GaussianOT().fit(source.tolist(), target.tolist())
    np.testing.assert_array_equal(from_lists.matrix_, from_arrays.matrix_)
    two = GaussianOT(shrinkage=0.5).fit(source[:2].tolist(), target[:2].tolist())  # N = 2 samples, not moments
    np.testing.assert_array_equal(two.matrix_, GaussianOT(shrinkage=0.5).fit(source[:2], target[:2]).matrix_)
