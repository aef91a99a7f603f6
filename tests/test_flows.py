"""Flows: layers against float64 references, change of variables by brute force, training, files."""
import copy
import json
import math

import numpy as np
import pytest
import torch

from pyinverse.flows import (ActNorm, AffineCoupling, Glow, InvertibleConv1x1, LinearFlow, Mirrored, Preprocess, RealNVP,
                             Split, Squeeze, build_flow, dequantize, evaluate_bpd, latest_checkpoint, load_flow,
                             load_pretrained, pretrained_path, quantize_levels, read_flow_file, save_flow,
                             train_flow)
from reference import flows_coupling_reference, flows_squeeze_reference

SCALES = ["tanh", "atan", "sigmoid", "exp"]


def perturb(model, scale, seed):
    """Move every parameter off its initial value (zero-initialised subnets are the identity)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator, dtype=torch.float64).to(p.dtype))
    return model


def tiny_models():
    return {
        "glow-affine-tanh": lambda: Glow(1, 4, levels=2, depth=2, hidden=4, seed=1),
        "glow-logit-sigmoid": lambda: Glow(2, 4, levels=1, depth=2, hidden=4, scale="sigmoid", preprocess="logit", seed=2),
        "glow-atan-noprior": lambda: Glow(1, 4, levels=2, depth=1, hidden=4, scale="atan", learned_prior=False, seed=3),
        "realnvp-2levels": lambda: RealNVP(1, 4, levels=2, couplings=1, hidden=4, seed=4),
        "realnvp-odd-1level": lambda: RealNVP(2, (3, 5), levels=1, couplings=2, hidden=4, scale="exp", seed=5),
    }


def initialised(name, seed, dtype=torch.float64, batch=6):
    model = tiny_models()[name]().to(dtype).train()
    generator = torch.Generator().manual_seed(seed)
    x = (0.1 + 0.8 * torch.rand((batch,) + model.image_shape, generator=generator, dtype=torch.float64)).to(dtype)
    model(x)  # actnorm data-dependent init
    perturb(model, 0.05, seed)
    return model.eval(), x


# ---- layers ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("mask,parity,shape", [("channel", 0, (4, 3, 5)), ("channel", 1, (5, 2, 2)),
                                               ("checkerboard", 0, (2, 3, 5)), ("checkerboard", 1, (1, 4, 4))])
def test_coupling_layer_matches_reference(seed, scale, mask, parity, shape):
    torch.manual_seed(seed)
    layer = AffineCoupling(shape[0], 6, mask, parity=parity, scale=scale, clamp=1.5).double()
    perturb(layer, 0.3, seed)
    x = torch.randn((3,) + shape, dtype=torch.float64)
    y, logdet = layer(x)
    # Independent: run the subnet, then apply the coupling formula where the mask says "b".
    if mask == "channel":
        a_idx = list(range(shape[0] // 2)) if parity == 0 else list(range(shape[0] - shape[0] // 2, shape[0]))
        b_idx = [c for c in range(shape[0]) if c not in a_idx]
        out = layer.net(x[:, a_idx]).detach().numpy()
        h, t = out[:, :len(b_idx)], out[:, len(b_idx):]
        ref_b, ref_ld = flows_coupling_reference(x[:, b_idx].numpy(), h, t, 1.5, scale)
        expected = x.numpy().copy()
        expected[:, b_idx] = ref_b
    else:
        rows, cols = np.meshgrid(np.arange(shape[1]), np.arange(shape[2]), indexing="ij")
        a_mask = ((rows + cols) % 2 == parity).astype(np.float64)
        net_in = torch.cat([x * torch.from_numpy(a_mask), torch.from_numpy(a_mask).expand(3, 1, -1, -1)], 1)
        out = layer.net(net_in).detach().numpy()
        h, t = out[:, : shape[0]], out[:, shape[0]:]
        b = a_mask == 0
        ref_b, ref_ld = flows_coupling_reference(x.numpy()[:, :, b], h[:, :, b], t[:, :, b], 1.5, scale)
        expected = x.numpy().copy()
        expected[:, :, b] = ref_b
    np.testing.assert_allclose(y.detach().numpy(), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(logdet.detach().numpy(), ref_ld, rtol=1e-12, atol=1e-12)
    back, inv_ld = layer.inverse(y)
    np.testing.assert_allclose(back.detach().numpy(), x.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(inv_ld.detach().numpy(), -ref_ld, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("batch,shape", [(1, (3, 1, 1)), (16, (3, 4, 5)), (2, (1, 7, 3))])
def test_actnorm_data_dependent_init(seed, batch, shape):
    generator = torch.Generator().manual_seed(seed)
    x = 3.0 * torch.randn((batch,) + shape, generator=generator, dtype=torch.float64) + 5.0
    norm = ActNorm(shape[0]).double().train()
    y, logdet = norm(x)
    if batch * shape[1] * shape[2] > 1:
        np.testing.assert_allclose(y.mean(dim=(0, 2, 3)).detach().numpy(), 0.0, atol=1e-12)
        np.testing.assert_allclose(y.var(dim=(0, 2, 3), unbiased=False).detach().numpy(), 1.0, rtol=1e-10)
    # logdet = H W sum(log_scale), and a second batch does not re-initialise
    np.testing.assert_allclose(logdet.detach().numpy(),
                               shape[1] * shape[2] * float(norm.log_scale.detach().sum()), rtol=1e-12)
    before = norm.bias.detach().clone()
    norm(x + 1.0)
    assert torch.equal(norm.bias.detach(), before)
    back, inv = norm.inverse(y)
    np.testing.assert_allclose(back.detach().numpy(), x.numpy(), rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(inv.detach().numpy(), -logdet.detach().numpy())


def test_actnorm_uninitialised_in_eval_is_identity():
    norm = ActNorm(2).eval()
    x = torch.randn(3, 2, 4, 4)
    y, logdet = norm(x)
    assert torch.equal(y, x) and torch.equal(logdet, torch.zeros(3)) and not bool(norm.initialized)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("channels", [1, 3, 12])
def test_invertible_conv_lu_logdet_and_inverse(seed, channels):
    conv = InvertibleConv1x1(channels, generator=torch.Generator().manual_seed(seed)).double()
    perturb(conv, 0.2, seed)
    weight = conv.weight().detach()
    sign, logabsdet = torch.linalg.slogdet(weight)
    x = torch.randn(2, channels, 3, 5, dtype=torch.float64)
    y, logdet = conv(x)
    np.testing.assert_allclose(logdet.detach().numpy(), 15 * float(logabsdet), rtol=1e-10)
    np.testing.assert_allclose(conv.inverse_weight().detach().numpy(), torch.linalg.inv(weight).numpy(),
                               rtol=1e-9, atol=1e-10)
    expected = np.einsum("ij,bjhw->bihw", weight.numpy(), x.numpy())
    np.testing.assert_allclose(y.detach().numpy(), expected, rtol=1e-12, atol=1e-12)
    back, inv = conv.inverse(y)
    np.testing.assert_allclose(back.detach().numpy(), x.numpy(), atol=1e-10)
    np.testing.assert_allclose(inv.detach().numpy(), -logdet.detach().numpy())


def test_frozen_conv_weight_cache_follows_parameter_updates():
    conv = InvertibleConv1x1(4, generator=torch.Generator().manual_seed(0)).double().requires_grad_(False)
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    conv(x)
    assert conv._frozen_cache is not None  # frozen: W and W^-1 are cached
    with torch.no_grad():
        conv.log_s.add_(0.5)
    conv.load_state_dict({k: v + 0.01 if k == "upper" else v for k, v in conv.state_dict().items()})
    expected = np.einsum("ij,bjhw->bihw", conv.weight().numpy(), x.numpy())
    np.testing.assert_allclose(conv(x)[0].numpy(), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(conv.inverse(conv(x)[0])[0].numpy(), x.numpy(), atol=1e-12)
    conv.requires_grad_(True)  # training: no cache, gradients reach the parameters
    conv(x)[0].sum().backward()
    assert conv.log_s.grad is not None and conv._frozen_cache is not None


def test_squeeze_matches_loops_and_rejects_odd_sizes():
    x = torch.randn(2, 3, 4, 6, dtype=torch.float64)
    y, logdet = Squeeze()(x)
    np.testing.assert_array_equal(y.numpy(), flows_squeeze_reference(x.numpy()))
    assert torch.equal(Squeeze().inverse(y)[0], x) and torch.equal(logdet, torch.zeros(2, dtype=torch.float64))
    with pytest.raises(ValueError, match="Squeeze: needs even height and width"):
        Squeeze().output_shape((1, 5, 4))


@pytest.mark.parametrize("learned", [True, False])
def test_split_standardises_with_the_learned_prior(learned):
    split = Split(5, learned_prior=learned).double()
    perturb(split, 0.3, 0)
    x = torch.randn(4, 5, 3, 3, dtype=torch.float64)
    keep, eps, logdet = split(x)
    assert keep.shape == (4, 3, 3, 3) and eps.shape == (4, 2, 3, 3)
    if learned:
        out = split.prior(keep).detach()
        mean, log_std = out[:, :2], out[:, 2:]
        np.testing.assert_allclose(eps.detach().numpy(), ((x[:, 3:] - mean) / torch.exp(log_std)).numpy(), rtol=1e-12)
        np.testing.assert_allclose(logdet.detach().numpy(), -log_std.sum(dim=(1, 2, 3)).numpy(), rtol=1e-12)
    back, inv = split.inverse(keep, eps)
    np.testing.assert_allclose(back.detach().numpy(), x.numpy(), atol=1e-12)
    np.testing.assert_allclose(inv.detach().numpy(), -logdet.detach().numpy(), atol=1e-12)


@pytest.mark.parametrize("kind", ["affine", "logit"])
def test_preprocess_logdet_is_the_diagonal_jacobian(kind):
    layer = Preprocess(kind, alpha=0.05)
    x = torch.rand(3, 2, 2, 2, dtype=torch.float64)
    u, logdet = layer(x)
    # The map is elementwise, so the Jacobian is diagonal: its entries are d u_i / d x_i.
    point = x.clone().requires_grad_(True)
    (derivative,) = torch.autograd.grad(layer(point)[0].sum(), point)
    np.testing.assert_allclose(logdet.numpy(), torch.log(derivative.abs()).flatten(1).sum(1).numpy(), rtol=1e-10)
    back, inv = layer.inverse(u)
    np.testing.assert_allclose(back.numpy(), x.numpy(), atol=1e-12)
    np.testing.assert_allclose(inv.numpy(), -logdet.numpy(), rtol=1e-10, atol=1e-12)


# ---- models -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name", list(tiny_models()))
def test_log_prob_matches_brute_force_change_of_variables(name, seed):
    model, x = initialised(name, seed, batch=3)
    d = model.latent_dim
    for i in range(x.shape[0]):
        point = x[i].flatten().clone()
        jacobian = torch.autograd.functional.jacobian(
            lambda v: model._forward(v.reshape((1,) + model.image_shape))[0].flatten(), point)
        sign, logabsdet = torch.linalg.slogdet(jacobian)
        z, logdet = model(x[i:i + 1])
        assert float(sign) != 0.0
        np.testing.assert_allclose(float(logdet.detach()), float(logabsdet), rtol=1e-9, atol=1e-9)
        expected = -0.5 * float(z.detach().square().sum()) - 0.5 * d * math.log(2 * math.pi) + float(logabsdet)
        np.testing.assert_allclose(float(model.log_prob(x[i:i + 1]).detach()), expected, rtol=1e-9, atol=1e-9)
    bpd = model.bits_per_dim(x)
    np.testing.assert_allclose(bpd.detach().numpy(),
                               ((-model.log_prob(x) / d + math.log(256)) / math.log(2)).detach().numpy(), rtol=1e-12)


@pytest.mark.parametrize("name", list(tiny_models()))
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
def test_round_trip_and_inverse_logdet(name, dtype, tol):
    model, x = initialised(name, 0, dtype=dtype)
    z, logdet = model(x)
    assert z.shape == (x.shape[0], model.latent_dim) and logdet.shape == (x.shape[0],)
    assert float(model.round_trip_error(x).max()) < tol
    back, inv_logdet = model.inverse(z, with_logdet=True)
    np.testing.assert_allclose(back.detach().numpy(), x.numpy(), atol=tol)
    np.testing.assert_allclose(inv_logdet.detach().numpy(), -logdet.detach().numpy(), rtol=tol * 10, atol=tol * 100)
    parts = model.latent_parts(z)
    assert sum(p[0].numel() for p in parts) == model.latent_dim
    assert torch.equal(torch.cat([p.flatten(1) for p in parts], 1), z)


@pytest.mark.parametrize("name", list(tiny_models()))
def test_mirrored_flow_is_the_density_of_flipped_images(name):
    """log p_mirrored(x) = log p(flip x) (a flip is a permutation: |det| = 1), the latent is the model's,
    its brute-force log-determinant agrees, and it shares the model's parameters."""
    model, x = initialised(name, 1, batch=3)
    mirrored = Mirrored(model)
    z, logdet = mirrored(x)
    z_flip, logdet_flip = model(x.flip(-1))
    assert torch.equal(z, z_flip) and torch.equal(logdet, logdet_flip)
    assert torch.equal(mirrored.log_prob(x), model.log_prob(x.flip(-1)))
    jacobian = torch.autograd.functional.jacobian(
        lambda v: mirrored._forward(v.reshape((1,) + model.image_shape))[0].flatten(), x[0].flatten().clone())
    np.testing.assert_allclose(float(logdet[0].detach()), float(torch.linalg.slogdet(jacobian)[1]), rtol=1e-9, atol=1e-9)
    back = mirrored.inverse(z)
    np.testing.assert_allclose(back.detach().numpy(), x.numpy(), atol=1e-12)
    assert torch.equal(mirrored.sample(2, seed=3), model.sample(2, seed=3).flip(-1))
    assert [p.data_ptr() for p in mirrored.parameters()] == [p.data_ptr() for p in model.parameters()]


def test_mirrored_flow_errors(tmp_path):
    # the model's own input checks apply: a logit preprocessing's domain is the open interval (0, 1)
    logit = Glow(1, 8, levels=2, depth=1, hidden=8, preprocess="logit", seed=0)
    outside = torch.full((2, 1, 8, 8), 0.5)
    outside[0, 0, 0, 0] = 1.5
    for method in ("log_prob", "forward"):
        with pytest.raises(ValueError, match=rf"Mirrored.{method}: 'x' must lie in \(-0.05556, 1.056\)"):
            getattr(Mirrored(logit), method)(outside)
    assert torch.isfinite(logit.log_prob(torch.full((2, 1, 8, 8), 0.5))).all()  # ActNorm not initialised on NaN
    with pytest.raises(TypeError, match="Mirrored: 'model' must be a pyinverse flow"):
        Mirrored(torch.nn.Linear(2, 2))
    with pytest.raises(TypeError, match="with a config"):  # save the model it mirrors instead
        save_flow(Mirrored(Glow(1, 4, levels=1, depth=1, hidden=4)), tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()


def test_glow_architecture_and_seeded_init():
    a, b = Glow(1, 8, levels=2, depth=3, hidden=8, seed=7), Glow(1, 8, levels=2, depth=3, hidden=8, seed=7)
    state = torch.random.get_rng_state()
    Glow(1, 8, levels=2, depth=3, hidden=8, seed=8)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global generator is left alone
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert a.part_shapes == [(2, 4, 4), (8, 2, 2)]
    # zero-initialised subnets: every coupling starts as the identity (tanh: s = 0, t = 0)
    coupling = next(m for m in a.modules() if isinstance(m, AffineCoupling))
    x = torch.randn(2, 4, 4, 4)
    y, logdet = coupling(x)
    assert torch.equal(y, x) and torch.equal(logdet, torch.zeros(2))


def test_sample_temperature_and_seed():
    model, _ = initialised("glow-affine-tanh", 0)
    a = model.sample(5, temperature=0.7, seed=3, clip=False)
    assert a.shape == (5, 1, 4, 4) and torch.equal(a, model.sample(5, temperature=0.7, seed=3, clip=False))
    # the documented draw: inverse(temperature * eps), eps from a CPU generator seeded with `seed`
    eps = torch.randn(5, 16, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    torch.testing.assert_close(a, model.inverse(0.7 * eps).detach(), rtol=1e-12, atol=1e-12)
    mode = model.sample(2, temperature=0.0, seed=1, clip=False)
    np.testing.assert_allclose(mode.numpy(), model.inverse(torch.zeros(2, 16, dtype=torch.float64)).detach().numpy())
    clipped = model.sample(50, temperature=3.0, seed=0)
    assert float(clipped.min()) >= 0.0 and float(clipped.max()) <= 1.0


def test_linear_flow_is_a_gaussian():
    generator = torch.Generator().manual_seed(0)
    matrix = torch.randn(6, 6, generator=generator, dtype=torch.float64) + 3 * torch.eye(6, dtype=torch.float64)
    mean = torch.randn(6, generator=generator, dtype=torch.float64)
    model = LinearFlow(matrix, (1, 2, 3), mean=mean)
    x = torch.randn(4, 1, 2, 3, generator=generator, dtype=torch.float64)
    covariance = (matrix @ matrix.T).numpy()
    centred = x.flatten(1).numpy() - mean.numpy()
    _, logdet = np.linalg.slogdet(2 * np.pi * covariance)
    expected = -0.5 * np.einsum("bi,ij,bj->b", centred, np.linalg.inv(covariance), centred) - 0.5 * logdet
    np.testing.assert_allclose(model.log_prob(x).detach().numpy(), expected, rtol=1e-10)
    with pytest.raises(ValueError, match="LinearFlow: 'matrix' is singular"):
        LinearFlow(torch.zeros(6, 6), (1, 2, 3))


@pytest.mark.parametrize("bad,error,match", [
    (torch.full((2, 1, 4, 4), float("nan"), dtype=torch.float64), ValueError, "non-finite"),
    (torch.rand(2, 1, 4, 5, dtype=torch.float64), ValueError, r"must have shape \(B, 1, 4, 4\)"),
    (torch.rand(0, 1, 4, 4, dtype=torch.float64), ValueError, "B >= 1"),
    (torch.rand(2, 1, 4, 4, dtype=torch.float32), TypeError, "dtype"),
    (np.zeros((2, 1, 4, 4)), TypeError, "torch tensor"),
])
def test_bad_images_give_clear_errors(bad, error, match):
    model, _ = initialised("glow-affine-tanh", 0)
    for method in (model.forward, model.log_prob, model.bits_per_dim, model.round_trip_error):
        with pytest.raises(error, match=match):
            method(bad)


def test_bad_latents_and_constructor_arguments():
    model, _ = initialised("glow-affine-tanh", 0)
    with pytest.raises(ValueError, match=r"Glow.inverse: 'z' must have shape \(B, 16\)"):
        model.inverse(torch.zeros(2, 15, dtype=torch.float64))
    with pytest.raises(ValueError, match="non-finite"):
        model.inverse(torch.full((1, 16), float("inf"), dtype=torch.float64))
    with pytest.raises(ValueError, match="divisible by 2\\*\\*levels"):
        Glow(1, 12, levels=3)
    with pytest.raises(ValueError, match="AffineCoupling: 'scale' must be one of"):
        Glow(1, 8, levels=1, depth=1, scale="relu")
    with pytest.raises(ValueError, match="Preprocess: 'kind'"):
        RealNVP(1, 4, preprocess="standardise")
    with pytest.raises(ValueError, match="a channel mask needs >= 2 channels"):
        AffineCoupling(1, 4, "channel")
    with pytest.raises(ValueError, match="'n' must be an int >= 1"):
        model.sample(0)


@pytest.mark.parametrize("seed", [-1, 1.5, "7", 2**64, None])
def test_sample_takes_integer_seeds_only(seed):
    model, _ = initialised("glow-affine-tanh", 0)
    if seed is None:  # numpy integers are integers: same draw as the Python int
        assert torch.equal(model.sample(np.int64(3), seed=np.int64(5)), model.sample(3, seed=5))
        return
    with pytest.raises(ValueError, match=r"Glow.sample: 'seed' must be an int in \[0, 2\*\*63\)"):
        model.sample(2, seed=seed)


def test_bits_per_dim_checks_num_levels():
    model, x = initialised("glow-affine-tanh", 0)
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match="Glow.bits_per_dim: 'num_levels' must be an int >= 1"):
            model.bits_per_dim(x, num_levels=bad)
    expected = (-model.log_prob(x) / 16 + math.log(4)) / math.log(2)
    torch.testing.assert_close(model.bits_per_dim(x, num_levels=np.int64(4)), expected)


@pytest.mark.parametrize("name", ["realnvp-2levels", "glow-logit-sigmoid"])
def test_logit_models_refuse_images_outside_the_logit_domain(name):
    model, x = initialised(name, 0)
    outside = x.clone()
    outside[0, 0, 0, 0] = 1.5  # the logit of a value past 1 + alpha / (1 - 2 alpha) is NaN
    for method in (model.forward, model.log_prob, model.bits_per_dim, model.round_trip_error):
        with pytest.raises(ValueError, match=r"'x' must lie in \(-0.05556, 1.056\).*got values in \[.*, 1.5\]"):
            method(outside)
    outside[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        model.log_prob(outside)
    # Inside the domain but past 1 (an unclipped sample) is fine, as with the affine Glow.
    inside = x.clone()
    inside[0, 0, 0, 0] = 1.03
    assert bool(torch.isfinite(model.log_prob(inside)).all())
    glow, y = initialised("glow-affine-tanh", 0)
    y[0, 0, 0, 0] = 1.5
    assert bool(torch.isfinite(glow.log_prob(y)).all())


def test_clamp_is_checked_at_construction(tmp_path):
    for cls, kwargs in ((Glow, dict(levels=1, depth=1)), (RealNVP, dict(levels=1, couplings=1))):
        for bad in (0, -1.0, float("nan"), float("inf"), "2"):
            with pytest.raises(ValueError, match=f"{cls.__name__}: 'clamp' must be a finite number > 0 for "
                                                 "scale='tanh'"):
                cls(1, 4, hidden=4, clamp=bad, **kwargs)
    with pytest.raises(ValueError, match="Glow: 'clamp' must be a number > 0 for scale='exp'"):
        Glow(1, 4, levels=1, depth=1, hidden=4, scale="exp", clamp=0)
    # "exp" and "sigmoid" do not use the clamp: inf is accepted, gives the same map, and round-trips a file.
    for scale in ("exp", "sigmoid"):
        unused = perturb(Glow(1, 4, levels=1, depth=2, hidden=4, scale=scale, clamp=float("inf")).double(), 0.1, 0)
        finite = perturb(Glow(1, 4, levels=1, depth=2, hidden=4, scale=scale, clamp=2.0).double(), 0.1, 0)
        x = torch.rand(3, 1, 4, 4, dtype=torch.float64)
        torch.testing.assert_close(unused.log_prob(x), finite.log_prob(x), rtol=0, atol=0)
    loaded, _ = load_flow(save_flow(unused, tmp_path / "unused_clamp.safetensors"))
    assert loaded.config["clamp"] == math.inf
    # load_flow gives a float32 model: equal up to float32 rounding
    torch.testing.assert_close(loaded.double().log_prob(x), unused.log_prob(x), rtol=1e-6, atol=1e-6)
    assert AffineCoupling(2, 4, clamp=np.float32(1.5)).clamp == 1.5


# ---- training and files --------------------------------------------------------------------------------------

def smooth_images(n, size, seed):
    """Images with structure a flow can learn quickly: random low-frequency patterns, 8-bit."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 1, 2, 2, generator=generator)
    images = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=True)
    return (torch.round(images * 255) / 255).numpy()


def tiny_glow():
    return Glow(1, 4, levels=2, depth=2, hidden=8, seed=0)


def test_dequantize_stays_in_its_bin():
    images = torch.from_numpy(smooth_images(8, 4, 0))
    levels = quantize_levels(images)
    values = dequantize(levels, torch.Generator().manual_seed(0), torch.float64)
    assert torch.equal(torch.floor(values * 256).to(torch.uint8), levels)
    assert float(values.min()) >= 0.0 and float(values.max()) < 1.0


def test_training_lowers_bits_per_dim_and_resume_is_exact(tmp_path):
    data, held = smooth_images(64, 4, 1), smooth_images(32, 4, 2)
    model = tiny_glow()
    before = evaluate_bpd(model.train(), held, seed=1)
    history = train_flow(model, data, epochs=4, batch_size=16, lr=5e-3, seed=3, checkpoint_dir=tmp_path / "a",
                         held_out=held, warmup_steps=4, progress=False, restore_best=False)
    assert history.steps == [4, 8, 12, 16] and len(history.checkpoints) == 4
    assert history.held_out_bpd[-1] < before - 0.3, (before, history.held_out_bpd)
    assert history.train_bpd[-1] < history.train_bpd[0]
    # The same run interrupted after 2 epochs and resumed gives the same weights.
    first = tiny_glow()
    train_flow(first, data, epochs=2, batch_size=16, lr=5e-3, seed=3, checkpoint_dir=tmp_path / "b", held_out=held,
               warmup_steps=4, progress=False, restore_best=False)
    resumed = tiny_glow()
    history_b = train_flow(resumed, data, epochs=4, batch_size=16, lr=5e-3, seed=3, checkpoint_dir=tmp_path / "b",
                           held_out=held, warmup_steps=4, progress=False, resume=True, restore_best=False)
    assert history_b.epochs == [1, 2, 3, 4]
    for key, value in model.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, rtol=1e-6, atol=1e-7)
    assert latest_checkpoint(tmp_path / "b").name == "step00000016.safetensors"
    # Checkpoints are never silently overwritten, and that is found before any training.
    rerun = tiny_glow()
    untouched = copy.deepcopy(rerun.state_dict())
    with pytest.raises(FileExistsError, match="step00000004.safetensors' exists; pass overwrite=True"):
        train_flow(rerun, data, epochs=1, batch_size=16, seed=3, checkpoint_dir=tmp_path / "a", progress=False)
    for key, value in untouched.items():
        assert torch.equal(rerun.state_dict()[key], value), key


def test_evaluate_bpd_checks_batch_size_and_seed():
    model, _ = initialised("glow-affine-tanh", 0)
    held = smooth_images(5, 4, 0).astype(np.float64)
    for bad in (-1, 0, 2.0, True):  # -1 returned 0.0 bits/dim, 0 a bare range() error
        with pytest.raises(ValueError, match="evaluate_bpd: 'batch_size' must be an int >= 1"):
            evaluate_bpd(model, held, batch_size=bad)
    with pytest.raises(ValueError, match=r"evaluate_bpd: 'seed' must be an int in \[0, 2\*\*63\)"):
        evaluate_bpd(model, held, seed=-1)
    # The batch size only bounds memory: per-image bits/dim averaged by hand agree.
    levels = quantize_levels(torch.from_numpy(held))
    x = dequantize(levels, torch.Generator().manual_seed(0), torch.float64)
    expected = float(model.bits_per_dim(x).detach().mean())
    assert evaluate_bpd(model, held, batch_size=np.int64(2)) == pytest.approx(expected, rel=1e-12)


def test_restore_best_keeps_the_best_held_out_epoch(tmp_path):
    data, held = smooth_images(64, 4, 1), smooth_images(16, 4, 2)
    model = tiny_glow()
    history = train_flow(model, data, epochs=3, batch_size=16, lr=5e-3, seed=0, held_out=held, warmup_steps=2,
                         progress=False)
    assert history.best_held_out_bpd == min(history.held_out_bpd)
    assert evaluate_bpd(model, held, seed=1) == pytest.approx(history.best_held_out_bpd, rel=1e-6)


def test_save_load_round_trip_and_validation(tmp_path):
    model, x = initialised("realnvp-2levels", 0, dtype=torch.float32)
    path = save_flow(model, tmp_path / "flow.safetensors", training={"note": "test"})
    loaded, info = load_flow(path)
    assert info == {"note": "test"} and loaded.config == model.config and not loaded.training
    torch.testing.assert_close(loaded.log_prob(x), model.log_prob(x), rtol=0, atol=0)
    with pytest.raises(FileExistsError):
        save_flow(model, path)
    save_flow(model, path, overwrite=True)
    # Truncated files at several points (header, data) give a clear error.
    raw = path.read_bytes()
    for cut in (4, 40, len(raw) // 2, len(raw) - 1):
        broken = tmp_path / f"cut{cut}.safetensors"
        broken.write_bytes(raw[:cut])
        with pytest.raises(ValueError, match="not a complete safetensors file"):
            load_flow(broken)
    with pytest.raises(FileNotFoundError, match="no flow file"):
        load_flow(tmp_path / "missing.safetensors")
    # A safetensors file that is not a flow, and a config that does not match the weights.
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"), metadata={"format": "something"})
    with pytest.raises(ValueError, match="not a pyinverse flow file"):
        load_flow(tmp_path / "other.safetensors")
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    config = dict(model.config, hidden=8)
    save_file(tensors, str(tmp_path / "mismatch.safetensors"),
              metadata={"format": "pyinverse.flow/1", "config": json.dumps(config)})
    with pytest.raises(ValueError, match="does not match RealNVP"):
        load_flow(tmp_path / "mismatch.safetensors")
    bad_values = dict(tensors)
    first = next(k for k, v in tensors.items() if v.is_floating_point())
    bad_values[first] = torch.full_like(tensors[first], float("nan"))
    save_file(bad_values, str(tmp_path / "nan.safetensors"),
              metadata={"format": "pyinverse.flow/1", "config": json.dumps(model.config)})
    with pytest.raises(ValueError, match="non-finite"):
        load_flow(tmp_path / "nan.safetensors")
    # Finite in the file's float64, inf in the float32 model: refused after the cast, not loaded as inf.
    huge = {k: v.double() if v.is_floating_point() else v for k, v in tensors.items()}
    huge[first] = torch.full_like(huge[first], 1e300)
    save_file(huge, str(tmp_path / "huge.safetensors"),
              metadata={"format": "pyinverse.flow/1", "config": json.dumps(model.config)})
    with pytest.raises(ValueError, match=f"beyond the range of the model's dtype in \\['{first}'\\]"):
        load_flow(tmp_path / "huge.safetensors")


def test_resume_refuses_another_architecture_and_model_files(tmp_path):
    data = smooth_images(32, 4, 0)
    train_flow(tiny_glow(), data, epochs=1, batch_size=16, seed=0, checkpoint_dir=tmp_path, progress=False)
    checkpoint = latest_checkpoint(tmp_path)
    other = Glow(1, 4, levels=2, depth=3, hidden=8, seed=0)
    with pytest.raises(ValueError, match="another architecture.*depth: file 2 vs model 3"):
        train_flow(other, data, epochs=2, batch_size=16, checkpoint_dir=tmp_path, resume=checkpoint, progress=False)
    # A refused resume leaves the model's weights as they were.
    plain = save_flow(tiny_glow(), tmp_path / "plain.safetensors")
    model = perturb(tiny_glow(), 0.1, 0)
    untouched = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="without training state"):
        train_flow(model, data, epochs=2, batch_size=16, resume=plain, progress=False)
    for key, value in untouched.items():
        assert torch.equal(model.state_dict()[key], value), key
    config, tensors, state, info = read_flow_file(checkpoint)
    assert {"rng", "counters"} <= set(state) and info["step"] == 2
    assert info["run"]["data"]["shape"] == [32, 1, 4, 4] and info["run"]["batch_size"] == 16


def test_resume_refuses_another_run(tmp_path):
    data = smooth_images(32, 4, 0)
    settings = dict(epochs=2, batch_size=16, lr=1e-3, seed=0, checkpoint_dir=tmp_path, progress=False)
    train_flow(tiny_glow(), data, **dict(settings, epochs=1))
    model = perturb(tiny_glow(), 0.1, 0)
    untouched = copy.deepcopy(model.state_dict())
    other = smooth_images(32, 4, 1)  # same shape, other images
    with pytest.raises(ValueError, match=r"belongs to another training run \(data: checkpoint \(32, 1, 4, 4\) images "
                                         r"with sha256 \w+\.\.\. vs now \(32, 1, 4, 4\) images.*"
                                         r"another checkpoint_dir \(--checkpoint-dir"):
        train_flow(model, other, resume=True, **settings)
    with pytest.raises(ValueError, match=r"another training run \(batch_size: checkpoint 16 vs now 8; "
                                         r"lr: checkpoint 0.001 vs now 0.002; seed: checkpoint 0 vs now 1\)"):
        train_flow(model, data, resume=True, **dict(settings, batch_size=8, lr=2e-3, seed=1))
    with pytest.raises(ValueError, match=r"held_out: checkpoint none vs now \(4, 1, 4, 4\) images"):
        train_flow(model, data, resume=True, held_out=data[:4], **settings)
    for key, value in untouched.items():
        assert torch.equal(model.state_dict()[key], value), key
    # A checkpoint without the run record (older files) cannot be checked, so it is refused too.
    config, tensors, state, info = read_flow_file(latest_checkpoint(tmp_path))
    del info["run"]
    old = tmp_path / "old" / "step00000002.safetensors"
    save_flow(tiny_glow(), old, training=info, train_state=state)
    with pytest.raises(ValueError, match="does not record the data and settings.*do not pass resume"):
        train_flow(model, data, resume=old, **dict(settings, checkpoint_dir=None))
    # Training state that lost its Adam moments, or holds keys this version does not write.
    config, tensors, state, info = read_flow_file(latest_checkpoint(tmp_path))
    for name, edit, match in (("no_adam", lambda st: {k: v for k, v in st.items() if not k.startswith("adam/")},
                               "at step 2 but holds no optimizer state"),
                              ("stray", lambda st: {**st, "adam/999/exp_avg": torch.zeros(1)},
                               r"unexpected training state \['adam/999/exp_avg'\]"),
                              ("nan_adam", lambda st: {**st, "adam/0/exp_avg": torch.full_like(st["adam/0/exp_avg"], float("nan"))},
                               "non-finite or negative optimizer state for parameter 0")):
        edited = tmp_path / name / "step00000002.safetensors"
        save_flow(tiny_glow(), edited, training=info, train_state=edit(state))
        with pytest.raises(ValueError, match=match):
            train_flow(tiny_glow(), data, resume=edited, **dict(settings, checkpoint_dir=None))
    # The same data and settings resume.
    history = train_flow(tiny_glow(), data, resume=True, **settings)
    assert history.epochs == [1, 2]


def test_save_flow_never_replaces_a_file_created_while_writing(tmp_path, monkeypatch):
    import safetensors.torch

    target = tmp_path / "flow.safetensors"
    real_save = safetensors.torch.save_file

    def racing_save(tensors, filename, metadata=None):
        real_save(tensors, filename, metadata=metadata)
        target.write_bytes(b"someone else's file")  # appears between the existence check and the move

    monkeypatch.setattr(safetensors.torch, "save_file", racing_save)
    with pytest.raises(FileExistsError, match="save_flow: .*flow.safetensors' exists; pass overwrite=True"):
        save_flow(tiny_glow(), target)
    assert target.read_bytes() == b"someone else's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flow.safetensors"]  # no temporary left


@pytest.mark.parametrize("data,error,match", [
    (np.full((8, 1, 4, 4), np.nan, dtype=np.float32), ValueError, "non-finite"),
    (np.full((8, 1, 4, 4), 1.5, dtype=np.float32), ValueError, r"must be in \[0, 1\]"),
    (np.zeros((8, 1, 4, 5), dtype=np.float32), ValueError, "must have shape"),
    (np.zeros((8, 1, 4, 4), dtype=np.uint8), TypeError, "floats"),
])
def test_train_flow_rejects_bad_data(data, error, match):
    with pytest.raises(error, match=match):
        train_flow(tiny_glow(), data, epochs=1, progress=False)


def test_training_divergence_is_reported():
    data = smooth_images(32, 4, 0)
    with pytest.raises(FloatingPointError, match="the loss became"):
        train_flow(Glow(1, 4, levels=1, depth=2, hidden=8, scale="exp"), data, epochs=20, batch_size=16, lr=1e4,
                   warmup_steps=0, grad_clip=math.inf, progress=False)


def test_build_flow_rejects_unknown_configs():
    with pytest.raises(ValueError, match="unknown model type"):
        build_flow({"type": "maf"})
    with pytest.raises(ValueError, match="does not describe a 'glow' model"):
        build_flow({"type": "glow", "in_channels": 1, "image_size": 8, "bogus": 1})


# ---- shipped models -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,shape", [("faces", (1, 24, 24)), ("patches", (1, 16, 16))])
def test_pretrained_models_load_and_match_their_record(name, shape):
    model = load_pretrained(name)
    assert model.image_shape == shape and not model.training
    info = model.training_info
    assert info["name"] == name and 0 < info["held_out_bpd"] < 8
    assert pretrained_path(name).stat().st_size < 3_000_000
    if name == "faces":
        from pyinverse.data import lfw_faces

        held = lfw_faces("faces")[80:, :, :24, :24]
    else:
        from pyinverse.data import photo_patches

        held = photo_patches("held_out", size=16, gray=True)
    # The recorded held-out bits/dim is what the shipped weights give (same noise seed).
    assert evaluate_bpd(model, held, seed=info["train_settings"]["seed"] + 1) == pytest.approx(info["held_out_bpd"],
                                                                                                abs=1e-3)
    x = torch.from_numpy(held[:8])
    assert float(model.round_trip_error(x).max()) < 1e-4
    with pytest.raises(ValueError, match="'name' must be one of"):
        load_pretrained("celeba")


@pytest.mark.parametrize("name", ["glow-affine-tanh", "realnvp-2levels"])
def test_memory_saving_backward_gives_the_same_gradients_with_less_saved(name):
    from pyinverse.flows.reversible import saved_tensor_bytes

    model, x = initialised(name, 0, batch=4)
    model.train()

    def loss_and_grads():
        model.zero_grad()
        loss = -model.log_prob(x).mean()
        loss.backward()
        return float(loss.detach()), [p.grad.clone() for p in model.parameters()]

    plain_loss, plain = loss_and_grads()
    _, plain_bytes = saved_tensor_bytes(lambda: -model.log_prob(x).mean())
    model.memory_saving = True
    saving_loss, saving = loss_and_grads()
    _, saving_bytes = saved_tensor_bytes(lambda: -model.log_prob(x).mean())
    assert saving_loss == pytest.approx(plain_loss, rel=1e-12)
    for a, b in zip(plain, saving):
        torch.testing.assert_close(b, a, rtol=1e-8, atol=1e-10)
    assert saving_bytes < plain_bytes / 2, (saving_bytes, plain_bytes)
    assert {k for k, _ in model.named_parameters()} == {k for k, _ in tiny_models()[name]().named_parameters()}


def test_load_refuses_weights_that_break_invertibility(tmp_path):
    """Finite weights of the right shapes can still make a layer non-invertible: a singular
    LinearFlow matrix, or 1x1-convolution buffers that are not a permutation, signs +-1, the mask."""
    from safetensors.torch import save_file

    cases = []
    linear = LinearFlow(torch.eye(4, dtype=torch.float64), (1, 2, 2))
    tensors = {k: v.contiguous() for k, v in linear.state_dict().items()}
    cases.append((linear, dict(tensors, matrix=torch.zeros(4, 4, dtype=torch.float64)), "singular 'matrix'"))
    glow = Glow(1, 4, levels=1, depth=1, hidden=4, seed=0)
    tensors = {k: v.contiguous() for k, v in glow.state_dict().items()}
    name = next(k for k in tensors if k.endswith(".permutation"))
    prefix = name[:-len("permutation")]
    cases.append((glow, dict(tensors, **{name: torch.full((4, 4), 0.25)}), "not a permutation matrix"))
    cases.append((glow, dict(tensors, **{prefix + "sign_s": torch.zeros(4)}), "values other than"))
    cases.append((glow, dict(tensors, **{prefix + "lower_mask": torch.ones(4, 4)}), "changed"))
    for i, (model, bad, message) in enumerate(cases):
        path = tmp_path / f"bad{i}.safetensors"
        save_file(bad, str(path), metadata={"format": "pyinverse.flow/1", "config": json.dumps(model.config)})
        with pytest.raises(ValueError, match=message):
            load_flow(path)
    good = tmp_path / "good.safetensors"
    save_file(tensors, str(good), metadata={"format": "pyinverse.flow/1", "config": json.dumps(glow.config)})
    load_flow(good)


def test_learned_prior_must_be_a_bool():
    with pytest.raises(ValueError, match="'learned_prior' must be a bool"):
        Glow(1, 4, levels=2, depth=1, hidden=4, learned_prior="no")
    with pytest.raises(ValueError, match="'learned_prior' must be a bool"):
        Split(4, learned_prior=1)


def test_resume_restores_a_best_epoch_that_was_not_checkpointed(tmp_path):
    """Evaluated every epoch, checkpointed every second: a run resumed after epoch 2 returns the
    same best weights and record as the uninterrupted run (the checkpoint carries the best epoch's
    weights when they are not its own)."""
    data, held = smooth_images(64, 4, 1), smooth_images(16, 4, 2)
    settings = dict(batch_size=8, lr=2e-2, seed=0, held_out=held, warmup_steps=0, checkpoint_every=2,
                    progress=False)
    whole = tiny_glow()
    expected = train_flow(whole, data, epochs=4, checkpoint_dir=tmp_path / "a", **settings)
    assert expected.best_epoch in (1, 3), expected.held_out_bpd  # the test needs an uncheckpointed best
    first, resumed = tiny_glow(), tiny_glow()
    train_flow(first, data, epochs=2, checkpoint_dir=tmp_path / "b", **settings)
    history = train_flow(resumed, data, epochs=4, checkpoint_dir=tmp_path / "b", resume=True, **settings)
    assert (history.best_epoch, history.best_held_out_bpd) == (expected.best_epoch, expected.best_held_out_bpd)
    for key, value in whole.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, rtol=1e-6, atol=1e-7)


def test_resume_refuses_fewer_epochs_and_the_largest_seed_trains(tmp_path):
    data, held = smooth_images(16, 4, 1), smooth_images(4, 4, 2)
    train_flow(tiny_glow(), data, epochs=2, batch_size=8, checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="is at epoch 2, past epochs=1"):
        train_flow(tiny_glow(), data, epochs=1, batch_size=8, checkpoint_dir=tmp_path, resume=True, progress=False)
    history = train_flow(tiny_glow(), data, epochs=1, batch_size=8, seed=2**63 - 1, held_out=held, progress=False)
    assert math.isfinite(history.held_out_bpd[0])  # its held-out evaluation used to get seed 2**63


@pytest.mark.parametrize("call, match", [
    (lambda: train_flow(tiny_glow(), smooth_images(8, 4, 0), lr=True, progress=False), "'lr' must be"),
    (lambda: train_flow(tiny_glow(), smooth_images(8, 4, 0), grad_clip=True, progress=False), "'grad_clip' must be"),
    (lambda: tiny_glow().sample(2, temperature=True), "'temperature' must be"),
    (lambda: Glow(1, 4, levels=1, depth=1, hidden=4, seed=-1), r"'seed' must be an int in \[0, 2\*\*63\)"),
    (lambda: Glow(1, 4, levels=1, depth=1, hidden=4, seed=True), r"'seed' must be an int in \[0, 2\*\*63\)"),
    (lambda: RealNVP(1, 4, seed=1.5), r"'seed' must be an int in \[0, 2\*\*63\)"),
    (lambda: RealNVP(1, 4, seed=2**70), r"'seed' must be an int in \[0, 2\*\*63\)"),
    (lambda: Glow(1, (8.9, 8), levels=1, depth=1, hidden=4), r"'image_size' must be an int or \(H, W\) ints"),
    (lambda: LinearFlow(torch.eye(4, dtype=torch.float64), (1, 2, 2), mean=[math.nan] * 4), "'mean' has non-finite"),
])
def test_flow_arguments_are_checked(call, match):
    """Booleans are not numbers, seeds are ints in range, sizes are not truncated, means are finite."""
    with pytest.raises((TypeError, ValueError), match=match):
        call()
