"""Per-image seeds: a sampler's draws for an image do not depend on the batch it is in."""
import numpy as np
import pytest
import torch

from pyinverse.draws import Draws, item_seeds
from pyinverse.physics import Inpainting
from pyinverse.solvers import latent_langevin, latent_map
from test_imle import tiny
from test_solvers import tiny_glow


def test_one_seed_draws_one_block_like_torch():
    seed = int(np.random.default_rng().integers(2**62))
    draws = Draws(seed, 3, "here")
    generator = torch.Generator().manual_seed(seed)
    assert torch.equal(draws.randn(2, 5), torch.randn(6, 5, generator=generator, dtype=torch.float64))
    assert torch.equal(draws.rand(4), torch.rand(12, generator=generator, dtype=torch.float64))


def test_per_image_draws_do_not_depend_on_the_batch():
    seeds = item_seeds(int(np.random.default_rng().integers(2**62)), range(5))
    assert len(set(seeds)) == 5 and all(0 <= s < 2**63 for s in seeds)
    whole = Draws(seeds, 5, "here")
    normal, uniform = whole.randn(3, 2, 4), whole.rand(2)
    for b in range(5):
        alone = Draws(seeds[b:b + 1], 1, "here")
        assert torch.equal(alone.randn(3, 2, 4), normal[b::5])  # row k * B + b is image b's k-th draw
        assert torch.equal(alone.rand(2), uniform[b::5])
    assert item_seeds(7, [3]) == item_seeds(7, [0, 1, 2, 3])[3:]  # by index, not by position


def test_item_seeds_are_one_to_one_and_check_their_indices():
    """SeedSequence drops trailing zero words: (2**32, 0) and (0, 1) got one seed. Seeds and indices
    below 2**32 keep the seeds they always had."""
    assert item_seeds(0, [1]) == [2918264622725855778]  # SeedSequence([0, 1]), as before
    pairs = [(2**32, 0), (0, 1), (7 + 5 * 2**32, 0), (7, 5), (1, 2**32), (2**32 + 1, 0), (0, 2**32), (2**62, 3)]
    seeds = [item_seeds(seed, [index])[0] for seed, index in pairs]
    assert len(set(seeds)) == len(pairs)
    for indices in ([True], [1.7], [-1], "12", [2**63]):
        with pytest.raises(ValueError, match=r"item_seeds: 'indices' must be an int in \[0, 2\*\*63\)"):
            item_seeds(0, indices)


@pytest.mark.parametrize("seed, match", [([1, 2], "2 seeds for 3 images"), ([1, -2, 3], r"\[0, 2\*\*63\)"),
                                         ([1, 2.5, 3], r"\[0, 2\*\*63\)"), ("abc", r"\[0, 2\*\*63\)"),
                                         (object(), "an int or a sequence of 3 ints"), (-1, r"\[0, 2\*\*63\)"),
                                         (True, r"\[0, 2\*\*63\)")])
def test_bad_seeds(seed, match):
    with pytest.raises(ValueError, match="here: 'seed' " + ".*" + match):
        Draws(seed, 3, "here")


def _inpainting_problem(num_images, seed):
    """A float64 tiny Glow, an inpainting operator with noise, and measurements of random images."""
    op = Inpainting(fraction=0.5, seed=0, noise_sigma=0.1)
    generator = torch.Generator().manual_seed(seed)
    x = 0.3 + 0.4 * torch.rand(num_images, 1, 4, 4, generator=generator, dtype=torch.float64)
    return tiny_glow(0), op, op(x, seed=0)


def test_langevin_samples_of_an_image_do_not_depend_on_its_batch():
    model, op, y = _inpainting_problem(3, seed=1)
    seeds = item_seeds(5, range(3))
    options = dict(n_samples=4, chains=2, thin=2, burn_in=10, map_steps=20)
    batch = latent_langevin(model, op, y, seed=seeds, **options)
    for b in range(3):
        alone = latent_langevin(model, op, y[b:b + 1], seed=seeds[b:b + 1], **options)
        torch.testing.assert_close(alone.samples[:, 0], batch.samples[:, b], rtol=1e-9, atol=1e-10)
        assert alone.acceptance[0] == pytest.approx(batch.acceptance[b], abs=1e-9)
    # and an int seed still couples the batch: the same draws, in one block
    assert not torch.allclose(latent_langevin(model, op, y, seed=5, **options).samples, batch.samples)


def test_random_restarts_of_an_image_do_not_depend_on_its_batch():
    model, op, y = _inpainting_problem(2, seed=2)
    seeds = item_seeds(1, range(2))
    batch = latent_map(model, op, y, init="random", restarts=2, steps=15, seed=seeds)
    alone = latent_map(model, op, y[1:], init="random", restarts=2, steps=15, seed=seeds[1:])
    torch.testing.assert_close(alone.x[0], batch.x[1], rtol=1e-9, atol=1e-10)


def test_cimle_samples_of_an_observation_do_not_depend_on_its_batch():
    generator = tiny(seed=3)
    y = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    seeds = item_seeds(2, range(3))
    batch = generator.sample(y, 5, seed=seeds)
    for b in range(3):
        torch.testing.assert_close(generator.sample(y[b:b + 1], 5, seed=seeds[b:b + 1])[:, 0], batch[:, b],
                                   rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(generator.sample(y, 3, seed=seeds), batch[:3], rtol=0, atol=0)  # prefix
    # an int seed gives the codes torch draws in one block per sample, as before
    codes = torch.randn(3, 8 * 8 + 2 * 4 * 4, generator=torch.Generator().manual_seed(9))
    assert generator.latent_dim == codes.shape[1]
    torch.testing.assert_close(generator.sample(y, 1, seed=9)[0], generator(y, codes).clamp(0, 1), rtol=0, atol=0)


def test_per_image_draws_for_no_images_are_empty():
    draws = Draws([], 0, "here")  # a shard without images
    assert draws.randn(3, 2).shape == (0, 2) and draws.rand(4).shape == (0,)
