"""Uncertainty maps: shape and dtype, the blend written out in float64, wider intervals are
brighter, and the PNG figure is written atomically and never overwritten silently."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib import colormaps
from PIL import Image

from pyinverse.report import save_uncertainty_figure, uncertainty_map

LUMA = np.array([0.299, 0.587, 0.114])


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("channels", [1, 3])
def test_uncertainty_map_matches_screen_blend_reference(seed, channels):
    rng = np.random.default_rng(seed)
    mean = rng.uniform(size=(channels, 7, 9))
    width = rng.uniform(0, 0.4, size=(channels, 7, 9))
    rgb = uncertainty_map(mean, width)
    assert rgb.dtype == np.uint8 and rgb.shape == (7, 9, 3)
    gray = mean[0] if channels == 1 else np.tensordot(LUMA, mean, axes=1)
    level = width.mean(0) / width.mean(0).max()
    colour = colormaps["magma"](level)[..., :3]
    want = 1 - (1 - 0.35 * gray[..., None]) * (1 - colour)
    np.testing.assert_allclose(rgb.astype(np.float64), np.round(want * 255), rtol=0, atol=1)


@pytest.mark.parametrize("cmap", ["magma", "inferno"])
def test_wider_intervals_are_brighter(cmap):
    rng = np.random.default_rng(4)
    # Every row has one mean value; widths increase along the row.
    mean = np.repeat(rng.uniform(size=(1, 6, 1)), 40, axis=2)
    width = np.broadcast_to(np.linspace(0, 1, 40), (1, 6, 40))
    luminance = uncertainty_map(mean, width, cmap=cmap).astype(np.float64) @ LUMA
    assert np.all(np.diff(luminance, axis=1) >= -0.5)  # nondecreasing up to uint8 rounding
    assert np.all(luminance[:, -1] - luminance[:, 0] > 150)
    # Random images: among pixels with the same mean, a wider interval is never darker.
    mean = np.full((1, 30, 30), 0.6)
    width = rng.uniform(0, 1, size=(1, 30, 30))
    luminance = (uncertainty_map(mean, width, cmap=cmap).astype(np.float64) @ LUMA).ravel()
    order = np.argsort(width.ravel())
    assert np.all(np.diff(luminance[order]) >= -0.5)


def test_uncertainty_map_inputs_and_scale():
    mean = torch.rand(1, 3, 5, 6)  # a batch of one, torch
    width = torch.rand(5, 6)
    rgb = uncertainty_map(mean, width)
    assert rgb.shape == (5, 6, 3)
    # A shared vmax: widths beyond it are clipped to the top colour.
    clipped = uncertainty_map(np.zeros((4, 4)), np.full((4, 4), 2.0), vmax=1.0)
    top = uncertainty_map(np.zeros((4, 4)), np.full((4, 4), 1.0), vmax=1.0)
    np.testing.assert_array_equal(clipped, top)
    # All-zero widths show the dimmed image only.
    dimmed = uncertainty_map(np.full((2, 2), 1.0), np.zeros((2, 2)), dim=0.35)
    want = 255 * (1 - 0.65 * (1 - np.asarray(colormaps["magma"](0.0)[:3])))  # magma(0) is near black
    assert np.all(np.abs(dimmed.astype(float) - want) <= 0.5 + 1e-9)
    with pytest.raises(ValueError, match=r"uncertainty_map: 'width' must have the height and width"):
        uncertainty_map(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="uncertainty_map: 'width' must be >= 0"):
        uncertainty_map(np.zeros((4, 4)), -np.ones((4, 4)))
    with pytest.raises(ValueError, match="uncertainty_map: 'width' contains NaN or inf"):
        uncertainty_map(np.zeros((2, 2)), np.array([[0.0, np.nan], [0.0, 0.0]]))
    with pytest.raises(ValueError, match=r"'mean_image' must have shape \(H, W\), \(C, H, W\)"):
        uncertainty_map(np.zeros((2, 4, 4)), np.zeros((4, 4)))
    with pytest.raises(ValueError, match="'cmap' 'nope' is not a matplotlib colormap"):
        uncertainty_map(np.zeros((4, 4)), np.zeros((4, 4)), cmap="nope")
    for kwargs, match in ((dict(cmap=["magma"]), "'cmap' \\['magma'\\] is not a matplotlib colormap name"),
                          (dict(dim=True), "'dim' must be a number in"), (dict(dim="0.5"), "'dim' must be a number in"),
                          (dict(vmax=True), "'vmax' must be a finite number"),
                          (dict(vmax=np.array([1.0, 2.0])), "'vmax' must be a finite number")):
        with pytest.raises(ValueError, match=match):  # bools, strings and arrays are not numbers
            uncertainty_map(np.zeros((4, 4)), np.zeros((4, 4)), **kwargs)
    numpy_scalars = uncertainty_map(np.zeros((4, 4)), np.ones((4, 4)), dim=np.float32(0.5), vmax=np.float64(2.0))
    assert numpy_scalars.shape == (4, 4, 3)


def test_save_uncertainty_figure_atomic_and_no_silent_overwrite(tmp_path):
    rng = np.random.default_rng(0)
    mean = rng.uniform(size=(3, 16, 24))
    width = rng.uniform(0, 0.3, size=(16, 24))
    path = save_uncertainty_figure(tmp_path / "map.png", mean, width, truth=mean, observed=mean, title="test")
    assert path == tmp_path / "map.png"
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > image.size[1]
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="save_uncertainty_figure: .*map.png' exists; pass overwrite=True"):
        save_uncertainty_figure(path, mean, width * 2)
    assert path.read_bytes() == before
    save_uncertainty_figure(path, mean[:1], width, overwrite=True)
    assert path.read_bytes() != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["map.png"]  # no temporary files left
    with pytest.raises(ValueError, match="must end in .png"):
        save_uncertainty_figure(tmp_path / "map.jpg", mean, width)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save_uncertainty_figure(tmp_path / "missing" / "map.png", mean, width)
    with pytest.raises(ValueError, match="'width' contains NaN"):  # fails before any file appears
        save_uncertainty_figure(tmp_path / "bad.png", mean, np.full((16, 24), np.nan))
    assert not (tmp_path / "bad.png").exists()
    with pytest.raises(ValueError, match="'truth' is 5x3 but 'mean_image' is 16x24"):  # panels of one size
        save_uncertainty_figure(tmp_path / "bad.png", mean, width, truth=rng.uniform(size=(5, 3)))
    assert not (tmp_path / "bad.png").exists()


def test_save_uncertainty_figure_gets_the_usual_permissions(tmp_path):
    import os

    previous = os.umask(0o022)
    try:
        path = save_uncertainty_figure(tmp_path / "map.png", np.zeros((4, 4)), np.ones((4, 4)))
    finally:
        os.umask(previous)
    assert path.stat().st_mode & 0o777 == 0o644  # 0666 & ~umask, not mkstemp's 0600
