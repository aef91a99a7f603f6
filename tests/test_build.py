"""The built module: its configuration report, its exported symbols, and import order with torch."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import pyinverse  # noqa: F401  (the build under test)
from pyinverse import _C

ROOT = Path(__file__).resolve().parents[1]


def test_config_reports_the_build():
    from pyinverse._config import config

    info = config()
    assert info["version"] == pyinverse.__version__
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert f'version = "{pyinverse.__version__}"' in pyproject
    assert isinstance(info["cuda"], bool) and info["num_threads"] == pyinverse.get_num_threads() >= 1
    assert info["cuda_devices"] == (_C.cuda_device_count() if info["cuda"] else 0)


def test_module_exports_only_its_init_function():
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("needs binutils' nm")
    listing = subprocess.run([nm, "-D", "--defined-only", _C.__file__], capture_output=True, text=True, check=True)
    symbols = {line.split()[-1] for line in listing.stdout.splitlines() if line.strip()}
    assert symbols == {"PyInit__C"}, sorted(symbols)[:20]


@pytest.mark.parametrize("first", ["pyinverse._C", "torch"])
def test_torch_imports_after_or_before_the_module(first):
    """`pyinverse config` touches the CUDA runtime, then imports torch: that order once crashed."""
    second = "torch" if first == "pyinverse._C" else "pyinverse._C"
    code = (f"import {first}, {second}; import pyinverse._C as C; C.build_info(); C.cuda_device_count(); "
            "import torch.ao.quantization; print(torch.ones(2).sum().item())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "2.0"
    cli = subprocess.run([sys.executable, "-m", "pyinverse", "config"], capture_output=True, text=True, cwd=ROOT,
                         timeout=300)
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert re.search(r"version: " + re.escape(pyinverse.__version__), cli.stdout)


def test_top_level_exports_the_kernels_without_importing_torch():
    code = ("import sys, pyinverse; missing = [n for n in pyinverse.__all__ if not hasattr(pyinverse, n)]; "
            "print(missing, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[] False"  # drop-in kernels: numpy users do not pay for torch
    for name in ("quantile", "sqrtm_spd", "affine_coupling", "frechet_distance"):
        assert name in pyinverse.__all__


@pytest.mark.parametrize("env, expected", [("3", 3), ("1", 1), (None, None)])
def test_thread_count_default_and_restore(env, expected):
    """The default follows OMP_NUM_THREADS (else the CPUs this process may use); set_num_threads(n)
    overrides it and None or 0 restore it. In a fresh process: the default is read at load."""
    import os

    code = ("import os, pyinverse; d = pyinverse.get_num_threads(); pyinverse.set_num_threads(5); a = "
            "pyinverse.get_num_threads(); pyinverse.set_num_threads(None); b = pyinverse.get_num_threads(); "
            "pyinverse.set_num_threads(7); pyinverse.set_num_threads(0); c = pyinverse.get_num_threads(); "
            "print(d, a, b, c, len(os.sched_getaffinity(0)))")
    environment = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if env is not None:
        environment["OMP_NUM_THREADS"] = env
    default, overridden, after_none, after_zero, usable = map(int, subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=environment,
        cwd=ROOT).stdout.split())
    assert default == (expected if expected is not None else usable)
    assert overridden == 5 and after_none == after_zero == default
    with pytest.raises(ValueError, match="set_num_threads: 'n' must be a non-negative int or None"):
        pyinverse.set_num_threads(-1)


def test_negated_torch_views_are_read_as_their_values():
    """A tensor with torch's negative bit (here from .conj().imag) stores -x in its memory: every
    kernel entry point must see x (numpy float64 references), and an out= of that kind is refused."""
    import numpy as np
    import torch

    from pyinverse.knn import DCIIndex, batched_nearest, exact_knn
    from pyinverse.ops.coupling import affine_coupling, affine_coupling_vjp

    def negated_view(t):
        view = torch.complex(torch.zeros_like(t), -t).conj().imag
        assert view.is_neg() and torch.equal(view, t)
        return view

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(50, 4, generator=generator, dtype=torch.float64) + 3
    np.testing.assert_array_equal(pyinverse.quantile(negated_view(x), 0.5).numpy(), np.quantile(x.numpy(), 0.5, axis=0))
    np.testing.assert_allclose(pyinverse.sample_stats(negated_view(x), q=None).mean.numpy(), x.numpy().mean(0))
    spd = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
    root = pyinverse.sqrtm_spd(negated_view(spd))
    np.testing.assert_allclose((root @ root).numpy(), spd.numpy(), rtol=1e-12)
    x_b, h, t = (torch.randn(2, 3, 4, 4, generator=generator, dtype=torch.float64) for _ in range(3))
    y, logdet = affine_coupling(negated_view(x_b), negated_view(h), negated_view(t))
    s = 2 * np.tanh(h.numpy() / 2)
    np.testing.assert_allclose(y.numpy(), x_b.numpy() * np.exp(s) + t.numpy(), rtol=1e-12)
    np.testing.assert_allclose(logdet.numpy(), s.sum(axis=(1, 2, 3)), rtol=1e-12)
    grad_y = torch.randn(y.shape, generator=generator, dtype=torch.float64)
    leaf = x_b.clone().requires_grad_(True)
    affine_coupling(leaf, h, t).output.backward(negated_view(grad_y))
    np.testing.assert_allclose(leaf.grad.numpy(), grad_y.numpy() * np.exp(s), rtol=1e-12)
    grad_logdet = torch.tensor([1.0, -2.0], dtype=torch.float64)
    grads = affine_coupling_vjp(negated_view(grad_y), negated_view(grad_logdet), h, t, x_b=x_b)
    np.testing.assert_allclose(grads.grad_input.numpy(), grad_y.numpy() * np.exp(s), rtol=1e-12)
    slope = 1 - (s / 2) ** 2
    expected_grad_h = (grad_y.numpy() * x_b.numpy() * np.exp(s) + grad_logdet.numpy()[:, None, None, None]) * slope
    np.testing.assert_allclose(grads.grad_h.numpy(), expected_grad_h, rtol=1e-9, atol=1e-12)
    points, queries = torch.randn(100, 8, generator=generator), torch.randn(5, 8, generator=generator)
    expected = np.argsort(((queries.double().numpy()[:, None] - points.double().numpy()[None]) ** 2).sum(-1), axis=1)[:, :3]
    np.testing.assert_array_equal(exact_knn(negated_view(points), negated_view(queries), 3)[1].numpy(), expected)
    index = DCIIndex(8, seed=0)
    index.add(negated_view(points))
    np.testing.assert_array_equal(index.search(negated_view(queries), 3, exact=True)[1].numpy(), expected)
    candidates, targets = torch.randn(4, 6, 8, generator=generator), torch.randn(4, 8, generator=generator)
    nearest = ((candidates.double() - targets.double()[:, None]) ** 2).sum(-1).argmin(1)
    np.testing.assert_array_equal(batched_nearest(negated_view(candidates), negated_view(targets))[0].numpy(),
                                  nearest.numpy())
    with pytest.raises(ValueError, match="'out' is a negated view"):
        pyinverse.quantile(x, [0.5], out=negated_view(torch.zeros(1, 4, dtype=torch.float64)))


def test_tensors_without_storage_are_named():
    """Inside torch.func transforms the kernels cannot read memory: a TypeError says so."""
    import torch

    from pyinverse.ops.coupling import affine_coupling

    with pytest.raises(TypeError, match="quantile: 'a' is a tensor without storage"):
        torch.func.vmap(lambda t: pyinverse.quantile(t, 0.5))(torch.randn(3, 10, 4))
    with pytest.raises(TypeError, match="affine_coupling: 'x_b' is a tensor without storage"):
        torch.func.vmap(lambda a: affine_coupling(a, a, a).output)(torch.randn(2, 3, 4))


@pytest.mark.parametrize("nbytes", [0, 1, (4 << 20) + 12345, 9 << 20])
def test_fresh_torch_outputs_keep_their_values_with_huge_page_advice(nbytes):
    """allocate() advises huge pages on large fresh torch outputs: advice only, so a buffer of any
    size or alignment (the advised range is its 2 MiB-aligned interior) reads back what was written,
    and the output is an ordinary, resizable torch tensor."""
    import numpy as np
    import torch

    from pyinverse._backend import allocate, describe

    like = describe(torch.zeros(1), "a", "test")
    out, _ = allocate(like, (nbytes // 4,), np.float32)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.is_contiguous()
    values = torch.arange(out.numel(), dtype=torch.float32)
    out.copy_(values)
    assert torch.equal(out, values)
    _C.advise_huge_pages(out.data_ptr() + 3, max(nbytes - 3, 0))  # unaligned: still only advice
    assert torch.equal(out, values)
    out.resize_(out.numel() + 1)  # torch owns the storage (an array allocated by numpy would not resize)


@pytest.mark.parametrize("setting, advised", [(None, True), ("0", False), ("1", True)])
def test_huge_page_advice_follows_its_environment_switch(setting, advised, monkeypatch):
    """PYINVERSE_MADVISE_HUGEPAGE=0 (read at import, like numpy's NUMPY_MADVISE_HUGEPAGE) turns the
    advice off; small outputs are never advised."""
    env = {k: v for k, v in os.environ.items() if k != "PYINVERSE_MADVISE_HUGEPAGE"}
    if setting is not None:
        env["PYINVERSE_MADVISE_HUGEPAGE"] = setting
    code = ("import types, numpy as np, torch; from pyinverse import _backend as b; calls = [];"
            "b._C = types.SimpleNamespace(advise_huge_pages=lambda *a: calls.append(a));"
            "like = b.describe(torch.zeros(1), 'a', 't'); b.allocate(like, (1 << 20,), np.float32);"
            "b.allocate(like, (1000,), np.float32); print(len(calls))")
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ("1" if advised else "0")
