"""Forward operators of imaging inverse problems, in torch (numpy accepted and returned).

Images are ``(B, C, H, W)`` in [0, 1], float32 or float64, on any torch device. Every operator
has ``A(x)`` (noiseless), ``op(x, seed=None)`` (with its noise), ``output_shape`` /
``input_shape`` and ``linear``; linear ones add ``A_adjoint``, ``A_pinv`` and ``project``. The
contract is stated once in :mod:`pyinverse.physics.base`.

Example:
    >>> from pyinverse.physics import by_name
    >>> op = by_name("downsample:4")
    >>> y = op(torch.rand(1, 3, 64, 64), seed=0)       # (1, 3, 16, 16)
    >>> x = op.project(torch.rand(8, 3, 64, 64), y)    # 8 samples, all consistent with y
"""
from .base import LinearOperator, Operator
from .blur import GaussianBlur, gaussian_blur_matrix
from .cgls import cgls
from .compressed_sensing import CompressedSensing
from .denoising import Denoising
from .downsample import Downsample, matlab_bicubic_matrix, pil_bicubic_matrix
from .factory import OPERATOR_NAMES, by_name
from .grayscale import LUMA_WEIGHTS, Grayscale
from .inpainting import Inpainting
from .jpeg import JPEG
from .row_space import RowSpace

__all__ = [
    "CompressedSensing",
    "Denoising",
    "Downsample",
    "GaussianBlur",
    "Grayscale",
    "Inpainting",
    "JPEG",
    "LUMA_WEIGHTS",
    "LinearOperator",
    "OPERATOR_NAMES",
    "Operator",
    "RowSpace",
    "by_name",
    "cgls",
    "gaussian_blur_matrix",
    "matlab_bicubic_matrix",
    "pil_bicubic_matrix",
]
