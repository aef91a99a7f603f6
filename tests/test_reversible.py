"""pyinverse.flows.reversible: coupling blocks against brute-force Jacobians, and the
activation-free backward against the plain stored-activation backward (float64, depth 8)."""
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from pyinverse.flows.reversible import AffineCouplingBlock, ReversibleSequence, saved_tensor_bytes  # noqa: E402


def perturb(module, generator, scale=0.2):
    """Random weights everywhere (the zero-initialised last layers included), so that the
    couplings are far from the identity: at depth 8 the logdets reach 20-35 per sample while
    |y| stays below ~30. (At scale 0.3 |y| reaches ~900 and inverting the flow itself loses
    1e-10: that is the flow's conditioning, which any reconstruction inherits.)"""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return module


class ElementwiseAffine(nn.Module):
    """An invertible layer without a fused backward step: y = x exp(a) + b per channel."""

    def __init__(self, channels):
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.shift = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x):
        logdet = self.log_scale.sum() * x.shape[2] * x.shape[3]
        return x * torch.exp(self.log_scale) + self.shift, logdet.expand(x.shape[0])

    def inverse(self, y):
        logdet = -self.log_scale.sum() * y.shape[2] * y.shape[3]
        return (y - self.shift) * torch.exp(-self.log_scale), logdet.expand(y.shape[0])


def make_flow(depth, kind, seed, scale="tanh", generic_every=0):
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    blocks = []
    for index in range(depth):
        if generic_every and index % generic_every == generic_every - 1:
            blocks.append(ElementwiseAffine(4))
        else:
            blocks.append(AffineCouplingBlock(4, hidden=8, subnet=kind, scale=scale, clamp=1.5))
    flow = ReversibleSequence(blocks).double()
    return perturb(flow, generator)


def inputs(kind, seed, batch=3):
    generator = torch.Generator().manual_seed(seed + 100)
    shape = (batch, 4, 5, 6) if kind == "conv" else (batch, 4)
    return torch.randn(shape, generator=generator, dtype=torch.float64)


def gradients(flow, x, reversible, use_y=True, use_logdet=True):
    flow.reversible = reversible
    flow.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    y, logdet = flow(x)
    weights = torch.linspace(-1, 1, y.numel(), dtype=y.dtype).reshape(y.shape)
    loss = 0.0
    if use_y:
        loss = loss + (weights * y * y).sum() + y.sin().sum()
    if use_logdet:
        loss = loss + (logdet * torch.arange(1.0, len(logdet) + 1, dtype=y.dtype)).sum()
    loss.backward()
    return y.detach(), logdet.detach(), x.grad, [p.grad for p in flow.parameters()]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("kind, scale, generic_every",
                         [("conv", "tanh", 0), ("mlp", "atan", 0), ("mlp", "sigmoid", 0), ("mlp", "exp", 0),
                          ("conv", "tanh", 3)], ids=["conv-tanh", "mlp-atan", "mlp-sigmoid", "mlp-exp", "conv-generic"])
def test_reversible_gradients_equal_plain_at_depth_8(seed, kind, scale, generic_every):
    flow = make_flow(8, kind, seed, scale, generic_every)
    x = inputs(kind, seed)
    y_plain, logdet_plain, grad_x_plain, grads_plain = gradients(flow, x, reversible=False)
    y_rev, logdet_rev, grad_x_rev, grads_rev = gradients(flow, x, reversible=True)
    torch.testing.assert_close(y_rev, y_plain, rtol=0, atol=0)
    torch.testing.assert_close(logdet_rev, logdet_plain, rtol=0, atol=0)
    torch.testing.assert_close(grad_x_rev, grad_x_plain, rtol=1e-10, atol=1e-10)
    assert len(grads_rev) == len(grads_plain)
    for mine, theirs in zip(grads_rev, grads_plain):
        torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("use_y, use_logdet", [(True, False), (False, True)], ids=["y-only", "logdet-only"])
def test_reversible_with_one_output_used(use_y, use_logdet):
    flow = make_flow(4, "mlp", 5)
    x = inputs("mlp", 5)
    plain = gradients(flow, x, False, use_y, use_logdet)
    rev = gradients(flow, x, True, use_y, use_logdet)
    torch.testing.assert_close(rev[2], plain[2], rtol=1e-10, atol=1e-10)
    for mine, theirs in zip(rev[3], plain[3]):
        torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-10)


def test_only_the_output_is_stored():
    nbytes = {}
    for depth in (8, 16):
        flow = make_flow(depth, "conv", 0)
        x = inputs("conv", 0).requires_grad_(True)
        for reversible in (False, True):
            flow.reversible = reversible
            (y, _), nbytes[depth, reversible] = saved_tensor_bytes(lambda: flow(x))
    y_bytes = y.numel() * y.element_size()
    assert nbytes[8, True] == nbytes[16, True] == y_bytes
    # Plain autograd keeps every block's input, subnet activations and coupling operands.
    assert nbytes[8, False] > 8 * y_bytes
    assert nbytes[16, False] > 1.8 * nbytes[8, False]


@pytest.mark.parametrize("kind", ["conv", "mlp"])
def test_block_logdet_is_the_log_abs_det_jacobian(kind):
    generator = torch.Generator().manual_seed(3)
    channels = 5  # odd: x_a has 2 channels, x_b 3
    block = perturb(AffineCouplingBlock(channels, hidden=6, subnet=kind, kernel_size=3), generator).double()
    shape = (1, channels, 2, 3) if kind == "conv" else (1, channels)
    x = torch.randn(shape, generator=generator, dtype=torch.float64)
    y, logdet = block(x)
    jacobian = torch.autograd.functional.jacobian(lambda v: block(v.reshape(shape))[0].reshape(-1), x.reshape(-1))
    sign, log_abs_det = torch.linalg.slogdet(jacobian)
    assert sign != 0
    torch.testing.assert_close(logdet[0], log_abs_det, rtol=1e-10, atol=1e-10)
    x_back, logdet_inverse = block.inverse(y)
    torch.testing.assert_close(x_back, x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(logdet_inverse, -logdet, rtol=0, atol=0)


def test_new_block_is_a_channel_swap():
    block = AffineCouplingBlock(4, hidden=8)
    x = torch.randn(2, 4, 3, 3)
    y, logdet = block(x)
    torch.testing.assert_close(y, torch.cat([x[:, 2:], x[:, :2]], 1), rtol=0, atol=0)
    torch.testing.assert_close(logdet, torch.zeros(2), rtol=0, atol=0)


def test_sequence_inverse_and_no_grad_forward():
    flow = make_flow(6, "conv", 2)
    x = inputs("conv", 2)
    with torch.no_grad():
        y, logdet = flow(x)
    x_back, logdet_inverse = flow.inverse(y)
    torch.testing.assert_close(x_back, x, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(logdet_inverse, -logdet, rtol=1e-12, atol=1e-12)


def test_bad_arguments():
    with pytest.raises(ValueError, match="ReversibleSequence: 'blocks' is empty"):
        ReversibleSequence([])
    with pytest.raises(TypeError, match=r"ReversibleSequence: block 1 \(Linear\) must be an nn.Module with"):
        ReversibleSequence([AffineCouplingBlock(4), nn.Linear(4, 4)])
    with pytest.raises(ValueError, match=r"AffineCouplingBlock: 'x' must have shape \(B, C, H, W\) with C = 4"):
        AffineCouplingBlock(4)(torch.randn(2, 3, 5, 5))
    with pytest.raises(ValueError, match="'channels' must be an int >= 2"):
        AffineCouplingBlock(1)
    with pytest.raises(ValueError, match="'scale' must be one of"):
        AffineCouplingBlock(4, scale="relu")
    with pytest.raises(ValueError, match="'subnet' must be 'conv' or 'mlp'"):
        AffineCouplingBlock(4, subnet="transformer")
    for bad in (0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="AffineCouplingBlock: 'clamp' must be a finite number > 0 for scale="):
            AffineCouplingBlock(4, clamp=bad)


@pytest.mark.parametrize("scale", ["exp", "sigmoid"])
def test_unused_clamp_may_be_infinite(scale):
    # These scale functions ignore the clamp: an infinite one gives the same block as a finite one,
    # backward included.
    generator = torch.Generator().manual_seed(0)
    unused = perturb(AffineCouplingBlock(4, 8, scale=scale, clamp=float("inf")).double(), generator)
    finite = AffineCouplingBlock(4, 8, scale=scale, clamp=1.5).double()
    finite.load_state_dict(unused.state_dict())
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    for block in (unused, finite):
        block.zero_grad()
        y, logdet = ReversibleSequence([block])(x)
        (y.square().sum() - logdet.sum()).backward()
    torch.testing.assert_close(unused(x)[0], finite(x)[0], rtol=0, atol=0)
    for a, b in zip(unused.parameters(), finite.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=0)


@pytest.mark.gpu
def test_cuda_peak_memory_is_lower():
    flow = make_flow(16, "conv", 0).float().cuda()
    x = torch.randn(32, 4, 32, 32, device="cuda")
    peaks = {}
    for reversible in (False, True):
        flow.reversible = reversible
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        y, logdet = flow(x.requires_grad_(True))
        (y.square().sum() - logdet.sum()).backward()
        torch.cuda.synchronize()
        peaks[reversible] = torch.cuda.max_memory_allocated() - base
        x.grad = None
    assert peaks[True] < 0.5 * peaks[False]


def test_generic_step_takes_layers_with_a_constant_logdet():
    """Squeeze's logdet is a constant (no graph): the generic backward step must still work."""
    from pyinverse.flows.layers import ActNorm, Squeeze

    torch.manual_seed(3)
    blocks = [Squeeze(), AffineCouplingBlock(8, 16), ActNorm(8), AffineCouplingBlock(8, 16)]
    flow = ReversibleSequence(blocks).double()
    x = torch.randn(3, 2, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        flow(x)  # ActNorm's data-dependent initialisation, outside the comparison
    plain = gradients(flow, x, False)
    rev = gradients(flow, x, True)
    torch.testing.assert_close(rev[2], plain[2], rtol=1e-10, atol=1e-10)
    for mine, theirs in zip(rev[3], plain[3]):
        torch.testing.assert_close(mine, theirs, rtol=1e-10, atol=1e-10)
