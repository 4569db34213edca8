"""Load parallel corpora from FLORES-200, NTREX-128, plain folders, TSV files, Hugging Face datasets or the
small corpus shipped with xlens, and parse the one corpus-spec string every command and config uses.

Every loader returns a :class:`~xlens.data.corpus.ParallelCorpus` keyed by FLORES-200 codes, reads only the
requested languages (``langs``: codes in any accepted form, or one comma-separated string), and strips the
whitespace around each sentence (FLORES has trailing spaces, no-break and ideographic spaces on some lines).

``on_duplicate`` decides what happens to a sentence repeated within a language: ``"drop"`` (the default)
removes every row where any loaded language repeats an earlier sentence, in all languages, so the real
corpora load (NTREX-128 repeats a few short sentences: en/es/de/fr/ja loses 3 of 1997 rows; some FLORES
languages such as bam_Latn or kik_Latn repeat a line); ``"error"`` raises :class:`CorpusError` naming both
lines. The ids of the dropped rows are in ``corpus.dropped_ids``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

from xlens.data.corpus import OnDuplicate, ParallelCorpus
from xlens.data.languages import flores_code
from xlens.errors import CorpusError, HubError, UnknownLanguageError
from xlens.hub import hub_offline_by_env, hub_reachable, unreachable

if TYPE_CHECKING:
    import datasets

__all__ = [
    "CORPUS_SPEC_FORMS",
    "load_builtin",
    "load_corpus",
    "load_dir",
    "load_flores",
    "load_hf",
    "load_ntrex",
    "load_tsv",
    "resolve_spec_paths",
]

Langs = str | Sequence[str] | None

CORPUS_SPEC_FORMS = (
    "builtin                      the small corpus shipped with xlens",
    "flores:PATH[:SPLIT]          FLORES-200 folder of <flores_code>.<split> files (split: devtest)",
    "ntrex:PATH                   NTREX-128 folder (newstest2019-src.eng.txt, newstest2019-ref.<code>.txt)",
    "hf:DATASET[:CONFIG[:SPLIT]]  Hugging Face dataset id or local dataset folder",
    "dir:PATH                     folder of one-sentence-per-line <code>.txt files",
    "tsv:PATH                     TSV file whose header row names the languages",
)

_NTREX_SRC = "newstest2019-src.eng.txt"
_NTREX_REF = re.compile(r"^newstest2019-ref\.(.+)\.txt$")
_REGION = re.compile(r"-([A-Za-z]{2}|\d{3})$")
_FLORES_CODE = re.compile(r"^[a-z]{3}_[A-Z][a-z]{3}$")
# Split picked when a dataset has several and none was asked for: the evaluation split FLORES uses first.
_SPLIT_PREFERENCE = ("devtest", "test", "validation", "dev", "train")


class _Readable(Protocol):
    # Path and importlib.resources Traversable both fit: the builtin corpus may live inside a zip.
    @property
    def name(self) -> str: ...

    def read_bytes(self) -> bytes: ...


# ---- helpers ---------------------------------------------------------------------------------------


def _requested(langs: Langs) -> list[str] | None:
    """Requested codes as given (not yet resolved), or None for all."""
    if langs is None:
        return None
    codes = [c.strip() for c in langs.split(",")] if isinstance(langs, str) else [str(c).strip() for c in langs]
    codes = [c for c in codes if c]
    if not codes:
        raise CorpusError("langs is empty: pass None for every language, or at least one language code")
    resolved = [flores_code(c) for c in codes]
    if len(set(resolved)) != len(resolved):
        raise CorpusError(f"langs names the same language twice: {codes} -> {resolved}")
    return codes


def _existing(path: str | Path, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise CorpusError(f"{what} not found: {p} does not exist")
    return p


def _decode(file: _Readable, label: str) -> str:
    try:
        return file.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise CorpusError(f"{label} is not UTF-8 text (bad byte at offset {e.start})") from e
    except OSError as e:
        raise CorpusError(f"cannot read {label}: {e}") from e


def _split_lines(text: str) -> list[str]:
    # Only '\n' ends a line: str.splitlines would also split on U+2028, form feeds etc. inside sentences.
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return lines


def _read_lines(file: _Readable, label: str) -> list[str]:
    return [line.strip() for line in _split_lines(_decode(file, label))]


def _build(
    name: str,
    sentences: dict[str, list[str]],
    sources: dict[str, str],
    on_duplicate: OnDuplicate,
    ids: list[int] | None = None,
) -> ParallelCorpus:
    if on_duplicate not in ("error", "drop"):
        raise CorpusError(f"on_duplicate must be 'error' or 'drop', got {on_duplicate!r}")
    return ParallelCorpus(sentences, name=name, sources=sources, ids=ids or [], dedupe=on_duplicate == "drop")


def _missing(code: str, lang: str, where: str, available: Sequence[str]) -> CorpusError:
    shown = ", ".join(sorted(available)[:30]) + (f", ... ({len(available)} in all)" if len(available) > 30 else "")
    return CorpusError(f"no text for {code!r} ({lang}) in {where}; available: {shown}")


def _load_files(
    name: str,
    where: str,
    entries: dict[str, tuple[str, _Readable]],
    langs: Langs,
    on_duplicate: OnDuplicate,
) -> ParallelCorpus:
    """``entries``: FLORES code -> (label for messages, file); reads only the requested files."""
    requested = _requested(langs)
    if requested is None:
        chosen = sorted(entries)
    else:
        chosen = []
        for code in requested:
            lang = flores_code(code)
            if lang not in entries:
                raise _missing(code, lang, where, list(entries))
            chosen.append(lang)
    sentences = {lang: _read_lines(entries[lang][1], entries[lang][0]) for lang in chosen}
    return _build(name, sentences, {lang: entries[lang][0] for lang in chosen}, on_duplicate)


def _named_files(files_: list[_Readable], where: str) -> dict[str, tuple[str, _Readable]]:
    """Index ``<code>.txt`` files by FLORES code; a name that is no language code is an error."""
    entries: dict[str, tuple[str, _Readable]] = {}
    for f in sorted(files_, key=lambda f: f.name):
        label = f"{where}/{f.name}"
        try:
            lang = flores_code(f.name.removesuffix(".txt"))
        except UnknownLanguageError as e:
            raise CorpusError(f"{label}: the file name must be a language code ({e})") from e
        if lang in entries:
            raise CorpusError(f"{entries[lang][0]} and {label} are both {lang}; keep one")
        entries[lang] = (label, f)
    return entries


# ---- file-based loaders ----------------------------------------------------------------------------


def load_flores(
    path: str | Path, split: str = "devtest", langs: Langs = None, on_duplicate: OnDuplicate = "drop"
) -> ParallelCorpus:
    """FLORES-200: a folder of ``<flores_code>.<split>`` files, or its parent with a ``<split>/`` folder."""
    folder = _existing(path, "FLORES folder")
    if (folder / split).is_dir():
        folder = folder / split
    suffix = f".{split}"
    entries: dict[str, tuple[str, _Readable]] = {}
    for f in sorted(folder.glob(f"*{suffix}")):
        stem = f.name.removesuffix(suffix)
        # FLORES names its files by FLORES code; anything else in the folder is not a language file.
        if _FLORES_CODE.match(stem):
            entries[flores_code(stem)] = (str(f), f)
    if not entries:
        raise CorpusError(f"no FLORES files *{suffix} (such as eng_Latn{suffix}) in {folder}")
    return _load_files(f"flores:{folder}:{split}", str(folder), entries, langs, on_duplicate)


def _ntrex_files(folder: Path) -> dict[str, Path]:
    """NTREX code (``eng`` for the English source, ``spa``, ``por-BR``, ``zho-CN``, ...) -> file."""
    found: dict[str, Path] = {}
    if (folder / _NTREX_SRC).is_file():
        found["eng"] = folder / _NTREX_SRC
    for f in folder.glob("newstest2019-ref.*.txt"):
        match = _NTREX_REF.match(f.name)
        if match:
            found[match.group(1)] = f
    return found


def load_ntrex(path: str | Path, langs: Langs = None, on_duplicate: OnDuplicate = "drop") -> ParallelCorpus:
    """NTREX-128: ``newstest2019-src.eng.txt`` (English) and ``newstest2019-ref.<code>.txt`` references.

    A language resolves to its main file: the one without a region subtag (``por`` is European Portuguese,
    ``eng`` the English source, ``zho-CN``/``zho-TW`` are Simplified/Traditional Chinese). Ask for a
    regional variant by its NTREX code (``por-BR``, ``eng-GB``, ``fra-CA``, ``spa-MX``); it is stored under
    the language's FLORES code. The second Spanish reference (``ref-2.spa``) is not loaded.
    """
    folder = _existing(path, "NTREX folder")
    by_code = _ntrex_files(folder)
    if not by_code:
        raise CorpusError(f"no NTREX files ({_NTREX_SRC}, newstest2019-ref.<code>.txt) in {folder}")
    main: dict[str, str] = {}  # FLORES code -> NTREX code of its main file
    # Sorting puts region-free codes first, so each language keeps its main variant.
    for code in sorted(by_code, key=lambda c: (_REGION.search(c) is not None, c)):
        try:
            main.setdefault(flores_code(code), code)
        except UnknownLanguageError:
            continue  # a code the language table lacks: not loadable, so not offered
    exact = {code.casefold(): code for code in by_code}

    requested = _requested(langs)
    picks: list[tuple[str, str]] = []  # (FLORES code, NTREX code)
    for code in requested if requested is not None else [main[lang] for lang in sorted(main)]:
        lang = flores_code(code)
        ntrex = exact.get(code.replace("_", "-").casefold()) or main.get(lang)
        if ntrex is None:
            raise _missing(code, lang, str(folder), sorted(by_code))
        picks.append((lang, ntrex))
    entries: dict[str, tuple[str, _Readable]] = {lang: (str(by_code[ntrex]), by_code[ntrex]) for lang, ntrex in picks}
    return _load_files(f"ntrex:{folder}", str(folder), entries, list(entries), on_duplicate)


def load_dir(path: str | Path, langs: Langs = None, on_duplicate: OnDuplicate = "drop") -> ParallelCorpus:
    """A folder of one-sentence-per-line ``<code>.txt`` files, named by any accepted code (``en.txt``)."""
    folder = _existing(path, "corpus folder")
    if not folder.is_dir():
        raise CorpusError(f"dir:{folder} is not a folder")
    txt: list[_Readable] = [f for f in folder.glob("*.txt") if f.is_file()]
    if not txt:
        raise CorpusError(f"no <language>.txt files in {folder}")
    return _load_files(f"dir:{folder}", str(folder), _named_files(txt, str(folder)), langs, on_duplicate)


def load_builtin(langs: Langs = None, on_duplicate: OnDuplicate = "drop") -> ParallelCorpus:
    """The small aligned corpus shipped in ``xlens/data/builtin/<flores_code>.txt``."""
    folder = files("xlens.data").joinpath("builtin")
    txt: list[_Readable] = [f for f in folder.iterdir() if f.name.endswith(".txt") and f.is_file()]
    if not txt:
        raise CorpusError("the builtin corpus is missing (xlens/data/builtin/*.txt): reinstall xlens")
    return _load_files("builtin", "xlens/data/builtin", _named_files(txt, "builtin"), langs, on_duplicate)


def load_tsv(path: str | Path, langs: Langs = None, on_duplicate: OnDuplicate = "drop") -> ParallelCorpus:
    """A TSV file: the header row names the languages (any accepted code), then one aligned row per line.

    Fields are split on tabs only (quotes are text), so sentences cannot contain tabs.
    """
    file = _existing(path, "TSV file")
    lines = _split_lines(_decode(file, str(file)))
    if not lines:
        raise CorpusError(f"{file} is empty: expected a header row naming the languages")
    header = [h.strip() for h in lines[0].split("\t")]
    columns: dict[str, int] = {}
    for j, code in enumerate(header):
        try:
            lang = flores_code(code)
        except UnknownLanguageError as e:
            raise CorpusError(f"{file} header column {j + 1} {code!r} is not a language code ({e})") from e
        if lang in columns:
            raise CorpusError(f"{file} header names {lang} twice ({header[columns[lang]]!r} and {code!r})")
        columns[lang] = j
    rows = [line.split("\t") for line in lines[1:]]
    for k, row in enumerate(rows):
        if len(row) != len(header):
            raise CorpusError(
                f"{file} line {k + 2} has {len(row)} tab-separated fields but the header has {len(header)}"
            )
    requested = _requested(langs)
    chosen = list(columns) if requested is None else []
    for code in requested or []:
        lang = flores_code(code)
        if lang not in columns:
            raise _missing(code, lang, str(file), list(columns))
        chosen.append(lang)
    sentences = {lang: [row[columns[lang]].strip() for row in rows] for lang in chosen}
    sources = {lang: f"{file} (column {header[columns[lang]]!r})" for lang in chosen}
    # ids are 0-based physical line indices (the header is line 0), so messages quote real line numbers.
    return _build(f"tsv:{file}", sentences, sources, on_duplicate, ids=list(range(1, len(rows) + 1)))


# ---- Hugging Face ----------------------------------------------------------------------------------

_GATED_HINT = "gated dataset: accept its terms on the hub and log in with `huggingface-cli login` or set HF_TOKEN"
_OFFLINE_HINT = "set HF_HUB_OFFLINE=0 and check network, or use flores:PATH"


def _causes(e: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = e
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


@contextmanager
def _hub_errors(dataset: str) -> Iterator[None]:
    """Turn what datasets / huggingface_hub raise into one HubError or CorpusError that says what to do."""
    from datasets.exceptions import DatasetNotFoundError
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        yield
    except (CorpusError, HubError):
        raise
    except Exception as e:
        chain = _causes(e)
        # datasets reports a gated repo as DatasetNotFoundError("... gated dataset ...") from GatedRepoError.
        if any(isinstance(c, GatedRepoError) or "gated" in str(c).lower() for c in chain):
            raise HubError(f"{_GATED_HINT} ({dataset}: {e})") from e
        # OfflineModeIsEnabled is a ConnectionError; httpx-style transport errors name themselves.
        if any(
            isinstance(c, ConnectionError | TimeoutError | LocalEntryNotFoundError)
            or any(k.__name__ in ("TransportError", "TimeoutException") for k in type(c).__mro__)
            for c in chain
        ):
            raise HubError(f"hub unreachable or not in local cache: {dataset} ({e}); {_OFFLINE_HINT}") from e
        if any(isinstance(c, DatasetNotFoundError | RepositoryNotFoundError) for c in chain):
            raise HubError(f"dataset {dataset!r} not found on the hub or not accessible ({e})") from e
        if isinstance(e, ValueError | KeyError | FileNotFoundError):
            # Bad config or split names: datasets lists the valid ones in the message.
            raise CorpusError(f"cannot load Hugging Face dataset {dataset!r}: {e}") from e
        raise


def _pick_split(loaded: Any, split: str | None, where: str) -> datasets.Dataset:
    import datasets

    if isinstance(loaded, datasets.Dataset):
        return loaded
    if not isinstance(loaded, datasets.DatasetDict):
        raise CorpusError(f"{where} is a streaming or unsupported dataset object ({type(loaded).__name__})")
    names = list(loaded)
    if split is not None:
        if split not in loaded:
            raise CorpusError(f"{where} has no split {split!r}; splits: {names}")
        return loaded[split]
    if len(names) == 1:
        return loaded[names[0]]
    for name in _SPLIT_PREFERENCE:
        if name in loaded:
            return loaded[name]
    raise CorpusError(f"{where} has several splits {names}: pick one with hf:DATASET:CONFIG:SPLIT (split=...)")


def _table_sentences(
    ds: datasets.Dataset, where: str, language: str | None = None
) -> tuple[dict[str, list[str]], list[int] | None]:
    """Sentences per FLORES code from one split, and row ids when the dataset has an integer ``id`` column.

    Layouts: long (``text`` plus ``iso_639_3``/``iso_15924`` or a ``lang`` column, as in flores_plus),
    a ``translation`` column of {code: text} dicts (WMT/OPUS style), or one column per language (``en``,
    ``eng_Latn``, ``sentence_eng_Latn``). A single-language config passes its ``language``.
    """
    data = cast(dict[str, list[Any]], ds.to_dict())  # batched=False: one dict of columns
    ids = _as_ints(data["id"]) if "id" in data else None  # per row; unique per language in long layouts

    lang_col = next((c for c in ("lang", "language", "lang_code", "flores_code") if c in data), None)
    has_iso = "iso_639_3" in data and "iso_15924" in data
    if "text" in data and (has_iso or lang_col or language):
        if has_iso:
            row_langs = [f"{a}_{b}" for a, b in zip(data["iso_639_3"], data["iso_15924"], strict=True)]
        elif lang_col is not None:
            row_langs = [str(v) for v in data[lang_col]]
        else:
            row_langs = [str(language)] * len(ds)
        return _long_sentences(data["text"], row_langs, ids, where)

    if ids is not None and len(set(ids)) != len(ids):
        ids = None  # one row per sentence here, so repeated "ids" are not row ids
    if "translation" in data:
        pairs: list[dict[str, Any]] = data["translation"]
        codes = list(pairs[0]) if pairs else []
        return {flores_code(c): [_clean(p.get(c)) for p in pairs] for c in codes}, ids
    return _wide_sentences(data, where), ids


def _long_sentences(
    texts: list[Any], row_langs: list[str], ids: list[int] | None, where: str
) -> tuple[dict[str, list[str]], list[int] | None]:
    """Sentences per FLORES code of a long layout (one row per sentence and language), rows in id order, and the
    ids, which every language must cover alike."""
    rows = sorted(range(len(row_langs)), key=lambda i: ids[i]) if ids is not None else range(len(row_langs))
    grouped: dict[str, list[str]] = {}
    grouped_ids: dict[str, list[int]] = {}
    for i in rows:  # sorted by id: rows align by id, not by storage order
        lang = flores_code(row_langs[i])
        grouped.setdefault(lang, []).append(_clean(texts[i]))
        if ids is not None:
            grouped_ids.setdefault(lang, []).append(ids[i])
    if ids is None:
        return grouped, None
    id_lists = list(grouped_ids.values())
    if any(lang_ids != id_lists[0] for lang_ids in id_lists):
        raise CorpusError(f"{where}: languages cover different ids, so their rows do not align")
    return grouped, id_lists[0]


def _wide_sentences(data: dict[str, list[Any]], where: str) -> dict[str, list[str]]:
    """Sentences per FLORES code of a wide layout, one column per language (``en``, ``eng_Latn``,
    ``sentence_eng_Latn``); other columns are skipped."""
    cols = list(data)
    wide: dict[str, list[str]] = {}
    for c in cols:
        if c == "id":  # 'id' is also Indonesian's ISO 639-1 code
            continue
        try:
            lang = flores_code(c.removeprefix("sentence_").removeprefix("text_"))
        except UnknownLanguageError:
            continue  # metadata column (url, domain, ...)
        if lang in wide:
            raise CorpusError(f"{where}: two columns hold {lang}")
        wide[lang] = [_clean(t) for t in data[c]]
    if not wide:
        raise CorpusError(
            f"{where}: no language columns among {cols}; expected a text column with a language column, "
            "a translation column, or one column per language (en, eng_Latn, sentence_eng_Latn)"
        )
    return wide


def _as_ints(values: list[Any]) -> list[int] | None:
    """The id column as integers, or None when it holds something else."""
    try:
        return [int(v) for v in values]
    except (TypeError, ValueError):
        return None


def _clean(text: object) -> str:
    # A missing value (None) becomes "", which ParallelCorpus reports as an empty sentence with its line.
    if text is None:
        return ""
    return text.strip() if isinstance(text, str) else str(text)


def load_hf(
    dataset: str,
    config: str | None = None,
    split: str | None = None,
    langs: Langs = None,
    on_duplicate: OnDuplicate = "drop",
) -> ParallelCorpus:
    """A Hugging Face dataset (hub id, cached offline, or a local folder/file).

    * Local: a ``save_to_disk`` folder, a folder of data files, or one .parquet/.csv/.json(l) file.
    * One config per language named by FLORES code (``openlanguagedata/flores_plus``: ``eng_Latn``, ...,
      text column ``text``): without ``config``, the configs of the requested ``langs`` are loaded.
    * Otherwise the given (or default) config, in any layout :func:`_table_sentences` understands.

    ``split=None`` takes the only split, else the first of devtest/test/validation/dev/train.
    Raises HubError when the hub is unreachable or the dataset is not cached, gated or missing.
    """
    import datasets

    requested = _requested(langs)
    name = "hf:" + ":".join(p for p in (dataset, config, split) if p)
    local = Path(dataset).expanduser()
    with _hub_errors(dataset):
        if local.exists():
            if (local / "state.json").is_file() or (local / "dataset_dict.json").is_file():
                loaded: Any = datasets.load_from_disk(str(local))
            elif local.is_file():
                builder = {".parquet": "parquet", ".csv": "csv", ".json": "json", ".jsonl": "json"}.get(local.suffix)
                if builder is None:
                    raise CorpusError(f"{local}: hf: reads .parquet, .csv, .json or .jsonl files (use tsv: for TSV)")
                loaded = datasets.load_dataset(builder, data_files=str(local))
            else:
                loaded = datasets.load_dataset(str(local), config)
            found, ids = _table_sentences(_pick_split(loaded, split, name), name)
        elif not hub_reachable() and not hub_offline_by_env():
            raise unreachable(
                f"dataset {dataset!r}",
                "Set HF_HUB_OFFLINE=1 to read it from the local Hugging Face cache, or load a local copy "
                "(flores:PATH, hf:FOLDER).",
            )
        elif config is None and _has_language_configs(dataset):
            found, ids = _per_language_configs(dataset, split, requested, name)
        else:
            loaded = datasets.load_dataset(dataset, config, split=split)
            found, ids = _table_sentences(_pick_split(loaded, split, name), name)

    chosen = list(found) if requested is None else []
    for code in requested or []:
        lang = flores_code(code)
        if lang not in found:
            raise _missing(code, lang, name, list(found))
        chosen.append(lang)
    return _build(name, {lang: found[lang] for lang in chosen}, {lang: name for lang in chosen}, on_duplicate, ids=ids)


def _has_language_configs(dataset: str) -> bool:
    import datasets

    return any(_FLORES_CODE.match(c) for c in datasets.get_dataset_config_names(dataset))


def _per_language_configs(
    dataset: str, split: str | None, requested: list[str] | None, name: str
) -> tuple[dict[str, list[str]], list[int] | None]:
    import datasets

    if requested is None:
        raise CorpusError(
            f"{dataset} has one config per language: pass langs (e.g. langs=['eng_Latn', 'spa_Latn']) "
            "or name one config with hf:DATASET:CONFIG"
        )
    configs = set(datasets.get_dataset_config_names(dataset))
    found: dict[str, list[str]] = {}
    ids: list[int] | None = None
    for code in requested:
        lang = flores_code(code)
        if lang not in configs:
            raise _missing(code, lang, f"{dataset} configs", [c for c in configs if _FLORES_CODE.match(c)])
        where = f"{name}:{lang}"
        table, lang_ids = _table_sentences(
            _pick_split(datasets.load_dataset(dataset, lang, split=split), split, where), where, lang
        )
        if lang not in table:
            raise CorpusError(f"{where} holds {sorted(table)}, not {lang}")
        if ids is not None and lang_ids is not None and lang_ids != ids:
            raise CorpusError(f"{where}: its ids differ from the other languages', so the rows do not align")
        ids = ids if ids is not None else lang_ids
        found[lang] = table[lang]
    return found, ids


# ---- corpus specs ----------------------------------------------------------------------------------


def load_corpus(spec: str = "builtin", langs: Langs = None, on_duplicate: OnDuplicate = "drop") -> ParallelCorpus:
    """Load the corpus a spec string names (see :data:`CORPUS_SPEC_FORMS`), e.g. ``flores:PATH:devtest``."""
    text = spec.strip()
    scheme, _, rest = text.partition(":")
    scheme = scheme.casefold()
    forms = "; ".join(f.split()[0] for f in CORPUS_SPEC_FORMS)
    if scheme == "builtin" and not rest:
        return load_builtin(langs, on_duplicate)
    if scheme in ("flores", "ntrex", "hf", "dir", "tsv"):
        if not rest:
            raise CorpusError(f"corpus spec {spec!r} needs a path or dataset after '{scheme}:' (forms: {forms})")
        if scheme == "flores":
            # 'flores:PATH:SPLIT' unless the whole rest is an existing path (which may contain ':').
            path, split = (rest, "devtest")
            if ":" in rest and not Path(rest).expanduser().exists():
                path, split = rest.rsplit(":", 1)
            return load_flores(path, split or "devtest", langs, on_duplicate)
        if scheme == "ntrex":
            return load_ntrex(rest, langs, on_duplicate)
        if scheme == "dir":
            return load_dir(rest, langs, on_duplicate)
        if scheme == "tsv":
            return load_tsv(rest, langs, on_duplicate)
        parts = rest.split(":")
        if len(parts) > 3:
            raise CorpusError(f"corpus spec {spec!r}: expected hf:DATASET[:CONFIG[:SPLIT]]")
        dataset, config, split = [*parts, "", ""][:3]
        return load_hf(dataset, config or None, split or None, langs, on_duplicate)
    listing = "\n  ".join(CORPUS_SPEC_FORMS)
    raise CorpusError(f"unknown corpus spec {spec!r}; accepted forms:\n  {listing}")


def resolve_spec_paths(spec: str, base: str | os.PathLike[str]) -> str:
    """``spec`` with a relative path made absolute against ``base`` (a config file's folder), so a config means the
    same corpus wherever it is run from (``sib200:PATH`` too, :mod:`xlens.data.sib200`). ``builtin`` and hub dataset
    ids are returned as they are."""
    text = spec.strip()
    scheme, _, rest = text.partition(":")
    kind = scheme.casefold()
    root = Path(base)
    if kind not in ("flores", "ntrex", "dir", "tsv", "hf", "sib200", "bucc") or not rest:
        return text
    suffix = ""
    path = rest
    if kind == "hf":
        path, _, tail = rest.partition(":")
        suffix = f":{tail}" if tail else ""
        if Path(path).expanduser().is_absolute() or not (root / path).exists():
            return text  # a hub id (or an absolute folder)
    elif kind == "flores" and ":" in rest and not (root / rest).exists() and not Path(rest).exists():
        path, split = rest.rsplit(":", 1)
        suffix = f":{split}"
    resolved = Path(path).expanduser()
    if not resolved.is_absolute():
        resolved = Path(os.path.abspath(root / resolved))
    return f"{scheme}:{resolved}{suffix}"
