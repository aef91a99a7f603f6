"""``by_name``: build an operator from a command-line string such as ``"downsample:4"``."""
from __future__ import annotations

import re
from typing import Any

from .base import Operator
from .blur import GaussianBlur
from .compressed_sensing import CompressedSensing
from .denoising import Denoising
from .downsample import Downsample
from .grayscale import Grayscale
from .inpainting import Inpainting
from .jpeg import JPEG

# name -> (class, the parameters that positional arguments fill, in order, and accepted keywords)
_OPERATORS: dict[str, tuple[type, tuple[str, ...], tuple[str, ...]]] = {
    "denoising": (Denoising, ("sigma",), ("sigma",)),
    "cs": (CompressedSensing, ("ratio", "seed"), ("ratio", "seed", "m", "noise_sigma")),
    "inpainting": (Inpainting, ("fraction", "seed"), ("fraction", "box", "seed", "noise_sigma")),
    "downsample": (Downsample, ("factor", "kernel"), ("factor", "kernel", "noise_sigma", "pinv_rtol")),
    "grayscale": (Grayscale, (), ("noise_sigma",)),
    "jpeg": (JPEG, ("quality", "subsampling"), ("quality", "subsampling")),
    "blur": (GaussianBlur, ("sigma", "boundary", "truncate"),
             ("sigma", "boundary", "truncate", "noise_sigma", "pinv_rtol")),
}
_ALIASES = {
    "denoise": "denoising", "noise": "denoising",
    "compressed_sensing": "cs", "compressedsensing": "cs",
    "inpaint": "inpainting",
    "sr": "downsample", "superresolution": "downsample", "super_resolution": "downsample",
    "gray": "grayscale", "grey": "grayscale", "greyscale": "grayscale",
    "gaussian_blur": "blur", "gaussianblur": "blur",
}
OPERATOR_NAMES = tuple(_OPERATORS)

_INT = re.compile(r"[+-]?\d+")


def _parse_value(text: str) -> Any:
    """``"4"`` -> 4, ``"0.5"`` -> 0.5, ``"1,2,3,4"`` -> (1, 2, 3, 4), other text stays text."""
    if "," in text:
        return tuple(_parse_value(part) for part in text.split(","))
    if _INT.fullmatch(text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text


def by_name(spec: str | Operator) -> Operator:
    """Build an operator from ``NAME[:ARG[:ARG...]]``, the form of the CLI's ``--operator``.

    Arguments are positional (filling the operator's main parameters in order, wherever
    ``key=value`` arguments stand between them) or ``key=value``; numbers are parsed as int or
    float, comma lists as tuples. Names (aliases in brackets) and positional parameters:

    ==============  ==========================  ==============================================
    name            positional                  example
    ==============  ==========================  ==============================================
    denoising       sigma                       ``denoising:0.1``
    cs              ratio, seed                 ``cs:0.25``, ``cs:m=100:seed=3``
    inpainting      fraction, seed              ``inpainting:0.5``, ``inpainting:box=8,8,16,16``
    downsample      factor, kernel              ``downsample:4``, ``downsample:4:matlab``
    grayscale       (none)                      ``grayscale``
    jpeg            quality, subsampling        ``jpeg:10``
    blur            sigma, boundary, truncate   ``blur:1.5``, ``blur:2:circular``
    ==============  ==========================  ==============================================

    Aliases: denoise/noise, compressed_sensing, inpaint, sr/super_resolution, gray/grey,
    gaussian_blur. Every operator but denoising (whose noise is ``sigma``) and jpeg also takes
    ``noise_sigma=...``; downsample and blur take ``pinv_rtol=...`` (their pseudo-inverse's
    cut-off). An :class:`Operator` passes through unchanged. Every operator's ``spec`` property
    gives a string this function reads back into an equal operator.

    Raises:
        ValueError: unknown name, unknown or repeated parameter, too many positional
            arguments, or a value the operator rejects.

    Example:
        >>> by_name("downsample:4").factor
        4
    """
    if isinstance(spec, Operator):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"by_name: 'spec' must be a string such as 'downsample:4', got {type(spec).__name__}")
    name, *arguments = spec.strip().split(":")
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key not in _OPERATORS:
        raise ValueError(f"by_name: unknown operator {name!r} in {spec!r}; known: {', '.join(OPERATOR_NAMES)}")
    cls, positional, keywords = _OPERATORS[key]
    kwargs: dict[str, Any] = {}
    index = 0  # of the next positional argument
    for argument in arguments:
        argument = argument.strip()
        if not argument:
            raise ValueError(f"by_name: empty argument in {spec!r}")
        if "=" in argument:
            param, _, text = argument.partition("=")
            param = param.strip()
            if param not in keywords:
                raise ValueError(f"by_name: {key} takes no parameter {param!r} (in {spec!r}); "
                                 f"parameters: {', '.join(keywords) or 'none'}")
        else:
            if index >= len(positional):
                raise ValueError(f"by_name: too many positional arguments in {spec!r}; {key} takes "
                                 f"{len(positional)} ({', '.join(positional) or 'none'})")
            param, text = positional[index], argument
            index += 1
        if param in kwargs:
            raise ValueError(f"by_name: parameter {param!r} given twice in {spec!r}")
        kwargs[param] = _parse_value(text.strip())
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ValueError(f"by_name: cannot build {key} from {spec!r}: {exc}") from None
