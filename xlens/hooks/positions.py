"""Which tokens an intervention acts on: ``"all"``, ``"prompt"`` or ``"last"``.

What is a prompt or a last token in a padded batch is set by the caller with :func:`token_positions` (a context,
so one setting serves every intervention and hook of a forward pass):

- :meth:`xlens.models.LensModel.forward` sets it for every right-padded batch: prompt = the real tokens of each
  row, last = the last REAL token of each row (not the padding at the end);
- :func:`xlens.generation.generate` sets it for generation: prompt = the prompt tokens (never the generated ones)
  and last = the last prompt token and every generated token (each one is the last token when it is produced, so
  the same positions stay forced on every later step); KV-cached steps pass only their new columns, with the
  column ``offset`` of the first one;
- with no context, every token is a prompt token and last is the final column: right for unpadded input.

Interventions on padding do not change real tokens (causal attention with the padding masked), so ``"all"`` needs
no positions.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from xlens.errors import InterventionError

Where = Literal["all", "prompt", "last"]
WHERE: tuple[str, ...] = ("all", "prompt", "last")


@dataclass(frozen=True)
class TokenPositions:
    """Which columns of the forward passes in a :func:`token_positions` context are prompt and last tokens.

    Columns are positions in the whole sequence. Per row: prompt tokens are the columns ``< prompt_end``; last
    tokens are the columns ``last_start <= c < last_end``. A forward pass over the columns from ``offset`` on (a
    KV-cached decoding step, whose earlier columns are cached) sees its own positions shifted by ``offset``.
    """

    prompt_end: Int[Tensor, " batch"]
    last_start: Int[Tensor, " batch"]
    last_end: Int[Tensor, " batch"]
    offset: int = 0

    @classmethod
    def from_mask(cls, mask: Bool[Tensor, "batch pos"]) -> TokenPositions:
        """A right-padded batch: prompt = each row's real tokens, last = each row's last real token."""
        lengths = mask.long().sum(dim=1)
        if bool((lengths == 0).any()):
            raise InterventionError("the mask has a row without real tokens; drop empty rows first")
        right_padded = torch.arange(mask.shape[1], device=mask.device).unsqueeze(0) < lengths.unsqueeze(1)
        if not bool((mask.bool() == right_padded).all()):
            raise InterventionError(
                "token_positions(mask) expects right padding (real tokens first in every row); for other layouts "
                "build TokenPositions(prompt_end, last_start, last_end) yourself"
            )
        return cls(lengths, lengths - 1, lengths)

    @classmethod
    def generating(cls, prompt_end: int, batch: int) -> TokenPositions:
        """Generation on left-padded prompts that end at column ``prompt_end``: prompt = the columns before it,
        last = the last prompt token and every generated token."""
        end = torch.full((batch,), prompt_end, dtype=torch.long)
        return cls(end, end - 1, torch.full((batch,), torch.iinfo(torch.long).max, dtype=torch.long))

    def select(self, where: Where, batch: int, n_pos: int, device: torch.device) -> Bool[Tensor, "batch pos"] | None:
        """Columns ``where`` covers in a pass of ``n_pos`` columns (None: all of them)."""
        if where == "all":
            return None
        if batch != self.prompt_end.shape[0]:
            raise InterventionError(
                f"token positions were set for a batch of {self.prompt_end.shape[0]} rows but the forward pass has "
                f"{batch}: set token_positions for the batch being run"
            )
        column = torch.arange(self.offset, self.offset + n_pos, device=device).unsqueeze(0)
        if where == "prompt":
            return column < self.prompt_end.to(device).unsqueeze(1)
        start, end = self.last_start.to(device).unsqueeze(1), self.last_end.to(device).unsqueeze(1)
        return (column >= start) & (column < end)


_POSITIONS: contextvars.ContextVar[TokenPositions | None] = contextvars.ContextVar("xlens_positions", default=None)


@contextlib.contextmanager
def token_positions(positions: TokenPositions | Bool[Tensor, "batch pos"]) -> Iterator[TokenPositions]:
    """Tell ``where="prompt"|"last"`` interventions which tokens those are in the forward passes inside.

    Pass a right-padded batch's mask (``batch.mask``) or a :class:`TokenPositions`.
    """
    if isinstance(positions, Tensor):
        positions = TokenPositions.from_mask(positions)
    token = _POSITIONS.set(positions)
    try:
        yield positions
    finally:
        _POSITIONS.reset(token)


def selected(where: Where, act: Tensor) -> Bool[Tensor, "batch pos"] | None:
    """The ``[batch, pos]`` columns of ``act`` that ``where`` covers in the current context (None: all)."""
    if where == "all":
        return None
    positions = _POSITIONS.get()
    batch, n_pos = act.shape[0], act.shape[1]
    if positions is None:  # unpadded input: every token is a prompt token, the final column is the last one
        if where == "prompt":
            return None
        sel = torch.zeros(batch, n_pos, dtype=torch.bool, device=act.device)
        sel[:, -1] = True
        return sel
    return positions.select(where, batch, n_pos, act.device)


def check_where(where: str) -> None:
    if where not in WHERE:
        raise InterventionError(f"where must be one of {WHERE}, got {where!r}")
