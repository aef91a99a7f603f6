"""Normalizing flows (Glow, RealNVP) on images, their training, files and shipped models.

A flow maps images ``(B, C, H, W)`` in [0, 1] to one flat standard-normal latent ``(B, D)``
(the contract is stated once in :mod:`pyinverse.flows.base`); layers keep the sign contract of
:mod:`pyinverse.flows.layers`; the coupling arithmetic is the fused kernel
:func:`pyinverse.ops.coupling.affine_coupling`.

Example:
    >>> from pyinverse.flows import load_pretrained
    >>> model = load_pretrained("faces")               # Glow, 1 x 24 x 24
    >>> x = model.sample(4, temperature=0.7, seed=0)   # (4, 1, 24, 24)
    >>> model.bits_per_dim(x).shape
    torch.Size([4])
"""
from .base import FlowModel, MultiScaleFlow, standard_normal_log_prob
from .checkpoint import (FORMAT, PRETRAINED, build_flow, load_flow, load_pretrained, pretrained_path,
                         read_flow_file, save_flow)
from .glow import Glow
from .layers import (ActNorm, AffineCoupling, FlowLayer, InvertibleConv1x1, Preprocess, Split, Squeeze,
                     checkerboard_mask, coupling_subnet)
from .linear import LinearFlow
from .mirror import Mirrored
from .realnvp import RealNVP
from .train import TrainHistory, dequantize, evaluate_bpd, latest_checkpoint, quantize_levels, train_flow

__all__ = [
    "FORMAT",
    "PRETRAINED",
    "ActNorm",
    "AffineCoupling",
    "FlowLayer",
    "FlowModel",
    "Glow",
    "InvertibleConv1x1",
    "LinearFlow",
    "Mirrored",
    "MultiScaleFlow",
    "Preprocess",
    "RealNVP",
    "Split",
    "Squeeze",
    "TrainHistory",
    "build_flow",
    "checkerboard_mask",
    "coupling_subnet",
    "dequantize",
    "evaluate_bpd",
    "latest_checkpoint",
    "load_flow",
    "load_pretrained",
    "pretrained_path",
    "quantize_levels",
    "read_flow_file",
    "save_flow",
    "standard_normal_log_prob",
    "train_flow",
]
