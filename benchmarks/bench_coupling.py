"""Affine coupling: the fused kernel vs the same coupling in torch eager, and a flow's training step
with and without the activation-free (reversible) backward, side by side.

Run (figures below):
    OMP_NUM_THREADS=1 python -m pytest benchmarks/bench_coupling.py --benchmark-enable \
        --benchmark-group-by=param:case,param:op --benchmark-columns=median,iqr,min,rounds --benchmark-sort=mean
    python benchmarks/bench_coupling.py          # the memory table

Peers: "pyinverse" is pyinverse.ops.coupling (one fused pass per direction, logdet in the same
pass, fused backward); "torch eager" is FrEIA's coupling formula written in torch
(s = c tanh(h / c); y = x exp(s) + t; logdet = s.sum over (C, H, W)), autograd for the backward.
Both peers use OMP_NUM_THREADS threads; tensors are float32, C-contiguous, clamp 2, scale "tanh".
"forward+backward" is forward, then autograd backward of (y, logdet) with given gradients.

Training step ("flow16"): 16 AffineCouplingBlocks (conv subnet, 32 hidden channels) on
(8, 6, 32, 32), loss = mean(0.5 |y|^2 - logdet), forward + backward; "plain autograd" stores
activations, "reversible" is ReversibleSequence. extra_info holds the bytes saved for backward.

Measured 2026-11-23 with OMP_NUM_THREADS=1 on a quiet 2-core AMD EPYC (AVX2) VM (with 2 threads
torch's OpenMP spinning made torch eager 10-50x slower under load, so 1 thread is the fair run);
one full run, medians (min) in ms, 100 rounds a case (BENCHMARKS.md has four more runs of 64x12x32x32,
where forward+backward is 2.2-2.5x):
    case         op                 pyinverse        torch eager      speed-up (median / min)
    64x6x32x32   forward            0.74 (0.61)      2.95 (2.16)      4.0x / 3.5x
    64x6x32x32   inverse            0.84 (0.61)      3.14 (2.31)      3.7x / 3.8x
    64x6x32x32   forward+backward   1.65 (1.36)      4.72 (3.74)      2.9x / 2.8x
    64x12x32x32  forward            1.77 (1.36)      6.22 (4.82)      3.5x / 3.6x
    64x12x32x32  inverse            1.56 (1.21)      6.28 (5.21)      4.0x / 4.3x
    64x12x32x32  forward+backward   4.54 (2.95)      9.82 (7.98)      2.2x / 2.7x
    32x24x64x64  forward+backward   16.4 (12.7)      45.2 (37.7)      2.8x / 3.0x
    flow16       training step      plain autograd 143 (121), reversible 201 (196): 1.4x the time
On an Intel Xeon with AVX-512 torch eager is about 3x faster, and the kernel runs its 64-byte-vector
loops with fused multiply-adds (PYINVERSE_CPU_NO_AVX512=1 keeps the 32-byte ones): 64x12x32x32 forward 2.9x,
inverse 3.3-3.4x, forward+backward 2.7-2.8x eager's speed (BENCHMARKS.md, session 12).

Bytes autograd holds for backward (AffineCouplingBlock(6, 32) x depth on (8, 6, 32, 32) float32;
`python benchmarks/bench_coupling.py`): after the forward pass (saved_tensor_bytes), and the peak
over the whole training step (saved tensors alive at once, forward and backward):
    depth    after forward: plain / reversible     peak in the step: plain / reversible
      8          19.00 MiB / 0.19 MiB                   19.19 MiB / 2.38 MiB
     16          38.00 MiB / 0.19 MiB                   38.19 MiB / 2.38 MiB
     32          76.00 MiB / 0.19 MiB                   76.19 MiB / 2.38 MiB
The reversible step keeps only the flow's output between the passes, and one block's subnet
activations during its backward step: constant in depth. On CUDA, tests/test_reversible.py
compares torch.cuda.max_memory_allocated (GPU marker).
"""
import pytest

torch = pytest.importorskip("torch")

import pyinverse  # noqa: E402
from pyinverse.flows.reversible import AffineCouplingBlock, ReversibleSequence, saved_tensor_bytes  # noqa: E402
from pyinverse.ops.coupling import affine_coupling, affine_coupling_inverse  # noqa: E402

CLAMP = 2.0
CASES = {
    "64x6x32x32": (64, 6, 32, 32),
    "64x12x32x32": (64, 12, 32, 32),
    "32x24x64x64": (32, 24, 64, 64),
}
OPS = ["forward", "inverse", "forward+backward"]
FLOW_INPUT = (8, 6, 32, 32)
PEERS = ["pyinverse", "torch eager"]


def torch_coupling(x_b, h, t, clamp=CLAMP):
    """FrEIA's coupling (GLOWCouplingBlock._coupling2 with the RealNVP tanh soft clamp) in torch."""
    s = clamp * torch.tanh(h / clamp)
    return x_b * torch.exp(s) + t, s.sum(dim=tuple(range(1, s.dim())))


def torch_coupling_inverse(y_b, h, t, clamp=CLAMP):
    s = clamp * torch.tanh(h / clamp)
    return (y_b - t) * torch.exp(-s), -s.sum(dim=tuple(range(1, s.dim())))


@pytest.fixture(scope="module", autouse=True)
def same_threads():
    """Both peers use OMP_NUM_THREADS threads (torch's default); pyinverse reads it too."""
    pyinverse.set_num_threads(torch.get_num_threads())


@pytest.fixture(scope="module")
def tensors():
    generator = torch.Generator().manual_seed(0)
    out = {}
    for name, shape in CASES.items():
        x, h, t, grad_y = (torch.randn(shape, generator=generator) for _ in range(4))
        out[name] = (x, 2 * h, t, grad_y, torch.randn(shape[0], generator=generator))
    return out


@pytest.mark.parametrize("peer", PEERS)
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("case", list(CASES))
def test_coupling(benchmark, tensors, case, op, peer):
    x, h, t, grad_y, grad_logdet = tensors[case]
    forward = affine_coupling if peer == "pyinverse" else torch_coupling
    inverse = affine_coupling_inverse if peer == "pyinverse" else torch_coupling_inverse
    if op == "forward":
        fn = lambda: forward(x, h, t)  # noqa: E731
    elif op == "inverse":
        fn = lambda: inverse(x, h, t)  # noqa: E731
    else:
        leaves = [a.clone().requires_grad_(True) for a in (x, h, t)]

        def fn():
            y, logdet = forward(*leaves)
            torch.autograd.backward((y, logdet), (grad_y, grad_logdet))
            for leaf in leaves:
                leaf.grad = None

    benchmark.pedantic(fn, rounds=100, warmup_rounds=10)


def make_flow(depth, reversible, channels=6, hidden=32):
    torch.manual_seed(0)
    return ReversibleSequence([AffineCouplingBlock(channels, hidden) for _ in range(depth)], reversible=reversible)


def training_step(flow, x):
    flow.zero_grad(set_to_none=True)
    y, logdet = flow(x)
    loss = (0.5 * y.square().flatten(1).sum(1) - logdet).mean()
    loss.backward()
    return loss


@pytest.mark.parametrize("peer", ["plain autograd", "reversible"])
@pytest.mark.parametrize("op", ["training step"])
@pytest.mark.parametrize("case", ["flow16"])
def test_training_step(benchmark, case, op, peer):
    flow = make_flow(16, peer == "reversible")
    x = torch.randn(*FLOW_INPUT, generator=torch.Generator().manual_seed(1))
    _, nbytes = saved_tensor_bytes(lambda: flow(x))
    benchmark.extra_info["saved_tensor_bytes"] = nbytes
    benchmark.pedantic(lambda: training_step(flow, x), rounds=5, warmup_rounds=1)


def _eager_coupling(x_b, h, t, clamp=CLAMP, scale="tanh"):
    """The layer's call with the coupling in torch eager (tanh scale, as the Glow below uses)."""
    assert scale == "tanh"
    y, logdet = torch_coupling(x_b, h, t, clamp)
    return y, logdet


@pytest.mark.parametrize("peer", ["fused kernel", "torch eager coupling"])
@pytest.mark.parametrize("op", ["training step"])
@pytest.mark.parametrize("case", ["glow 3x32x32 L3 K4 h64 B16"])
def test_glow_training_step(benchmark, monkeypatch, case, op, peer):
    """One Glow training step (bits/dim loss, backward, Adam) with our coupling or torch eager's."""
    from pyinverse.flows import Glow
    from pyinverse.ops import coupling as coupling_module

    if peer == "torch eager coupling":
        monkeypatch.setattr(coupling_module, "affine_coupling", _eager_coupling)
    torch.manual_seed(0)
    model = Glow(3, 32, levels=3, depth=4, hidden=64, scale="tanh", clamp=CLAMP)
    x = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.bits_per_dim(x)  # data-dependent actnorm initialisation outside the timing

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = model.bits_per_dim(x).mean()
        loss.backward()
        optimizer.step()
        return loss

    benchmark.pedantic(step, rounds=5, warmup_rounds=1)


class _Packed:
    __slots__ = ("tensor", "__weakref__")

    def __init__(self, tensor):
        self.tensor = tensor


def peak_saved_bytes(fn):
    """Largest number of bytes held by autograd for backward at any moment while fn() runs
    (forward and backward): storages are counted once, from their first save until the last
    graph node holding them is freed. A device-independent proxy of peak activation memory."""
    import weakref

    live, counts, state = {}, {}, {"bytes": 0, "peak": 0}

    def release(key):
        counts[key] -= 1
        if counts[key] == 0:
            state["bytes"] -= live.pop(key)
            del counts[key]

    def pack(tensor):
        if isinstance(tensor, torch.nn.Parameter):
            return tensor
        storage = tensor.untyped_storage()
        key = (tensor.device, storage.data_ptr())
        if key not in counts:
            counts[key] = 0
            live[key] = storage.nbytes()
            state["bytes"] += live[key]
            state["peak"] = max(state["peak"], state["bytes"])
        counts[key] += 1
        packed = _Packed(tensor)
        weakref.finalize(packed, release, key)
        return packed

    def unpack(packed):
        return packed if isinstance(packed, torch.Tensor) else packed.tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
        fn()
    return state["peak"]


def memory_table(depths=(8, 16, 32)):
    """Rows (depth, plain saved, reversible saved, plain peak, reversible peak) in bytes."""
    x = torch.randn(*FLOW_INPUT, generator=torch.Generator().manual_seed(1))
    rows = []
    for depth in depths:
        saved, peaks = [], []
        for reversible in (False, True):
            flow = make_flow(depth, reversible)
            _, nbytes = saved_tensor_bytes(lambda: flow(x))
            saved.append(nbytes)
            peaks.append(peak_saved_bytes(lambda: training_step(flow, x)))
        rows.append((depth, *saved, *peaks))
    return rows


if __name__ == "__main__":
    print("depth  saved after forward (plain / reversible)   peak during the step (plain / reversible)")
    for depth, plain, reversible, plain_peak, reversible_peak in memory_table():
        print(f"{depth:5d} {plain / 2**20:12.2f} MiB {reversible / 2**20:10.2f} MiB "
              f"{plain_peak / 2**20:14.2f} MiB {reversible_peak / 2**20:10.2f} MiB")
