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
    medoid_distances,
)
from xlens.metrics.bootstrap import bootstrap_correlation, paired_bootstrap, pearson, resample_counts
from xlens.metrics.mining import Candidates, MiningScores, best_threshold, mine, mining_scores
from xlens.metrics.retrieval import RetrievalScores, retrieval, retrieval_matrix, retrieval_ranks

__all__ = [
    "AlignmentScores",
    "Candidates",
    "MetricInputError",
    "MiningScores",
    "RetrievalScores",
    "alignment_scores",
    "best_threshold",
    "bootstrap_correlation",
    "centroid_distance",
    "centroid_distance_matrix",
    "cka_matrix",
    "cosine_parallel",
    "cosine_parallel_matrix",
    "cosine_random",
    "cosine_random_matrix",
    "linear_cka",
    "mean_center",
    "medoid_distances",
    "mine",
    "mining_scores",
    "paired_bootstrap",
    "pearson",
    "resample_counts",
    "retrieval",
    "retrieval_matrix",
    "retrieval_ranks",
]
