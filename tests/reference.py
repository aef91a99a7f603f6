"""Float64 reference implementations shared by the tests (independent of pyinverse code)."""


# =================================================================================================
# physics: MATLAB imresize (bicubic, antialiased) written from the published algorithm
# (imresize.m's `cubic` and `contributions`), one output pixel at a time, no matrices.
# =================================================================================================
import math as _physics_math


def matlab_cubic_kernel(t: float) -> float:
    """imresize.m's ``cubic``: Keys' kernel with a = -0.5, in its published polynomial form."""
    a = abs(t)
    if a <= 1.0:
        return 1.5 * a ** 3 - 2.5 * a ** 2 + 1.0
    if a <= 2.0:
        return -0.5 * a ** 3 + 2.5 * a ** 2 - 4.0 * a + 2.0
    return 0.0


def matlab_contributions(out_index: int, in_length: int, scale: float) -> list[tuple[int, float]]:
    """(0-based input index, weight) pairs for 1-based output pixel ``out_index`` when shrinking.

    Antialiasing kernel ``scale * cubic(scale * t)`` of width ``4 / scale``; weights normalised
    before out-of-range indices are mirrored (symmetric padding, edge sample repeated).
    """
    width = 4.0 / scale
    u = out_index / scale + 0.5 * (1.0 - 1.0 / scale)
    left = _physics_math.floor(u - width / 2.0)
    taps = _physics_math.ceil(width) + 2
    indices = [left + p for p in range(taps)]
    weights = [scale * matlab_cubic_kernel(scale * (u - j)) for j in indices]
    total = sum(weights)
    pairs = []
    for j, weight in zip(indices, weights):
        k = (j - 1) % (2 * in_length)  # 1-based index j -> 0-based, mirrored with period 2n
        if k >= in_length:
            k = 2 * in_length - 1 - k
        pairs.append((k, weight / total))
    return pairs


def matlab_imresize_bicubic_reference(image, factor: int):
    """``imresize(image, 1/factor, 'bicubic')`` of a 2-D float64 array, by direct loops."""
    import numpy as _np

    image = _np.asarray(image, dtype=_np.float64)
    height, width = image.shape
    scale = 1.0 / factor
    rows = [matlab_contributions(i + 1, height, scale) for i in range(height // factor)]
    cols = [matlab_contributions(j + 1, width, scale) for j in range(width // factor)]
    out = _np.zeros((height // factor, width // factor))
    for i, row_pairs in enumerate(rows):
        for j, col_pairs in enumerate(cols):
            total = 0.0
            for r, wr in row_pairs:
                for c, wc in col_pairs:
                    total += wr * wc * image[r, c]
            out[i, j] = total
    return out


# =================================================================================================
# uq: conformal calibration references — Hoeffding–Bentkus bound from its formula in pure Python
# (math.lgamma binomial terms, bisection), and brute-force interval / coverage loops in float64.
# =================================================================================================
import math as _uq_math


def uq_binomial_cdf(k: int, n: int, p: float) -> float:
    """P(Binom(n, p) <= k), summing the terms in log space (no scipy)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    logs = [_uq_math.lgamma(n + 1) - _uq_math.lgamma(i + 1) - _uq_math.lgamma(n - i + 1)
            + i * _uq_math.log(p) + (n - i) * _uq_math.log1p(-p) for i in range(k + 1)]
    top = max(logs)
    return min(1.0, _uq_math.exp(top) * sum(_uq_math.exp(v - top) for v in logs))


def uq_hb_p_value(risk: float, n: int, alpha: float) -> float:
    """min(exp(-n h1(min(r, a), a)), e P(Binom(n, a) <= ceil(n r))), Bates et al. 2021."""
    def h1(a: float, b: float) -> float:
        first = 0.0 if a == 0 else a * _uq_math.log(a / b)
        second = 0.0 if a == 1 else (1 - a) * _uq_math.log((1 - a) / (1 - b))
        return first + second

    hoeffding = _uq_math.exp(-n * h1(min(risk, alpha), alpha))
    count = _uq_math.ceil(round(n * risk, 9))
    bentkus = _uq_math.e * uq_binomial_cdf(count, n, alpha)
    return min(hoeffding, bentkus, 1.0)


def uq_hb_upper_bound(risk: float, n: int, delta: float) -> float:
    """sup {m : p(risk; n, m) >= delta} by bisection on the reference p-value."""
    low, high = risk, 1.0 - 1e-12
    if uq_hb_p_value(risk, n, high) >= delta:
        return 1.0
    for _ in range(200):
        middle = (low + high) / 2
        if uq_hb_p_value(risk, n, middle) >= delta:
            low = middle
        else:
            high = middle
    return (low + high) / 2


def uq_scaled_interval(lower, center, upper, lam, scaling):
    """float64 scaled interval, written out from the definition."""
    import numpy as _np

    lower, center, upper = (_np.asarray(v, dtype=_np.float64) for v in (lower, center, upper))
    if scaling == "additive":
        return lower - lam, upper + lam
    return center - lam * _np.maximum(center - lower, 0), center + lam * _np.maximum(upper - center, 0)


def uq_miscoverage_loop(lower, center, upper, truth, lambdas, scaling):
    """(N, L) miscoverage by re-evaluating coverage at every lambda (the loop RCPS avoids)."""
    import numpy as _np

    truth = _np.asarray(truth, dtype=_np.float64)
    out = _np.empty((truth.shape[0], len(lambdas)))
    for j, lam in enumerate(lambdas):
        low, high = uq_scaled_interval(lower, center, upper, lam, scaling)
        missed = (truth < low) | (truth > high)
        out[:, j] = missed.reshape(truth.shape[0], -1).mean(axis=1)
    return out


def uq_rcps_scan(lambdas, mean_risk, n, alpha, delta):
    """RCPS lambda-hat on a grid: scan from the largest lambda down with the reference p-value."""
    chosen = None
    for lam, risk in zip(reversed(list(lambdas)), reversed(list(mean_risk))):
        if uq_hb_p_value(float(risk), n, alpha) >= delta:
            break
        chosen = lam
    return chosen


def uq_sample_intervals(samples, q, axis, center):
    """np.quantile / mean in float64."""
    import numpy as _np

    samples = _np.asarray(samples, dtype=_np.float64)
    lower, upper = _np.quantile(samples, q, axis=axis)
    middle = _np.mean(samples, axis=axis) if center == "mean" else _np.median(samples, axis=axis)
    return lower, middle, upper


# =================================================================================================
# metrics: Fréchet distance through scipy.linalg.sqrtm of the product, unbiased polynomial-kernel
# MMD^2 with explicit loops over pairs, LPIPS-style distances in float64 from raw feature maps /
# raw AlexNet weights (torch.nn.functional only, no pyinverse modules).
# =================================================================================================

def frechet_distance_reference(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 sqrtm(S1 S2)) in float64 with scipy's general sqrtm."""
    import numpy as np
    import scipy.linalg

    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    covmean = np.real(covmean)
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def polynomial_mmd2_reference(x, y, degree: int = 3, coef: float = 1.0) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / d + coef)^degree, summing pairs one by one (float64)."""
    import numpy as np

    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    d = x.shape[1]

    def k(a, b):
        return (float(np.dot(a, b)) / d + coef) ** degree

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2.0 * xy


def unit_feature_distance_reference(maps_x, maps_y, weights=None):
    """LPIPS-style distance from lists of (B, C, H, W) feature maps, in float64 numpy.

    Each pixel's channel vector is divided by (its norm + 1e-10); squared differences are
    weighted per channel (weights[l] of shape (C,), default 1), summed over channels, averaged
    over pixels, and summed over layers. Returns (B,).
    """
    import numpy as np

    total = 0.0
    for layer, (fx, fy) in enumerate(zip(maps_x, maps_y)):
        fx, fy = np.asarray(fx, np.float64), np.asarray(fy, np.float64)
        nx = fx / (np.sqrt((fx ** 2).sum(axis=1, keepdims=True)) + 1e-10)
        ny = fy / (np.sqrt((fy ** 2).sum(axis=1, keepdims=True)) + 1e-10)
        w = np.ones(fx.shape[1]) if weights is None else np.asarray(weights[layer], np.float64)
        total = total + np.einsum("bchw,c->bhw", (nx - ny) ** 2, w).mean(axis=(1, 2))
    return total


def lpips_alex_reference(x, y, backbone: dict, heads: dict):
    """LPIPS (alex, v0.1) from a torchvision AlexNet state dict and lpips heads, float64.

    x, y: (B, 3, H, W) numpy in [0, 1]. backbone: 'features.{0,3,6,8,10}.{weight,bias}';
    heads: 'lin{k}.model.1.weight' (1, C, 1, 1). Layer by layer as in lpips/pretrained_networks.py.
    """
    import numpy as np
    import torch
    import torch.nn.functional as F

    shift = torch.tensor([-0.030, -0.088, -0.188], dtype=torch.float64).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450], dtype=torch.float64).view(1, 3, 1, 1)

    def taps(images):
        h = (torch.as_tensor(images, dtype=torch.float64) * 2 - 1 - shift) / scale
        w = {k: v.double() for k, v in backbone.items()}
        out = []
        h = F.relu(F.conv2d(h, w["features.0.weight"], w["features.0.bias"], stride=4, padding=2))
        out.append(h)
        h = F.max_pool2d(h, 3, 2)
        h = F.relu(F.conv2d(h, w["features.3.weight"], w["features.3.bias"], padding=2))
        out.append(h)
        h = F.max_pool2d(h, 3, 2)
        for index in (6, 8, 10):
            h = F.relu(F.conv2d(h, w[f"features.{index}.weight"], w[f"features.{index}.bias"], padding=1))
            out.append(h)
        return [t.numpy() for t in out]

    weights = [heads[f"lin{k}.model.1.weight"].double().numpy().reshape(-1) for k in range(5)]
    return unit_feature_distance_reference(taps(x), taps(y), weights)
