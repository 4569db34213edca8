"""Embedding-space metrics of cross-lingual alignment and retrieval (Sundar et al. 2025)."""

from xlens.metrics.alignment import (
    AlignmentScores,
    MetricInputError,
    alignment_scores,
    centroid_distance,
    centroid_distance_matrix,
    cka_matrix,
    cosine_parallel,
    cosine_parallel_matrix,
    cosine_random,
    cosine_random_matrix,
    linear_cka,
    mean_center,
)
from xlens.metrics.retrieval import RetrievalScores, retrieval, retrieval_matrix, retrieval_ranks

__all__ = [
    "AlignmentScores",
    "MetricInputError",
    "RetrievalScores",
    "alignment_scores",
    "centroid_distance",
    "centroid_distance_matrix",
    "cka_matrix",
    "cosine_parallel",
    "cosine_parallel_matrix",
    "cosine_random",
    "cosine_random_matrix",
    "linear_cka",
    "mean_center",
    "retrieval",
    "retrieval_matrix",
    "retrieval_ranks",
]
