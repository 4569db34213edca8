"""``LensModel``: a TransformerBridge, what xlens needs to know about it, and the one batched forward engine.

Two meanings of "layer" are kept apart by name everywhere in xlens:

- a **block** is a transformer block, ``0..n_layers - 1`` (TransformerLens' ``blocks.{b}``): units, hooks,
  interventions and steering vectors live at blocks;
- an **embedding layer** is a point of the residual stream where sentence embeddings are read, ``0..n_layers``
  (as Hugging Face ``hidden_states``): layer 0 is the input of block 0 (token embeddings), layer ``l`` the output of
  block ``l - 1``.

:meth:`LensModel.forward` is the only loop in xlens that tokenizes, sorts by length, batches and runs hooked
forward passes: pooled responses, embeddings, perplexity, mean residuals, neuron cards and the benchmarks all
call it; generation takes its batches from :meth:`LensModel.batches`.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from tqdm.auto import tqdm
from transformers.activations import ACT2FN

from xlens._display import html_card
from xlens.errors import InputError, InputTypeError
from xlens.hooks import Hook, Intervention, apply, check_same_model, token_positions
from xlens.models.shape import takes_mask_positions

Padding = Literal["right", "left"]
# Padded tokens per batch: enough to keep a GPU busy, bounded memory on any model size. Logits are
# vocab-wide (Gemma-3: 262k per token), so passes that unembed every position take a smaller budget.
DEFAULT_MAX_TOKENS = 8192
LOGITS_MAX_TOKENS = 1024


@dataclass
class TokenBatch:
    """Padded token ids with their mask (True on real tokens)."""

    tokens: Int[Tensor, "batch pos"]
    mask: Bool[Tensor, "batch pos"]

    @property
    def lengths(self) -> Int[Tensor, " batch"]:
        return self.mask.sum(dim=1)


@dataclass
class ForwardBatch(TokenBatch):
    """One batch of :meth:`LensModel.forward`: ``rows[i]`` is the position in the caller's texts of row ``i``.

    Readers pool on the activation's device and hand the result to :meth:`store`; the engine copies everything a
    batch stored to the host at once when the batch ends, so a GPU is synchronised once per batch, not per hook.
    """

    rows: Int[Tensor, " batch"] | None = None
    _masks: dict[torch.device, Tensor] = field(default_factory=dict, repr=False)
    _pending: list[tuple[Tensor, tuple[Any, ...], Tensor]] = field(default_factory=list, repr=False)

    @property
    def row_ids(self) -> Int[Tensor, " batch"]:
        assert self.rows is not None
        return self.rows

    def mask_on(self, device: torch.device) -> Bool[Tensor, "batch pos"]:
        """The mask on ``device``: with a device map, blocks (and their activations) live on different GPUs."""
        if device not in self._masks:
            self._masks[device] = self.mask.to(device)
        return self._masks[device]

    def store(self, target: Tensor, value: Tensor, *index: Any) -> None:
        """``target[rows, *index] = value`` (``target`` on the host) by the end of the batch."""
        if value.device.type == "cpu":
            target[(self.row_ids, *index)] = value.to(target.dtype)
            return
        staging = torch.empty(value.shape, dtype=target.dtype, pin_memory=True)
        staging.copy_(value.to(target.dtype), non_blocking=True)
        self._pending.append((target, index, staging))
        self._masks.setdefault(value.device, self.mask.to(value.device))

    def flush(self) -> None:
        """Wait once for the queued device-to-host copies, then write them into their targets."""
        if not self._pending:
            return
        for device in self._masks:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        for target, index, staging in self._pending:
            target[(self.row_ids, *index)] = staging
        self._pending.clear()


Reader = Callable[[Tensor, ForwardBatch], None]


@dataclass
class KVCache:
    """The KV cache of one batch being decoded, and how the model takes it."""

    cache: Any
    keyword: str
    positions: bool  # whether positions are passed (derived from the mask) or the model derives them itself
    logits_to_keep: bool


class _StopForward(Exception):
    """Raised by a hook to end a forward pass early."""


def _raise_stop(act: Tensor, hook: Any) -> None:
    raise _StopForward


def _truncate(ids: list[list[int]], max_length: int | None) -> list[list[int]]:
    return [seq[:max_length] for seq in ids] if max_length is not None else ids


def _budgeted(order: list[int], lengths: list[int], limit: int, max_tokens: int | None) -> Iterator[list[int]]:
    """Cut ``order`` (longest first) into runs of at most ``limit`` rows whose padded size fits ``max_tokens``."""
    rows: list[int] = []
    for i in order:
        # The first row of a batch is its longest: the batch pads every row to it.
        if rows and (
            len(rows) == limit or (max_tokens is not None and (len(rows) + 1) * lengths[rows[0]] > max_tokens)
        ):
            yield rows
            rows = []
        rows.append(i)
    if rows:
        yield rows


def _pass_cache_to_attention(model: Any) -> None:
    """Let TransformerLens' attention bridges see the KV cache (once per model).

    TransformerLens 4.3's attention bridges read the cache from ``past_key_values`` (or ``layer_past``), but
    transformers 5.x layers hand it over as ``cache``: without this the cache stays empty and every decoded token
    attends to itself alone, which is why the bridge's own ``generate()`` gives wrong logits.
    """
    from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge

    if getattr(model, "_xlens_cache_passed", False):
        return

    def pass_cache(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        if kwargs.get("cache") is not None and kwargs.get("past_key_values") is None:
            kwargs = {**kwargs, "past_key_values": kwargs["cache"]}
        return args, kwargs

    for module in model.modules():
        if isinstance(module, AttentionBridge):
            module.register_forward_pre_hook(pass_cache, with_kwargs=True)
    model._xlens_cache_passed = True


def block_of(hook_name: str) -> int | None:
    """Block index of a ``blocks.{b}.…`` hook name, else None (e.g. ``hook_embed``)."""
    parts = hook_name.split(".")
    if len(parts) > 1 and parts[0] == "blocks" and parts[1].isdigit():
        return int(parts[1])
    return None


def numerics_record(dtype: torch.dtype, device: torch.device, backend: str = "bridge") -> dict[str, str]:
    """What :meth:`LensModel.numerics` records. The backend is named only when it is not the TransformerBridge, so
    caches and run folders made before the Hugging Face backend existed still match."""
    record = {"dtype": str(dtype).removeprefix("torch."), "device": device.type}
    return record if backend == "bridge" else {**record, "backend": backend}


@dataclass
class LensModel:
    """A TransformerBridge plus what xlens needs to know about it.

    Attributes:
        bridge: the TransformerLens ``TransformerBridge`` (hooks, ``run_with_cache``, ``run_with_hooks``, ...), or
            an :class:`~xlens.models.hf.HFBridge` (a Hugging Face model with the same hooks).
        name: what the model was loaded as (hub name, path, ``gemma-3-270m``, ``tiny-gpt2``).
        source: ``embedded``, ``tiny``, ``local``, ``gguf``, ``hub`` or ``hub-cache``.
        revision: hub commit or a content hash of the local weights, for provenance and identity checks.
        backend: ``bridge`` (TransformerLens) or ``hf`` (:class:`~xlens.models.hf.HFBridge`).
    """

    bridge: Any
    name: str
    source: str
    revision: str | None = None
    backend: str = "bridge"

    # --- sizes and hook names -----------------------------------------------------------------------------

    @property
    def cfg(self) -> Any:
        """The TransformerBridge's config (``n_layers``, ``d_model``, ``d_mlp``, ...)."""
        return self.bridge.cfg

    @property
    def tokenizer(self) -> Any:
        """The model's Hugging Face tokenizer."""
        return self.bridge.tokenizer

    @property
    def n_layers(self) -> int:
        """Number of blocks (TransformerLens' name)."""
        return int(self.cfg.n_layers)

    @property
    def d_model(self) -> int:
        """Width of the residual stream."""
        return int(self.cfg.d_model)

    @property
    def d_mlp(self) -> int:
        """Width of each block's MLP hidden layer: the number of MLP units per block."""
        return int(self.cfg.d_mlp)

    @property
    def architecture(self) -> str:
        """The Hugging Face architecture name, e.g. ``Gemma3ForCausalLM``."""
        return str(self.cfg.architecture)

    @property
    def device(self) -> torch.device:
        """The device of the model's first parameters (with a device map, layers may live elsewhere)."""
        return torch.device(self.cfg.device)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the model's weights."""
        return next(self.bridge.parameters()).dtype

    @property
    def prepend_bos(self) -> bool:
        """Whether a BOS token is prepended to every text, as the model expects."""
        return bool(getattr(self.cfg, "default_prepend_bos", True))

    @property
    def embedding_layers(self) -> list[int]:
        """Embedding layers ``0..n_layers`` (see the module docstring)."""
        return list(range(self.n_layers + 1))

    def mlp_hook(self, block: int) -> str:
        """Hook of block ``block``'s MLP neurons (the input of the down projection), ``[batch, pos, d_mlp]``."""
        return f"blocks.{block}.mlp.hook_post"

    def gate_hook(self, block: int) -> str | None:
        """Hook of block ``block``'s MLP gate projection output, ``gate_proj(x)`` (before its activation function),
        on gated MLPs (Gemma, Llama, Cohere/Aya); None where the MLP has no gate (GPT-2, Bloom)."""
        name = f"blocks.{block}.mlp.gate.hook_out"
        return name if name in self.bridge.hook_dict else None

    @property
    def gated_mlp(self) -> bool:
        """Whether the MLP is gated, ``act_fn(gate_proj(x)) * up_proj(x)`` (Gemma, Llama, Aya/Cohere)."""
        return bool(getattr(self.cfg, "gated_mlp", False))

    def gate_activation(self) -> Callable[[Tensor], Tensor]:
        """The activation function of the MLP gate, ``act_fn`` in ``act_fn(gate_proj(x)) * up_proj(x)``, as the
        Hugging Face model builds it from its config (``hidden_activation``, else ``hidden_act``)."""
        config = self.bridge.original_model.config
        config = getattr(config, "text_config", None) or config  # multimodal configs hold the text model's
        name = getattr(config, "hidden_activation", None) or getattr(config, "hidden_act", None)
        if name is None:
            raise InputError(f"{self.name}'s config names no MLP activation (hidden_activation or hidden_act)")
        return ACT2FN[name]

    def resid_hook(self, block: int) -> str:
        """Hook of the residual stream after block ``block``, ``[batch, pos, d_model]``."""
        return f"blocks.{block}.hook_resid_post"

    def embedding_hook(self, layer: int) -> str:
        """Hook where embedding layer ``layer`` is read: the input of block 0, then each block's output."""
        if not 0 <= layer <= self.n_layers:
            raise InputError(f"embedding layer {layer} out of range: embedding layers are 0..{self.n_layers}")
        return "blocks.0.hook_resid_pre" if layer == 0 else self.resid_hook(layer - 1)

    @property
    def mlp_hooks(self) -> list[str]:
        """The MLP-neuron hook of every block, ``blocks.{b}.mlp.hook_post``."""
        return [self.mlp_hook(block) for block in range(self.n_layers)]

    @property
    def resid_hooks(self) -> list[str]:
        """The residual-stream hook after every block, ``blocks.{b}.hook_resid_post``."""
        return [self.resid_hook(block) for block in range(self.n_layers)]

    def linear_hooks(self) -> list[str]:
        """Outputs of every linear layer (attention q/k/v/o, MLP in/gate/out), as ml-selfcond and Kojima et al."""
        names = self.bridge.hook_dict.keys()
        suffixes = (
            "attn.q.hook_out",
            "attn.k.hook_out",
            "attn.v.hook_out",
            "attn.o.hook_out",
            "mlp.in.hook_out",
            "mlp.gate.hook_out",
            "mlp.out.hook_out",
        )
        return [
            f"blocks.{block}.{suffix}"
            for block in range(self.n_layers)
            for suffix in suffixes
            if f"blocks.{block}.{suffix}" in names
        ]

    def check_hooks(self, hook_names: Sequence[str]) -> None:
        """Raise :class:`~xlens.errors.InputError` naming the hook names the model does not have."""
        unknown = [n for n in hook_names if n not in self.bridge.hook_dict]
        if unknown:
            raise InputError(
                f"unknown hook name(s) {unknown[:5]}; see LensModel.bridge.hook_dict for the available ones"
            )

    def hook_widths(self, hook_names: Sequence[str]) -> dict[str, int]:
        """Units at each hook: the product of the dimensions after ``pos`` (heads x d_head count as units). MLP
        neurons and the residual stream have the config's widths; other hooks are measured by one short pass."""
        self.check_hooks(hook_names)
        known = {self.mlp_hook(b): self.d_mlp for b in range(self.n_layers)}
        known |= {self.embedding_hook(layer): self.d_model for layer in self.embedding_layers}
        widths: dict[str, int] = {n: known[n] for n in hook_names if n in known}
        probe = [n for n in hook_names if n not in known]
        if not probe:
            return widths

        def recorder(name: str) -> Reader:
            # Alias hooks report their canonical name, so remember the name that was asked for.
            def record(act: Tensor, batch: ForwardBatch) -> None:
                widths[name] = int(torch.tensor(act.shape[2:]).prod().item())

            return record

        self.forward(["a"], [(n, recorder(n)) for n in probe])
        return {n: widths[n] for n in hook_names}

    # --- identity ----------------------------------------------------------------------------------------

    def identity(self) -> dict[str, Any]:
        """Which weights these are: what experts, scores and interventions made with this model must match."""
        return {
            "name": self.name,
            "revision": self.revision,
            "architecture": self.architecture,
            "n_layers": self.n_layers,
            "d_model": self.d_model,
            "d_mlp": self.d_mlp,
        }

    def numerics(self) -> dict[str, str]:
        """How the weights compute (dtype, device kind and backend): part of every cache key, not of the identity
        (both backends run the same weights)."""
        return numerics_record(self.dtype, self.device, self.backend)

    def check_identity(self, saved: dict[str, Any] | None, what: str) -> None:
        """Raise ModelMismatchError unless ``saved`` (an identity) describes this model."""
        check_same_model(saved, self, what)

    # --- tokenization and the forward engine ----------------------------------------------------------------

    def token_lengths(self, texts: Sequence[str]) -> list[int]:
        """How many tokens each text has (BOS included where the model prepends one), before any truncation."""
        return [len(ids) for ids in self._token_ids(texts)]

    def _token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of every text with the model's BOS convention, not truncated."""
        if isinstance(texts, str):
            raise InputTypeError("pass a sequence of strings; wrap a single text in a list")
        if not texts:
            raise InputError("no texts given")
        empty = [i for i, t in enumerate(texts) if not t.strip()]
        if empty:
            raise InputError(f"empty text at position(s) {empty[:10]}: remove empty sentences first")
        tok = self.tokenizer
        ids = tok(list(texts), add_special_tokens=False)["input_ids"]
        if self.prepend_bos and tok.bos_token_id is not None:
            ids = [[tok.bos_token_id, *seq] for seq in ids]
        return ids

    def _pad(self, ids: Sequence[Sequence[int]], padding: Padding) -> tuple[Tensor, Tensor]:
        tok = self.tokenizer
        width = max(len(seq) for seq in ids)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        tokens = torch.full((len(ids), width), pad, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.bool)
        for row, seq in enumerate(ids):
            cols = slice(0, len(seq)) if padding == "right" else slice(width - len(seq), width)
            tokens[row, cols] = torch.tensor(seq, dtype=torch.long)
            mask[row, cols] = True
        return tokens.to(self.device), mask.to(self.device)

    def tokenize(self, texts: Sequence[str], max_length: int | None = None, padding: Padding = "right") -> TokenBatch:
        """Tokenize with the model's BOS convention, pad, and return the mask.

        Right padding keeps every real token at the same position as in an unbatched pass, so with the mask the
        activations of real tokens do not depend on the batch. Left padding puts every row's last token in the
        last column (for generation).
        """
        return TokenBatch(*self._pad(_truncate(self._token_ids(texts), max_length), padding))

    def batch_limit(self, batch_size: int | None) -> int:
        """Sentences per batch at most: ``batch_size``, else 16 on CPU (no gain beyond) and 1024 on accelerators
        (where the token budget is what binds)."""
        if batch_size is None:
            return 16 if self.device.type == "cpu" else 1024
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        return batch_size

    def batches(
        self,
        texts: Sequence[str],
        *,
        batch_size: int | None = None,
        max_tokens: int | None = DEFAULT_MAX_TOKENS,
        max_length: int | None = 256,
        padding: Padding = "right",
    ) -> Iterator[ForwardBatch]:
        """The texts tokenized once, sorted by length (longest first, ties in input order) and cut into batches of
        at most ``batch_size`` rows and ``max_tokens`` padded tokens (rows x longest row; a row longer than the
        budget is a batch of its own). Batches of similar lengths waste little compute on padding."""
        limit = self.batch_limit(batch_size)
        if max_tokens is not None and max_tokens < 1:
            raise InputError(f"max_tokens must be >= 1, got {max_tokens}")
        ids = self._token_ids(texts)
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))  # by full length, before truncation
        ids = _truncate(ids, max_length)
        for rows in _budgeted(order, [len(seq) for seq in ids], limit, max_tokens):
            tokens, mask = self._pad([ids[i] for i in rows], padding)
            yield ForwardBatch(tokens, mask, torch.tensor(rows, dtype=torch.long))

    def forward(
        self,
        texts: Sequence[str],
        readers: Sequence[tuple[str, Reader]] = (),
        *,
        interventions: Sequence[Intervention | Hook] = (),
        logits: Reader | None = None,
        batch_size: int | None = None,
        max_tokens: int | None = DEFAULT_MAX_TOKENS,
        max_length: int | None = 256,
        progress: bool = False,
        desc: str = "forward",
    ) -> None:
        """Run every text through the model in sorted, right-padded batches, under ``interventions``.

        ``readers`` are ``(hook_name, fn)`` pairs; ``fn(activation, batch)`` sees each batch's activation at that
        hook (after the interventions) and the :class:`ForwardBatch` it belongs to, so it can pool over
        ``batch.mask_on(act.device)`` and hand the result to ``batch.store`` (rows go where ``batch.rows`` says,
        copied to the host once per batch). Without ``logits`` the pass stops right after the deepest block
        a reader needs (collecting activations never needs the unembedding, which on Gemma-3 outweighs the whole
        body); with ``logits``, ``logits(logits, batch)`` gets every batch's output logits.

        Batches hold at most ``batch_size`` sentences (default: :meth:`batch_limit`) and ``max_tokens`` padded
        tokens. Interventions see ``token_positions`` of each batch: prompt = the real tokens, last = the last real
        token.
        """
        if not readers and logits is None:
            raise InputError("forward needs readers or a logits callback: otherwise nothing is read")
        self.check_hooks([name for name, _ in readers])
        current: list[ForwardBatch] = []

        def bound(read: Reader) -> Callable[[Tensor, Any], None]:
            def hook_fn(act: Tensor, hook: Any) -> None:
                read(act, current[0])

            return hook_fn

        hooks: list[tuple[str, Any]] = [(name, bound(read)) for name, read in readers]
        stop = None if logits is not None else self._stop_hook([name for name, _ in readers])
        if stop is not None:
            hooks.append((stop, _raise_stop))
        batches = list(self.batches(texts, batch_size=batch_size, max_tokens=max_tokens, max_length=max_length))
        with torch.inference_mode(), apply(self, *interventions), self.bridge.hooks(fwd_hooks=hooks):
            for batch in tqdm(batches, desc=desc, unit="batch", disable=not progress):
                current[:] = [batch]
                with token_positions(batch.mask), contextlib.suppress(_StopForward):
                    out = self.bridge(
                        batch.tokens,
                        attention_mask=batch.mask.long(),
                        return_type="logits" if logits is not None else None,
                        **self._no_cache,
                    )
                    if logits is not None:
                        logits(out, batch)
                batch.flush()

    @property
    def _no_cache(self) -> dict[str, bool]:
        """A full forward fills no KV cache (Hugging Face models fill one by default: memory for nothing); the
        Hugging Face backend never asks for one."""
        return {"use_cache": False} if self.backend == "bridge" else {}

    def _stop_hook(self, hook_names: Sequence[str]) -> str | None:
        blocks = [block_of(name) for name in hook_names]
        if any(block is None for block in blocks):
            return None  # e.g. ln_final or the unembedding itself: run the whole model
        deepest = max(int(block) for block in blocks if block is not None)
        block_inputs = {f"blocks.{deepest}.hook_resid_pre", f"blocks.{deepest}.hook_in"}
        if all(name in block_inputs for name, block in zip(hook_names, blocks, strict=True) if block == deepest):
            return f"blocks.{deepest}.hook_in"  # only the block's input is read: do not run the block
        return f"blocks.{deepest}.hook_out"

    def logits_at_last(self, batch: TokenBatch) -> Float[Tensor, "batch vocab"]:
        """Next-token logits at the last column of a left-padded batch (only that position is unembedded)."""
        out = self.bridge(batch.tokens, attention_mask=batch.mask.long(), logits_to_keep=1, **self._no_cache)
        return out[:, -1].float()

    # --- KV-cached decoding --------------------------------------------------------------------------------

    def kv_cache(self) -> KVCache:
        """An empty KV cache for :meth:`decode` (one per batch being generated)."""
        from transformers import DynamicCache

        model = self.bridge.original_model
        if self.backend == "bridge":
            _pass_cache_to_attention(model)
        parameters = inspect.signature(model.forward).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
        return KVCache(
            DynamicCache(config=model.config),
            # transformers 5.x calls it ``cache``, earlier versions ``past_key_values``.
            keyword="cache" if "cache" in parameters else "past_key_values",
            positions=takes_mask_positions(model),
            logits_to_keep=takes_any or "logits_to_keep" in parameters,
        )

    def decode(
        self, new: Int[Tensor, "batch new"], mask: Bool[Tensor, "batch pos"], kv: KVCache
    ) -> Float[Tensor, "batch vocab"]:
        """Next-token logits after ``new``, the last columns of a left-padded sequence whose earlier columns are in
        ``kv`` (:meth:`kv_cache`); ``mask`` covers every column so far. The hooks run on the new columns only:
        interventions learn their column offset from :func:`xlens.interventions.token_positions`.

        The Hugging Face model is called directly: the TransformerBridge's components (and the hf backend's hook
        points) sit inside it, so every hook runs; positions come from the mask, as the bridge derives them.
        """
        inputs: dict[str, Any] = {"input_ids": new, "attention_mask": mask.long(), kv.keyword: kv.cache}
        inputs["use_cache"] = True
        if kv.logits_to_keep:
            inputs["logits_to_keep"] = 1
        if kv.positions:
            inputs["position_ids"] = (mask.long().cumsum(-1) - 1).clamp(min=0)[:, -new.shape[1] :]
        return self.bridge.original_model(**inputs).logits[:, -1].float()

    # --- display -----------------------------------------------------------------------------------------

    def __repr__(self) -> str:
        return (
            f"LensModel({self.name!r}, source={self.source!r}, arch={self.architecture}, "
            f"n_layers={self.n_layers}, d_model={self.d_model}, d_mlp={self.d_mlp}, "
            f"device={self.device}, dtype={self.dtype}, backend={self.backend!r})"
        )

    def _repr_html_(self) -> str:
        return html_card(
            f"LensModel {self.name}",
            {
                "source": self.source,
                "backend": self.backend,
                "architecture": self.architecture,
                "blocks": self.n_layers,
                "d_model": self.d_model,
                "d_mlp (units per block)": self.d_mlp,
                "device / dtype": f"{self.device} / {str(self.dtype).removeprefix('torch.')}",
                "revision": self.revision or "–",
            },
        )
