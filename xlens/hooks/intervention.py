"""The hook-level intervention: something that changes activations at hook points while the model runs.

Every intervention yields ``(hook_name, hook_fn)`` pairs (:meth:`Intervention.hooks`), so it works wherever
TransformerLens takes hooks (``run_with_hooks``, ``run_with_cache``, ``bridge.hooks``), in
:meth:`xlens.models.LensModel.forward`, and as a context manager on a model::

    with intervention.apply(model):
        logits = model.bridge(tokens)

Leaving the context removes exactly the hooks it added (also when an exception is raised inside), so the model
computes bit-identical logits afterwards. Hook functions never modify an activation in place: they return a new
tensor, so a cache that stored the activation keeps the original.

Composition: hooks run in the order the interventions are given (and within one intervention, in the order of its
hooks); on the same hook point each hook receives the previous one's output.

An intervention made from experts remembers the model they were found on (``model``, an identity) and refuses
another model unless ``check_model=False``.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from torch import Tensor

from xlens._display import html_card
from xlens.errors import InterventionError, ModelMismatchError
from xlens.hooks.identity import check_same_model

HookFn = Callable[[Tensor, Any], Tensor | None]
Hook = tuple[str, HookFn]


class Intervention(ABC):
    """Something that changes activations at hook points while the model runs."""

    model: dict[str, Any] | None  # identity of the model it was made for; None: any model

    @abstractmethod
    def _hooks(self, model: Any) -> list[Hook]:
        """The hooks, for a model already checked."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """A JSON-ready summary (kind, hooks, unit count, settings)."""

    def hooks(self, model: Any, *, check_model: bool = True) -> list[Hook]:
        """``(hook_name, hook_fn)`` pairs for ``run_with_hooks`` / ``bridge.hooks``.

        Raises ModelMismatchError when ``model`` is not the model the intervention was made for (opt out with
        ``check_model=False``), InterventionError when a hook name is unknown to it.
        """
        if check_model and self.model is not None:
            if not hasattr(model, "identity"):
                raise ModelMismatchError(
                    f"this {self.describe()['kind']} intervention was made for model {self.model.get('name')!r} and "
                    "cannot check a bare TransformerLens model: pass the LensModel, or check_model=False"
                )
            check_same_model(self.model, model, f"this {self.describe()['kind']} intervention")
        return self._hooks(model)

    def apply(self, model: Any, *, check_model: bool = True) -> contextlib.AbstractContextManager[Any]:
        """Context manager: the intervention is active inside and removed exactly on exit."""
        return apply(model, self, check_model=check_model)

    def __repr__(self) -> str:
        info = self.describe()
        kind = info.pop("kind")
        return f"{type(self).__name__}({kind}: " + ", ".join(f"{k}={v}" for k, v in info.items()) + ")"

    def _repr_html_(self) -> str:
        info = self.describe()
        return html_card(f"{type(self).__name__} ({info.pop('kind')})", info)


def intervention_hooks(
    model: Any, interventions: Sequence[Intervention | Hook], *, check_model: bool = True
) -> list[Hook]:
    """The hooks of several interventions (or raw ``(name, fn)`` pairs), in the order given."""
    hooks: list[Hook] = []
    for iv in interventions:
        if isinstance(iv, Intervention):
            hooks.extend(iv.hooks(model, check_model=check_model))
        elif isinstance(iv, tuple) and len(iv) == 2 and isinstance(iv[0], str) and callable(iv[1]):
            hooks.append(iv)
        else:
            raise InterventionError(f"expected an Intervention or a (hook_name, fn) pair, got {type(iv).__name__}")
    return hooks


@contextlib.contextmanager
def apply(model: Any, *interventions: Intervention | Hook, check_model: bool = True) -> Iterator[Any]:
    """Activate interventions on ``model`` (a LensModel or a TransformerLens model) inside a ``with`` block.

    Hooks run in the order the interventions are given. On exit, normal or by an exception, exactly the hooks added
    here are removed.
    """
    hooks = intervention_hooks(model, interventions, check_model=check_model)
    with bridge_of(model).hooks(fwd_hooks=hooks):
        yield model


def bridge_of(model: Any) -> Any:
    return getattr(model, "bridge", model)


def check_hook_names(model: Any, names: Sequence[str]) -> None:
    hook_dict = bridge_of(model).hook_dict
    unknown = [n for n in names if n not in hook_dict]
    if unknown:
        raise InterventionError(
            f"unknown hook name(s) {unknown[:5]} for this model; see model.bridge.hook_dict for the available ones"
        )
