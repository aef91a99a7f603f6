"""Square roots of symmetric positive semi-definite matrices, batched, and the Fréchet distance.

Covariance matrices are symmetric PSD, so their square roots come from a symmetric
eigendecomposition ``A = V diag(lambda) V^T`` in float64 with the eigenvalues clamped at 0: the
result is real and symmetric, also for singular (rank-deficient) matrices, where
``scipy.linalg.sqrtm`` returns complex values or warns.

* ``n <= 64`` (per-patch covariances, batches of 1e5 and more): our kernel (``csrc/sqrtm/``). On
  the CPU, Householder tridiagonalisation + implicit QL run on 4-8 matrices at once in the SIMD
  lanes; for float32 input QL also deflates at float32 precision (LAPACK ssteqr's test, float64
  arithmetic kept): a fifth fewer rotations, roots within a few float32 roundings of the float64
  ones. On CUDA, round-robin Jacobi with one matrix per team of min(n, 32) threads of a warp, in
  shared memory.
* larger: LAPACK (``numpy.linalg.eigh``) on the CPU, ``torch.linalg.eigh`` / ``cupy.linalg.eigh``
  (cuSOLVER) on CUDA, in float64.

Through torch autograd the backward solves the Sylvester equation ``S dX + dX S = G`` in the
eigenbasis instead of differentiating the eigenvectors, so it stays finite for repeated
eigenvalues (``eigh``'s own gradient is NaN there).

The Fréchet distance uses the symmetric form ``tr (S1 S2)^1/2 = sum sqrt(eig(L^T S2 L))`` with
``S1 = L L^T`` (pivoted Cholesky, which also handles rank-deficient ``S1``), never the square root
of the non-symmetric product ``S1 S2``.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import _C
from .._backend import ArrayInfo, allocate, check_device_available, describe, merge_axes, require_float

#: Largest matrix order handled by the batched kernel; larger matrices go to LAPACK / cuSOLVER.
KERNEL_MAX_ORDER = 64
#: The same on CUDA. Measured on an H100 (BENCHMARKS.md, "CUDA"): the kernel beats our cuSOLVER
#: (float64) path at every order up to 64, by 7x at n = 8, 5x at 16, 1.8x at 32 and 40-70x at 64
#: (where cuSOLVER has no batched Jacobi).
CUDA_KERNEL_MAX_ORDER = 64
#: Which solver the kernel runs: "auto" (tridiagonal + QL on the CPU, round-robin Jacobi on CUDA),
#: or "tridiagonal" / "jacobi" to force one ("tridiagonal" on CUDA: one thread per matrix).
#: "jacobi" on the CPU runs the CUDA kernel's arithmetic lane by lane: for the tests.
_KERNEL_ALGORITHM = "auto"
#: The ``algorithm`` choices of :func:`sqrtm_spd` and :func:`inv_sqrtm_spd`.
ALGORITHMS = ("auto", "jacobi")

__all__ = [
    "CUDA_KERNEL_MAX_ORDER",
    "KERNEL_MAX_ORDER",
    "frechet_distance",
    "inv_sqrtm_spd",
    "sqrtm_spd",
    "trace_sqrt_product",
    "wasserstein2_gaussian",
]


# -------------------------------------------------------------------------------------------------
# validation
# -------------------------------------------------------------------------------------------------

def _default_symmetry_tol(dtype: np.dtype) -> float:
    # sqrt(eps) of the input's precision: far above the rounding of a covariance computed as
    # X^T X in any summation order, far below a genuinely non-symmetric matrix.
    return float(np.sqrt(np.finfo(dtype).eps))


def _describe_square(a: Any, name: str, op: str) -> ArrayInfo:
    info = describe(a, name, op)
    require_float(info, name, op)
    if info.ndim < 2 or info.shape[-1] != info.shape[-2]:
        raise ValueError(f"{op}: '{name}' must have shape (..., n, n) (a batch of square matrices), "
                         f"got {info.shape}")
    check_device_available(info, name, op)
    return info


def _check_tolerance(value: Any, name: str, op: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{op}: '{name}' must be a number, got {value!r}")
    value = float(value)
    if not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"{op}: '{name}' must be a finite number >= 0, got {value}")
    return value


def _xp_name(info: ArrayInfo) -> str:
    """Which library computes the LAPACK path: numpy for anything on the CPU."""
    return "numpy" if info.device == "cpu" else info.kind


def _to_float64(info: ArrayInfo, library: str) -> Any:
    """The input as a float64 array of ``library`` (no copy when it already is one)."""
    x = info.array
    if library == "numpy":
        if info.kind == "torch":
            x = x.detach().resolve_conj().resolve_neg().numpy()
        return np.asarray(x, dtype=np.float64)
    if library == "torch":
        import torch

        return x.detach().to(torch.float64)
    return x.astype("float64", copy=False)


def _swap(x: Any) -> Any:
    return x.swapaxes(-1, -2)  # numpy, torch and cupy alike


def _check_values_lapack(x: Any, library: str, symmetry_tol: float, op: str, name: str = "a") -> None:
    """NaN/inf and symmetry checks of a float64 (..., n, n) array, naming the first bad matrix."""
    count, n = math.prod(x.shape[:-2]), x.shape[-1]
    if count == 0 or n == 0:
        return  # nothing to check (and reshape(-1, ...) cannot infer a size from 0 elements)
    flat = x.reshape(count, n * n)
    if library == "torch":
        import torch

        finite = torch.isfinite(flat).all(1).cpu().numpy()
        scale = flat.abs().amax(1).cpu().numpy()
        asymmetry = (flat - _swap(x.reshape(count, n, n)).reshape(count, n * n)).abs().amax(1).cpu().numpy()
    else:
        with np.errstate(invalid="ignore"):
            finite = np.isfinite(flat).all(1)
            scale = np.abs(flat).max(1)
            asymmetry = np.abs(flat - _swap(x.reshape(count, n, n)).reshape(count, n * n)).max(1)
        if library == "cupy":
            finite, scale, asymmetry = finite.get(), scale.get(), asymmetry.get()

    def which(i: int) -> str:
        return "" if x.ndim == 2 else f" (first in matrix {i} of {count})"

    bad = np.flatnonzero(~finite)
    if bad.size:
        raise ValueError(f"{op}: '{name}' holds NaN or inf{which(bad[0])}")
    bad = np.flatnonzero(asymmetry > symmetry_tol * scale)
    if bad.size:
        i = bad[0]
        raise ValueError(f"{op}: '{name}' must be symmetric, but max |a_ij - a_ji| / max |a_ij| = "
                         f"{asymmetry[i] / scale[i]:.3g} > symmetry_tol = {symmetry_tol:.3g}{which(i)} "
                         "(symmetrise it with (a + a^T) / 2 or raise symmetry_tol)")


# -------------------------------------------------------------------------------------------------
# the two paths: our kernel (n <= 64) and LAPACK (n > 64)
# -------------------------------------------------------------------------------------------------

def _eig_floor(eigenvalues: Any, eps: float, library: str) -> Any:
    """eps * lambda_max per matrix, shaped to broadcast against (..., n)."""
    if library == "torch":
        return eps * eigenvalues.amax(-1, keepdim=True)
    return eps * eigenvalues.max(-1, keepdims=True)


def _spectral_function(eigenvalues: Any, kind: str, eps: float, pseudo: bool, library: str) -> Any:
    """f(lambda) of the LAPACK path, the same definitions as the kernel (sqrtm_kernel.h)."""
    xp = _module(library)
    if kind == "sqrt":
        return xp.sqrt(xp.clip(eigenvalues, 0.0, None)) if library != "torch" else eigenvalues.clamp(min=0.0).sqrt()
    floor = _eig_floor(eigenvalues, eps, library)
    if library == "torch":
        import torch

        kept = eigenvalues > floor
        value = 1.0 / torch.sqrt(torch.maximum(eigenvalues, floor))
        return torch.where(kept, value, torch.zeros_like(value)) if pseudo else value
    kept = eigenvalues > floor
    with np.errstate(divide="ignore"):
        value = 1.0 / xp.sqrt(xp.maximum(eigenvalues, floor))
    return xp.where(kept, value, 0.0) if pseudo else value


def _module(library: str) -> Any:
    if library == "numpy":
        return np
    if library == "torch":
        import torch

        return torch
    import cupy

    return cupy


def _lapack_eigh(info: ArrayInfo, symmetry_tol: float, check: bool, op: str) -> tuple[Any, Any, Any, str]:
    """Float64 (eigenvalues mu, eigenvectors, scale, library) of the symmetrised input, in the
    library that holds it: each matrix is divided by its ``scale`` (a power of 4, shape
    (..., 1, 1)) first, so its eigenvalues are ``scale * mu`` (they may be beyond DBL_MAX)."""
    library = _xp_name(info)
    x = _to_float64(info, library)
    if check:
        _check_values_lapack(x, library, symmetry_tol, op)
    xp = _module(library)
    if library == "torch":
        largest = x.abs().amax(dim=(-2, -1)).cpu().numpy()
    else:
        largest = xp.abs(x).max(axis=(-2, -1))
        largest = largest if library == "numpy" else xp.asnumpy(largest)
    scale = _power_of_4_above(largest)[..., None, None]  # NaN (unchecked input): 1
    scale = xp.asarray(scale) if library != "torch" else xp.from_numpy(scale).to(x.device)
    x = x / scale
    x = 0.5 * x + 0.5 * _swap(x)
    return (*xp.linalg.eigh(x), scale, library)


def _compose(vectors: Any, values: Any) -> Any:
    """V diag(values) V^T over the batch."""
    return (vectors * values[..., None, :]) @ _swap(vectors)


def _to_caller(x: Any, library: str, info: ArrayInfo) -> Any:
    """A float64 result of the LAPACK path as the caller's array type, device and dtype."""
    if info.kind == "numpy":
        return np.ascontiguousarray(x, dtype=info.dtype)
    if info.kind == "torch":
        import torch

        if library == "numpy":
            x = torch.from_numpy(np.ascontiguousarray(x))
        return x.to(device=info.array.device, dtype=getattr(torch, info.dtype.name)).contiguous()
    return x.astype(info.dtype)


def _run_kernel(info: ArrayInfo, want: dict[str, bool], eps: float, pseudo: bool, symmetry_tol: float,
                check: bool, op: str, algorithm: str = "auto") -> dict[str, Any]:
    """Call the batched kernel; returns the requested outputs in the caller's type and dtype."""
    n = info.shape[-1]
    batch = info.shape[:-2]
    shapes = {"sqrt": (*batch, n, n), "inv_sqrt": (*batch, n, n), "eigenvalues": (*batch, n),
              "eigenvectors": (*batch, n, n)}
    outputs = {name: allocate(info, shapes[name], info.dtype) for name, wanted in want.items() if wanted}
    if int(np.prod(batch, dtype=np.int64)) == 0:
        return {name: out for name, (out, _) in outputs.items()}
    merged_shape, merged_strides = merge_axes(batch, info.strides[:-2])

    def pointer(name: str) -> int:
        return outputs[name][1].ptr if name in outputs else 0

    _C.sqrtm_spd(
        device=info.device, device_index=max(info.device_index, 0), data=info.ptr, dtype=info.dtype.name,
        n=n, row_stride=info.strides[-2], col_stride=info.strides[-1], batch_shape=merged_shape,
        batch_strides=merged_strides, sqrt_out=pointer("sqrt"), inv_sqrt_out=pointer("inv_sqrt"),
        eigenvalues_out=pointer("eigenvalues"), eigenvectors_out=pointer("eigenvectors"), eps=eps,
        pseudo_inverse=pseudo, check=check, symmetry_tol=symmetry_tol, op=op, stream=info.stream,
        algorithm=_KERNEL_ALGORITHM if algorithm == "auto" else algorithm,
    )
    return {name: out for name, (out, _) in outputs.items()}


def _matrix_functions(info: ArrayInfo, kind: str, eps: float, pseudo: bool, symmetry_tol: float, check: bool,
                      want_eigen: bool, op: str, algorithm: str = "auto") -> tuple[Any, Any, Any, str]:
    """(result, eigenvalues, eigenvectors, library): eigen* are None unless want_eigen.

    The kernel's eigenpairs come in the caller's dtype and library ("kernel"); the LAPACK path's
    in float64 in the library that computed them.
    """
    n = info.shape[-1]
    if n <= (CUDA_KERNEL_MAX_ORDER if info.device == "cuda" else KERNEL_MAX_ORDER):
        name = "sqrt" if kind == "sqrt" else "inv_sqrt"
        out = _run_kernel(info, {name: True, "eigenvalues": want_eigen, "eigenvectors": want_eigen}, eps, pseudo,
                          symmetry_tol, check, op, algorithm)
        return out[name], out.get("eigenvalues"), out.get("eigenvectors"), "kernel"
    values, vectors, scale, library = _lapack_eigh(info, symmetry_tol, check, op)
    # f(scale * mu) = f(mu) * scale^(+-1/2), exact (scale is a power of 4): the root of a matrix
    # whose eigenvalues are beyond DBL_MAX is not, as the kernel does it (spectral_values).
    root = scale.sqrt() if library == "torch" else _module(library).sqrt(scale)
    result = _compose(vectors, _spectral_function(values, kind, eps, pseudo, library))
    result = result * root if kind == "sqrt" else result / root
    result = _to_caller(0.5 * result + 0.5 * _swap(result), library, info)
    if not want_eigen:
        return result, None, None, library
    return result, values * scale[..., 0], vectors, library


# -------------------------------------------------------------------------------------------------
# autograd
# -------------------------------------------------------------------------------------------------

def _sylvester_weights(eigenvalues, kind: str, eps: float, pseudo: bool):
    """K with dF = V ((V^T dA V) * K) V^T (Daleckii-Krein), as torch float64, shape (..., n, n).

    sqrt: K_ij = 1 / (s_i + s_j), s = sqrt(max(lambda, 0)): the solution of S dX + dX S = dA in the
    eigenbasis; 0 where s_i + s_j vanishes (both eigenvalues zero: the derivative is unbounded there).
    inverse sqrt: -1 / (s_i s_j (s_i + s_j)) between kept eigenvalues, the divided difference
    (f_i - f_j) / (lambda_i - lambda_j) between a kept and a clamped one, 0 between clamped ones.
    No division by lambda_i - lambda_j between kept eigenvalues, so equal eigenvalues are fine.
    """
    import torch

    lam = eigenvalues.to(torch.float64)
    if kind == "sqrt":
        s = lam.clamp(min=0.0).sqrt()
        total = s[..., :, None] + s[..., None, :]
        tiny = torch.finfo(torch.float64).eps * s.amax(-1, keepdim=True)[..., None]
        return torch.where(total > tiny, 1.0 / torch.where(total > tiny, total, torch.ones_like(total)),
                           torch.zeros_like(total))
    floor = eps * lam.amax(-1, keepdim=True)
    kept = lam > floor
    s = torch.where(kept, lam, torch.ones_like(lam)).sqrt()
    f = torch.where(kept, 1.0 / s, torch.zeros_like(s) if pseudo else 1.0 / floor.sqrt().expand_as(s))
    si, sj = s[..., :, None], s[..., None, :]
    both = kept[..., :, None] & kept[..., None, :]
    one = kept[..., :, None] ^ kept[..., None, :]
    gap = lam[..., :, None] - lam[..., None, :]
    safe_gap = torch.where(one & (gap != 0), gap, torch.ones_like(gap))
    divided = (f[..., :, None] - f[..., None, :]) / safe_gap
    inner = -1.0 / (si * sj * (si + sj))
    zero = torch.zeros_like(inner)
    return torch.where(both, inner, torch.where(one & (gap != 0), divided, zero))


def _make_autograd_function():
    import torch

    class SqrtmSpdFunction(torch.autograd.Function):
        """sqrtm_spd / inv_sqrtm_spd with the Sylvester (Daleckii-Krein) backward."""

        @staticmethod
        def forward(ctx, a, kind, eps, pseudo, symmetry_tol, check, op, algorithm):
            info = _describe_square(a.detach(), "a", op)
            result, values, vectors, library = _matrix_functions(info, kind, eps, pseudo, symmetry_tol, check,
                                                                 True, op, algorithm)
            if library == "numpy":
                values, vectors = torch.from_numpy(values), torch.from_numpy(vectors)
            values = values.to(a.device)
            vectors = vectors.to(a.device)
            ctx.save_for_backward(values, vectors)
            ctx.kind, ctx.eps, ctx.pseudo = kind, eps, pseudo
            return result

        @staticmethod
        @torch.autograd.function.once_differentiable
        def backward(ctx, grad):
            values, vectors = ctx.saved_tensors
            v = vectors.to(torch.float64)
            g = grad.to(torch.float64)
            g = 0.5 * (g + g.transpose(-1, -2))
            weights = _sylvester_weights(values, ctx.kind, ctx.eps, ctx.pseudo)
            inner = (v.transpose(-1, -2) @ g @ v) * weights
            grad_a = v @ inner @ v.transpose(-1, -2)
            grad_a = 0.5 * (grad_a + grad_a.transpose(-1, -2))
            return grad_a.to(grad.dtype), None, None, None, None, None, None, None

    return SqrtmSpdFunction


_AUTOGRAD_FUNCTION = None


def _autograd_function():
    global _AUTOGRAD_FUNCTION
    if _AUTOGRAD_FUNCTION is None:
        _AUTOGRAD_FUNCTION = _make_autograd_function()
    return _AUTOGRAD_FUNCTION


def _needs_grad(info: ArrayInfo) -> bool:
    if info.kind != "torch":
        return False
    import torch

    return info.array.requires_grad and torch.is_grad_enabled()


def _apply(a: Any, kind: str, eps: float, pseudo: bool, symmetry_tol: Any, check: bool, op: str,
           algorithm: Any) -> Any:
    info = _describe_square(a, "a", op)
    if not isinstance(check, bool):
        raise TypeError(f"{op}: 'check' must be a bool, got {check!r}")
    if not (isinstance(algorithm, str) and algorithm in ALGORITHMS):
        raise ValueError(f"{op}: 'algorithm' must be one of {', '.join(map(repr, ALGORITHMS))}, got {algorithm!r}")
    if algorithm == "jacobi" and info.shape[-1] > (CUDA_KERNEL_MAX_ORDER if info.device == "cuda"
                                                   else KERNEL_MAX_ORDER):
        raise ValueError(f"{op}: algorithm='jacobi' takes matrices of order <= {KERNEL_MAX_ORDER} (the batched "
                         f"kernel), got {info.shape[-1]}; larger ones use LAPACK / cuSOLVER (algorithm='auto')")
    symmetry_tol = (_default_symmetry_tol(info.dtype) if symmetry_tol is None
                    else _check_tolerance(symmetry_tol, "symmetry_tol", op))
    if info.shape[-1] == 0:
        out, _ = allocate(info, info.shape, info.dtype)
        return out
    if _needs_grad(info):
        return _autograd_function().apply(a, kind, eps, pseudo, symmetry_tol, check, op, algorithm)
    result, _, _, _ = _matrix_functions(info, kind, eps, pseudo, symmetry_tol, check, False, op, algorithm)
    return result


# -------------------------------------------------------------------------------------------------
# public API
# -------------------------------------------------------------------------------------------------

def sqrtm_spd(a: Any, *, symmetry_tol: float | None = None, check: bool = True, algorithm: str = "auto") -> Any:
    """The principal square root of each symmetric positive semi-definite matrix in a batch.

    ``S = V diag(sqrt(max(lambda, 0))) V^T`` from the eigendecomposition of ``(A + A^T) / 2`` in
    float64: ``S`` is symmetric PSD and ``S @ S = A`` up to rounding (and up to the clamped
    negative eigenvalues, which for a covariance matrix are rounding noise).

    Args:
        a: shape ``(..., n, n)``, float32 or float64; a numpy array, torch tensor (CPU or CUDA) or
            cupy array, any strides. ``n <= 64`` runs our batched kernel, larger ``n`` LAPACK.
        symmetry_tol: largest accepted ``max |a_ij - a_ji| / max |a_ij|`` per matrix; default
            ``sqrt(eps)`` of the input dtype (3.5e-4 for float32, 1.5e-8 for float64).
        check: validate the values (NaN/inf, symmetry) and raise ValueError naming the first bad
            matrix. On CUDA this waits for the result; ``check=False`` skips the wait, and a bad
            matrix then yields unspecified values (NaN) for that matrix only.
        algorithm: the solver for ``n <= 64``. ``"auto"``: the fastest on the device
            (Householder + QL on 4-8 matrices per SIMD register on the CPU, round-robin Jacobi on
            CUDA). ``"jacobi"``: round-robin Jacobi on either device, which computes the small
            eigenvalues of a positive definite matrix to high relative accuracy (Demmel & Veselic),
            where tridiagonal reduction loses ``eps * cond``: for graded matrices, such as
            covariances of features on very different scales. On the CPU it runs the CUDA
            kernel's steps one lane at a time, 6-20x slower than ``"auto"`` (about 1 ms per 32x32
            matrix on one core).

    Returns:
        ``(..., n, n)``, the caller's array type, device and dtype, C-contiguous. A torch tensor
        that requires grad gets a gradient through the Sylvester equation ``S dX + dX S = G``
        (finite for repeated eigenvalues; 0 between pairs of zero eigenvalues).

    Raises:
        ValueError: non-square or < 2-D input, NaN/inf, a non-symmetric matrix, an unknown
            ``algorithm`` or ``"jacobi"`` with ``n > 64``.
        TypeError: a dtype other than float32/float64.

    Example:
        >>> x = np.random.default_rng(0).standard_normal((1000, 3, 50))
        >>> cov = x @ x.transpose(0, 2, 1) / 50                  # 1000 covariances, 3x3
        >>> s = sqrtm_spd(cov)
        >>> np.allclose(s @ s, cov)
        True
    """
    return _apply(a, "sqrt", 0.0, False, symmetry_tol, check, "sqrtm_spd", algorithm)


def inv_sqrtm_spd(a: Any, eps: float | None = None, *, pseudo: bool = False, symmetry_tol: float | None = None,
                  check: bool = True, algorithm: str = "auto") -> Any:
    """The inverse square root ``A^-1/2`` of each symmetric positive semi-definite matrix.

    ``V diag(1 / sqrt(max(lambda, floor))) V^T`` with ``floor = eps * lambda_max`` per matrix, so
    the condition number is capped at ``1 / eps`` (a ridge relative to the matrix's scale). With
    ``pseudo=True`` eigenvalues ``<= floor`` contribute 0 instead: the square root of the
    Moore-Penrose pseudo-inverse, for rank-deficient covariances (more dimensions than samples).

    Args:
        a: shape ``(..., n, n)`` as in :func:`sqrtm_spd`.
        eps: relative eigenvalue floor, >= 0; default ``n * finfo(a.dtype).eps`` (numpy's ``pinv``
            cutoff).
        pseudo: zero the eigenvalues at or below the floor instead of raising them to it.
        symmetry_tol, check, algorithm: as in :func:`sqrtm_spd`. For whitening graded covariances
            on the CPU, ``algorithm="jacobi"`` is the accurate choice (a test: condition 1e12
            from a 6-decade grading, 1e-15 relative error against 60-digit arithmetic, where
            ``"auto"`` gave 2e-4 and LAPACK 6e-6).

    Returns:
        ``(..., n, n)`` in the caller's type, device and dtype. A matrix with no positive
        eigenvalue (the zero matrix) has no inverse and gets NaN, or 0 with ``pseudo=True``.
        Differentiable through torch autograd like :func:`sqrtm_spd` (the floor is held fixed).

    Example:
        >>> w = inv_sqrtm_spd(cov)                 # whitening matrices
        >>> np.allclose(w @ cov @ w, np.eye(3))
        True
    """
    op = "inv_sqrtm_spd"
    info = _describe_square(a, "a", op)
    if not isinstance(pseudo, bool):
        raise TypeError(f"{op}: 'pseudo' must be a bool, got {pseudo!r}")
    eps = (info.shape[-1] * float(np.finfo(info.dtype).eps) if eps is None else _check_tolerance(eps, "eps", op))
    return _apply(a, "inv_sqrt", eps, pseudo, symmetry_tol, check, op, algorithm)


def _float64_inputs(values: dict[str, Any], op: str) -> tuple[dict[str, Any], dict[str, ArrayInfo], str]:
    """Float64 copies (or views) of float arrays that share one device, in the library that will
    compute with them (numpy for anything on the CPU, torch or cupy on CUDA)."""
    infos = {}
    for name, value in values.items():
        info = describe(value, name, op)
        require_float(info, name, op)
        infos[name] = info
    places = {(i.device, i.device_index) for i in infos.values()}
    if len(places) > 1:
        raise ValueError(f"{op}: all arguments must be on one device, got "
                         + ", ".join(f"'{n}' on {i.device}" for n, i in infos.items()))
    first = next(iter(infos.values()))
    library = _xp_name(first)
    if library != "numpy":
        kinds = {i.kind for i in infos.values()}
        if len(kinds) > 1:
            raise ValueError(f"{op}: CUDA arguments must all be torch tensors or all cupy arrays, got {sorted(kinds)}")
        check_device_available(first, next(iter(infos)), op)
    return {name: _to_float64(info, library) for name, info in infos.items()}, infos, library


def _check_covariances(arrays: dict[str, Any], infos: dict[str, ArrayInfo], names: tuple[str, ...], d: int | None,
                       library: str, op: str) -> int:
    """Each named array must be (d, d), finite, symmetric and without a negative variance; returns d."""
    for name in names:
        shape = infos[name].shape
        if len(shape) != 2 or shape[0] != shape[1] or (d is not None and shape[0] != d):
            expected = "(d, d)" if d is None else f"(d, d) = ({d}, {d})"
            raise ValueError(f"{op}: '{name}' must have shape {expected}, got {shape}")
        d = shape[0]
        _check_values_lapack(arrays[name], library, _default_symmetry_tol(infos[name].dtype), op, name)
        diagonal = _module(library).diagonal(arrays[name])
        if d and float(diagonal.min()) < -_psd_tolerance(infos[name].dtype) * d * float(abs(diagonal).max()):
            # a negative variance: the clipped eigenvalues would give a distance of 0 between different laws
            raise ValueError(f"{op}: '{name}' must be positive semi-definite, but its diagonal holds "
                             f"{float(diagonal.min()):.3g}")
    return d


def _trace_sqrt_product_pivoted_cholesky(sigma1: np.ndarray, sigma2: np.ndarray, tolerance: float, op: str) -> float:
    """tr (S1 S2)^1/2 on the CPU: S1 = P L L^T P^T by pivoted Cholesky (LAPACK dpstrf, which stops
    at S1's numerical rank r), then the eigenvalues of the r x r matrix L^T P^T S2 P L, which are
    the nonzero eigenvalues of S1 S2."""
    import scipy.linalg

    # LAPACK reads the lower triangles only (the inputs were checked to be symmetric).
    d = sigma1.shape[0]
    # tol < 0: LAPACK's default d * eps * max(diag); the pivots left out are rounding noise.
    factor, pivots, rank, info = scipy.linalg.lapack.dpstrf(sigma1, lower=1, tol=-1.0)
    if info < 0:  # pragma: no cover - an argument error inside LAPACK
        raise RuntimeError(f"trace_sqrt_product: LAPACK dpstrf failed (info={info})")
    order = pivots - 1
    if rank < d:
        # dpstrf stops at the first small pivot, PSD or not: the part it left, S1's Schur
        # complement, is within rounding of 0 for a PSD S1 (its diagonal below dpstrf's tolerance
        # bounds every entry), and not for an indefinite one (which would lose its negative part).
        lower = np.tril(factor)[:, :rank]
        rest = order[rank:]
        schur = sigma1[np.ix_(rest, rest)] - lower[rank:] @ lower[rank:].T
        _check_psd_remainder(schur, sigma1, d, tolerance, op)
    if rank == 0:
        return 0.0
    permuted = sigma2[np.ix_(order, order)]
    if rank == d:
        # L^T S2p L by dsygst (itype 2): symmetric, blocked, half the flops of two products.
        middle, info = scipy.linalg.lapack.dsygst(permuted, factor, itype=2, lower=1, overwrite_a=1)
        if info != 0:  # pragma: no cover - an argument error inside LAPACK
            raise RuntimeError(f"trace_sqrt_product: LAPACK dsygst failed (info={info})")
    else:
        middle = lower.T @ (0.5 * (permuted + permuted.T)) @ lower
    eigenvalues = scipy.linalg.eigvalsh(middle, lower=True, driver="evr", overwrite_a=True, check_finite=False)
    _check_middle_eigenvalues(eigenvalues, d, tolerance, op)
    return float(np.sqrt(np.clip(eigenvalues, 0.0, None)).sum())


def _check_psd_remainder(schur: np.ndarray, sigma1: np.ndarray, d: int, tolerance: float, op: str) -> None:
    scale = float(np.abs(sigma1).max())  # its largest variance, when it is PSD
    worst = float(np.abs(schur).max(initial=0.0))
    if worst > tolerance * d * scale:
        raise ValueError(f"{op}: 'sigma1' must be positive semi-definite, but its pivoted Cholesky factor leaves "
                         f"a remainder of {worst / scale:.3g} times its largest entry: 'sigma1' is indefinite")


def _check_middle_eigenvalues(eigenvalues: Any, d: int, tolerance: float, op: str) -> None:
    """L^T S2 L is PSD when S2 is: an eigenvalue negative beyond rounding means S2 is not."""
    ratio = _negative_eigenvalue_ratio(eigenvalues, d, tolerance)
    if ratio is not None:
        raise ValueError(f"{op}: the covariances must be positive semi-definite, but S1^1/2 S2 S1^1/2 has an "
                         f"eigenvalue {ratio:.3g} times its largest magnitude: 'sigma2' is indefinite")


def _negative_eigenvalue_ratio(eigenvalues: Any, d: int, tolerance: float) -> float | None:
    """The smallest eigenvalue over the largest magnitude when it is negative beyond rounding
    (``d * tolerance``, :func:`_psd_tolerance`), else None."""
    lowest, largest = float(eigenvalues.min()), float(abs(eigenvalues).max())
    return lowest / largest if lowest < -tolerance * d * largest else None


def _trace_sqrt_product_eigh(sigma1: Any, sigma2: Any, tolerance: float, library: str, op: str) -> float:
    """tr (S1 S2)^1/2 from eigh, for torch or cupy on their device: with S1 = U diag(l) U^T and
    R = U diag(sqrt(max(l, 0))), R^T S2 R has the eigenvalues of S1^1/2 S2 S1^1/2."""
    xp = _module(library)
    sigma1 = 0.5 * (sigma1 + _swap(sigma1))
    sigma2 = 0.5 * (sigma2 + _swap(sigma2))
    values, vectors = xp.linalg.eigh(sigma1)
    ratio = _negative_eigenvalue_ratio(values, sigma1.shape[0], tolerance)
    if ratio is not None:
        raise ValueError(f"{op}: 'sigma1' must be positive semi-definite, but it has an eigenvalue "
                         f"{ratio:.3g} times its largest magnitude")
    root = vectors * _spectral_function(values, "sqrt", 0.0, False, library)[None, :]
    middle = _swap(root) @ sigma2 @ root
    middle = 0.5 * (middle + _swap(middle))
    eigenvalues = xp.linalg.eigvalsh(middle)
    _check_middle_eigenvalues(eigenvalues, sigma1.shape[0], tolerance, op)
    return float(_spectral_function(eigenvalues, "sqrt", 0.0, False, library).sum())


_PSD_TOLERANCE = 1e3 * float(np.finfo(np.float64).eps)  # per dimension, relative: far above float64 rounding


def _psd_tolerance(*dtypes: Any) -> float:
    """Per dimension, relative to the largest entry: how far below 0 an eigenvalue (or pivot) of a
    PSD input held in ``dtypes`` may come from rounding. Far above float64 rounding; for float32
    inputs, above the rounding of the entries themselves (a rank-deficient covariance rounded to
    float32 has eigenvalues near -eps_32 times its largest: FID from fewer samples than features)."""
    eps = max((float(np.finfo(d).eps) for d in map(np.dtype, dtypes) if d.kind == "f"), default=0.0)
    return max(_PSD_TOLERANCE, 8.0 * eps)


def _power_of_4_above(max_abs: Any) -> Any:
    """The smallest power of 4 >= max_abs (1 for 0), within 4^-511 .. 4^511 (normal numbers, as the
    kernel's exact_scale): dividing by it is exact and its root is too. Elementwise on arrays."""
    max_abs = np.asarray(max_abs, dtype=np.float64)
    exponent = np.frexp(max_abs)[1]
    exponent = np.clip(exponent + (exponent & 1), -1022, 1022)
    return np.where(max_abs > 0, np.ldexp(1.0, exponent), 1.0)


def _trace_sqrt(sigma1: Any, sigma2: Any, tolerance: float, library: str, op: str) -> float:
    if sigma1.shape[0] == 0:
        return 0.0
    # tr (S1 S2)^1/2 = sqrt(c1 c2) tr ((S1 / c1) (S2 / c2))^1/2: with entries scaled to at most 1,
    # the products inside cannot overflow (they did from entries ~1e154 on, and the distance came
    # out 0) nor underflow to 0.
    scales = [float(_power_of_4_above(float(abs(s).max()))) for s in (sigma1, sigma2)]
    sigma1, sigma2 = sigma1 / scales[0], sigma2 / scales[1]
    root_scale = math.sqrt(scales[0]) * math.sqrt(scales[1])
    if library == "numpy":
        return root_scale * _trace_sqrt_product_pivoted_cholesky(sigma1, sigma2, tolerance, op)
    return root_scale * _trace_sqrt_product_eigh(sigma1, sigma2, tolerance, library, op)


def trace_sqrt_product(sigma1: Any, sigma2: Any) -> float:
    """``tr (S1 S2)^1/2`` for symmetric PSD ``S1``, ``S2``: the cross term of the Fréchet distance.

    Computed as ``sum sqrt(max(eig(L^T S2 L), 0))`` with ``S1 = L L^T`` (pivoted Cholesky on the
    CPU, eigh on CUDA) in float64: real, and correct when ``S1`` or ``S2`` is singular.

    Args:
        sigma1, sigma2: ``(d, d)`` symmetric PSD, float32 or float64; numpy arrays or torch
            tensors on the CPU, or both torch / both cupy on one CUDA device.

    Returns:
        A Python float >= 0.

    Example:
        >>> trace_sqrt_product(np.eye(3), 4 * np.eye(3))
        6.0
    """
    op = "trace_sqrt_product"
    arrays, infos, library = _float64_inputs({"sigma1": sigma1, "sigma2": sigma2}, op)
    _check_covariances(arrays, infos, ("sigma1", "sigma2"), None, library, op)
    tolerance = _psd_tolerance(infos["sigma1"].dtype, infos["sigma2"].dtype)
    return _trace_sqrt(arrays["sigma1"], arrays["sigma2"], tolerance, library, op)


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any) -> float:
    """Fréchet distance ``||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^1/2)`` between two Gaussians.

    This is FID's formula and the squared 2-Wasserstein distance between ``N(mu1, S1)`` and
    ``N(mu2, S2)``. The cross term uses the symmetric form (:func:`trace_sqrt_product`), so the
    result is real and correct for rank-deficient covariances (fewer samples than dimensions),
    where ``scipy.linalg.sqrtm(S1 @ S2)`` (pytorch-fid, clean-fid) returns complex values; it is
    0 up to rounding for identical inputs. Everything runs in float64.

    Args:
        mu1, mu2: means, shape ``(d,)``.
        sigma1, sigma2: covariances, shape ``(d, d)``, symmetric PSD (checked: NaN/inf and
            asymmetry above ``sqrt(eps)`` of their dtype raise ValueError).
            All four: float32 or float64; numpy arrays or torch tensors on the CPU, or all torch
            tensors / all cupy arrays on one CUDA device.

    Returns:
        A Python float >= 0 (rounding below 0 is clamped: the distance is a square).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> a, b = rng.standard_normal((500, 8)), rng.standard_normal((500, 8)) + 0.5
        >>> fd = frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    """
    op = "frechet_distance"
    arrays, infos, library = _float64_inputs({"mu1": mu1, "sigma1": sigma1, "mu2": mu2, "sigma2": sigma2}, op)
    for name in ("mu1", "mu2"):
        if infos[name].shape != infos["mu1"].shape or infos[name].ndim != 1:
            raise ValueError(f"{op}: 'mu1' and 'mu2' must have one shape (d,), got {infos['mu1'].shape} "
                             f"and {infos['mu2'].shape}")
    xp = _module(library)
    for name in ("mu1", "mu2"):
        if not bool(xp.isfinite(arrays[name]).all()):
            raise ValueError(f"{op}: '{name}' holds NaN or inf")
    _check_covariances(arrays, infos, ("sigma1", "sigma2"), infos["mu1"].shape[0], library, op)
    with np.errstate(over="ignore"):
        diff = arrays["mu1"] - arrays["mu2"]
    if not bool(xp.isfinite(diff).all()):  # the means are finite, their difference overflowed
        return math.inf
    # Near the ends of float64 the squares and traces would overflow (inf - inf = NaN) or
    # underflow: compute with the mean difference scaled by 2^k and the covariances by 4^k (exact,
    # |k| <= 511), and scale the distance back.
    magnitude = 0.0 if infos["mu1"].shape[0] == 0 else max(
        float(xp.abs(diff).max()), *(math.sqrt(float(xp.abs(arrays[n]).max())) for n in ("sigma1", "sigma2")))
    exponent = 0
    if magnitude > 0 and not 2.0**-400 < magnitude < 2.0**400:
        exponent = min(511, max(-511, -math.frexp(magnitude)[1]))
        diff = diff * 2.0**exponent
        arrays = {name: value * 2.0 ** (2 * exponent) if name.startswith("sigma") else value
                  for name, value in arrays.items()}
    mean_term = float((diff * diff).sum())
    trace_term = float(xp.trace(arrays["sigma1"])) + float(xp.trace(arrays["sigma2"]))
    tolerance = _psd_tolerance(infos["sigma1"].dtype, infos["sigma2"].dtype)
    cross = _trace_sqrt(arrays["sigma1"], arrays["sigma2"], tolerance, library, op)
    distance = max(mean_term + trace_term - 2.0 * cross, 0.0)
    try:
        return math.ldexp(distance, -2 * exponent)
    except OverflowError:  # the distance itself is beyond float64
        return math.inf


def wasserstein2_gaussian(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any, *, squared: bool = False) -> float:
    """The 2-Wasserstein distance between ``N(mu1, S1)`` and ``N(mu2, S2)``.

    ``W2^2`` is exactly :func:`frechet_distance`; this returns its square root unless ``squared``.

    Example:
        >>> wasserstein2_gaussian(np.zeros(2), np.eye(2), np.array([3.0, 4.0]), np.eye(2))
        5.0
    """
    if not isinstance(squared, bool):
        raise TypeError(f"wasserstein2_gaussian: 'squared' must be a bool, got {squared!r}")
    distance = frechet_distance(mu1, sigma1, mu2, sigma2)
    return distance if squared else math.sqrt(distance)
