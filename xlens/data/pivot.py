"""Pivot-pair corpora: each language paired with a pivot (English) through a pivot side of its own, as Tatoeba
(Artetxe & Schwenk 2019) is laid out, unlike the N-way corpora (FLORES-200) where one English side serves all.

A folder holds, per language, either two aligned files (the Tatoeba layout; any prefix before the first dot)::

    tatoeba.<lang>-<pivot>.<lang>
    tatoeba.<lang>-<pivot>.<pivot>

or one TSV file ``<lang>-<pivot>.tsv`` of two tab-separated columns, the language's sentence then the pivot's (no
header). Each pair becomes a two-language :class:`~xlens.data.corpus.ParallelCorpus`; every pair of a folder must
share one pivot.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from xlens.data.corpus import OnDuplicate, ParallelCorpus
from xlens.data.languages import flores_code
from xlens.data.loaders import Langs, _build, _decode, _read_lines, _requested, _split_lines
from xlens.errors import CorpusError, UnknownLanguageError

__all__ = ["PivotPairs", "load_pivot_pairs"]

_PAIR_FILE = re.compile(r"^(?:.+\.)?([A-Za-z_]+)-([A-Za-z_]+)\.([A-Za-z_]+)$")
_PAIR_TSV = re.compile(r"^([A-Za-z_]+)-([A-Za-z_]+)\.tsv$")


@dataclass(frozen=True)
class PivotPairs(Mapping[str, ParallelCorpus]):
    """Language (FLORES-200 code) -> its two-language corpus with the pivot; the pivot sides differ per pair."""

    pivot: str
    pairs: dict[str, ParallelCorpus]
    name: str = "pivot-pairs"

    def __getitem__(self, lang: str) -> ParallelCorpus:
        code = flores_code(lang)
        if code not in self.pairs:
            raise CorpusError(f"{self.name} has no {code}-{self.pivot} pair; it has {sorted(self.pairs)}")
        return self.pairs[code]

    def __iter__(self) -> Iterator[str]:
        return iter(self.pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def languages(self) -> list[str]:
        """The paired languages (the pivot left out)."""
        return list(self.pairs)


def _code(code: str, file: Path) -> str:
    try:
        return flores_code(code)
    except UnknownLanguageError as e:
        raise CorpusError(f"{file}: {code!r} in its name is not a language code ({e})") from e


def _pair_files(folder: Path) -> dict[tuple[str, str], dict[str, Path]]:
    """(lang, pivot) -> {"lang": file, "pivot": file} or {"tsv": file}, from the file names."""
    found: dict[tuple[str, str], dict[str, Path]] = {}
    for file in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        if match := _PAIR_TSV.match(file.name):
            lang, pivot = (_code(c, file) for c in match.groups())
            found.setdefault((lang, pivot), {})["tsv"] = file
        elif match := _PAIR_FILE.match(file.name):
            a, b, side = match.groups()
            if side not in (a, b):
                continue
            lang, pivot = _code(a, file), _code(b, file)
            sides = found.setdefault((lang, pivot), {})
            key = "lang" if side == a else "pivot"
            if key in sides:
                raise CorpusError(f"{folder} holds two {key} files for {lang}-{pivot}: {sides[key]} and {file}")
            sides[key] = file
    return found


def _tsv_pair(file: Path) -> tuple[list[str], list[str]]:
    rows = [line.split("\t") for line in _split_lines(_decode(file, str(file)))]
    for n, row in enumerate(rows, start=1):
        if len(row) != 2:
            raise CorpusError(f"{file} line {n} has {len(row)} tab-separated fields; a pair file has 2")
    return [r[0].strip() for r in rows], [r[1].strip() for r in rows]


def load_pivot_pairs(folder: str | Path, langs: Langs = None, on_duplicate: OnDuplicate = "drop") -> PivotPairs:
    """Every pair of ``folder`` (or those of ``langs``), see the module docstring. ``on_duplicate`` as for the
    other loaders (Tatoeba repeats sentences, on the pivot side above all: ``"drop"`` removes those rows)."""
    where = Path(folder).expanduser()
    if not where.is_dir():
        raise CorpusError(f"pivot-pair folder not found: {where} is not a folder")
    found = _pair_files(where)
    if not found:
        raise CorpusError(
            f"{where} holds no pivot pair: expected <prefix>.<lang>-<pivot>.<lang> with .<pivot> beside it, or "
            "<lang>-<pivot>.tsv"
        )
    pivots = sorted({pivot for _, pivot in found})
    if len(pivots) > 1:
        raise CorpusError(f"{where} pairs languages with several pivots {pivots}: keep one pivot per folder")
    pivot = pivots[0]
    requested = _requested(langs)
    chosen = list(dict.fromkeys(lang for lang, _ in found)) if requested is None else []
    for code in requested or []:
        lang = flores_code(code)
        if (lang, pivot) not in found:
            raise CorpusError(f"{where} has no {lang}-{pivot} pair; it has {sorted(lang for lang, _ in found)}")
        chosen.append(lang)
    pairs = {lang: _pair(found[(lang, pivot)], lang, pivot, where, on_duplicate) for lang in chosen}
    return PivotPairs(pivot=pivot, pairs=pairs, name=f"pivot:{where}")


def _pair(files: dict[str, Path], lang: str, pivot: str, where: Path, on_duplicate: OnDuplicate) -> ParallelCorpus:
    if "tsv" in files and len(files) > 1:
        raise CorpusError(f"{where} holds {lang}-{pivot} both as a TSV and as two files: keep one")
    if "tsv" in files:
        lang_side, pivot_side = _tsv_pair(files["tsv"])
        sources = {lang: f"{files['tsv']} (column 1)", pivot: f"{files['tsv']} (column 2)"}
    else:
        missing = [key for key in ("lang", "pivot") if key not in files]
        if missing:
            have = next(iter(files.values()))
            side = lang if missing[0] == "lang" else pivot
            raise CorpusError(f"{have} has no {side} side beside it: the pair {lang}-{pivot} needs both files")
        lang_side = _read_lines(files["lang"], str(files["lang"]))
        pivot_side = _read_lines(files["pivot"], str(files["pivot"]))
        sources = {lang: str(files["lang"]), pivot: str(files["pivot"])}
    if lang == pivot:
        raise CorpusError(f"{where}: the pair {lang}-{pivot} pairs a language with itself")
    return _build(f"{where.name}:{lang}-{pivot}", {lang: lang_side, pivot: pivot_side}, sources, on_duplicate)
