"""FID and KID accumulators (pyinverse.metrics.fid) against float64 references."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pyinverse.metrics import FID, KID
from pyinverse.metrics import fid as fid_module
from tests.reference import frechet_distance_reference, polynomial_mmd2_reference


def gaussian_features(seed: int, n: int, d: int, shift: float = 0.0, scale: float = 1.0) -> np.ndarray:
    """n draws of shift + scale * M z, z ~ N(0, I), with one fixed correlating M per dimension d."""
    mixing = np.random.default_rng(d).standard_normal((d, d)) / np.sqrt(d)
    return shift + scale * np.random.default_rng(seed).standard_normal((n, d)) @ mixing


def channel_means(images: torch.Tensor) -> torch.Tensor:
    """A tiny extractor: per-channel means and standard deviations, (B, 2C)."""
    return torch.cat([images.mean(dim=(2, 3)), images.std(dim=(2, 3))], dim=1)


# --- FID -------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("d", [1, 5, 32])
def test_fid_matches_scipy_reference(seed, d):
    real = gaussian_features(seed, 200, d)
    fake = gaussian_features(seed + 100, 150, d, shift=0.3, scale=1.2)
    fid = FID()
    for chunk in np.array_split(real, 3):
        fid.update_features(chunk, real=True)
    fid.update_features(torch.from_numpy(fake), real=False)
    expected = frechet_distance_reference(real.mean(0), np.cov(real, rowvar=False).reshape(d, d),
                                          fake.mean(0), np.cov(fake, rowvar=False).reshape(d, d))
    assert fid.compute() == pytest.approx(expected, rel=1e-7, abs=1e-9)


def test_fid_identical_sets_and_rank_deficient_covariances():
    real = gaussian_features(3, 10, 40)  # 10 samples in 40 dimensions: singular covariances
    fid = FID()
    fid.update_features(real, real=True)
    fid.update_features(real, real=False)
    # sqrt of the ~30 zero eigenvalues (each ~1e-16 * ||S|| after rounding) costs ~1e-8 each
    assert abs(fid.compute()) < 1e-6 * np.trace(np.cov(real, rowvar=False)) * 2
    other = FID()
    other.update_features(real, real=True)
    other.update_features(gaussian_features(4, 12, 40), real=False)
    expected = frechet_distance_reference(real.mean(0), np.cov(real, rowvar=False),
                                          gaussian_features(4, 12, 40).mean(0),
                                          np.cov(gaussian_features(4, 12, 40), rowvar=False))
    assert other.compute() == pytest.approx(expected, rel=1e-5)


def test_fid_from_images_uses_the_extractor_and_merge_equals_one_accumulator():
    generator = torch.Generator().manual_seed(0)
    real = torch.rand(40, 3, 8, 8, generator=generator)
    fake = torch.rand(30, 3, 8, 8, generator=generator) ** 2
    whole = FID(extractor=channel_means)
    whole.update(real, real=True)
    whole.update(fake, real=False)
    parts = [FID(extractor=channel_means) for _ in range(3)]
    parts[0].update(real[:10], real=True)
    parts[1].update(real[10:], real=True)
    parts[1].update(fake[:5], real=False)
    parts[2].update(fake[5:].numpy(), real=False)
    merged = parts[0].merge(parts[1]).merge(parts[2])
    features_real = channel_means(real).double().numpy()
    features_fake = channel_means(fake).double().numpy()
    expected = frechet_distance_reference(features_real.mean(0), np.cov(features_real, rowvar=False),
                                          features_fake.mean(0), np.cov(features_fake, rowvar=False))
    assert whole.compute() == pytest.approx(expected, rel=1e-6)
    assert merged.compute() == pytest.approx(whole.compute(), rel=1e-10)


def test_fid_default_extractor_separates_degraded_images():
    from pyinverse.data import photo_patches
    from pyinverse.physics import by_name

    patches = torch.from_numpy(photo_patches("held_out", size=32, stride=16))
    rng = np.random.default_rng(0)
    order = rng.permutation(len(patches))
    first, second = patches[order[:300]], patches[order[300:600]]
    clean, blurred = FID(), FID()
    clean.update(first, real=True)
    clean.update(second, real=False)
    blurred.update(first, real=True)
    blurred.update(by_name("blur:1.5").A(second), real=False)
    print("FID clean halves", clean.compute(), "blurred", blurred.compute())
    assert blurred.compute() > 3 * clean.compute()


def test_fid_errors():
    fid = FID()
    with pytest.raises(TypeError, match="'real' must be True"):
        fid.update_features(np.zeros((3, 2)), real="yes")
    with pytest.raises(ValueError, match=r"shape \(N, d\)"):
        fid.update_features(np.zeros(3), real=True)
    with pytest.raises(ValueError, match=r"shape \(N, d\) with d >= 1"):
        fid.update_features(np.zeros((3, 0)), real=True)
    fid.update_features(np.random.default_rng(0).random((3, 2)), real=True)
    with pytest.raises(ValueError, match="dimension 4"):
        fid.update_features(np.zeros((3, 4)), real=False)
    with pytest.raises(ValueError, match="NaN or inf"):
        fid.update_features(np.full((3, 2), np.nan), real=False)
    with pytest.raises(ValueError, match="at least 2 generated"):
        fid.compute()
    with pytest.raises(TypeError, match="'extractor'"):
        FID(extractor=42)
    with pytest.raises(ValueError, match=r"'images' must have shape \(B, C, H, W\)"):
        FID(extractor=channel_means).update(torch.rand(3, 8, 8), real=True)
    with pytest.raises(ValueError, match="rows for 4 images"):
        FID(extractor=lambda x: torch.zeros(3, 2)).update(torch.rand(4, 1, 8, 8), real=True)
    other = FID()
    other.update_features(np.zeros((2, 5)), real=True)
    with pytest.raises(ValueError, match="feature dimensions differ"):
        fid.merge(other)
    with pytest.raises(TypeError, match="must be a FID"):
        fid.merge(KID())


# --- KID -------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1])
def test_kid_with_one_full_subset_equals_the_unbiased_mmd(seed):
    real = gaussian_features(seed, 30, 6)
    fake = gaussian_features(seed + 10, 30, 6, shift=0.5)
    kid = KID(subset_size=30, num_subsets=3, seed=seed)
    kid.update_features(real, real=True)
    kid.update_features(fake, real=False)
    mean, std = kid.compute()
    # every subset is a permutation of all features, and the estimate ignores order
    expected = polynomial_mmd2_reference(real, fake)
    assert mean == pytest.approx(expected, rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_kid_subsets_with_and_without_the_precomputed_gram_agree(monkeypatch):
    real = gaussian_features(5, 60, 4)
    fake = gaussian_features(6, 50, 4, scale=1.3)
    results = []
    for limit in (10**6, 0):
        monkeypatch.setattr(fid_module, "_GRAM_LIMIT", limit)
        kid = KID(subset_size=20, num_subsets=7, seed=3)
        kid.update_features(real, real=True)
        kid.update_features(fake, real=False)
        results.append(kid.compute())
    np.testing.assert_allclose(results[0], results[1], rtol=1e-10)
    # reproducible for a seed, different for another
    again = KID(subset_size=20, num_subsets=7, seed=3)
    again.update_features(real, real=True)
    again.update_features(fake, real=False)
    assert again.compute() == results[1]
    other_seed = KID(subset_size=20, num_subsets=7, seed=4)
    other_seed.update_features(real, real=True)
    other_seed.update_features(fake, real=False)
    assert other_seed.compute() != results[1]


def test_kid_subset_matches_reference_on_the_drawn_indices():
    real = gaussian_features(7, 25, 3)
    fake = gaussian_features(8, 21, 3, shift=0.2)
    kid = KID(subset_size=10, num_subsets=4, seed=11)
    kid.update_features(real, real=True)
    kid.update_features(fake, real=False)
    rng = np.random.default_rng(11)
    expected = []
    for _ in range(4):
        pick_real = rng.choice(25, 10, replace=False)
        pick_fake = rng.choice(21, 10, replace=False)
        expected.append(polynomial_mmd2_reference(real[pick_real], fake[pick_fake]))
    mean, std = kid.compute()
    assert mean == pytest.approx(np.mean(expected), rel=1e-10)
    assert std == pytest.approx(np.std(expected), rel=1e-8)


def test_kid_is_unbiased_for_one_distribution_and_positive_for_two():
    same, different = [], []
    for repeat in range(40):
        kid_same = KID(subset_size=50, num_subsets=1, seed=repeat)
        kid_same.update_features(gaussian_features(1000 + repeat, 50, 8), real=True)
        kid_same.update_features(gaussian_features(3000 + repeat, 50, 8), real=False)
        same.append(kid_same.compute()[0])
        kid_diff = KID(subset_size=50, num_subsets=1, seed=repeat)
        kid_diff.update_features(gaussian_features(1000 + repeat, 50, 8), real=True)
        kid_diff.update_features(gaussian_features(3000 + repeat, 50, 8, shift=0.5), real=False)
        different.append(kid_diff.compute()[0])
    same, different = np.array(same), np.array(different)
    standard_error = same.std(ddof=1) / np.sqrt(len(same))
    print(f"same: {same.mean():.2e} +- {standard_error:.1e}; different: {different.mean():.3f}")
    assert abs(same.mean()) < 3.5 * standard_error
    assert (same < 0).any()  # an unbiased estimate of 0 must go negative sometimes
    assert different.mean() > 20 * standard_error and (different > 0).all()


def test_kid_merge_equals_one_accumulator_and_errors():
    generator = torch.Generator().manual_seed(1)
    real = torch.rand(20, 1, 8, 8, generator=generator)
    fake = torch.rand(20, 1, 8, 8, generator=generator) * 0.8
    whole = KID(channel_means, subset_size=10, num_subsets=5)
    whole.update(real, real=True)
    whole.update(fake, real=False)
    first = KID(channel_means, subset_size=10, num_subsets=5)
    second = KID(channel_means, subset_size=10, num_subsets=5)
    first.update(real[:12], real=True)
    first.update(fake[:3], real=False)
    second.update(real[12:], real=True)
    second.update(fake[3:], real=False)
    assert first.merge(second).compute() == whole.compute()
    small = KID(subset_size=10)
    small.update_features(np.zeros((1, 2)), real=True)
    small.update_features(np.zeros((5, 2)), real=False)
    with pytest.raises(ValueError, match="at least 2 real and 2 generated"):
        small.compute()
    for bad in (dict(subset_size=1), dict(num_subsets=0), dict(seed=-1), dict(subset_size=2.5)):
        with pytest.raises(ValueError, match="KID: '"):
            KID(**bad)


def test_against_torchmetrics_if_importable():
    torchmetrics_fid = pytest.importorskip("torchmetrics.image.fid")
    torchmetrics_kid = pytest.importorskip("torchmetrics.image.kid")

    class Features(torch.nn.Module):
        def forward(self, images):  # torchmetrics passes uint8 (normalize=False) or float images
            return channel_means(images.float())

    generator = torch.Generator().manual_seed(0)
    real = torch.rand(64, 3, 8, 8, generator=generator)
    fake = torch.rand(64, 3, 8, 8, generator=generator) ** 1.5
    reference = torchmetrics_fid.FrechetInceptionDistance(feature=Features(), normalize=True)
    reference.update(real, real=True)
    reference.update(fake, real=False)
    ours = FID(extractor=channel_means)
    ours.update(real, real=True)
    ours.update(fake, real=False)
    print("FID ours", ours.compute(), "torchmetrics", float(reference.compute()))
    assert ours.compute() == pytest.approx(float(reference.compute()), rel=1e-6)
    reference_kid = torchmetrics_kid.KernelInceptionDistance(feature=Features(), subset_size=64,
                                                              subsets=2, normalize=True)
    reference_kid.update(real, real=True)
    reference_kid.update(fake, real=False)
    ours_kid = KID(channel_means, subset_size=64, num_subsets=2)
    ours_kid.update(real, real=True)
    ours_kid.update(fake, real=False)
    # full subsets: both are the unbiased MMD^2 of all features, whatever the permutation
    print("KID ours", ours_kid.compute(), "torchmetrics", reference_kid.compute())
    # torchmetrics keeps float32 features and kernels (ours are float64): agreement to float32 rounding
    assert ours_kid.compute()[0] == pytest.approx(float(reference_kid.compute()[0]), rel=1e-4)


# --- torch.distributed -----------------------------------------------------------------------

def _distributed_worker(rank: int, world: int, init_file: str, queue) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        real = gaussian_features(0, 90, 4)
        fake = gaussian_features(1, 70, 4, shift=0.4)
        fid, kid = FID(), KID(subset_size=30, num_subsets=5, seed=2)
        # uneven shards: rank r takes rows r, r + world, ...
        fid.update_features(real[rank::world], real=True)
        fid.update_features(fake[rank::world], real=False)
        kid.update_features(real[rank::world], real=True)
        kid.update_features(fake[rank::world], real=False)
        queue.put((rank, fid.compute(), kid.compute(), fid.compute()))
    finally:
        dist.destroy_process_group()


def test_distributed_compute_reduces_all_ranks(tmp_path):
    import torch.multiprocessing as mp

    world = 2
    context = mp.get_context("spawn")
    queue = context.SimpleQueue()
    mp.spawn(_distributed_worker, args=(world, str(tmp_path / "init"), queue), nprocs=world, join=True)
    results = sorted(queue.get() for _ in range(world))
    real = gaussian_features(0, 90, 4)
    fake = gaussian_features(1, 70, 4, shift=0.4)
    single_fid = FID()
    single_fid.update_features(real, real=True)
    single_fid.update_features(fake, real=False)
    single_kid = KID(subset_size=30, num_subsets=5, seed=2)
    # the gathered order is rank 0's rows then rank 1's rows
    single_kid.update_features(np.concatenate([real[0::2], real[1::2]]), real=True)
    single_kid.update_features(np.concatenate([fake[0::2], fake[1::2]]), real=False)
    for _, fid_value, kid_value, fid_again in results:
        assert fid_value == pytest.approx(single_fid.compute(), rel=1e-10)
        assert fid_again == fid_value  # compute() does not change the local state
        np.testing.assert_allclose(kid_value, single_kid.compute(), rtol=1e-10)


def test_kid_overflow_of_the_cubic_kernel_is_named():
    rng = np.random.default_rng(0)
    kid = KID(subset_size=10, num_subsets=2)
    kid.update_features(rng.standard_normal((10, 4)) * 1e60, real=True)
    kid.update_features(rng.standard_normal((10, 4)) * 1e60, real=False)
    with pytest.raises(ValueError, match="KID.compute: the polynomial kernel .* overflows float64"):
        kid.compute()
