"""Evaluation tasks of a study: each one measures a condition and returns per-item scores (see
:mod:`xlens.evaluation.base`). Built in: ``retrieval``, ``mining``, ``transfer``, ``translation``, ``fidelity``."""

from xlens.evaluation.base import ItemScores, Task, TaskContext, TaskOutput
from xlens.evaluation.registry import register_task, task_class, tasks

__all__ = ["ItemScores", "Task", "TaskContext", "TaskOutput", "register_task", "task_class", "tasks"]
