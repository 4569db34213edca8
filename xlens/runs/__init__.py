"""Runs: what owns a run folder and what is read back from one. :mod:`~xlens.runs.study` (``xlens run``, ``sweep``,
``transfer``, ``translate``: a study of tasks under a grid of conditions), :mod:`~xlens.runs.executors` (where its
conditions are computed), :mod:`~xlens.runs.results` (what a study produced), :mod:`~xlens.runs.folder` (the run
folder: ownership, locking, atomic commits), :mod:`~xlens.runs.experts` (``xlens experts``) and
:mod:`~xlens.runs.steer` (``xlens steer``, ``choose-k``). Imports none of them, so each keeps its own layer."""
