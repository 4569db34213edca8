"""Plotly figures of experts, single units, embedding spaces and alignment, in one style, and their export."""

from xlens.viz.alignment import (
    ResultsError,
    alignment_matrices,
    best_condition,
    condition_label,
    conditions,
    improvement_bars,
    retrieval_curves,
    similarity_heatmaps,
)
from xlens.viz.experts import (
    ap_distribution,
    best_ap_heatmap,
    expert_counts,
    expert_counts_per_layer,
    expert_overlap,
    jaccard_matrix,
    layer_best_ap,
)
from xlens.viz.export import FigureExportError, find_browser, image_export_available, save_figure, save_figures
from xlens.viz.neuron import ActivatedText, NeuronCard, NeuronCardError, neuron_card, token_html, unit_token_activations
from xlens.viz.run import Run, RunFolderError
from xlens.viz.space import ProjectionError, embedding_space, pca_fit, project_2d
from xlens.viz.style import TEMPLATE, language_color, language_colors

__all__ = [
    "TEMPLATE",
    "ActivatedText",
    "FigureExportError",
    "NeuronCard",
    "NeuronCardError",
    "ProjectionError",
    "ResultsError",
    "Run",
    "RunFolderError",
    "alignment_matrices",
    "ap_distribution",
    "best_ap_heatmap",
    "best_condition",
    "condition_label",
    "conditions",
    "embedding_space",
    "expert_counts",
    "expert_counts_per_layer",
    "expert_overlap",
    "find_browser",
    "image_export_available",
    "improvement_bars",
    "jaccard_matrix",
    "language_color",
    "language_colors",
    "layer_best_ap",
    "neuron_card",
    "pca_fit",
    "project_2d",
    "retrieval_curves",
    "save_figure",
    "save_figures",
    "similarity_heatmaps",
    "token_html",
    "unit_token_activations",
]
