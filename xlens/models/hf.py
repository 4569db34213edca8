"""A plain Hugging Face causal LM with the hook surface of a TransformerBridge: the backend for models that
TransformerLens has no adapter for (or maps to the wrong one, as PolyLM-13B's remote code).

:class:`HFBridge` puts hook points on torch forward hooks of the model's own modules, under TransformerLens' names,
so :class:`~xlens.models.lens.LensModel` (forward passes, interventions, embeddings, generation) runs on it
unchanged. Per block ``b`` it offers

- ``blocks.{b}.hook_in`` (alias ``blocks.{b}.hook_resid_pre``): the hidden states entering block ``b`` (block 0:
  the token embeddings after any scaling or embedding norm, as the model computes them);
- ``blocks.{b}.hook_out`` (alias ``blocks.{b}.hook_resid_post``): the hidden states leaving block ``b``;
- ``blocks.{b}.mlp.out.hook_in`` (alias ``blocks.{b}.mlp.hook_post``): the MLP neurons, the input of the down
  projection, ``[batch, pos, d_mlp]``;
- ``blocks.{b}.mlp.out.hook_out``: the output of the down projection;
- ``blocks.{b}.mlp.gate.hook_out``: on gated MLPs, the output of the gate projection (before its activation).

Modules are found by :data:`DEFAULT_MODULE_PATHS` (regular expressions over module paths); ``module_paths=``
overrides them for a model whose layout they miss.
"""

from __future__ import annotations

import contextlib
import inspect
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from xlens.errors import InputError, ModelLoadError
from xlens.models.shape import shape_from_config, takes_mask_positions

if TYPE_CHECKING:
    from transformers import PreTrainedModel

HookFn = Callable[[Tensor, "HookPoint"], Tensor | None]

# Module paths by role, as regular expressions matched in full:
# - "blocks": the ModuleList of decoder blocks, a path from the model's root (Llama/Gemma/Cohere/Qwen/Mistral
#   model.layers, GPT-2/Bloom/Falcon transformer.h, MPT transformer.blocks, GPT-NeoX gpt_neox.layers,
#   OPT model.decoder.layers, BioGPT biogpt.layers);
# - "down_proj": the MLP's down projection, a path inside a block (Llama-likes and MPT mlp/ffn.down_proj, GPT-2
#   mlp.c_proj, Bloom/Falcon/GPT-NeoX/Persimmon mlp.dense_4h_to_h, GPT-J mlp.fc_out, Phi mlp.fc2, OPT/BioGPT fc2);
# - "gate_proj": on gated MLPs, the gate projection inside a block (Llama-likes mlp.gate_proj); optional.
DEFAULT_MODULE_PATHS: dict[str, str] = {
    "blocks": r"(?:.+\.)?(?:layers|h|blocks)",
    "down_proj": r"(?:mlp|ffn|feed_forward)\.(?:down_proj|c_proj|dense_4h_to_h|fc_out|fc2|w2)|fc2",
    "gate_proj": r"(?:mlp|feed_forward)\.gate_proj",
}


# A module of a gated MLP, whatever its layout names the gate: Llama-likes' gate/up projections, fused gate_up
# (Phi-3), SwiGLU w1/w3 (InternLM2, Mixtral's experts).
_GATED = re.compile(r"(?:.+\.)?(?:mlp|feed_forward|ffn)\.(?:gate_proj|up_proj|gate_up_proj|w1|w3)")


class HookPoint:
    """One place activations pass through. Functions added to it run in the order added, each seeing the previous
    one's output (a returned tensor replaces the activation, None keeps it). The torch hook that feeds it is
    attached only while it holds functions, so an unhooked model runs untouched."""

    def __init__(self, name: str, attach: Callable[[HookPoint], torch.utils.hooks.RemovableHandle]) -> None:
        self.name = name
        self._attach = attach
        self._fns: dict[int, HookFn] = {}
        self._next = 0
        self._handle: torch.utils.hooks.RemovableHandle | None = None

    def add_hook(self, fn: HookFn) -> int:
        """Add ``fn``; returns the key that :meth:`remove_hook` takes."""
        key, self._next = self._next, self._next + 1
        self._fns[key] = fn
        if self._handle is None:
            self._handle = self._attach(self)
        return key

    def remove_hook(self, key: int) -> None:
        del self._fns[key]
        if not self._fns and self._handle is not None:
            self._handle.remove()
            self._handle = None

    @property
    def n_hooks(self) -> int:
        return len(self._fns)

    def run(self, act: Tensor) -> Tensor:
        for fn in list(self._fns.values()):
            out = fn(act, self)
            if out is not None:
                act = out
        return act

    def __repr__(self) -> str:
        return f"HookPoint({self.name!r}, hooks={self.n_hooks})"


def _input_point(module: nn.Module) -> Callable[[HookPoint], torch.utils.hooks.RemovableHandle]:
    """Attach to the first input of ``module`` (positional, or the ``hidden_states`` keyword)."""

    def attach(point: HookPoint) -> torch.utils.hooks.RemovableHandle:
        def pre_hook(mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
            if args:
                return (point.run(args[0]), *args[1:]), kwargs
            if "hidden_states" in kwargs:
                return args, {**kwargs, "hidden_states": point.run(kwargs["hidden_states"])}
            raise InputError(f"{point.name}: {type(mod).__name__} got no positional input and no hidden_states")

        return module.register_forward_pre_hook(pre_hook, with_kwargs=True)

    return attach


def _output_point(module: nn.Module) -> Callable[[HookPoint], torch.utils.hooks.RemovableHandle]:
    """Attach to the output of ``module``: a tensor, or a tuple whose first element is the hidden states."""

    def attach(point: HookPoint) -> torch.utils.hooks.RemovableHandle:
        def hook(mod: nn.Module, args: tuple[Any, ...], out: Any) -> Any:
            if isinstance(out, Tensor):
                return point.run(out)
            if isinstance(out, tuple) and out and isinstance(out[0], Tensor):
                return (point.run(out[0]), *out[1:])
            raise InputError(f"{point.name}: cannot read the hidden states from a {type(out).__name__} output")

        return module.register_forward_hook(hook)

    return attach


@dataclass
class HFConfig:
    """The part of TransformerLens' ``cfg`` that xlens reads."""

    n_layers: int
    d_model: int
    d_mlp: int
    architecture: str
    device: str
    default_prepend_bos: bool
    gated_mlp: bool = False  # act_fn(gate(x)) * up(x), with or without the gate's hook point


def module_patterns(module_paths: Mapping[str, str] | None = None) -> dict[str, re.Pattern[str]]:
    """:data:`DEFAULT_MODULE_PATHS` with ``module_paths`` over them, compiled (bad roles and patterns raise)."""
    unknown = sorted(set(module_paths or {}) - set(DEFAULT_MODULE_PATHS))
    if unknown:
        raise InputError(f"unknown module_paths role(s) {unknown}; the roles are {sorted(DEFAULT_MODULE_PATHS)}")
    merged = {**DEFAULT_MODULE_PATHS, **(module_paths or {})}
    try:
        return {role: re.compile(pattern) for role, pattern in merged.items()}
    except re.error as err:
        raise InputError(f"module_paths holds an invalid regular expression: {err}") from err


def find_blocks(model: nn.Module, pattern: re.Pattern[str]) -> tuple[str, nn.ModuleList]:
    """The ModuleList of decoder blocks: the one outermost ModuleList whose path matches ``pattern``."""
    lists = {path: m for path, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 0}
    found = [path for path in lists if pattern.fullmatch(path)]
    outermost = [p for p in found if not any(p.startswith(f"{q}.") for q in found)]
    if len(outermost) != 1:
        what = "no ModuleList" if not outermost else f"several ModuleLists ({', '.join(outermost)})"
        raise ModelLoadError(
            f"the Hugging Face backend found {what} of decoder blocks in {type(model).__name__} matching "
            f"{pattern.pattern!r}; its ModuleLists: {', '.join(lists) or 'none'}. Pass "
            "module_paths={'blocks': REGEX} naming the path of the decoder blocks"
        )
    return outermost[0], lists[outermost[0]]


def find_down_proj(model: nn.Module, blocks_path: str, block: nn.Module, pattern: re.Pattern[str]) -> nn.Module:
    """The one module inside ``block`` whose path matches ``pattern`` (the MLP's down projection)."""
    found = [m for path, m in block.named_modules() if path and pattern.fullmatch(path)]
    if len(found) != 1:
        leaves = [path for path, m in block.named_modules() if path and not list(m.children())]
        what = "no module" if not found else f"{len(found)} modules"
        raise ModelLoadError(
            f"the Hugging Face backend found {what} for the MLP down projection in the blocks of "
            f"{type(model).__name__} ({blocks_path}.N) matching {pattern.pattern!r}; the modules of a block: "
            f"{', '.join(leaves)}. Pass module_paths={{'down_proj': REGEX}} naming its path inside a block"
        )
    return found[0]


def _in_width(module: nn.Module) -> int:
    # nn.Linear says in_features; GPT-2's Conv1D stores its weight as [in, out] and says nx.
    width = getattr(module, "in_features", None) or getattr(module, "nx", None)
    if width is None:
        raise ModelLoadError(f"cannot tell the input width of the down projection {type(module).__name__}")
    return int(width)


def _weight(module: nn.Module) -> Tensor:
    weight = module.weight
    assert isinstance(weight, Tensor)
    return weight


def _prepends_bos(tokenizer: Any) -> bool:
    """Whether the tokenizer itself starts a text with BOS: the model's own convention."""
    bos = tokenizer.bos_token_id
    return bos is not None and tokenizer("a")["input_ids"][:1] == [bos]


class HFBridge:
    """A Hugging Face causal LM with the TransformerBridge surface xlens uses: ``hooks()``, ``hook_dict``, a call
    on token ids returning logits, ``cfg``, ``tokenizer``, ``parameters()`` and ``eval()``.

    Attributes:
        original_model: the ``transformers`` model (TransformerBridge's name for it).
        tokenizer: its tokenizer.
        cfg: sizes, architecture (the model class), device and BOS convention.
        hook_dict: hook name -> :class:`HookPoint`; aliases are the same object.
    """

    def __init__(self, model: PreTrainedModel, tokenizer: Any, module_paths: Mapping[str, str] | None = None) -> None:
        patterns = module_patterns(module_paths)
        self.original_model = model
        self.tokenizer = tokenizer
        blocks_path, blocks = find_blocks(model, patterns["blocks"])
        downs = [find_down_proj(model, blocks_path, block, patterns["down_proj"]) for block in blocks]
        self.hook_dict: dict[str, HookPoint] = {}
        for b, (block, down) in enumerate(zip(blocks, downs, strict=True)):
            for names, attach in (
                (("hook_in", "hook_resid_pre"), _input_point(block)),
                (("hook_out", "hook_resid_post"), _output_point(block)),
                (("mlp.out.hook_in", "mlp.hook_post"), _input_point(down)),
                (("mlp.out.hook_out",), _output_point(down)),
            ):
                point = HookPoint(f"blocks.{b}.{names[0]}", attach)
                self.hook_dict.update({f"blocks.{b}.{name}": point for name in names})
            gates = [m for path, m in block.named_modules() if path and patterns["gate_proj"].fullmatch(path)]
            if len(gates) == 1:
                self.hook_dict[f"blocks.{b}.mlp.gate.hook_out"] = HookPoint(
                    f"blocks.{b}.mlp.gate.hook_out", _output_point(gates[0])
                )
        self.cfg = HFConfig(
            n_layers=len(blocks),
            d_model=shape_from_config(model.config).d_model,
            d_mlp=_in_width(downs[0]),
            architecture=type(model).__name__,
            device=str(_weight(model.get_input_embeddings()).device),
            default_prepend_bos=_prepends_bos(tokenizer),
            gated_mlp=any(_GATED.fullmatch(path) for path, _ in blocks[0].named_modules()),
        )
        parameters = inspect.signature(model.forward).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
        self._takes = {name for name in ("use_cache", "logits_to_keep") if takes_any or name in parameters}
        # Positions from the mask for left-padded rows, where TransformerBridge derives them too (HF's default
        # arange would shift every real token of the row); models that derive them themselves are left alone.
        self._derive_positions = takes_mask_positions(model)

    @classmethod
    def from_pretrained(
        cls,
        where: str,
        *,
        dtype: torch.dtype = torch.float32,
        device: str | None = None,
        revision: str | None = None,
        trust_remote_code: bool = False,
        device_map: str | dict[str, Any] | None = None,
        n_devices: int | None = None,
        max_memory: dict[Any, Any] | None = None,
        module_paths: Mapping[str, str] | None = None,
    ) -> HFBridge:
        """Load with ``AutoModelForCausalLM`` and ``AutoTokenizer`` (eager attention, as TransformerBridge, so both
        backends compute alike); ``device_map``/``n_devices``/``max_memory`` spread it as the bridge does."""
        from transformer_lens.utilities.multi_gpu import resolve_device_map
        from transformers import AutoModelForCausalLM, AutoTokenizer

        spread_map, memory = resolve_device_map(n_devices, device_map, None, max_memory)
        kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": trust_remote_code, "revision": revision}
        # A device as the device map puts the weights there as they are read (no host copy of a big model first).
        if spread_map is not None:
            kwargs.update(device_map=spread_map, max_memory=memory)
        elif device is not None:
            kwargs["device_map"] = device
        model: PreTrainedModel = AutoModelForCausalLM.from_pretrained(where, attn_implementation="eager", **kwargs)
        model.eval()
        tokenizer = AutoTokenizer.from_pretrained(where, revision=revision, trust_remote_code=trust_remote_code)
        return cls(model, tokenizer, module_paths)

    # --- the TransformerBridge surface ---------------------------------------------------------------------

    def __call__(
        self,
        tokens: Int[Tensor, "batch pos"],
        attention_mask: Int[Tensor, "batch pos"] | None = None,
        return_type: str | None = "logits",
        logits_to_keep: int | None = None,
    ) -> Float[Tensor, "batch pos vocab"] | None:
        """Logits of ``tokens`` (only the last ``logits_to_keep`` positions if given); None with
        ``return_type=None``."""
        if return_type not in ("logits", None):
            raise InputError(f"return_type {return_type!r}: the Hugging Face backend returns 'logits' or None")
        inputs: dict[str, Any] = {"input_ids": tokens}
        if "use_cache" in self._takes:
            inputs["use_cache"] = False
        if attention_mask is not None:
            inputs["attention_mask"] = attention_mask
            if self._derive_positions:
                positions = self._positions(attention_mask)
                if positions is not None:
                    inputs["position_ids"] = positions
        if logits_to_keep is not None and "logits_to_keep" in self._takes:
            inputs["logits_to_keep"] = logits_to_keep
        logits = self.original_model(**inputs).logits
        if return_type is None:
            return None
        return logits[:, -logits_to_keep:] if logits_to_keep else logits

    @staticmethod
    def _positions(mask: Int[Tensor, "batch pos"]) -> Int[Tensor, "batch pos"] | None:
        """Mask-derived positions for the rows whose real tokens are not at ``0..n-1`` (left padding), as
        TransformerBridge does; None when every row is unpadded or right-padded."""
        derived = (mask.long().cumsum(-1) - 1).clamp(min=0)
        arange = torch.arange(mask.shape[1], device=mask.device).expand_as(derived)
        needs = ((derived != arange) & (mask != 0)).any(dim=1, keepdim=True)
        return torch.where(needs, derived, arange) if bool(needs.any()) else None

    @contextlib.contextmanager
    def hooks(self, fwd_hooks: Sequence[tuple[str, HookFn]] = ()) -> Iterator[HFBridge]:
        """Add ``(hook_name, fn)`` pairs inside the block; exactly these are removed on exit, also after an
        exception (a hook may raise to stop the forward pass)."""
        added: list[tuple[HookPoint, int]] = []
        try:
            for name, fn in fwd_hooks:
                if name not in self.hook_dict:
                    raise InputError(f"unknown hook name {name!r}; see hook_dict for the available ones")
                point = self.hook_dict[name]
                added.append((point, point.add_hook(fn)))
            yield self
        finally:
            for point, key in reversed(added):
                point.remove_hook(key)

    def run_with_hooks(
        self, tokens: Int[Tensor, "batch pos"], fwd_hooks: Sequence[tuple[str, HookFn]] = (), **kwargs: Any
    ) -> Float[Tensor, "batch pos vocab"] | None:
        with self.hooks(fwd_hooks):
            return self(tokens, **kwargs)

    def run_with_cache(
        self, tokens: Int[Tensor, "batch pos"], names_filter: Sequence[str], **kwargs: Any
    ) -> tuple[Float[Tensor, "batch pos vocab"] | None, dict[str, Tensor]]:
        """Logits and the activations at ``names_filter`` (exact hook names)."""
        cache: dict[str, Tensor] = {}

        def saver(name: str) -> HookFn:
            def save(act: Tensor, hook: HookPoint) -> None:
                cache[name] = act.detach()

            return save

        logits = self.run_with_hooks(tokens, [(name, saver(name)) for name in names_filter], **kwargs)
        return logits, cache

    def parameters(self) -> Iterator[nn.Parameter]:
        return self.original_model.parameters()

    def eval(self) -> HFBridge:
        self.original_model.eval()
        return self

    def __repr__(self) -> str:
        return f"HFBridge({self.cfg.architecture}, n_layers={self.cfg.n_layers}, device={self.cfg.device})"
