"""Every error xlens raises on purpose is an :class:`XlensError`; its message names the problem and the fix.

The classes also derive from the builtin exception a caller would expect (``ValueError`` for bad input,
``RuntimeError`` for a failed load, ``FileNotFoundError`` for a missing artefact), so ``except ValueError`` keeps
working. They live here, in one module, so ``except xlens.XlensError`` catches all of them.
"""

from __future__ import annotations


class XlensError(Exception):
    """Base of every error xlens raises on purpose."""


class InputError(XlensError, ValueError):
    """A bad argument to an xlens function (empty texts, an unknown hook, a layer out of range, ...)."""


class InputTypeError(InputError, TypeError):
    """An argument of the wrong type (a single string where a list of sentences is expected, ...)."""


class InputIndexError(InputError, IndexError):
    """An index out of range (a unit or position that a unit index does not have)."""


class ConfigError(XlensError, ValueError):
    """A config field with a bad type, value or combination; the message names the field and what is allowed."""


class ModelLoadError(XlensError, RuntimeError):
    """A model could not be loaded; the message says why and what to do."""


class UnsupportedModelError(ModelLoadError):
    """TransformerLens has no adapter for this architecture."""


class HubError(XlensError, RuntimeError):
    """The Hugging Face hub is unreachable (and nothing is cached), or refused access, or lacks the repository."""


class ModelMismatchError(XlensError, ValueError):
    """Experts, scores or an intervention used with another model than the one they were made with."""


class CorpusError(XlensError, ValueError):
    """A corpus that cannot be built or used as asked (misaligned, empty or repeated sentences, ...)."""


class ExpertInputError(XlensError, ValueError):
    """Responses, labels or language ids that cannot be scored."""


class InterventionError(XlensError, ValueError):
    """An intervention that cannot be built or applied as asked."""


class MetricInputError(XlensError, ValueError):
    """Embeddings that a metric cannot score: wrong shape or dtype, NaN/inf, too few rows, zero rows."""


class GenerationError(XlensError, ValueError):
    """Generation, perplexity or language identification asked with bad input."""


class SteeringError(XlensError, ValueError):
    """A steering run asked with inputs that do not fit together."""


class RunFolderError(XlensError, ValueError):
    """A run folder that holds no run, belongs to another config, or is in use by another process."""


class ArtifactError(XlensError, OSError):
    """A saved artefact (cache entry, expert set, scores, responses) that is missing, corrupted or of another kind."""


class ResultsError(XlensError, ValueError):
    """Results that do not hold what a table or figure needs."""


class UnknownLanguageError(XlensError, ValueError):
    """A language code that no table entry matches; the message suggests close matches."""


class NeuronCardError(XlensError, ValueError):
    """A neuron card asked for with inputs that do not fit together."""


class InspectorError(XlensError, ValueError):
    """A selection the neuron inspector cannot show (unknown block or unit, no model for free text, ...)."""


class ProjectionError(XlensError, ValueError):
    """Embeddings that cannot be projected to 2-D as asked."""


class FigureExportError(XlensError, RuntimeError):
    """A figure that cannot be written in the asked format (no kaleido or browser for images, ...)."""


class ExecutorError(XlensError, RuntimeError):
    """An executor that cannot run: Ray missing, a cluster that does not answer, workers that disagree."""


class ConditionsFailedError(XlensError, RuntimeError):
    """Conditions of a run that failed while the others finished (each named with its error)."""


class MissingDependencyError(XlensError, ImportError):
    """An optional dependency a command needs is not installed; the message names the ``pip install`` to run."""


class NonFiniteError(XlensError, ArithmeticError):
    """Activations that became nan or infinite (float16 overflow, an intervention that blew up)."""


class DiskFullError(XlensError, OSError):
    """The disk (or the quota) ran out while xlens was writing: the run stops at the first such failure."""
