"""The shipped feature extractor and the perceptual distance built on it (no download needed).

``FeatureNet`` is a small convnet (four stages of two 3x3 convolutions with BatchNorm and ReLU,
16/32/64/128 channels, 2x2 average pooling between stages; about 0.3 M parameters, 1.2 MB)
trained by us on the bundled data with two linear heads on its pooled features: one tells apart
the sources of the images (the 10 scikit-learn digits, LFW faces vs non-faces, crops of
scikit-image photos in colour and in gray), the other names the degradation of a photo crop
(clean, blur, noise, pixelation, JPEG), so that the features see what restorations get wrong.
The photos of the ``"held_out"`` and ``"ood"`` splits of :data:`pyinverse.data.PHOTO_SPLITS`
are never used in training. The weights ship as ``pyinverse/models/feature_net.safetensors``
and were made by::

    OMP_NUM_THREADS=1 python scripts/train_feature_extractor.py --seed 0 --overwrite

(CPU, a few minutes, deterministic for a given torch version and thread count; see the script
for the data and the augmentations; the file's metadata records the command, the torch version
and the validation accuracies).

:class:`FeatureExtractor` maps images (B, 1 or 3, H, W) in [0, 1] to (B, 128) features (the
global average of the last stage), for FID / KID on small images. :func:`perceptual_distance` is
LPIPS-style: at each stage's output the channel vector at every pixel is scaled to unit length,
the squared differences are summed over channels and averaged over pixels, and the four stages
are summed. Unlike LPIPS it has no linear heads fitted to human judgements: it is *uncalibrated*
(equal weights for every channel and stage), so its values are comparable with each other (the
same network, one set of images vs another, e.g. the validity of two restorers) but not with
published LPIPS numbers, and it reflects what separates the bundled classes and degradations,
not human perception. Use it to rank methods or settings on small images; for numbers
comparable with the literature, load the standard LPIPS weights with
:class:`pyinverse.metrics.lpips_alex.LPIPSAlex`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .._backend import require_float_images
from ._inputs import check_reduction, image_batch, to_channels
from .weights import check_state_dict

SHIPPED_WEIGHTS = Path(__file__).resolve().parent.parent / "models" / "feature_net.safetensors"
FORMAT = "pyinverse.FeatureNet/1"
DEFAULT_WIDTHS = (16, 32, 64, 128)
NATIVE_SIZE = 32
IN_CHANNELS = 3
_NORM_EPS = 1e-10


class FeatureNet(nn.Module):
    """The shipped convnet: (B, 3, H, W) in [0, 1] -> per-stage feature maps and pooled features.

    Stage k (k = 0..3) runs two 3x3 convolutions, each with BatchNorm (a fixed affine map at
    inference: the network is always in eval mode outside training) and ReLU, at 1/2^k of the
    input resolution;
    ``stage_outputs`` returns the four stage outputs (the taps of the perceptual distance),
    ``forward`` their last one averaged over pixels (B, widths[-1]). ``num_classes > 0`` and
    ``num_degradations > 0`` add the two linear heads used in training (``classify``).
    """

    def __init__(self, widths: Sequence[int] = DEFAULT_WIDTHS, num_classes: int = 0,
                 num_degradations: int = 0) -> None:
        super().__init__()
        self.widths = tuple(int(w) for w in widths)
        self.num_classes = int(num_classes)
        self.num_degradations = int(num_degradations)
        stages = []
        in_channels = IN_CHANNELS
        for width in self.widths:
            stages.append(nn.Sequential(
                nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
            ))
            in_channels = width
        self.stages = nn.ModuleList(stages)
        self.classifier = nn.Linear(in_channels, self.num_classes) if self.num_classes > 0 else None
        self.degradation_classifier = (nn.Linear(in_channels, self.num_degradations)
                                       if self.num_degradations > 0 else None)

    @property
    def feature_dim(self) -> int:
        return self.widths[-1]

    def stage_outputs(self, images: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) in [0, 1] -> [(B, widths[k], H / 2^k, W / 2^k) for each stage k]."""
        h = images * 2.0 - 1.0
        outputs = []
        for index, stage in enumerate(self.stages):
            if index > 0:
                h = F.avg_pool2d(h, 2)
            h = stage(h)
            outputs.append(h)
        return outputs

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.stage_outputs(images)[-1].mean(dim=(2, 3))

    def classify(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Training logits: (B, num_classes) for the source and (B, num_degradations) (or None)."""
        if self.classifier is None:
            raise RuntimeError("FeatureNet.classify: built with num_classes=0 (no classifier)")
        features = self(images)
        head = self.degradation_classifier
        degradation = head(features) if head is not None else None
        return self.classifier(features), degradation


MAX_METADATA_SIZE = 4096  # widths and head sizes read from a file: bounded before anything is allocated


def _expected_metadata_int(metadata: dict, key: str, path: Path) -> int:
    try:
        value = int(metadata[key])
    except (KeyError, ValueError):
        value = -1
    if not 0 <= value <= MAX_METADATA_SIZE:
        raise ValueError(f"load_feature_net: '{path}' has no valid '{key}' in its metadata (expected an integer "
                         f"in 0..{MAX_METADATA_SIZE}, got {metadata.get(key)!r}); not a pyinverse FeatureNet file")
    return value


def _expected_metadata_names(metadata: dict, key: str, path: Path) -> list[str]:
    """A JSON list of strings (class or degradation names); absent means none."""
    text = metadata.get(key)
    if not text:
        return []
    try:
        names = json.loads(text)
    except json.JSONDecodeError:
        names = None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ValueError(f"load_feature_net: '{path}' has an invalid '{key}' in its metadata (expected a JSON list "
                         f"of names, got {text[:80]!r})")
    return names


def load_feature_net(path: str | os.PathLike = SHIPPED_WEIGHTS) -> tuple[FeatureNet, dict]:
    """Read a FeatureNet from a safetensors file and check that it is complete and finite.

    Returns the network (eval mode, CPU, float32) and the file's metadata (format, widths,
    class names, training command). Raises ``FileNotFoundError`` for a missing file and
    ``ValueError`` naming the problem for a file that is not a FeatureNet (wrong format tag,
    missing / unexpected tensors, wrong shapes, non-finite values).
    """
    from safetensors import safe_open
    from safetensors import SafetensorError

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load_feature_net: no weights file at '{path}'; rebuild it with "
                                "`python scripts/train_feature_extractor.py`")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"load_feature_net: '{path}' is not a readable safetensors file: {exc}") from None
    if metadata.get("format") != FORMAT:
        raise ValueError(f"load_feature_net: '{path}' has format {metadata.get('format')!r}, "
                         f"expected {FORMAT!r}")
    try:
        widths = tuple(int(w) for w in metadata["widths"].split(","))
    except (KeyError, ValueError):
        widths = ()
    if not 1 <= len(widths) <= 8 or not all(1 <= w <= MAX_METADATA_SIZE for w in widths):
        raise ValueError(f"load_feature_net: '{path}' has no valid 'widths' in its metadata (expected 1 to 8 "
                         f"comma-separated integers in 1..{MAX_METADATA_SIZE}, got {metadata.get('widths')!r})")
    num_classes = _expected_metadata_int(metadata, "num_classes", path)
    num_degradations = _expected_metadata_int(metadata, "num_degradations", path)
    for key in ("classes", "degradations"):
        _expected_metadata_names(metadata, key, path)
    net = FeatureNet(widths, num_classes, num_degradations)
    check_state_dict(net, tensors, "load_feature_net", str(path), optional_suffixes=())
    net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in tensors.items()})
    net.eval()
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    return net, metadata


def save_feature_net(net: FeatureNet, path: str | os.PathLike, metadata: dict[str, str] | None = None,
                     *, overwrite: bool = False) -> Path:
    """Write ``net`` as safetensors atomically (through :func:`pyinverse._io.atomic_write`).

    ``metadata`` (str -> str) is stored beside the format tag, the widths and the head sizes.
    Raises ``FileExistsError`` if ``path`` exists and ``overwrite`` is false.
    """
    from safetensors.torch import save_file

    from .._io import atomic_write

    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    meta.update(format=FORMAT, widths=",".join(str(w) for w in net.widths),
                num_classes=str(net.num_classes), num_degradations=str(net.num_degradations))
    tensors = {}
    for key, value in net.state_dict().items():  # BatchNorm's counters stay int64
        value = value.detach().cpu()
        tensors[key] = (value.float() if value.is_floating_point() else value).contiguous()
    return atomic_write(path, lambda temporary: save_file(tensors, str(temporary), metadata=meta),
                        overwrite=overwrite)


class FeatureExtractor:
    """Images -> features with the shipped :class:`FeatureNet` (or one loaded from ``path``).

    ``extractor(images)`` takes (B, 1 or 3, H, W) images in [0, 1] (torch or numpy; gray is
    replicated to RGB), resizes them to the network's native 32x32 (bilinear, antialiased when
    shrinking) and returns (B, 128) float32 features (torch in: a tensor on the extractor's
    device, see ``to``; numpy in: numpy out). Gradients flow if the caller enables them.

    Example:
        >>> extractor = FeatureExtractor()
        >>> extractor(torch.rand(8, 3, 64, 64)).shape
        torch.Size([8, 128])
    """

    def __init__(self, path: str | os.PathLike | None = None, device: Any = "cpu") -> None:
        self.path = Path(path) if path is not None else SHIPPED_WEIGHTS
        self.net, self.metadata = load_feature_net(self.path)
        self.net.to(device)
        self.native_size = NATIVE_SIZE
        self.class_names = _expected_metadata_names(self.metadata, "classes", self.path)
        self.degradation_names = _expected_metadata_names(self.metadata, "degradations", self.path)

    @property
    def feature_dim(self) -> int:
        return self.net.feature_dim

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def to(self, device: Any) -> "FeatureExtractor":
        self.net.to(device)
        return self

    def _prepare(self, images: Any, fn: str, name: str,
                 size: tuple[int, int] | None) -> tuple[torch.Tensor, bool]:
        require_float_images(images, f"{fn}: '{name}' must be float images in [0, 1]")  # before image_batch casts
        batch = image_batch(images, fn, name, allow_single=False)
        tensor = to_channels(batch.tensor, IN_CHANNELS, fn, name).to(self.device, torch.float32)
        if size is not None and tuple(tensor.shape[-2:]) != size:
            shrinking = size[0] < tensor.shape[-2] or size[1] < tensor.shape[-1]
            tensor = F.interpolate(tensor, size=size, mode="bilinear", align_corners=False,
                                   antialias=shrinking)
        return tensor, batch.was_numpy

    def __call__(self, images: Any) -> Any:
        """(B, 1|3, H, W) in [0, 1] -> (B, feature_dim) float32 features."""
        tensor, was_numpy = self._prepare(images, "FeatureExtractor", "images",
                                          (self.native_size, self.native_size))
        features = self.net(tensor)
        return features.detach().cpu().numpy() if was_numpy else features

    def classify(self, images: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, 1|3, H, W) in [0, 1] -> training logits: source (B, num_classes), named in
        ``class_names``, and degradation (B, num_degradations), named in ``degradation_names``."""
        tensor, _ = self._prepare(images, "FeatureExtractor.classify", "images",
                                  (self.native_size, self.native_size))
        return self.net.classify(tensor)

    def perceptual_distance(self, x: Any, y: Any, reduction: str = "none") -> Any:
        """LPIPS-style uncalibrated distance (see the module docstring), one value per image.

        x, y: (B, 1|3, H, W) in [0, 1], same shape. Images whose short side is under 32 pixels
        are upsampled (bilinear) so that it is 32; larger images are used at their own size (the
        network is fully convolutional). Returns (B,) (torch, differentiable; numpy for numpy
        inputs; with ``reduction="mean"`` a float for numpy), >= 0, 0 for identical images.
        """
        fn = "perceptual_distance"
        check_reduction(reduction, fn)
        shape_x, shape_y = tuple(getattr(x, "shape", ())), tuple(getattr(y, "shape", ()))
        if shape_x != shape_y:
            raise ValueError(f"{fn}: 'x' and 'y' must have the same shape, got {shape_x} and {shape_y}")
        height, width = (shape_x[-2:] if len(shape_x) == 4 else (0, 0))
        size = None
        if len(shape_x) == 4 and 0 < min(height, width) < self.native_size:
            scale = self.native_size / min(height, width)
            size = (max(self.native_size, round(height * scale)),
                    max(self.native_size, round(width * scale)))
        tx, x_was_numpy = self._prepare(x, fn, "x", size)
        ty, y_was_numpy = self._prepare(y, fn, "y", size)
        if tx.numel() == 0:
            raise ValueError(f"{fn}: 'x' and 'y' are empty (shape {shape_x})")
        distance = torch.zeros(tx.shape[0], dtype=tx.dtype, device=tx.device)
        for fx, fy in zip(self.net.stage_outputs(tx), self.net.stage_outputs(ty)):
            squared = (unit_normalize(fx) - unit_normalize(fy)).square()
            distance = distance + squared.sum(dim=1).mean(dim=(1, 2))
        if reduction == "mean":
            distance = distance.mean()
        if not (x_was_numpy and y_was_numpy):  # as the other metrics: torch if either is torch
            return distance
        value = distance.detach().cpu().numpy()
        return float(value) if value.ndim == 0 else value


def unit_normalize(features: torch.Tensor) -> torch.Tensor:
    """Scale each pixel's channel vector of (B, C, H, W) to unit length (as LPIPS, eps 1e-10)."""
    return features / (features.square().sum(dim=1, keepdim=True).sqrt() + _NORM_EPS)


_DEFAULT_EXTRACTORS: dict[str, FeatureExtractor] = {}


def default_extractor(device: Any = "cpu") -> FeatureExtractor:
    """The shipped extractor on ``device``, loaded on first use and cached."""
    key = str(torch.device(device))
    if key not in _DEFAULT_EXTRACTORS:
        _DEFAULT_EXTRACTORS[key] = FeatureExtractor(device=device)
    return _DEFAULT_EXTRACTORS[key]


def perceptual_distance(x: Any, y: Any, reduction: str = "none") -> Any:
    """The shipped network's uncalibrated LPIPS-style distance between x and y, per image.

    See :meth:`FeatureExtractor.perceptual_distance`; runs on the device of ``x``.

    Example:
        >>> x = torch.rand(4, 3, 32, 32)
        >>> perceptual_distance(x, (x + 0.1 * torch.randn_like(x)).clamp(0, 1)).shape
        torch.Size([4])
    """
    device = x.device if isinstance(x, torch.Tensor) else "cpu"
    return default_extractor(device).perceptual_distance(x, y, reduction)
