"""Shared fixtures: seeded generators whose seed is printed in the test id, and device skips."""
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
