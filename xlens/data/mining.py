"""Bitext-mining sets in the BUCC layout (Zweigenbaum et al. 2017), read from disk or built from a parallel corpus.

A BUCC part of language ``xx`` against English is three files in one folder::

    xx-en.<split>.xx     id<TAB>sentence, one per line (the source side)
    xx-en.<split>.en     id<TAB>sentence (the English side)
    xx-en.<split>.gold   source id<TAB>English id, one gold translation pair per line

``<split>`` is ``sample``/``training``/``test`` in BUCC 2017. :func:`mining_set` builds such a part from an N-way
corpus (FLORES-200, NTREX-128): ``gold`` rows appear on both sides, and ``distractors`` other rows on each side
alone, so each side holds sentences whose translation is not in the other (the mining problem), and
:func:`write_bucc` writes it in the layout above.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from xlens._io import atomic_write
from xlens.data.corpus import ParallelCorpus
from xlens.data.languages import flores_code, resolve_language
from xlens.data.loaders import _decode, _split_lines
from xlens.errors import CorpusError

__all__ = ["MiningSet", "load_bucc", "mining_set", "write_bucc"]


@dataclass(frozen=True)
class MiningSet:
    """One part of a mining task: the sentences of each side with their ids, and the gold pairs of ids.

    ``src`` and ``tgt`` are FLORES-200 codes. Construction checks that ids are unique on each side, sentences
    non-empty, and that every gold pair names ids that exist, each id in at most one pair."""

    src: str
    tgt: str
    src_ids: list[str]
    src_texts: list[str]
    tgt_ids: list[str]
    tgt_texts: list[str]
    gold: list[tuple[str, str]]
    name: str = "mining"

    def __post_init__(self) -> None:
        for side, ids, texts in (("source", self.src_ids, self.src_texts), ("target", self.tgt_ids, self.tgt_texts)):
            if len(ids) != len(texts) or not ids:
                raise CorpusError(f"{self.name}: the {side} side needs one id per sentence and at least one")
            repeated = sorted({i for i in ids if ids.count(i) > 1}) if len(set(ids)) != len(ids) else []
            if repeated:
                raise CorpusError(f"{self.name}: {side} ids repeat: {repeated[:5]}")
            empty = [i for i, t in zip(ids, texts, strict=True) if not t.strip()]
            if empty:
                raise CorpusError(f"{self.name}: empty {side} sentences at ids {empty[:5]}")
        src, tgt = set(self.src_ids), set(self.tgt_ids)
        unknown = [pair for pair in self.gold if pair[0] not in src or pair[1] not in tgt]
        if unknown:
            raise CorpusError(
                f"{self.name}: {len(unknown)} gold pair(s) name ids that are not among the sentences, e.g. "
                f"{unknown[0]}: the gold file must pair a source id with a target id of the same part"
            )
        for side, column in (("source", 0), ("target", 1)):
            used = [pair[column] for pair in self.gold]
            if len(set(used)) != len(used):
                raise CorpusError(f"{self.name}: a {side} id appears in more than one gold pair")

    def gold_indices(self) -> set[tuple[int, int]]:
        """The gold pairs as (source row, target row) indices."""
        src = {i: n for n, i in enumerate(self.src_ids)}
        tgt = {i: n for n, i in enumerate(self.tgt_ids)}
        return {(src[a], tgt[b]) for a, b in self.gold}


def _iso(code: str) -> str:
    """BUCC names languages by two-letter codes where they have one (de, fr, ru, zh)."""
    language = resolve_language(code)
    return language.iso639_1 or language.iso639_3


def _bucc_name(src: str, pivot: str, split: str) -> str:
    return f"{_iso(src)}-{_iso(pivot)}.{split}"


def _read_tabbed(path: Path, columns: int) -> list[list[str]]:
    if not path.is_file():
        raise CorpusError(f"mining file not found: {path}")
    rows = []
    for n, line in enumerate(_split_lines(_decode(path, str(path))), start=1):
        if not line.strip():
            continue
        parts = line.rstrip("\r").split("\t")
        if len(parts) != columns:
            raise CorpusError(f"{path} line {n}: expected {columns} tab-separated fields, got {len(parts)}")
        rows.append([p.strip() for p in parts])
    return rows


def load_bucc(folder: str | Path, lang: str, split: str, pivot: str = "en") -> MiningSet:
    """The BUCC part ``<lang>-<pivot>.<split>`` of ``folder`` (see the module docstring)."""
    where = Path(folder).expanduser()
    stem = _bucc_name(lang, pivot, split)
    src = _read_tabbed(where / f"{stem}.{_iso(lang)}", 2)
    tgt = _read_tabbed(where / f"{stem}.{_iso(pivot)}", 2)
    gold = _read_tabbed(where / f"{stem}.gold", 2)
    return MiningSet(
        src=flores_code(lang),
        tgt=flores_code(pivot),
        src_ids=[r[0] for r in src],
        src_texts=[r[1] for r in src],
        tgt_ids=[r[0] for r in tgt],
        tgt_texts=[r[1] for r in tgt],
        gold=[(r[0], r[1]) for r in gold],
        name=str(where / stem),
    )


def write_bucc(part: MiningSet, folder: str | Path, split: str) -> Path:
    """Write ``part`` in the BUCC layout into ``folder`` (each file atomically); returns the folder."""
    where = Path(folder).expanduser()
    where.mkdir(parents=True, exist_ok=True)
    stem = _bucc_name(part.src, part.tgt, split)
    files = {
        f"{stem}.{_iso(part.src)}": zip(part.src_ids, part.src_texts, strict=True),
        f"{stem}.{_iso(part.tgt)}": zip(part.tgt_ids, part.tgt_texts, strict=True),
        f"{stem}.gold": iter(part.gold),
    }
    for name, rows in files.items():
        text = "".join(f"{a}\t{b}\n" for a, b in rows)
        atomic_write(where / name, lambda tmp, text=text: tmp.write_text(text, encoding="utf-8"))
    return where


def mining_set(corpus: ParallelCorpus, src: str, tgt: str, gold: int, distractors: int, seed: int = 0) -> MiningSet:
    """A mining part from an N-way corpus: ``gold`` rows on both sides (the gold pairs), ``distractors`` further
    rows on the source side only and as many others on the target side only, each side shuffled."""
    src, tgt = flores_code(src), flores_code(tgt)
    for lang in (src, tgt):
        if lang not in corpus.languages:
            raise CorpusError(f"{corpus.name!r} has no {lang}; it has {corpus.languages}")
    if gold < 1 or distractors < 0 or gold + 2 * distractors > len(corpus):
        raise CorpusError(
            f"gold={gold} and distractors={distractors} need gold + 2 x distractors <= {len(corpus)} rows of "
            f"{corpus.name!r} (and gold >= 1, distractors >= 0)"
        )
    rows = list(range(len(corpus)))
    random.Random(seed).shuffle(rows)
    paired, src_only = rows[:gold], rows[gold : gold + distractors]
    tgt_only = rows[gold + distractors : gold + 2 * distractors]
    rng = random.Random(seed + 1)
    src_rows, tgt_rows = paired + src_only, paired + tgt_only
    rng.shuffle(src_rows)
    rng.shuffle(tgt_rows)
    sid = {r: f"{_iso(src)}-{corpus.ids[r]:06d}" for r in src_rows}
    tid = {r: f"{_iso(tgt)}-{corpus.ids[r]:06d}" for r in tgt_rows}
    return MiningSet(
        src=src,
        tgt=tgt,
        src_ids=[sid[r] for r in src_rows],
        src_texts=[corpus[src][r] for r in src_rows],
        tgt_ids=[tid[r] for r in tgt_rows],
        tgt_texts=[corpus[tgt][r] for r in tgt_rows],
        gold=[(sid[r], tid[r]) for r in paired],
        name=f"{corpus.name}:{src}-{tgt}",
    )
