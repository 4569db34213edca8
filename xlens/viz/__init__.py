"""Plotly figures of experts, single units, embedding spaces and alignment, in one style, and their export."""

from xlens.errors import FigureExportError, NeuronCardError, ProjectionError, ResultsError
from xlens.viz.alignment import (
    alignment_matrices,
    condition_gains,
    improvement_bars,
    retrieval_curves,
    similarity_heatmaps,
)
from xlens.viz.experts import (
    ap_distribution,
    best_ap_heatmap,
    block_best_ap,
    expert_counts,
    expert_counts_bar,
    expert_counts_per_block,
    expert_overlap,
    jaccard_matrix,
)
from xlens.viz.export import PAPER_SIZES, find_browser, image_export_available, paper_figure, save_figure, save_figures
from xlens.viz.neuron import ActivatedText, NeuronCard, neuron_card, token_html, unit_token_activations
from xlens.viz.space import embedding_space, pca_fit, project_2d
from xlens.viz.style import TEMPLATE, language_color, language_colors
from xlens.viz.validity import validity_scatter

__all__ = [
    "PAPER_SIZES",
    "TEMPLATE",
    "ActivatedText",
    "FigureExportError",
    "NeuronCard",
    "NeuronCardError",
    "ProjectionError",
    "ResultsError",
    "alignment_matrices",
    "ap_distribution",
    "best_ap_heatmap",
    "block_best_ap",
    "condition_gains",
    "embedding_space",
    "expert_counts",
    "expert_counts_bar",
    "expert_counts_per_block",
    "expert_overlap",
    "find_browser",
    "image_export_available",
    "improvement_bars",
    "jaccard_matrix",
    "language_color",
    "language_colors",
    "neuron_card",
    "paper_figure",
    "pca_fit",
    "project_2d",
    "retrieval_curves",
    "save_figure",
    "save_figures",
    "similarity_heatmaps",
    "token_html",
    "unit_token_activations",
    "validity_scatter",
]
