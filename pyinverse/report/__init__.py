"""Figures and reports."""
from .uncertainty_map import save_uncertainty_figure, uncertainty_map

__all__ = ["save_uncertainty_figure", "uncertainty_map"]
