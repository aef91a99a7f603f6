"""LPIPS (Zhang et al. 2018, "alex" variant, v0.1) from weight files the user already has.

Nothing is downloaded. Two files are needed, both read with ``torch.load(weights_only=True)`` and
checked key by key and shape by shape:

* the AlexNet backbone: torchvision's ImageNet AlexNet state dict
  (``alexnet-owt-7be5be79.pth``; its ``features.*`` tensors are used, ``classifier.*`` ignored);
* the LPIPS linear heads: the ``lpips`` package's ``weights/v0.1/alex.pth``
  (``lin0.model.1.weight`` ... ``lin4.model.1.weight``, shapes (1, C, 1, 1) with
  C = 64, 192, 384, 256, 256).

With those two files :class:`LPIPSAlex` computes the same function as ``lpips.LPIPS(net="alex",
version="0.1")(x, y, normalize=True)``: inputs mapped from [0, 1] to [-1, 1], then LPIPS's
scaling layer, the five ReLU outputs of AlexNet's feature stack, channel-wise unit
normalisation, squared differences weighted by the heads (a 1x1 convolution), spatial mean,
sum over layers. Only the AlexNet variant is supported (not "vgg" / "squeeze"). Without head
weights (``heads_path=None``) every channel weighs 1: LPIPS's uncalibrated "baseline".
"""
from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn as nn

from .._backend import require_float_images
from ._inputs import image_pair, check_reduction, to_channels
from .features import unit_normalize
from .weights import check_state_dict, read_torch_state_dict

ALEX_CHANNELS = (64, 192, 384, 256, 256)
# LPIPS's ScalingLayer: ImageNet statistics expressed on the [-1, 1] scale.
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
_TAPS = (1, 4, 7, 9, 11)  # indices of AlexNet's ReLUs in torchvision's ``features`` Sequential


class LPIPSAlex(nn.Module):
    """LPIPS distance with an AlexNet backbone: ``lpips(x, y) -> (B,)``.

    ``x``, ``y``: (B, 1 or 3, H, W) in [0, 1] (gray is replicated), H, W >= 31 (below that
    AlexNet's second pooling has nothing to pool), float (8-bit images: divide by 255 first).
    Returns (B,) distances >= 0: a torch tensor (differentiable), or numpy when both are numpy.
    Build with :meth:`from_files`; a bare ``LPIPSAlex()`` has random weights (for tests).

    Example:
        >>> lpips = LPIPSAlex.from_files("alexnet-owt-7be5be79.pth",
        ...                              "lpips/weights/v0.1/alex.pth")  # doctest: +SKIP
        >>> lpips(x, y)  # doctest: +SKIP
    """

    def __init__(self) -> None:
        super().__init__()
        # The module layout mirrors torchvision's ``alexnet().features`` so the keys line up.
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(),
            nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(),
            nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(),
        )
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=1, bias=False) for c in ALEX_CHANNELS)
        for head in self.heads:
            nn.init.ones_(head.weight)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1))
        self.eval()

    @classmethod
    def from_files(cls, alexnet_path: str | os.PathLike, heads_path: str | os.PathLike | None) -> "LPIPSAlex":
        """Build LPIPS from torchvision's AlexNet weights and the lpips package's ``alex.pth`` heads.

        Raises ``FileNotFoundError`` / ``ValueError`` (naming the file and the mismatching keys)
        for a missing, unreadable or mismatched file.
        """
        model = cls()
        model.load_backbone(alexnet_path)
        if heads_path is not None:
            model.load_heads(heads_path)
        return model

    def load_backbone(self, path: str | os.PathLike) -> None:
        """Load ``features.*`` from a torchvision AlexNet state dict (``classifier.*`` is ignored)."""
        fn = "LPIPSAlex.load_backbone"
        state = read_torch_state_dict(path, fn)
        backbone = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        others = [k for k in state if not k.startswith(("features.", "classifier."))]
        if others:
            raise ValueError(f"{fn}: '{path}' is not a torchvision AlexNet state dict: unexpected "
                             f"{len(others)} key(s): {others[:5]}")
        check_state_dict(self.features, backbone, fn, str(path), optional_suffixes=())
        self.features.load_state_dict(backbone)

    def load_heads(self, path: str | os.PathLike) -> None:
        """Load the five linear heads from the lpips package's ``weights/v0.1/alex.pth``."""
        fn = "LPIPSAlex.load_heads"
        state = read_torch_state_dict(path, fn)
        heads = {}
        for key, value in state.items():
            # lpips stores NetLinLayer as Sequential(Dropout, Conv2d): "lin{k}.model.1.weight"
            parts = key.split(".")
            if len(parts) == 4 and parts[0].startswith("lin") and parts[1:] == ["model", "1", "weight"] \
                    and parts[0][3:].isdigit():
                name = f"{parts[0][3:]}.weight"
            else:
                name = key
            if name in heads:  # both spellings of one head: which one to use is not ours to guess
                raise ValueError(f"{fn}: '{path}' holds head {name!r} twice (as {key!r} and under its other name)")
            heads[name] = value
        check_state_dict(self.heads, heads, fn, str(path), optional_suffixes=())
        self.heads.load_state_dict(heads)

    def layer_distances(self, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
        """Per-layer LPIPS terms [(B,) for each of the five layers] for (B, 3, H, W) in [0, 1]."""
        both = torch.cat([x, y]) * 2.0 - 1.0
        h = (both - self.shift) / self.scale
        terms = []
        for index, layer in enumerate(self.features):
            h = layer(h)
            if index in _TAPS:
                fx, fy = unit_normalize(h).chunk(2)
                head = self.heads[_TAPS.index(index)]
                terms.append(head((fx - fy).square()).mean(dim=(1, 2, 3)))
        return terms

    def forward(self, x: Any, y: Any, reduction: str = "none") -> torch.Tensor:
        fn = "LPIPSAlex"
        check_reduction(reduction, fn)
        for name, images in (("x", x), ("y", y)):  # 8-bit images would pass as values far outside [0, 1]
            require_float_images(images, f"{fn}: '{name}' must be float images in [0, 1]")
        bx, by = image_pair(x, y, fn)
        if bx.tensor.ndim != 4 or bx.input_ndim != 4:
            raise ValueError(f"{fn}: 'x' must have shape (B, C, H, W), got {tuple(bx.tensor.shape)}")
        device = self.shift.device
        tx = to_channels(bx.tensor, 3, fn, "x").to(device, self.shift.dtype)
        ty = to_channels(by.tensor, 3, fn, "y").to(device, self.shift.dtype)
        if min(tx.shape[-2:]) < 31:
            raise ValueError(f"{fn}: images must be at least 31x31 for AlexNet's pooling, got "
                             f"{tuple(tx.shape[-2:])}")
        distance = torch.stack(self.layer_distances(tx, ty)).sum(dim=0)
        return bx.wrap(distance, reduction)
