"""k-nearest neighbours: Prioritized DCI (``DCIIndex``), exact brute force (``exact_knn``), many
small independent searches in one call (``batched_nearest``), tie-aware recall (``knn_recall``)
and ``search``, which picks the exact search or DCI by size.

Distances are squared L2 (faiss's ``IndexFlatL2`` convention); ties go to the smaller index.
"""
from .dci import DCIIndex
from .exact import batched_nearest, exact_knn, knn_recall
from .auto import EXACT_BUDGET, choose_method, search

__all__ = ["EXACT_BUDGET", "DCIIndex", "batched_nearest", "choose_method", "exact_knn", "knn_recall", "search"]
