"""Calibrated uncertainty from posterior samples.

* intervals from per-pixel sample quantiles, scaled by lambda (:mod:`.intervals`);
* RCPS: one scale that controls each image's fraction of uncovered pixels at level ``alpha``
  with probability ``1 - delta`` (Hoeffding–Bentkus bound, :mod:`.rcps`, :mod:`.bounds`); the
  same for a point estimate's constant band ``estimate +- lambda`` (``BandRCPS``);
* per-pixel split conformal: marginal coverage ``1 - alpha`` at every pixel (:mod:`.split_conformal`);
* coverage reports (:mod:`.coverage`).

Samples are ``(S, N, C, H, W)`` (S posterior samples of each of N images, sample axis first, as
:func:`pyinverse.quantile` and :func:`pyinverse.metrics.validity` take them), truth
``(N, C, H, W)``; numpy arrays and torch tensors are accepted and intervals come back in the
caller's library.
"""
from .bounds import hoeffding_bentkus_p_value, hoeffding_bentkus_upper_bound
from .coverage import coverage_report, per_image_miscoverage
from .intervals import (CENTERS, SCALINGS, SampleIntervals, sample_intervals, scale_intervals,
                        smallest_covering_lambda)
from .rcps import RCPS, BandRCPS, exact_lambda_hat, minimum_calibration_size, miscoverage_curves, select_lambda
from .split_conformal import PixelwiseConformal, conformal_rank

__all__ = [
    "BandRCPS",
    "CENTERS",
    "PixelwiseConformal",
    "RCPS",
    "SCALINGS",
    "SampleIntervals",
    "conformal_rank",
    "coverage_report",
    "exact_lambda_hat",
    "hoeffding_bentkus_p_value",
    "hoeffding_bentkus_upper_bound",
    "minimum_calibration_size",
    "miscoverage_curves",
    "per_image_miscoverage",
    "sample_intervals",
    "scale_intervals",
    "select_lambda",
    "smallest_covering_lambda",
]
