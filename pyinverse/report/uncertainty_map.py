"""Uncertainty maps: interval width as a bright colour over the dimmed mean image.

As in the figures of Peng, Moazeni & Li (NeurIPS 2023 workshop) after Conffusion: the posterior
mean is shown in gray at reduced brightness and each pixel's interval width is drawn on top in a
sequential colormap (magma by default), so wider intervals are brighter. The blend is a
"screen" (``1 - (1 - base)(1 - colour)``): the result's luminance grows with both the base and
the colour's luminance, which for magma / inferno / viridis grows with the width, so a wider
interval is never drawn darker than a narrower one over the same mean.
"""
from __future__ import annotations

import numbers
import os
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_write

# ITU-R BT.601 luma, as pyinverse.data.rgb_to_gray.
_LUMA = np.array([0.299, 0.587, 0.114])


def _is_real(value: Any) -> bool:
    """A real scalar (Python or numpy), not a bool, string or array."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _image_2d(x: Any, name: str, op: str) -> np.ndarray:
    """``(H, W)``, ``(C, H, W)`` or ``(1, C, H, W)`` (C = 1 or 3) -> float64 ``(C, H, W)``."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    try:
        array = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{op}: '{name}' must be a numeric numpy array or torch tensor") from None
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[0] not in (1, 3) or 0 in array.shape:
        raise ValueError(f"{op}: '{name}' must have shape (H, W), (C, H, W) or (1, C, H, W) with C in "
                         f"(1, 3), got {tuple(np.shape(x))}")
    if not np.isfinite(array).all():
        raise ValueError(f"{op}: '{name}' contains NaN or inf")
    return array


def uncertainty_map(mean_image: Any, width: Any, *, dim: float = 0.35, cmap: str = "magma",
                    vmax: float | None = None) -> np.ndarray:
    """RGB image of the interval ``width`` highlighted over the dimmed, grayscale ``mean_image``.

    Args:
        mean_image: ``(H, W)``, ``(C, H, W)`` or ``(1, C, H, W)``, C in (1, 3), values in [0, 1]
            (clipped), numpy or torch.
        width: per-pixel interval width ``upper - lower`` (>= 0, finite), same spatial size;
            with C channels the mean over channels is shown.
        dim: brightness of the gray mean image under the highlight, in [0, 1].
        cmap: a matplotlib colormap name whose lightness increases (magma, inferno, viridis...).
        vmax: the width drawn at full colour (default: the largest width; larger widths are
            clipped to it). Pass one value to compare maps on a common scale.

    Returns:
        uint8 ``(H, W, 3)``.

    Example:
        >>> rgb = uncertainty_map(mean, upper - lower)     # mean, bounds (C, H, W) in [0, 1]
        >>> rgb.shape, rgb.dtype                          # doctest: +SKIP
        ((64, 64, 3), dtype('uint8'))
    """
    op = "uncertainty_map"
    from matplotlib import colormaps

    mean = _image_2d(mean_image, "mean_image", op)
    spread = _image_2d(width, "width", op)
    if mean.shape[1:] != spread.shape[1:]:
        raise ValueError(f"{op}: 'width' must have the height and width of 'mean_image' {mean.shape[1:]}, "
                         f"got {spread.shape[1:]}")
    if (spread < 0).any():
        raise ValueError(f"{op}: 'width' must be >= 0 (upper - lower), got min {spread.min():g}")
    if not _is_real(dim) or not 0.0 <= float(dim) <= 1.0:
        raise ValueError(f"{op}: 'dim' must be a number in [0, 1], got {dim!r}")
    if not isinstance(cmap, str) or cmap not in colormaps:
        raise ValueError(f"{op}: 'cmap' {cmap!r} is not a matplotlib colormap name")
    spread = spread.mean(axis=0)
    if vmax is not None and not _is_real(vmax):
        raise ValueError(f"{op}: 'vmax' must be a finite number >= 0, got {vmax!r}")
    top = float(spread.max()) if vmax is None else float(vmax)
    if not np.isfinite(top) or top < 0:
        raise ValueError(f"{op}: 'vmax' must be a finite number >= 0, got {vmax!r}")
    level = np.clip(spread / top, 0.0, 1.0) if top > 0 else np.zeros_like(spread)
    gray = np.clip(mean, 0.0, 1.0)
    gray = gray[0] if gray.shape[0] == 1 else np.tensordot(_LUMA, gray, axes=1)
    base = float(dim) * gray[..., None]
    colour = colormaps[cmap](level)[..., :3]
    blended = 1.0 - (1.0 - base) * (1.0 - colour)
    return np.round(np.clip(blended, 0.0, 1.0) * 255.0).astype(np.uint8)


def save_uncertainty_figure(path: str | os.PathLike, mean_image: Any, width: Any, *, truth: Any = None,
                            observed: Any = None, title: str | None = None, cmap: str = "magma",
                            dim: float = 0.35, vmax: float | None = None, dpi: int = 150,
                            overwrite: bool = False) -> Path:
    """Write a PNG: [truth] [observed] mean, and the uncertainty map with a width colour bar.

    The file is written to a temporary file in the same folder and moved into place
    (:func:`pyinverse._io.atomic_write`), so a reader never sees half a PNG; it gets the usual
    permissions (0666 & ~umask).

    Args:
        path: destination, must end in ``.png``; its folder must exist.
        mean_image, width, cmap, dim, vmax: as :func:`uncertainty_map`.
        truth, observed: optional images (same forms as ``mean_image``) shown first.
        title: optional figure title.
        dpi: resolution of the PNG.
        overwrite: replace an existing file; otherwise an existing ``path`` raises.

    Returns:
        the path written.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.

    Example:
        >>> save_uncertainty_figure("map.png", mean, upper - lower, truth=x)   # doctest: +SKIP
    """
    op = "save_uncertainty_figure"
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    target = Path(path)
    if target.suffix.lower() != ".png":
        raise ValueError(f"{op}: 'path' must end in .png, got {str(target)!r}")
    if not target.parent.is_dir():
        raise FileNotFoundError(f"{op}: folder {str(target.parent)!r} does not exist")
    if target.exists() and not overwrite:
        raise FileExistsError(f"{op}: {str(target)!r} exists; pass overwrite=True to replace it")
    rgb = uncertainty_map(mean_image, width, dim=dim, cmap=cmap, vmax=vmax)
    spread = _image_2d(width, "width", op).mean(axis=0)
    top = float(spread.max()) if vmax is None else float(vmax)
    panels = [(name, _image_2d(image, name, op)) for name, image in (("truth", truth), ("observed", observed))
              if image is not None]
    panels.append(("posterior mean", _image_2d(mean_image, "mean_image", op)))
    for name, image in panels[:-1]:  # side by side with the mean: one size
        if image.shape[1:] != panels[-1][1].shape[1:]:
            raise ValueError(f"{op}: '{name}' is {image.shape[1]}x{image.shape[2]} but 'mean_image' is "
                             f"{panels[-1][1].shape[1]}x{panels[-1][1].shape[2]}")

    height, width_px = rgb.shape[:2]
    panel_height = 2.6
    panel_width = panel_height * width_px / height
    figure = Figure(figsize=(panel_width * (len(panels) + 1) + 0.8, panel_height + (0.8 if title else 0.5)),
                    dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(panels) + 1)
    for axis, (name, image) in zip(axes, panels):
        shown = np.clip(image, 0.0, 1.0)
        if shown.shape[0] == 1:
            axis.imshow(shown[0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        else:
            axis.imshow(shown.transpose(1, 2, 0), interpolation="nearest")
        axis.set_title(name, fontsize=9)
        axis.set_axis_off()
    axes[-1].imshow(rgb, interpolation="nearest")
    axes[-1].set_title("interval width", fontsize=9)
    axes[-1].set_axis_off()
    figure.colorbar(ScalarMappable(Normalize(0.0, top if top > 0 else 1.0), cmap=cmap), ax=axes[-1],
                    shrink=0.9)
    if title:
        figure.suptitle(title, fontsize=10)
    # atomic_write: the usual permissions (0666 & ~umask, not mkstemp's 0600) and no clobbering
    try:
        atomic_write(target, lambda temporary: figure.savefig(temporary, format="png"), overwrite=overwrite)
    except FileExistsError:  # appeared while we were drawing
        raise FileExistsError(f"{op}: {str(target)!r} exists; pass overwrite=True to replace it") from None
    return target
