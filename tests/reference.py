"""Float64 reference implementations shared by the tests (independent of pyinverse code)."""


# =================================================================================================
# physics: MATLAB imresize (bicubic, antialiased) written from the published algorithm
# (imresize.m's `cubic` and `contributions`), one output pixel at a time, no matrices.
# =================================================================================================
import math as _physics_math


def matlab_cubic_kernel(t: float) -> float:
    """imresize.m's ``cubic``: Keys' kernel with a = -0.5, in its published polynomial form."""
    a = abs(t)
    if a <= 1.0:
        return 1.5 * a ** 3 - 2.5 * a ** 2 + 1.0
    if a <= 2.0:
        return -0.5 * a ** 3 + 2.5 * a ** 2 - 4.0 * a + 2.0
    return 0.0


def matlab_contributions(out_index: int, in_length: int, scale: float) -> list[tuple[int, float]]:
    """(0-based input index, weight) pairs for 1-based output pixel ``out_index`` when shrinking.

    Antialiasing kernel ``scale * cubic(scale * t)`` of width ``4 / scale``; weights normalised
    before out-of-range indices are mirrored (symmetric padding, edge sample repeated).
    """
    width = 4.0 / scale
    u = out_index / scale + 0.5 * (1.0 - 1.0 / scale)
    left = _physics_math.floor(u - width / 2.0)
    taps = _physics_math.ceil(width) + 2
    indices = [left + p for p in range(taps)]
    weights = [scale * matlab_cubic_kernel(scale * (u - j)) for j in indices]
    total = sum(weights)
    pairs = []
    for j, weight in zip(indices, weights):
        k = (j - 1) % (2 * in_length)  # 1-based index j -> 0-based, mirrored with period 2n
        if k >= in_length:
            k = 2 * in_length - 1 - k
        pairs.append((k, weight / total))
    return pairs


def matlab_imresize_bicubic_reference(image, factor: int):
    """``imresize(image, 1/factor, 'bicubic')`` of a 2-D float64 array, by direct loops."""
    import numpy as _np

    image = _np.asarray(image, dtype=_np.float64)
    height, width = image.shape
    scale = 1.0 / factor
    rows = [matlab_contributions(i + 1, height, scale) for i in range(height // factor)]
    cols = [matlab_contributions(j + 1, width, scale) for j in range(width // factor)]
    out = _np.zeros((height // factor, width // factor))
    for i, row_pairs in enumerate(rows):
        for j, col_pairs in enumerate(cols):
            total = 0.0
            for r, wr in row_pairs:
                for c, wc in col_pairs:
                    total += wr * wc * image[r, c]
            out[i, j] = total
    return out


# =================================================================================================
# uq: conformal calibration references — Hoeffding–Bentkus bound from its formula in pure Python
# (math.lgamma binomial terms, bisection), and brute-force interval / coverage loops in float64.
# =================================================================================================
import math as _uq_math


def uq_binomial_cdf(k: int, n: int, p: float) -> float:
    """P(Binom(n, p) <= k), summing the terms in log space (no scipy)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    logs = [_uq_math.lgamma(n + 1) - _uq_math.lgamma(i + 1) - _uq_math.lgamma(n - i + 1)
            + i * _uq_math.log(p) + (n - i) * _uq_math.log1p(-p) for i in range(k + 1)]
    top = max(logs)
    return min(1.0, _uq_math.exp(top) * sum(_uq_math.exp(v - top) for v in logs))


def uq_hb_p_value(risk: float, n: int, alpha: float, count: int | None = None) -> float:
    """min(exp(-n h1(min(r, a), a)), e P(Binom(n, a) <= ceil(n r))), Bates et al. 2021; ``count``
    gives ceil(n r) exactly where n r is not (r = k / n + tiny)."""
    def h1(a: float, b: float) -> float:
        first = 0.0 if a == 0 else a * _uq_math.log(a / b)
        second = 0.0 if a == 1 else (1 - a) * _uq_math.log((1 - a) / (1 - b))
        return first + second

    hoeffding = _uq_math.exp(-n * h1(min(risk, alpha), alpha))
    if count is None:
        count = _uq_math.ceil(round(n * risk, 9))
    bentkus = _uq_math.e * uq_binomial_cdf(count, n, alpha)
    return min(hoeffding, bentkus, 1.0)


def uq_hb_upper_bound(risk: float, n: int, delta: float) -> float:
    """sup {m : p(risk; n, m) >= delta} by bisection on the reference p-value."""
    low, high = risk, 1.0 - 1e-12
    if uq_hb_p_value(risk, n, high) >= delta:
        return 1.0
    for _ in range(200):
        middle = (low + high) / 2
        if uq_hb_p_value(risk, n, middle) >= delta:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def uq_scaled_interval(lower, center, upper, lam, scaling):
    """float64 scaled interval, written out from the definition."""
    import numpy as _np

    lower, center, upper = (_np.asarray(v, dtype=_np.float64) for v in (lower, center, upper))
    if scaling == "additive":
        return lower - lam, upper + lam
    return center - lam * _np.maximum(center - lower, 0), center + lam * _np.maximum(upper - center, 0)


def uq_miscoverage_loop(lower, center, upper, truth, lambdas, scaling):
    """(N, L) miscoverage by re-evaluating coverage at every lambda (the loop RCPS avoids)."""
    import numpy as _np

    truth = _np.asarray(truth, dtype=_np.float64)
    out = _np.empty((truth.shape[0], len(lambdas)))
    for j, lam in enumerate(lambdas):
        low, high = uq_scaled_interval(lower, center, upper, lam, scaling)
        missed = (truth < low) | (truth > high)
        out[:, j] = missed.reshape(truth.shape[0], -1).mean(axis=1)
    return out


def uq_rcps_scan(lambdas, mean_risk, n, alpha, delta):
    """RCPS lambda-hat on a grid: scan from the largest lambda down with the reference p-value."""
    chosen = None
    for lam, risk in zip(reversed(list(lambdas)), reversed(list(mean_risk))):
        if uq_hb_p_value(float(risk), n, alpha) >= delta:
            break
        chosen = lam
    return chosen


def uq_sample_intervals(samples, q, axis, center):
    """np.quantile / mean in float64."""
    import numpy as _np

    samples = _np.asarray(samples, dtype=_np.float64)
    lower, upper = _np.quantile(samples, q, axis=axis)
    middle = _np.mean(samples, axis=axis) if center == "mean" else _np.median(samples, axis=axis)
    return lower, middle, upper


# =================================================================================================
# metrics: Fréchet distance through scipy.linalg.sqrtm of the product, unbiased polynomial-kernel
# MMD^2 with explicit loops over pairs, LPIPS-style distances in float64 from raw feature maps /
# raw AlexNet weights (torch.nn.functional only, no pyinverse modules).
# =================================================================================================

def frechet_distance_reference(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 sqrtm(S1 S2)) in float64 with scipy's general sqrtm."""
    import numpy as np
    import scipy.linalg

    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    covmean = np.real(covmean)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def polynomial_mmd2_reference(x, y, degree: int = 3, coef: float = 1.0) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / d + coef)^degree, summing pairs one by one (float64)."""
    import numpy as np

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    d = x.shape[1]

    def k(a, b):
        return (float(np.dot(a, b)) / d + coef) ** degree

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2.0 * xy


def unit_feature_distance_reference(maps_x, maps_y, weights=None):
    """LPIPS-style distance from lists of (B, C, H, W) feature maps, in float64 numpy.

    Each pixel's channel vector is divided by (its norm + 1e-10); squared differences are
    weighted per channel (weights[l] of shape (C,), default 1), summed over channels, averaged
    over pixels, and summed over layers. Returns (B,).
    """
    import numpy as np

    total = 0.0
    for layer, (fx, fy) in enumerate(zip(maps_x, maps_y)):
        fx, fy = np.asarray(fx, np.float64), np.asarray(fy, np.float64)
        nx = fx / (np.sqrt((fx ** 2).sum(axis=1, keepdims=True)) + 1e-10)
        ny = fy / (np.sqrt((fy ** 2).sum(axis=1, keepdims=True)) + 1e-10)
        w = np.ones(fx.shape[1]) if weights is None else np.asarray(weights[layer], np.float64)
        total = total + np.einsum("bchw,c->bhw", (nx - ny) ** 2, w).mean(axis=(1, 2))
    return total


def lpips_alex_reference(x, y, backbone: dict, heads: dict):
    """LPIPS (alex, v0.1) from a torchvision AlexNet state dict and lpips heads, float64.

    x, y: (B, 3, H, W) numpy in [0, 1]. backbone: 'features.{0,3,6,8,10}.{weight,bias}';
    heads: 'lin{k}.model.1.weight' (1, C, 1, 1). Layer by layer as in lpips/pretrained_networks.py.
    """
    import torch
    import torch.nn.functional as F

    shift = torch.tensor([-0.030, -0.088, -0.188], dtype=torch.float64).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450], dtype=torch.float64).view(1, 3, 1, 1)

    def taps(images):
        h = (torch.as_tensor(images, dtype=torch.float64) * 2 - 1 - shift) / scale
        w = {k: v.double() for k, v in backbone.items()}
        out = []
        h = F.relu(F.conv2d(h, w["features.0.weight"], w["features.0.bias"], stride=4, padding=2))
        out.append(h)
        h = F.max_pool2d(h, 3, 2)
        h = F.relu(F.conv2d(h, w["features.3.weight"], w["features.3.bias"], padding=2))
        out.append(h)
        h = F.max_pool2d(h, 3, 2)
        for index in (6, 8, 10):
            h = F.relu(F.conv2d(h, w[f"features.{index}.weight"], w[f"features.{index}.bias"], padding=1))
            out.append(h)
        return [t.numpy() for t in out]

    weights = [heads[f"lin{k}.model.1.weight"].double().numpy().reshape(-1) for k in range(5)]
    return unit_feature_distance_reference(taps(x), taps(y), weights)


def fid_inception_reference(images, state: dict):
    """pytorch-fid's InceptionV3 pool3 features (B, 2048) from a torchvision-named state dict, float64.

    Written from pytorch-fid's inception.py (FIDInceptionA/C/E_1/E_2 and torchvision's B/D blocks):
    bilinear resize to 299 (align_corners=False), x -> 2x - 1, BasicConv2d = conv (no bias) +
    BatchNorm(eps 1e-3, running statistics) + ReLU; the 3x3 average pools leave the padding out of
    the mean (computed here as a sum over a count), Mixed_7c max-pools instead; global mean last.
    """
    import torch
    import torch.nn.functional as F

    w = {k: v.double() for k, v in state.items()}

    def conv(name, x, stride=1, padding=0):
        x = F.conv2d(x, w[f"{name}.conv.weight"], stride=stride, padding=padding)
        scale = w[f"{name}.bn.weight"] / torch.sqrt(w[f"{name}.bn.running_var"] + 1e-3)
        shift = w[f"{name}.bn.bias"] - w[f"{name}.bn.running_mean"] * scale
        return F.relu(x * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1))

    def mean_pool_without_padding(x):
        ones = torch.ones_like(x[:1, :1])
        total = F.conv2d(F.pad(x, (1, 1, 1, 1)).flatten(0, 1).unsqueeze(1), torch.ones(1, 1, 3, 3, dtype=x.dtype))
        count = F.conv2d(F.pad(ones, (1, 1, 1, 1)), torch.ones(1, 1, 3, 3, dtype=x.dtype))
        return total.view(x.shape) / count

    def block_a(p, x):
        return torch.cat([conv(f"{p}.branch1x1", x),
                          conv(f"{p}.branch5x5_2", conv(f"{p}.branch5x5_1", x), padding=2),
                          conv(f"{p}.branch3x3dbl_3", conv(f"{p}.branch3x3dbl_2", conv(f"{p}.branch3x3dbl_1", x),
                                                              padding=1), padding=1),
                          conv(f"{p}.branch_pool", mean_pool_without_padding(x))], 1)

    def block_b(p, x):
        dbl = conv(f"{p}.branch3x3dbl_2", conv(f"{p}.branch3x3dbl_1", x), padding=1)
        return torch.cat([conv(f"{p}.branch3x3", x, stride=2), conv(f"{p}.branch3x3dbl_3", dbl, stride=2),
                          F.max_pool2d(x, 3, 2)], 1)

    def block_c(p, x):
        b7 = conv(f"{p}.branch7x7_1", x)
        b7 = conv(f"{p}.branch7x7_3", conv(f"{p}.branch7x7_2", b7, padding=(0, 3)), padding=(3, 0))
        d7 = conv(f"{p}.branch7x7dbl_1", x)
        for k, pad in ((2, (3, 0)), (3, (0, 3)), (4, (3, 0)), (5, (0, 3))):
            d7 = conv(f"{p}.branch7x7dbl_{k}", d7, padding=pad)
        return torch.cat([conv(f"{p}.branch1x1", x), b7, d7, conv(f"{p}.branch_pool", mean_pool_without_padding(x))], 1)

    def block_d(p, x):
        b3 = conv(f"{p}.branch3x3_2", conv(f"{p}.branch3x3_1", x), stride=2)
        b7 = conv(f"{p}.branch7x7x3_1", x)
        b7 = conv(f"{p}.branch7x7x3_3", conv(f"{p}.branch7x7x3_2", b7, padding=(0, 3)), padding=(3, 0))
        return torch.cat([b3, conv(f"{p}.branch7x7x3_4", b7, stride=2), F.max_pool2d(x, 3, 2)], 1)

    def block_e(p, x, max_pool):
        b3 = conv(f"{p}.branch3x3_1", x)
        d3 = conv(f"{p}.branch3x3dbl_2", conv(f"{p}.branch3x3dbl_1", x), padding=1)
        pooled = F.max_pool2d(x, 3, 1, 1) if max_pool else mean_pool_without_padding(x)
        return torch.cat([conv(f"{p}.branch1x1", x),
                          conv(f"{p}.branch3x3_2a", b3, padding=(0, 1)), conv(f"{p}.branch3x3_2b", b3, padding=(1, 0)),
                          conv(f"{p}.branch3x3dbl_3a", d3, padding=(0, 1)),
                          conv(f"{p}.branch3x3dbl_3b", d3, padding=(1, 0)),
                          conv(f"{p}.branch_pool", pooled)], 1)

    x = torch.as_tensor(images, dtype=torch.float64)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    x = 2 * F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) - 1
    x = conv("Conv2d_2b_3x3", conv("Conv2d_2a_3x3", conv("Conv2d_1a_3x3", x, stride=2)), padding=1)
    x = conv("Conv2d_4a_3x3", conv("Conv2d_3b_1x1", F.max_pool2d(x, 3, 2)))
    x = F.max_pool2d(x, 3, 2)
    for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d"):
        x = block_a(name, x)
    x = block_b("Mixed_6a", x)
    for name in ("Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"):
        x = block_c(name, x)
    x = block_e("Mixed_7b", block_d("Mixed_7a", x), max_pool=False)
    x = block_e("Mixed_7c", x, max_pool=True)
    return x.mean(dim=(2, 3))


# =================================================================================================
# sqrtm: matrix functions of symmetric PSD matrices one matrix at a time with scipy.linalg.eigh
# (LAPACK dsyevr) in float64, and the Fréchet cross term tr (S1 S2)^1/2 through sample space.
# =================================================================================================

def spectral_function_reference(a, kind: str = "sqrt", eps: float = 0.0, pseudo: bool = False):
    """V f(lambda) V^T for each matrix of a (..., n, n), symmetrised, in float64.

    kind "sqrt": f = sqrt(max(lambda, 0)); "inv_sqrt": f = 1 / sqrt(max(lambda, eps * lambda_max)),
    or 0 where lambda <= eps * lambda_max when pseudo.
    """
    import numpy as np
    import scipy.linalg

    a = np.asarray(a, dtype=np.float64)
    flat = a.reshape(-1, a.shape[-2], a.shape[-1])
    out = np.empty_like(flat)
    for index, matrix in enumerate(flat):
        values, vectors = scipy.linalg.eigh(0.5 * (matrix + matrix.T))
        if kind == "sqrt":
            f = np.sqrt(np.clip(values, 0.0, None))
        else:
            floor = eps * values.max()
            with np.errstate(divide="ignore"):
                f = 1.0 / np.sqrt(np.maximum(values, floor))
            if pseudo:
                f = np.where(values > floor, f, 0.0)
        out[index] = (vectors * f) @ vectors.T
    return out.reshape(a.shape)


def trace_sqrt_product_sample_space_reference(samples, sigma2) -> float:
    """tr (S1 S2)^1/2 for S1 = np.cov(samples) with N samples of dimension d (any N vs d).

    With H (N - 1, N) the Helmert contrasts (orthonormal rows orthogonal to the ones vector) and
    Z = H X, S1 = Z^T Z / (N - 1), so the nonzero eigenvalues of S1 S2 are those of the
    (N - 1) x (N - 1) matrix Z S2 Z^T / (N - 1), which has full rank when N - 1 <= d and
    positive definite S2: an independent route with no noise eigenvalues to clamp.
    """
    import numpy as np
    import scipy.linalg

    x = np.asarray(samples, dtype=np.float64)
    z = scipy.linalg.helmert(x.shape[0]) @ x
    small = z @ np.asarray(sigma2, dtype=np.float64) @ z.T / (x.shape[0] - 1)
    values = np.linalg.eigvalsh(0.5 * (small + small.T))
    return float(np.sqrt(np.clip(values, 0.0, None)).sum())


# =================================================================================================
# flows and solvers: the coupling arithmetic, squeeze with explicit loops, and the closed forms of
# the linear Gaussian model x = M z, z ~ N(0, I) (Asim et al.'s theorem), all numpy float64
# =================================================================================================


def flows_coupling_reference(x_b, h, t, clamp: float, scale: str, inverse: bool = False):
    """Affine coupling from its formulas: (y_b, logdet per sample) (or the inverse map)."""
    import numpy as np

    x_b, h, t = (np.asarray(v, dtype=np.float64) for v in (x_b, h, t))
    if scale == "tanh":
        s = clamp * np.tanh(h / clamp)
    elif scale == "atan":
        s = clamp * 0.636 * np.arctan(h / clamp)
    elif scale == "sigmoid":
        s = -np.logaddexp(0.0, -(h + 2.0))  # log sigmoid(h + 2)
    elif scale == "exp":
        s = h
    else:
        raise ValueError(scale)
    logdet = s.reshape(s.shape[0], -1).sum(1)
    if inverse:
        return (x_b - t) * np.exp(-s), -logdet
    return x_b * np.exp(s) + t, logdet


def flows_squeeze_reference(x):
    """Space-to-depth by 2 with explicit loops: out[b, 4c + 2i + j, r, q] = x[b, c, 2r + i, 2q + j]."""
    import numpy as np

    x = np.asarray(x)
    b, c, h, w = x.shape
    out = np.empty((b, 4 * c, h // 2, w // 2), dtype=x.dtype)
    for ch in range(c):
        for i in range(2):
            for j in range(2):
                for r in range(h // 2):
                    for q in range(w // 2):
                        out[:, 4 * ch + 2 * i + j, r, q] = x[:, ch, 2 * r + i, 2 * q + j]
    return out


def flows_linear_mle_reference(matrix, a, y):
    """argmax_x p_G(x) s.t. A x = y for G(z) = M z: x = M z with z the min-norm solution of A M z = y."""
    import numpy as np

    am = np.asarray(a, dtype=np.float64) @ np.asarray(matrix, dtype=np.float64)
    z, *_ = np.linalg.lstsq(am, np.asarray(y, dtype=np.float64).T, rcond=None)
    return (np.asarray(matrix, dtype=np.float64) @ z).T


def flows_linear_mle_expected_error(matrix, a) -> float:
    """E_{z0 ~ N(0, I)} ||x_hat - x0||^2 for one A: ||M (I - (AM)^+ AM)||_F^2."""
    import numpy as np

    matrix = np.asarray(matrix, dtype=np.float64)
    am = np.asarray(a, dtype=np.float64) @ matrix
    residual = np.eye(matrix.shape[0]) - np.linalg.pinv(am) @ am
    return float(np.sum((matrix @ residual) ** 2))


def flows_theorem_bounds(singular_values, m: int) -> tuple[float, float]:
    """Asim et al.'s bounds on E_A E_x0 ||x_hat - x0||^2 (slides, 'Theory for linear invertible model'):
    sum_{i > m} sigma_i^2 <= E <= m sum_{i > m - 2} sigma_i^2 (1-based i, sigma sorted decreasing)."""
    import numpy as np

    s2 = np.sort(np.asarray(singular_values, dtype=np.float64))[::-1] ** 2
    return float(s2[m:].sum()), float(m * s2[max(m - 2, 0):].sum())


def flows_gaussian_latent_posterior(matrix, a, y, sigma: float):
    """Posterior of z ~ N(0, I) given y = A M z + sigma n: (mean (B, D), covariance (D, D))."""
    import numpy as np

    am = np.asarray(a, dtype=np.float64) @ np.asarray(matrix, dtype=np.float64)
    precision = am.T @ am / sigma**2 + np.eye(am.shape[1])
    covariance = np.linalg.inv(precision)
    mean = (covariance @ am.T @ np.asarray(y, dtype=np.float64).T / sigma**2).T
    return mean, covariance


# =================================================================================================
# knn: brute-force k nearest neighbours in float64 (one query at a time, stable order: ties go to
# the smaller index) and a tie-aware comparison of two knn results (after faiss's
# check_ref_knn_with_draws).
# =================================================================================================
import numpy as _knn_np


def knn_brute_force_reference(x, q, k: int):
    """Squared L2 ``(Q, k)`` and indices ``(Q, k)`` of the k nearest rows of ``x`` to each row of ``q``."""
    x = _knn_np.asarray(x, dtype=_knn_np.float64)
    q = _knn_np.asarray(q, dtype=_knn_np.float64)
    distances = _knn_np.empty((len(q), k))
    indices = _knn_np.empty((len(q), k), dtype=_knn_np.int64)
    for row, point in enumerate(q):
        d = ((x - point) ** 2).sum(axis=1)
        order = _knn_np.lexsort((_knn_np.arange(len(x)), d))[:k]  # by distance, then by index
        distances[row], indices[row] = d[order], order
    return distances, indices


def knn_assert_same_with_ties(x, q, ref_distances, ref_indices, distances, indices, rtol: float):
    """Results agree up to the order of equal distances: distances match (rtol), every returned index
    is at its returned distance from the query, and each group of tied distances below the k-th
    holds the same indices (the group at the k-th distance may be cut differently)."""
    x = _knn_np.asarray(x, dtype=_knn_np.float64)
    q = _knn_np.asarray(q, dtype=_knn_np.float64)
    distances = _knn_np.asarray(distances, dtype=_knn_np.float64)
    indices = _knn_np.asarray(indices)
    _knn_np.testing.assert_allclose(distances, ref_distances, rtol=rtol, atol=0)
    for row in range(len(q)):
        assert len(set(indices[row].tolist())) == indices.shape[1], f"row {row}: repeated indices"
        true = ((x[indices[row]] - q[row]) ** 2).sum(axis=1)
        _knn_np.testing.assert_allclose(distances[row], true, rtol=rtol, atol=0)
        last = ref_distances[row, -1]
        for value in _knn_np.unique(ref_distances[row]):
            if value == last:
                continue
            mask = ref_distances[row] == value
            assert set(ref_indices[row, mask].tolist()) == set(indices[row, mask].tolist()), f"row {row}"


# =================================================================================================
# coupling: the affine coupling of RealNVP / Glow from its formulas in float64 numpy (log-scale,
# forward, inverse, and the closed-form gradients), independent of pyinverse code.
# =================================================================================================
import numpy as _coupling_np


def coupling_log_scale_reference(h, clamp: float, scale: str):
    """s(h) and ds/dh in float64 for the scale functions of pyinverse.ops.coupling."""
    h = _coupling_np.asarray(h, dtype=_coupling_np.float64)
    with _coupling_np.errstate(all="ignore"):
        if scale == "tanh":
            s = clamp * _coupling_np.tanh(h / clamp)
            ds = 1.0 / _coupling_np.cosh(h / clamp) ** 2
        elif scale == "atan":
            s = (clamp * 0.636) * _coupling_np.arctan(h / clamp)
            ds = 0.636 / (1.0 + (h / clamp) ** 2)
        elif scale == "sigmoid":
            u = h + 2.0
            s = -_coupling_np.logaddexp(0.0, -u)  # log sigmoid(u)
            ds = 1.0 / (1.0 + _coupling_np.exp(u))  # sigmoid(-u)
        elif scale == "exp":
            s, ds = h.copy(), _coupling_np.ones_like(h)
        else:
            raise ValueError(scale)
    return s, ds


def affine_coupling_reference(source, h, t, clamp: float, scale: str, inverse: bool = False):
    """(output, logdet) of y = x e^s + t (or x = (y - t) e^-s), logdet = +-sum(s) per sample."""
    source = _coupling_np.asarray(source, dtype=_coupling_np.float64)
    t = _coupling_np.asarray(t, dtype=_coupling_np.float64)
    s, _ = coupling_log_scale_reference(h, clamp, scale)
    with _coupling_np.errstate(all="ignore"):
        logdet = s.reshape(len(s), -1).sum(axis=1)
        if inverse:
            return (source - t) * _coupling_np.exp(-s), -logdet
        return source * _coupling_np.exp(s) + t, logdet


def affine_coupling_vjp_reference(grad_out, grad_logdet, x_b, h, t, clamp: float, scale: str, inverse: bool = False):
    """(grad_input, grad_h, grad_t) of the forward coupling (input x_b) or the inverse coupling
    (input y_b = x_b e^s + t, output x_b), from the chain rule written out by hand."""
    grad_out = _coupling_np.asarray(grad_out, dtype=_coupling_np.float64)
    x_b = _coupling_np.asarray(x_b, dtype=_coupling_np.float64)
    s, ds = coupling_log_scale_reference(h, clamp, scale)
    gl = _coupling_np.zeros(len(s)) if grad_logdet is None else _coupling_np.asarray(grad_logdet, dtype=_coupling_np.float64)
    gl = gl.reshape((-1,) + (1,) * (s.ndim - 1))
    with _coupling_np.errstate(all="ignore"):
        if inverse:  # x = (y - t) e^-s, logdet = -sum s
            grad_in = grad_out * _coupling_np.exp(-s)
            return grad_in, -(grad_out * x_b + gl) * ds, -grad_in
        return grad_out * _coupling_np.exp(s), (grad_out * x_b * _coupling_np.exp(s) + gl) * ds, grad_out.copy()


# =================================================================================================
# ot / tradeoffs: the Gaussian OT map through the target-side formula with scipy.linalg.sqrtm, the
# Rényi divergence between Gaussians in information (precision) form, and a 1-d quadrature of it.
# =================================================================================================

def gaussian_ot_matrix_reference(cov_source, cov_target):
    """A = S_t^1/2 (S_t^1/2 S_s S_t^1/2)^-1/2 S_t^1/2 (equal to the source-side formula for PD
    covariances), with scipy.linalg.sqrtm and an explicit inverse, float64."""
    import numpy as np
    import scipy.linalg

    s_s, s_t = np.asarray(cov_source, np.float64), np.asarray(cov_target, np.float64)
    root_t = np.real(scipy.linalg.sqrtm(s_t))
    middle = np.real(scipy.linalg.sqrtm(root_t @ s_s @ root_t))
    matrix = root_t @ np.linalg.inv(middle) @ root_t
    return 0.5 * (matrix + matrix.T)


def renyi_gaussian_information_form_reference(mu1, cov1, mu2, cov2, order: float) -> float:
    """D_a(N1 || N2) = log(integral p1^a p2^(1-a)) / (a - 1) with the integral of the unnormalised
    Gaussian exp(-x^T J x / 2 + h^T x - k / 2) done in precision form (J = a L1 + (1 - a) L2);
    positive definite covariances, a != 1; +inf if J is not positive definite."""
    import math

    import numpy as np

    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    p1, p2 = np.linalg.inv(np.asarray(cov1, np.float64)), np.linalg.inv(np.asarray(cov2, np.float64))
    d = mu1.shape[0]
    j = order * p1 + (1 - order) * p2
    if np.linalg.eigvalsh(0.5 * (j + j.T)).min() <= 0:
        return math.inf
    h = order * p1 @ mu1 + (1 - order) * p2 @ mu2
    k = order * mu1 @ p1 @ mu1 + (1 - order) * mu2 @ p2 @ mu2
    _, log_det1 = np.linalg.slogdet(cov1)
    _, log_det2 = np.linalg.slogdet(cov2)
    _, log_det_j = np.linalg.slogdet(j)
    log_norm = -0.5 * d * math.log(2 * math.pi) - 0.5 * (order * log_det1 + (1 - order) * log_det2)
    log_integral = log_norm + 0.5 * h @ np.linalg.solve(j, h) - 0.5 * k + 0.5 * d * math.log(2 * math.pi) \
        - 0.5 * log_det_j
    return float(log_integral / (order - 1))


def renyi_gaussian_1d_quadrature_reference(mu1, var1, mu2, var2, order: float) -> float:
    """D_a between two 1-d Gaussians by adaptive quadrature of p1^a p2^(1-a) (a != 1) or of
    p1 log(p1 / p2) (a = 1), with scipy.integrate.quad on log-densities."""
    import math

    import numpy as np
    import scipy.integrate

    def log_pdf(x, mu, var):
        return -0.5 * math.log(2 * math.pi * var) - 0.5 * (x - mu) ** 2 / var

    lo = min(mu1 - 40 * math.sqrt(var1), mu2 - 40 * math.sqrt(var2))
    hi = max(mu1 + 40 * math.sqrt(var1), mu2 + 40 * math.sqrt(var2))
    points = sorted({mu1, mu2})
    if order > 1.0 and order / var1 + (1 - order) / var2 <= 0:
        return math.inf  # log(p1^a p2^(1-a)) is a convex quadratic: the integral diverges
    if order == 1.0:
        value, _ = scipy.integrate.quad(lambda x: math.exp(log_pdf(x, mu1, var1)) * (
            log_pdf(x, mu1, var1) - log_pdf(x, mu2, var2)), lo, hi, points=points, limit=500, epsabs=1e-13)
        return float(value)
    value, _ = scipy.integrate.quad(lambda x: math.exp(order * log_pdf(x, mu1, var1) + (1 - order)
                                                       * log_pdf(x, mu2, var2)), lo, hi, points=points,
                                    limit=500, epsabs=1e-300, epsrel=1e-12)
    return float(np.log(value) / (order - 1))
