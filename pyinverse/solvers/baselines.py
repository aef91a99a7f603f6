"""Classical baselines for the flow prior: Lasso in an orthonormal basis (FISTA), and BM3D.

Lasso (synthesis form, equivalent to the analysis form for an orthonormal ``W``)::

    min_c  1/2 ||A W^T c - y||^2 + lam ||c||_1,      x = W^T c,

solved by FISTA (Beck & Teboulle 2009) with step ``1 / L``, ``L = ||A||_2^2`` from Lanczos on
``A^T A`` (plus 1 % margin). ``W`` is the orthonormal 2-D DCT-II per channel
(``scipy.fft.dctn(norm="ortho")``) or an orthogonal wavelet transform (PyWavelets ``wavedec2``
with ``mode="periodization"``, which is orthonormal for orthogonal wavelets whenever the image
sides are divisible by ``2 ** level``). All coefficients are penalised. The arithmetic is float64
numpy; the operator is any linear :mod:`pyinverse.physics` operator (its ``A`` / ``A_adjoint``
take numpy and return numpy).

BM3D is the optional ``bm3d`` package (Mäkinen, Azzari & Foi), called per image.
"""
from __future__ import annotations

import math
import numbers
import warnings
from typing import Any

import numpy as np
import torch

from ..draws import check_seed
from .latent_map import _positive_int

TRANSFORMS = ("dct", "wavelet")


class OrthonormalDCT:
    """2-D orthonormal DCT-II over the last two axes: ``forward`` (image -> coefficients), ``inverse``."""

    name = "dct"

    def forward(self, x: np.ndarray) -> np.ndarray:
        from scipy.fft import dctn

        return dctn(x, type=2, norm="ortho", axes=(-2, -1))

    def inverse(self, c: np.ndarray) -> np.ndarray:
        from scipy.fft import idctn

        return idctn(c, type=2, norm="ortho", axes=(-2, -1))


class OrthonormalWavelet:
    """Orthogonal 2-D wavelet transform (PyWavelets, periodization) over the last two axes.

    Coefficients are packed into an array of the image's shape with ``pywt.coeffs_to_array``.
    ``level=None`` takes the deepest level whose coarsest band is at least 2 x 2. Raises
    ``ValueError`` for a non-orthogonal wavelet or sides not divisible by ``2 ** level``.
    """

    name = "wavelet"

    def __init__(self, shape: tuple[int, int], wavelet: str = "db2", level: int | None = None) -> None:
        import pywt

        where = "OrthonormalWavelet"
        try:
            self.wavelet = pywt.Wavelet(wavelet)
        except ValueError:
            raise ValueError(f"{where}: unknown wavelet {wavelet!r}; see pywt.wavelist(kind='discrete')") from None
        if not self.wavelet.orthogonal:
            raise ValueError(f"{where}: wavelet {wavelet!r} is not orthogonal (Lasso needs an orthonormal basis); "
                             "use e.g. 'haar', 'db2', 'db4', 'sym4'")
        height, width = (int(s) for s in shape)
        if level is None:
            level = 0
            while height % 2 ** (level + 1) == 0 and width % 2 ** (level + 1) == 0 and \
                    min(height, width) // 2 ** (level + 1) >= 2:
                level += 1
        if isinstance(level, bool) or not isinstance(level, numbers.Integral) or level < 1:
            raise ValueError(f"{where}: 'level' must be an int >= 1 (images {height} x {width} allow none), got {level!r}")
        if height % 2**level or width % 2**level:
            raise ValueError(f"{where}: image sides {height} x {width} must be divisible by 2**level = {2**level}")
        self.shape, self.level = (height, width), int(level)
        self._slices: dict[int, list] = {}  # by array rank: pywt's slices index every axis

    def _slices_for(self, ndim: int):
        import pywt

        if ndim not in self._slices:
            probe = np.zeros((1,) * (ndim - 2) + self.shape)
            slices = pywt.coeffs_to_array(self._wavedec(probe), axes=(-2, -1))[1]
            # The probe's size-1 leading axes would cut the batch: keep whole leading axes.
            lead = (slice(None),) * (ndim - 2)
            fix = lambda item: lead + tuple(item[ndim - 2:])  # noqa: E731
            self._slices[ndim] = [fix(entry) if isinstance(entry, tuple) else {k: fix(v) for k, v in entry.items()}
                                  for entry in slices]
        return self._slices[ndim]

    def _wavedec(self, x):
        import pywt

        with warnings.catch_warnings():
            # Periodization deeper than pywt's "useful" level is still an orthonormal transform.
            warnings.filterwarnings("ignore", message=".*boundary effects.*")
            return pywt.wavedec2(x, self.wavelet, mode="periodization", level=self.level, axes=(-2, -1))

    def forward(self, x: np.ndarray) -> np.ndarray:
        import pywt

        array, _ = pywt.coeffs_to_array(self._wavedec(x), axes=(-2, -1))
        return array

    def inverse(self, c: np.ndarray) -> np.ndarray:
        import pywt

        coeffs = pywt.array_to_coeffs(c, self._slices_for(c.ndim), output_format="wavedec2")
        return pywt.waverec2(coeffs, self.wavelet, mode="periodization", axes=(-2, -1))


def _measurement(operator, y, where):
    if not getattr(operator, "linear", False):
        raise TypeError(f"{where}: 'operator' must be a linear pyinverse.physics operator, got {type(operator).__name__}")
    kind = "numpy" if isinstance(y, np.ndarray) else "torch" if isinstance(y, torch.Tensor) else None
    if kind is None:
        raise TypeError(f"{where}: 'y' must be a numpy array or torch tensor, got {type(y).__name__}")
    array = y.detach().cpu().numpy() if kind == "torch" else y
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"{where}: 'y' must be floating point, got {array.dtype}")
    array = np.ascontiguousarray(array, dtype=np.float64)
    if array.ndim < 1 or array.shape[0] < 1:
        raise ValueError(f"{where}: 'y' must have a batch axis, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{where}: 'y' has non-finite values (NaN or inf)")
    return array, kind, y


def _back(x: np.ndarray, kind: str, like: Any):
    if kind == "numpy":
        return x.astype(like.dtype, copy=False)
    return torch.from_numpy(x).to(dtype=like.dtype, device=like.device)


def operator_norm_squared(operator: Any, image_shape: tuple[int, ...], iterations: int = 1000, seed: int = 0) -> float:
    """``||A||_2^2``, the largest eigenvalue of ``A^T A``, in float64: Lanczos (ARPACK through
    ``scipy.sparse.linalg.eigsh``, to 1e-10 relative, at most ``iterations`` >= 1 restarts, from a
    seeded random start) on the flattened ``A^T A``; a dense eigensolve below 64 unknowns. Power
    iteration, used before, approaches the value from below and was up to 3% short after 50 steps
    for Gaussian matrices (close top eigenvalues), more than FISTA's 1% margin.

    Example:
        >>> from pyinverse.physics import Denoising
        >>> round(operator_norm_squared(Denoising(0.1), (1, 1, 8, 8)), 12)
        1.0
    """
    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

    iterations = _positive_int(iterations, "operator_norm_squared", "iterations")
    rng = np.random.default_rng(check_seed(seed, "operator_norm_squared"))
    shape = tuple(int(s) for s in image_shape)
    size = math.prod(shape)

    def normal(v: np.ndarray) -> np.ndarray:
        return np.asarray(operator.A_adjoint(operator.A(v.reshape(shape))), dtype=np.float64).reshape(size)

    if size < 64:
        gram = np.stack([normal(column) for column in np.eye(size)], axis=1)
        return float(max(np.linalg.eigvalsh(0.5 * (gram + gram.T))[-1], 0.0))
    normal_operator = LinearOperator((size, size), matvec=normal, dtype=np.float64)
    try:
        value = eigsh(normal_operator, k=1, which="LA", tol=1e-10, maxiter=iterations,
                      v0=rng.standard_normal(size), return_eigenvectors=False)[0]
    except ArpackNoConvergence as error:
        raise RuntimeError(f"operator_norm_squared: Lanczos did not converge in {iterations} restarts") from error
    return float(max(value, 0.0))


def lasso_fista(operator: Any, y: Any, lam: float, transform: str = "dct", *, image_shape: tuple[int, int, int],
                steps: int = 500, tol: float = 1e-7, wavelet: str = "db2", level: int | None = None) -> Any:
    """Lasso reconstruction ``W^T argmin_c 1/2||A W^T c - y||^2 + lam ||c||_1`` by FISTA (module doc).

    Args:
        operator: a linear :mod:`pyinverse.physics` operator (compressed sensing, inpainting,
            denoising, ...).
        y: measurements ``(B, *operator.output_shape)`` (numpy or torch, finite).
        lam: the l1 weight (>= 0; 0 gives least squares through FISTA).
        transform: ``"dct"`` or ``"wavelet"``.
        image_shape: ``(C, H, W)`` of the images (the operator does not always know it).
        steps: maximum FISTA iterations.
        tol: stop when ``||c_k - c_{k-1}|| <= tol * max(||c_k||, 1)`` for every image.
        wavelet, level: the PyWavelets wavelet (orthogonal) and decomposition level.

    Returns:
        images ``(B, C, H, W)``: numpy in the input dtype for numpy ``y``, else torch on ``y``'s device.

    Example:
        >>> from pyinverse.physics import CompressedSensing
        >>> x = torch.rand(2, 1, 16, 16)
        >>> op = CompressedSensing(0.3, seed=0, image_shape=(1, 16, 16))
        >>> x_hat = lasso_fista(op, op.A(x), lam=0.01, transform="dct", image_shape=(1, 16, 16))
    """
    where = "lasso_fista"
    array, kind, like = _measurement(operator, y, where)
    if isinstance(lam, bool) or not isinstance(lam, numbers.Real) or not math.isfinite(lam) or lam < 0:
        raise ValueError(f"{where}: 'lam' must be a finite number >= 0, got {lam!r}")
    try:
        shape = tuple(int(s) for s in image_shape)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: 'image_shape' must be (C, H, W), got {image_shape!r}") from None
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"{where}: 'image_shape' must be (C, H, W) of positive ints, got {image_shape!r}")
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
        raise ValueError(f"{where}: 'steps' must be an int >= 1, got {steps!r}")
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not math.isfinite(tol) or tol < 0:
        raise ValueError(f"{where}: 'tol' must be a finite number >= 0, got {tol!r}")
    batch = array.shape[0]
    expected = tuple(operator.output_shape((batch,) + shape))
    if array.shape != expected:
        raise ValueError(f"{where}: 'y' must have shape {expected} for images {shape}, got {array.shape}")
    if transform == "dct":
        basis = OrthonormalDCT()
    elif transform == "wavelet":
        basis = OrthonormalWavelet(shape[1:], wavelet=wavelet, level=level)
    else:
        raise ValueError(f"{where}: 'transform' must be one of {TRANSFORMS}, got {transform!r}")

    lipschitz = 1.01 * operator_norm_squared(operator, (1,) + shape)
    if lipschitz == 0.0:
        raise ValueError(f"{where}: the operator is zero (||A|| = 0)")
    step = 1.0 / lipschitz
    threshold = lam * step
    c = np.zeros((batch,) + shape)
    momentum_point, t = c.copy(), 1.0
    for _ in range(int(steps)):
        residual = operator.A(basis.inverse(momentum_point)) - array
        gradient = basis.forward(operator.A_adjoint(residual))
        moved = momentum_point - step * gradient
        c_new = np.sign(moved) * np.maximum(np.abs(moved) - threshold, 0.0)
        t_new = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * t * t))
        momentum_point = c_new + ((t - 1.0) / t_new) * (c_new - c)
        change = np.linalg.norm((c_new - c).reshape(batch, -1), axis=1)
        size = np.maximum(np.linalg.norm(c_new.reshape(batch, -1), axis=1), 1.0)
        c, t = c_new, t_new
        if np.all(change <= tol * size):
            break
    return _back(basis.inverse(c), kind, like)


def lasso_dct(operator: Any, y: Any, lam: float, *, image_shape: tuple[int, int, int], **kwargs) -> Any:
    """:func:`lasso_fista` with the orthonormal 2-D DCT (``transform="dct"``)."""
    return lasso_fista(operator, y, lam, "dct", image_shape=image_shape, **kwargs)


def lasso_wavelet(operator: Any, y: Any, lam: float, *, image_shape: tuple[int, int, int], **kwargs) -> Any:
    """:func:`lasso_fista` with an orthogonal wavelet basis (``transform="wavelet"``)."""
    return lasso_fista(operator, y, lam, "wavelet", image_shape=image_shape, **kwargs)


def bm3d_denoise(y: Any, sigma: float) -> Any:
    """BM3D denoising (the optional ``bm3d`` package) of images ``(B, C, H, W)`` with noise ``sigma``.

    Gray images (``C = 1``) use ``bm3d.bm3d`` per image, RGB (``C = 3``) ``bm3d.bm3d_rgb``;
    ``sigma`` is the noise standard deviation in image units ([0, 1] scale). ``y`` must be
    floating point; numpy in gives numpy out (same dtype); torch in gives torch out on the same
    device. Images must be at least 8 x 8 pixels (bm3d's blocks) and not exactly 8 x 8 (which
    crashes the bm3d package, bm3d 4.0.3).

    Raises:
        ImportError: ``bm3d`` is not installed (``pip install bm3d``; pyinverse never requires it).
        TypeError, ValueError: bad ``y`` (not float, wrong shape or size, non-finite) or ``sigma``.

    Example:
        >>> noisy = x + 0.1 * torch.randn_like(x)
        >>> denoised = bm3d_denoise(noisy, 0.1)  # doctest: +SKIP
    """
    where = "bm3d_denoise"
    try:
        import bm3d
    except ImportError:
        raise ImportError(f"{where}: needs the optional 'bm3d' package (pip install bm3d)") from None
    kind = "numpy" if isinstance(y, np.ndarray) else "torch" if isinstance(y, torch.Tensor) else None
    if kind is None:
        raise TypeError(f"{where}: 'y' must be a numpy array or torch tensor, got {type(y).__name__}")
    array = y.detach().cpu().numpy() if kind == "torch" else y
    if not np.issubdtype(array.dtype, np.floating):
        raise TypeError(f"{where}: 'y' must be floating point, got {array.dtype}")
    if array.ndim != 4 or array.shape[1] not in (1, 3) or array.shape[0] < 1:
        raise ValueError(f"{where}: 'y' must have shape (B, 1 or 3, H, W), got {array.shape}")
    height, width = array.shape[2:]
    # bm3d rejects sides < 8 itself, but segfaults (kills the process) on exactly 8 x 8.
    if min(height, width) < 8 or (height, width) == (8, 8):
        raise ValueError(f"{where}: 'y' images must have H >= 8 and W >= 8 and not be exactly 8 x 8 "
                         f"(bm3d's 8 x 8 blocks; an 8 x 8 image crashes bm3d), got {height} x {width}")
    if not np.isfinite(array).all():
        raise ValueError(f"{where}: 'y' has non-finite values (NaN or inf)")
    if isinstance(sigma, bool) or not isinstance(sigma, numbers.Real) or not math.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"{where}: 'sigma' must be a finite number > 0, got {sigma!r}")
    out = np.empty(array.shape, dtype=np.float64)
    for index, image in enumerate(np.asarray(array, dtype=np.float64)):
        if image.shape[0] == 1:
            out[index, 0] = bm3d.bm3d(image[0], sigma_psd=float(sigma))
        else:
            out[index] = np.moveaxis(bm3d.bm3d_rgb(np.moveaxis(image, 0, -1), sigma_psd=float(sigma)), -1, 0)
    return _back(out, kind, y)
