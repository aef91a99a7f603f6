"""Shared fixtures: seeded generators whose seed is printed in the test id, device skips, and one
`pyinverse run --quick` for every test of its report."""
import contextlib
import io

import numpy as np
import pytest

import pyinverse


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return pyinverse._C.built_with_cuda() and torch.cuda.is_available() and pyinverse._C.cuda_device_count() > 0


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device and a CUDA build of pyinverse")
    if not cuda_available():
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip_gpu)


@pytest.fixture(params=[0, 1, 2], ids=lambda s: f"seed{s}")
def rng(request):
    return np.random.default_rng(request.param)


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory):
    """One ``pyinverse run --quick`` shared by the tests of its report: (output folder, printed text)."""
    from pyinverse.cli import main

    out = tmp_path_factory.mktemp("quick") / "run"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["run", "--quick", "--out", str(out)]) == 0
    return out, printed.getvalue()
