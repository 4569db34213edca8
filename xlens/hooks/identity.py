"""Which weights a model holds (its identity), and the check that experts, scores and interventions are used
with the model they were made with."""

from __future__ import annotations

from typing import Any

from xlens.errors import ModelMismatchError

IDENTITY_FIELDS = ("name", "revision", "architecture", "n_layers", "d_model", "d_mlp")


def identity_differences(saved: dict[str, Any], current: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Fields in which two model identities differ. A shared revision (content hash or hub commit) settles the
    weights even when the names differ (``gemma-3-270m`` and ``embedded`` are one model)."""
    keys = [k for k in IDENTITY_FIELDS if k not in ("name", "revision")]
    if saved.get("revision") is not None and current.get("revision") is not None:
        keys.append("revision")
    else:
        keys.append("name")
    return {k: (saved.get(k), current.get(k)) for k in keys if saved.get(k) != current.get(k)}


def check_same_model(saved: dict[str, Any] | None, model: Any, what: str) -> None:
    """Raise ModelMismatchError unless ``model`` is the model ``saved`` (an identity dict) describes."""
    if not saved or model is None:
        return
    current = model.identity() if hasattr(model, "identity") else dict(model)
    diffs = identity_differences(saved, current)
    if diffs:
        detail = "; ".join(f"{k}: made with {a!r}, used with {b!r}" for k, (a, b) in diffs.items())
        raise ModelMismatchError(
            f"{what} was made with model {saved.get('name')!r}, not with {current.get('name')!r} ({detail}). "
            "Find the experts again with this model, or pass check_model=False if you mean to transplant them."
        )
