"""Version, build configuration and the CPU thread count."""
from __future__ import annotations

import platform
import sys

from . import _C

__version__: str = _C.version()


def get_num_threads() -> int:
    """Threads the CPU kernels use (``OMP_NUM_THREADS`` or the usable CPUs unless set)."""
    return _C.get_num_threads()


def set_num_threads(n: int | None) -> None:
    """Set the CPU kernels' thread count; ``None`` or 0 restores the default."""
    if n is None:
        n = 0
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"set_num_threads: 'n' must be a non-negative int or None, got {n!r}")
    _C.set_num_threads(n)


def config() -> dict:
    """The build and runtime configuration as a dict (what ``show_config`` prints)."""
    info = dict(_C.build_info())
    info.update(
        version=__version__,
        python=sys.version.split()[0],
        platform=platform.platform(),
        num_threads=get_num_threads(),
        cuda_devices=_C.cuda_device_count() if info["cuda"] else 0,
    )
    for name in ("numpy", "torch", "cupy"):
        module = sys.modules.get(name)
        if module is None and name != "cupy":
            try:
                module = __import__(name)
            except ImportError:
                module = None
        info[name] = getattr(module, "__version__", None) if module else None
    return info


def show_config() -> None:
    """Print which backends were compiled, the CUDA architectures and the thread count."""
    for key, value in config().items():
        print(f"{key:>16}: {value}")
