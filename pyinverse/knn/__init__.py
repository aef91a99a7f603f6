"""k-nearest neighbours: Prioritized DCI (``DCIIndex``), exact brute force (``exact_knn``), many
small independent searches in one call (``batched_nearest``) and tie-aware recall (``knn_recall``).

Distances are squared L2 (faiss's ``IndexFlatL2`` convention); ties go to the smaller index.
"""
from .dci import DCIIndex
from .exact import batched_nearest, exact_knn, knn_recall

__all__ = ["DCIIndex", "batched_nearest", "exact_knn", "knn_recall"]
