"""Image data that ships inside installed packages: nothing is downloaded, ever.

Every loader returns a float32 numpy array ``(N, C, H, W)`` with values in [0, 1].

* :func:`lfw_faces` — scikit-image's ``lfw_subset.npy``: 100 LFW faces then 100 non-face crops
  from the same photos, grayscale 25 x 25.
* :func:`photo_patches` — square patches cut from the photos bundled with scikit-image (and the
  two scikit-learn sample photos), with a split *by photo* (:data:`PHOTO_SPLITS`): patches of the
  ``"train"`` photos to fit models, of the ``"held_out"`` photos to calibrate and test on the same
  kind of images (natural colour photos), of the ``"ood"`` photos (astronomy, microscopy, a fundus
  photograph) to see what happens out of distribution.
* :func:`digits` — scikit-learn's 1797 handwritten digits, 8 x 8 (needs scikit-learn).
* :func:`sklearn_photos` — scikit-learn's two 427 x 640 sample photos (china, flower).
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

# Photos by name: (package holding them, path inside the package). Only files that are in the
# wheels themselves are listed (scikit-image fetches some others on demand; we never do).
BUNDLED_PHOTOS: dict[str, tuple[str, str]] = {
    "astronaut": ("skimage", "data/astronaut.png"),
    "brick": ("skimage", "data/brick.png"),
    "camera": ("skimage", "data/camera.png"),
    "cell": ("skimage", "data/cell.png"),
    "chelsea": ("skimage", "data/chelsea.png"),
    "coffee": ("skimage", "data/coffee.png"),
    "coins": ("skimage", "data/coins.png"),
    "grass": ("skimage", "data/grass.png"),
    "gravel": ("skimage", "data/gravel.png"),
    "hubble_deep_field": ("skimage", "data/hubble_deep_field.jpg"),
    "immunohistochemistry": ("skimage", "data/ihc.png"),
    "moon": ("skimage", "data/moon.png"),
    "motorcycle_left": ("skimage", "data/motorcycle_left.png"),
    "motorcycle_right": ("skimage", "data/motorcycle_right.png"),
    "page": ("skimage", "data/page.png"),
    "retina": ("skimage", "data/retina.jpg"),
    "rocket": ("skimage", "data/rocket.jpg"),
    "text": ("skimage", "data/text.png"),
    "china": ("sklearn.datasets", "images/china.jpg"),
    "flower": ("sklearn.datasets", "images/flower.jpg"),
}

# The split is by photo, so no patch of a held-out or out-of-distribution photo overlaps a
# training patch. "train" and "held_out" are natural colour photos of everyday scenes (all in
# scikit-image, so the splits need no scikit-learn; motorcycle_right is left out: it is the
# stereo partner of motorcycle_left). "ood" are scientific colour images whose statistics differ
# (a dark star field, stained tissue, a fundus photograph). scikit-learn's "china" and "flower"
# can be named explicitly as more held-out photos.
PHOTO_SPLITS: dict[str, tuple[str, ...]] = {
    "train": ("astronaut", "rocket", "motorcycle_left"),
    "held_out": ("chelsea", "coffee"),
    "ood": ("hubble_deep_field", "immunohistochemistry", "retina"),
}

# ITU-R BT.601 luma, the weights PIL's convert("L") and torchvision's Grayscale use.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)

_LFW_PARTS = {"faces": slice(0, 100), "non_faces": slice(100, 200), "all": slice(0, 200)}


def rgb_to_gray(images: np.ndarray) -> np.ndarray:
    """BT.601 luma of ``(..., 3, H, W)`` float images in [0, 1] -> ``(..., 1, H, W)`` float32."""
    images = np.asarray(images, dtype=np.float32)
    if images.ndim < 3 or images.shape[-3] != 3:
        raise ValueError(f"rgb_to_gray: 'images' must have shape (..., 3, H, W), got {images.shape}")
    return np.einsum("...chw,c->...hw", images, _LUMA)[..., None, :, :].astype(np.float32)


def _package_file(package: str, relative: str, what: str) -> Path:
    try:
        root = resources.files(package)
    except ModuleNotFoundError:
        raise ImportError(f"{what}: needs the '{package.split('.')[0]}' package, which is not "
                          "installed") from None
    path = Path(str(root.joinpath(relative)))
    if not path.is_file():
        raise FileNotFoundError(f"{what}: '{relative}' is not in the installed '{package}' "
                                f"(looked at {path}); this loader never downloads")
    return path


def lfw_faces(which: str = "faces") -> np.ndarray:
    """Grayscale 25 x 25 crops from Labeled Faces in the Wild, bundled with scikit-image.

    The file holds 200 crops: the first 100 are faces, the last 100 are non-face crops taken
    from the backgrounds of the same photos.

    Args:
        which: ``"faces"`` (100), ``"non_faces"`` (100) or ``"all"`` (200, faces first).

    Returns:
        float32 array ``(N, 1, 25, 25)`` in [0, 1].

    Example:
        >>> faces = lfw_faces()
        >>> faces.shape, faces.dtype
        ((100, 1, 25, 25), dtype('float32'))
    """
    if which not in _LFW_PARTS:
        raise ValueError(f"lfw_faces: 'which' must be one of {sorted(_LFW_PARTS)}, got {which!r}")
    path = _package_file("skimage", "data/lfw_subset.npy", "lfw_faces")
    data = np.load(path, allow_pickle=False)
    if data.shape != (200, 25, 25) or not np.issubdtype(data.dtype, np.floating):
        raise ValueError(f"lfw_faces: {path} holds {data.dtype} {data.shape}, expected float (200, 25, 25)")
    if not (np.isfinite(data).all() and data.min() >= 0.0 and data.max() <= 1.0):
        raise ValueError(f"lfw_faces: {path} has values outside [0, 1]")
    return np.ascontiguousarray(data[_LFW_PARTS[which], None], dtype=np.float32)


def load_photo(name: str, gray: bool = False) -> np.ndarray:
    """One bundled photo (a key of :data:`BUNDLED_PHOTOS`) as float32 ``(C, H, W)`` in [0, 1].

    Colour photos keep their 3 channels unless ``gray``; grayscale photos are repeated to 3
    channels unless ``gray``, so every photo of one call has the same channel count. An alpha
    channel is dropped.

    Example:
        >>> load_photo("chelsea").shape
        (3, 300, 451)
    """
    if name not in BUNDLED_PHOTOS:
        raise ValueError(f"load_photo: unknown photo {name!r}; bundled photos are {sorted(BUNDLED_PHOTOS)}")
    package, relative = BUNDLED_PHOTOS[name]
    path = _package_file(package, relative, f"load_photo({name!r})")
    with Image.open(path) as image:
        image.load()
        rgb = image.convert("RGB")
    array = np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1) / np.float32(255.0)
    return rgb_to_gray(array) if gray else np.ascontiguousarray(array)


def photo_patches(names: str | Sequence[str] = "train", size: int = 32, stride: int | None = None,
                  gray: bool = False) -> np.ndarray:
    """Square patches cut from bundled photos on a regular grid.

    Args:
        names: a split of :data:`PHOTO_SPLITS` (``"train"``, ``"held_out"``, ``"ood"``) or a
            sequence of photo names (keys of :data:`BUNDLED_PHOTOS`).
        size: patch side in pixels (>= 1).
        stride: grid step (>= 1); ``None`` means ``size`` (patches tile without overlap).
        gray: BT.601 luma (1 channel) instead of RGB (3 channels).

    Returns:
        float32 array ``(N, C, size, size)`` in [0, 1]: photo by photo in the given order, each
        photo's patches row-major from its top-left corner; a photo contributes
        ``((H - size) // stride + 1) * ((W - size) // stride + 1)`` patches.

    Example:
        >>> patches = photo_patches("held_out", size=16, gray=True)  # chelsea, coffee
        >>> patches.shape[1:]
        (1, 16, 16)
    """
    if isinstance(names, str):
        if names not in PHOTO_SPLITS:
            raise ValueError(f"photo_patches: 'names' must be one of the splits {sorted(PHOTO_SPLITS)} "
                             f"or a sequence of photo names, got {names!r}")
        names = PHOTO_SPLITS[names]
    names = list(names)
    if not names:
        raise ValueError("photo_patches: 'names' is empty")
    size = _positive_int(size, "size", "photo_patches")
    stride = size if stride is None else _positive_int(stride, "stride", "photo_patches")
    patches = []
    for name in names:
        photo = load_photo(name, gray=gray)
        _, height, width = photo.shape
        if height < size or width < size:
            raise ValueError(f"photo_patches: photo {name!r} is {height} x {width}, smaller than size={size}")
        # A strided view of every window, then the grid's windows: one copy, no Python loop.
        windows = np.lib.stride_tricks.sliding_window_view(photo, (size, size), axis=(1, 2))
        grid = windows[:, ::stride, ::stride]  # (C, rows, cols, size, size)
        patches.append(grid.transpose(1, 2, 0, 3, 4).reshape(-1, photo.shape[0], size, size))
    return np.ascontiguousarray(np.concatenate(patches), dtype=np.float32)


def digits(return_labels: bool = False):
    """scikit-learn's 1797 handwritten digits, 8 x 8, scaled from 0..16 to [0, 1].

    Returns:
        float32 ``(1797, 1, 8, 8)``; with ``return_labels`` also int64 labels ``(1797,)``.

    Example:
        >>> digits().shape
        (1797, 1, 8, 8)
    """
    load_digits = _sklearn_loader("load_digits", "digits")
    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float32)
    if images.ndim != 3 or images.shape[1:] != (8, 8) or images.min() < 0 or images.max() > 16:
        raise ValueError(f"digits: scikit-learn returned {images.shape} in [{images.min()}, {images.max()}], "
                         "expected (N, 8, 8) in [0, 16]")
    images = images[:, None] / np.float32(16.0)
    if return_labels:
        return images, np.asarray(bunch.target, dtype=np.int64)
    return images


def sklearn_photos(gray: bool = False) -> np.ndarray:
    """scikit-learn's two sample photos (china, flower), 427 x 640.

    Returns:
        float32 ``(2, C, 427, 640)`` in [0, 1], C = 3 (or 1 with ``gray``).

    Example:
        >>> sklearn_photos().shape
        (2, 3, 427, 640)
    """
    load_sample_images = _sklearn_loader("load_sample_images", "sklearn_photos")
    photos = load_sample_images().images
    shapes = {np.shape(p) for p in photos}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3 or next(iter(shapes))[2] != 3:
        raise ValueError(f"sklearn_photos: expected RGB photos of one size, got shapes {sorted(shapes)}")
    array = np.stack(photos).astype(np.float32).transpose(0, 3, 1, 2) / np.float32(255.0)
    return rgb_to_gray(array) if gray else np.ascontiguousarray(array)


def _sklearn_loader(name: str, what: str):
    try:
        from sklearn import datasets
    except ImportError:
        raise ImportError(f"{what}: needs scikit-learn (pip install scikit-learn); pyinverse does "
                          "not require it otherwise") from None
    return getattr(datasets, name)


def _positive_int(value, name: str, op: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{op}: '{name}' must be a positive int, got {value!r}")
    return int(value)
