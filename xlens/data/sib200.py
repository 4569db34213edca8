"""SIB-200 (Adelani et al., 2024): topic classification of FLORES-200 sentences, 7 topics, 205 language varieties, for
evaluation beyond retrieval (zero-shot cross-lingual transfer, :mod:`xlens.evaluation.transfer`).

Two sources, named by a spec string (:data:`SIB200_SPEC_FORMS`):

* ``sib200:PATH``: a folder of ``<flores_code>/{train,dev,test}.tsv`` files (header ``index_id, category, text``; TSV
  with CSV-style quoting, so a sentence may hold quotes) with the topics in ``<flores_code>/labels.txt`` (or
  ``labels.txt`` beside the language folders), as the SIB-200 release ships them. An existing folder given without
  ``sib200:`` is read the same way.
* ``hf:DATASET``: a Hugging Face dataset with one config per language named by FLORES code, columns ``index_id``,
  ``category``, ``text`` and splits train/validation/test (``validation`` is ``dev`` here), such as
  ``hf:Davlan/sib200``; ``DATASET`` may also be a local folder of ``save_to_disk`` datasets, one per language
  (``<folder>/<flores_code>/``).

Languages are accepted in any form :func:`xlens.data.languages.flores_code` takes (``en``, ``eng``, ``eng_Latn``) and
only the requested ones are read. A language may lack a split (a folder without ``train.tsv``); what needs it asks
:meth:`Sib200.has`. Row i of a split is the same sentence with the same topic in every language, so the ids and
topics of every split are checked to agree across the loaded languages.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from xlens.data.languages import flores_code
from xlens.data.loaders import _hub_errors, _requested
from xlens.errors import CorpusError
from xlens.hub import hub_offline_by_env, hub_reachable, unreachable

__all__ = [
    "SIB200_LABELS",
    "SIB200_SPEC_FORMS",
    "SPLITS",
    "Sib200",
    "Sib200Split",
    "load_sib200",
    "sib200_languages",
]

SPLITS = ("train", "dev", "test")
# The release's labels.txt order: topic indices are positions in it (sources without labels.txt use it too).
SIB200_LABELS: tuple[str, ...] = (
    "science/technology",
    "travel",
    "politics",
    "sports",
    "health",
    "entertainment",
    "geography",
)
SIB200_SPEC_FORMS = (
    "sib200:PATH   SIB-200 folder of <flores_code>/{train,dev,test}.tsv and labels.txt",
    "hf:DATASET    Hugging Face dataset with one config per language (hf:Davlan/sib200) or a local folder of them",
)
HEADER = ["index_id", "category", "text"]
_FLORES_CODE = re.compile(r"^[a-z]{3}_[A-Z][a-z]{3}$")
_HF_SPLITS = {"train": "train", "validation": "dev", "dev": "dev", "test": "test"}

Langs = str | Sequence[str] | None


@dataclass(frozen=True)
class Sib200Split:
    """One split: the FLORES-200 sentence ids and topic indices of its rows, and their text per language (the
    languages that have this split)."""

    ids: list[int]
    labels: list[int]
    texts: dict[str, list[str]]


@dataclass(frozen=True)
class Sib200:
    """SIB-200 for some languages (FLORES codes, in the order asked): ``labels`` are the topic names, ``splits`` the
    loaded splits by name (``train``, ``dev``, ``test``)."""

    name: str
    languages: list[str]
    labels: list[str]
    splits: dict[str, Sib200Split]

    def has(self, lang: str, split: str) -> bool:
        """Whether ``lang`` (any accepted code) has ``split``."""
        found = self.splits.get(split)
        return found is not None and flores_code(lang) in found.texts

    def texts(self, lang: str, split: str) -> list[str]:
        """The sentences of ``lang`` (any accepted code) in ``split``, in row order."""
        code = flores_code(lang)
        if code not in self.languages:
            raise CorpusError(f"{code} is not loaded from {self.name}; loaded: {', '.join(self.languages)}")
        if not self.has(code, split):
            raise CorpusError(f"{code} has no {split} split in {self.name}")
        return list(self.splits[split].texts[code])

    def labels_of(self, split: str) -> list[int]:
        """The topic index (into :attr:`labels`) of every row of ``split``, the same in every language."""
        return list(self._split(split).labels)

    def ids_of(self, split: str) -> list[int]:
        """The FLORES-200 sentence id of every row of ``split``."""
        return list(self._split(split).ids)

    def _split(self, split: str) -> Sib200Split:
        if split not in self.splits:
            raise CorpusError(f"{self.name} has no {split} split for {', '.join(self.languages)}")
        return self.splits[split]

    def __repr__(self) -> str:
        sizes = ", ".join(f"{name} {len(s.ids)}" for name, s in self.splits.items())
        return f"Sib200({self.name}, {len(self.languages)} languages, {len(self.labels)} topics, {sizes})"


# ---- specs -----------------------------------------------------------------------------------------


def _parse(spec_or_path: str | Path) -> tuple[str, str]:
    """``(kind, where)``: ``("folder", PATH)`` or ``("hf", DATASET)``."""
    text = str(spec_or_path).strip()
    scheme, sep, rest = text.partition(":")
    if sep and scheme.casefold() in ("sib200", "hf"):
        if not rest:
            raise CorpusError(f"SIB-200 spec {text!r} needs a path or dataset after '{scheme}:'")
        return ("folder" if scheme.casefold() == "sib200" else "hf"), rest
    if text and Path(text).expanduser().is_dir():
        return "folder", text
    listing = "\n  ".join(SIB200_SPEC_FORMS)
    raise CorpusError(f"unknown SIB-200 spec {text!r}; accepted forms:\n  {listing}")


def sib200_languages(spec_or_path: str | Path) -> list[str]:
    """The FLORES codes the SIB-200 source holds (sorted); the hub is asked for a hub dataset's configs."""
    kind, where = _parse(spec_or_path)
    if kind == "folder":
        return sorted(_folder_languages(_folder(where)))
    local = Path(where).expanduser()
    if local.is_dir():
        return sorted(_local_hf_languages(local))
    return sorted(_hub_configs(where))


def load_sib200(spec_or_path: str | Path, langs: Langs = None) -> Sib200:
    """SIB-200 for ``langs`` (codes in any accepted form, or one comma-separated string; None: every language of
    a folder) from a spec (see the module docstring), with every split each language has."""
    kind, where = _parse(spec_or_path)
    requested = _requested(langs)
    if kind == "folder":
        return _load_folder(_folder(where), requested)
    return _load_hf(where, requested)


def _missing(code: str, where: str, available: int, spec: str) -> CorpusError:
    lang = flores_code(code)
    return CorpusError(
        f"no SIB-200 data for {code!r} ({lang}) in {where}: it has {available} languages; list them with "
        f"xlens.data.sib200.sib200_languages({spec!r})"
    )


def _chosen(requested: list[str] | None, available: list[str], where: str, spec: str) -> list[str]:
    if requested is None:
        return sorted(available)
    out = []
    for code in requested:
        lang = flores_code(code)
        if lang not in available:
            raise _missing(code, where, len(available), spec)
        out.append(lang)
    return out


# ---- assembling --------------------------------------------------------------------------------------


Rows = dict[str, tuple[list[int], list[str], list[str]]]  # split -> (ids, categories, texts)


def _assemble(name: str, per_language: dict[str, Rows], labels: list[str]) -> Sib200:
    """Check that every split's ids and topics agree across languages and index the topics."""
    index = {label: i for i, label in enumerate(labels)}
    splits: dict[str, Sib200Split] = {}
    for split in SPLITS:
        holders = [lang for lang, rows in per_language.items() if split in rows]
        if not holders:
            continue
        first = holders[0]
        ids, categories, _ = per_language[first][split]
        for lang in holders[1:]:
            other_ids, other_categories, _ = per_language[lang][split]
            if len(other_ids) != len(ids):
                raise CorpusError(
                    f"{name}: {lang} has {len(other_ids)} {split} rows, {first} has {len(ids)}: the rows do not align"
                )
            for row, (a, b, ca, cb) in enumerate(zip(ids, other_ids, categories, other_categories, strict=True)):
                if a != b or ca != cb:
                    raise CorpusError(
                        f"{name}: {split} row {row + 1} is sentence {a} ({ca}) in {first} but {b} ({cb}) in {lang}: "
                        "the languages' rows do not align"
                    )
        unknown = sorted(set(categories) - set(index))
        if unknown:
            raise CorpusError(f"{name}: {first} {split} has topics {unknown} that are not among the labels {labels}")
        texts = {lang: per_language[lang][split][2] for lang in holders}
        splits[split] = Sib200Split(list(ids), [index[c] for c in categories], texts)
    if not splits:
        raise CorpusError(f"{name}: no train, dev or test split for {', '.join(per_language)}")
    return Sib200(name, list(per_language), list(labels), splits)


def _clean_rows(
    ids: list[Any], categories: list[Any], texts: list[Any], where: str
) -> tuple[list[int], list[str], list[str]]:
    out_ids: list[int] = []
    for row, value in enumerate(ids):
        try:
            out_ids.append(int(value))
        except (TypeError, ValueError):
            raise CorpusError(f"{where} row {row + 1}: index_id {value!r} is not an integer") from None
    clean = [str(t).strip() if t is not None else "" for t in texts]
    empty = [row + 1 for row, t in enumerate(clean) if not t]
    if empty:
        raise CorpusError(f"{where}: empty text in row(s) {empty[:5]}")
    if not out_ids:
        raise CorpusError(f"{where} holds no rows")
    return out_ids, [str(c).strip() for c in categories], clean


# ---- folders -----------------------------------------------------------------------------------------


def _folder(where: str) -> Path:
    folder = Path(where).expanduser()
    if not folder.is_dir():
        raise CorpusError(f"SIB-200 folder not found: {folder} is not a folder")
    return folder


def _folder_languages(folder: Path) -> list[str]:
    found = [
        p.name
        for p in folder.iterdir()
        if p.is_dir() and _FLORES_CODE.match(p.name) and any((p / f"{s}.tsv").is_file() for s in SPLITS)
    ]
    if not found:
        raise CorpusError(
            f"no SIB-200 language folders (such as eng_Latn/ with train.tsv, dev.tsv, test.tsv) in {folder}"
        )
    return found


def _read_tsv(path: Path) -> tuple[list[int], list[str], list[str]]:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise CorpusError(f"{path} is not UTF-8 text (bad byte at offset {e.start})") from e
    except OSError as e:
        raise CorpusError(f"cannot read {path}: {e}") from e
    # Quoted fields may hold quotes (doubled), tabs or line breaks: csv, not str.split, reads them.
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quotechar='"', strict=True)
    try:
        rows = list(reader)
    except csv.Error as e:
        raise CorpusError(f"{path} line {reader.line_num}: {e}") from e
    if not rows or [h.strip() for h in rows[0]] != HEADER:
        raise CorpusError(f"{path}: expected the header {HEADER} (tab-separated), got {rows[0] if rows else 'nothing'}")
    body = rows[1:]
    for row, fields in enumerate(body):
        if len(fields) != len(HEADER):
            raise CorpusError(f"{path} row {row + 1}: {len(fields)} fields, expected {len(HEADER)} ({HEADER})")
    return _clean_rows([f[0] for f in body], [f[1] for f in body], [f[2] for f in body], str(path))


def _read_labels(path: Path) -> list[str]:
    labels = [line.strip() for line in path.read_text(encoding="utf-8-sig").split("\n") if line.strip()]
    if not labels or len(set(labels)) != len(labels):
        raise CorpusError(f"{path}: expected distinct topic names, one a line, got {labels}")
    return labels


def _load_folder(folder: Path, requested: list[str] | None) -> Sib200:
    available = _folder_languages(folder)
    chosen = _chosen(requested, available, str(folder), f"sib200:{folder}")
    per_language: dict[str, Rows] = {}
    labels: list[str] | None = None
    labels_from = ""
    for lang in chosen:
        where = folder / lang
        per_language[lang] = {s: _read_tsv(where / f"{s}.tsv") for s in SPLITS if (where / f"{s}.tsv").is_file()}
        file = next((f for f in (where / "labels.txt", folder / "labels.txt") if f.is_file()), None)
        if file is None:
            continue
        mine = _read_labels(file)
        if labels is None:
            labels, labels_from = mine, str(file)
        elif mine != labels:
            raise CorpusError(f"{file} lists the topics {mine}, {labels_from} lists {labels}")
    return _assemble(f"sib200:{folder}", per_language, labels or list(SIB200_LABELS))


# ---- Hugging Face ------------------------------------------------------------------------------------


def _local_hf_languages(folder: Path) -> list[str]:
    found = [
        p.name
        for p in folder.iterdir()
        if p.is_dir() and _FLORES_CODE.match(p.name) and (p / "dataset_dict.json").is_file()
    ]
    if not found:
        raise CorpusError(f"no save_to_disk datasets named by FLORES code (such as eng_Latn/) in {folder}")
    return found


def _hub_configs(dataset: str) -> list[str]:
    import datasets

    if not hub_reachable() and not hub_offline_by_env():
        raise unreachable(
            f"SIB-200 dataset {dataset!r}",
            "Set HF_HUB_OFFLINE=1 to read it from the local Hugging Face cache, or use a local copy (sib200:PATH).",
        )
    with _hub_errors(dataset):
        return [c for c in datasets.get_dataset_config_names(dataset) if _FLORES_CODE.match(c)]


def _hf_rows(loaded: Any, where: str) -> Rows:
    import datasets

    if not isinstance(loaded, datasets.DatasetDict):
        raise CorpusError(f"{where} is not a dataset with splits (got {type(loaded).__name__})")
    unknown = sorted(set(loaded) - set(_HF_SPLITS))
    if unknown:
        raise CorpusError(f"{where} has splits {unknown}; SIB-200 has train, validation (or dev) and test")
    rows: Rows = {}
    for name, ds in loaded.items():
        missing = [c for c in HEADER if c not in ds.column_names]
        if missing:
            raise CorpusError(f"{where} {name} lacks the column(s) {missing}; it has {ds.column_names}")
        data = cast(dict[str, list[Any]], ds.to_dict())  # batched=False: one dict of columns
        categories = data["category"]
        feature = ds.features["category"]
        if hasattr(feature, "int2str"):  # a ClassLabel column stores topic indices
            categories = [feature.int2str(int(c)) for c in categories]
        rows[_HF_SPLITS[str(name)]] = _clean_rows(data["index_id"], categories, data["text"], f"{where} {name}")
    return rows


def _load_hf(dataset: str, requested: list[str] | None) -> Sib200:
    import datasets

    local = Path(dataset).expanduser()
    name = f"hf:{dataset}"
    if local.is_dir():
        available = _local_hf_languages(local)
        chosen = _chosen(requested, available, str(local), name)
        with _hub_errors(dataset):
            per_language = {
                lang: _hf_rows(datasets.load_from_disk(str(local / lang)), f"{name}:{lang}") for lang in chosen
            }
    else:
        if requested is None:
            raise CorpusError(f"{name} has one config per language: pass langs (e.g. ['eng_Latn', 'spa_Latn'])")
        available = _hub_configs(dataset)
        chosen = _chosen(requested, available, f"{dataset} configs", name)
        with _hub_errors(dataset):
            per_language = {lang: _hf_rows(datasets.load_dataset(dataset, lang), f"{name}:{lang}") for lang in chosen}
    present = {c for rows in per_language.values() for split in rows.values() for c in split[1]}
    # The release's order where the topics are SIB-200's, so indices mean the same as with sib200:PATH.
    labels = list(SIB200_LABELS) if present <= set(SIB200_LABELS) else sorted(present)
    return _assemble(name, per_language, labels)
