"""N-way parallel corpora: the same sentences in several languages, validated once at construction."""

from __future__ import annotations

import hashlib
import random
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import InitVar, dataclass, field
from typing import TYPE_CHECKING, Literal, TypeVar

from xlens._display import html_card, short_list
from xlens.data.languages import flores_code
from xlens.errors import CorpusError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["SAME_SENTENCE", "CorpusError", "OnDuplicate", "ParallelCorpus", "duplicate_rows", "sentence_key"]

OnDuplicate = Literal["error", "drop"]
_V = TypeVar("_V")

_MAX_LISTED = 5  # problems quoted in one error message; the rest are counted


SAME_SENTENCE = "NFKC, whitespace collapsed"  # what sentence_key makes equal: recorded in the provenance


def sentence_key(text: str) -> str:
    """What makes two sentences the same sentence, for de-duplication and for find/evaluation disjointness: equal
    after Unicode NFKC normalisation (composed and decomposed accents, full- and half-width forms, ligatures) with
    every run of whitespace collapsed to one space and none at the ends."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


def duplicate_rows(sentences: Mapping[str, Sequence[str]]) -> list[int]:
    """Row positions to drop so that no language repeats a sentence.

    Rows are walked in order and a row is dropped when ANY language's sentence already appeared in a kept
    row, so the first occurrence survives and the row stays aligned across languages.
    """
    seen: dict[str, set[str]] = {lang: set() for lang in sentences}
    n = min((len(s) for s in sentences.values()), default=0)
    dropped: list[int] = []
    for i in range(n):
        if any(sentence_key(sents[i]) in seen[lang] for lang, sents in sentences.items()):
            dropped.append(i)
            continue
        for lang, sents in sentences.items():
            seen[lang].add(sentence_key(sents[i]))
    return dropped


def _quote(text: str, width: int = 60) -> str:
    return repr(text if len(text) <= width else text[: width - 3] + "...")


def _listing(problems: list[str]) -> str:
    shown = "; ".join(problems[:_MAX_LISTED])
    more = len(problems) - _MAX_LISTED
    return shown + (f"; and {more} more" if more > 0 else "")


@dataclass(repr=False)
class ParallelCorpus:
    """Sentences aligned across languages: ``sentences[lang][i]`` translate each other for every ``i``.

    ``sentences`` keys may be any accepted language code (``en``, ``eng``, ``English``); they are stored as
    FLORES-200 codes. ``sources`` maps each language to the file or dataset it came from (provenance for
    error messages). ``ids`` are the rows' 0-based line indices in their source (``0..n-1`` when not given),
    kept through :meth:`subset`, :meth:`split` and :meth:`sample`; error messages report line ``id + 1``.

    Construction rejects: no language, languages of different lengths, no sentences, empty or whitespace-only
    sentences, and a sentence repeated within a language (an ambiguous retrieval target). Pass
    ``dedupe=True`` to drop every row where any language repeats an earlier sentence instead (their ids land
    in ``dropped_ids``).
    """

    sentences: dict[str, list[str]]
    name: str = "corpus"
    sources: dict[str, str] = field(default_factory=dict)
    ids: list[int] = field(default_factory=list)
    dedupe: InitVar[bool] = False
    dropped_ids: list[int] = field(default_factory=list, init=False, repr=False, compare=False)

    def __post_init__(self, dedupe: bool) -> None:
        if not self.sentences:
            raise CorpusError(f"corpus {self.name!r} has no languages: give sentences for at least one language")
        for code, sents in self.sentences.items():
            if isinstance(sents, str):
                raise CorpusError(f"corpus {self.name!r}: sentences[{code!r}] must be a list of sentences, not str")
        self.sentences = {lang: list(s) for lang, s in self._by_flores(self.sentences, "sentences").items()}
        self.sources = {lang: str(s) for lang, s in self._by_flores(self.sources, "sources").items()}
        extra = sorted(set(self.sources) - set(self.sentences))
        if extra:
            raise CorpusError(f"corpus {self.name!r}: sources name languages without sentences: {extra}")
        for lang in self.sentences:
            self.sources.setdefault(lang, "<in memory>")

        counts = {lang: len(sents) for lang, sents in self.sentences.items()}
        if len(set(counts.values())) > 1:
            listed = ", ".join(f"{lang} ({self.sources[lang]}): {c}" for lang, c in counts.items())
            raise CorpusError(
                f"corpus {self.name!r} is not aligned: languages have different sentence counts: {listed}"
            )
        n = next(iter(counts.values()))
        if n == 0:
            raise CorpusError(f"corpus {self.name!r} has no sentences")
        self._check_ids(n)
        self._check_empty()
        if dedupe:
            self._drop_duplicates()
        self._check_duplicates()

    def _by_flores(self, mapping: Mapping[str, _V], what: str) -> dict[str, _V]:
        out: dict[str, _V] = {}
        first: dict[str, str] = {}
        for code, value in mapping.items():
            lang = flores_code(code)
            if lang in out:
                raise CorpusError(
                    f"corpus {self.name!r}: {what} keys {first[lang]!r} and {code!r} both mean {lang}; keep one"
                )
            first[lang] = code
            out[lang] = value
        return out

    def _check_ids(self, n: int) -> None:
        if not self.ids:
            self.ids = list(range(n))
            return
        self.ids = [int(i) for i in self.ids]
        if len(self.ids) != n:
            raise CorpusError(f"corpus {self.name!r} has {n} sentences per language but {len(self.ids)} ids")
        if len(set(self.ids)) != n:
            raise CorpusError(f"corpus {self.name!r}: ids must be unique (one per source line)")

    def _check_empty(self) -> None:
        problems = [
            f"{lang} ({self.sources[lang]}) line {self.ids[i] + 1}"
            + ("" if isinstance(s, str) else f" is {type(s).__name__}, not text")
            for lang, sents in self.sentences.items()
            for i, s in enumerate(sents)
            if not isinstance(s, str) or not s.strip()
        ]
        if problems:
            raise CorpusError(
                f"corpus {self.name!r} has {len(problems)} empty sentence(s): {_listing(problems)}. "
                "Every line must hold one sentence; remove the row in every language to keep them aligned."
            )

    def _drop_duplicates(self) -> None:
        drop = set(duplicate_rows(self.sentences))
        if not drop:
            return
        keep = [i for i in range(len(self.ids)) if i not in drop]
        self.dropped_ids = [self.ids[i] for i in sorted(drop)]
        self.sentences = {lang: [sents[i] for i in keep] for lang, sents in self.sentences.items()}
        self.ids = [self.ids[i] for i in keep]

    def _check_duplicates(self) -> None:
        problems: list[str] = []
        for lang, sents in self.sentences.items():
            first: dict[str, int] = {}
            for i, s in enumerate(sents):
                key = sentence_key(s)
                if key in first:
                    problems.append(
                        f"{lang} ({self.sources[lang]}) line {self.ids[i] + 1} repeats line "
                        f"{self.ids[first[key]] + 1}: {_quote(s)}"
                    )
                else:
                    first[key] = i
        if problems:
            raise CorpusError(
                f"corpus {self.name!r} has {len(problems)} repeated sentence(s): {_listing(problems)}. "
                "A repeated sentence is an ambiguous retrieval target: load with on_duplicate='drop' "
                "(or build with dedupe=True) to drop those rows in every language."
            )

    # ---- access -------------------------------------------------------------------------------------

    @property
    def languages(self) -> list[str]:
        """FLORES-200 codes, in insertion order."""
        return list(self.sentences)

    def __len__(self) -> int:
        """Number of aligned sentences (rows)."""
        return len(self.ids)

    def _lang(self, code: str) -> str:
        lang = flores_code(code)
        if lang not in self.sentences:
            raise CorpusError(
                f"language {code!r} ({lang}) is not in corpus {self.name!r}; available: {', '.join(self.languages)}"
            )
        return lang

    def __getitem__(self, lang: str) -> list[str]:
        """The sentences of one language (any accepted code); treat the list as read-only."""
        return self.sentences[self._lang(lang)]

    def __contains__(self, lang: object) -> bool:
        if not isinstance(lang, str):
            return False
        try:
            return flores_code(lang) in self.sentences
        except ValueError:
            return False

    # ---- derived corpora ----------------------------------------------------------------------------

    def select(self, langs: str | Sequence[str]) -> ParallelCorpus:
        """The same rows restricted to ``langs`` (codes or a comma-separated string), in that order."""
        codes = [c.strip() for c in langs.split(",")] if isinstance(langs, str) else list(langs)
        if not codes:
            raise CorpusError(f"select() needs at least one language; available: {', '.join(self.languages)}")
        chosen = [self._lang(c) for c in codes]
        if len(set(chosen)) != len(chosen):
            raise CorpusError(f"select() got the same language twice: {codes} -> {chosen}")
        return ParallelCorpus(
            {lang: list(self.sentences[lang]) for lang in chosen},
            name=self.name,
            sources={lang: self.sources[lang] for lang in chosen},
            ids=list(self.ids),
        )

    def subset(self, indices: Iterable[int], name: str | None = None) -> ParallelCorpus:
        """Rows at the given positions (0-based, unique), in the order given; ids keep the provenance."""
        rows = [int(i) for i in indices]
        if not rows:
            raise CorpusError(f"subset() of corpus {self.name!r} needs at least one index")
        bad = [i for i in rows if not 0 <= i < len(self)]
        if bad:
            raise CorpusError(f"subset() indices {bad[:_MAX_LISTED]} are outside 0..{len(self) - 1}")
        if len(set(rows)) != len(rows):
            raise CorpusError("subset() indices repeat; each row may be taken once")
        return ParallelCorpus(
            {lang: [sents[i] for i in rows] for lang, sents in self.sentences.items()},
            name=self.name if name is None else name,
            sources=dict(self.sources),
            ids=[self.ids[i] for i in rows],
        )

    def head(self, n: int) -> ParallelCorpus:
        """The first ``n`` rows (all rows if the corpus is shorter)."""
        if n < 1:
            raise CorpusError(f"head() needs n >= 1, got {n}")
        return self.subset(range(min(n, len(self))), name=f"{self.name}[:{n}]")

    def split(self, *sizes: int, seed: int = 0) -> tuple[ParallelCorpus, ...]:
        """Disjoint random parts of the given sizes (rows shuffled with ``seed``; each part in corpus order).

        The same seed always gives the same parts, and a part does not depend on the sizes after it, so
        ``split(100, 500, seed=s)[0] == split(100, seed=s)[0] == sample(100, seed=s)``.
        """
        if not sizes:
            raise CorpusError("split() needs at least one size")
        if any(s < 1 for s in sizes):
            raise CorpusError(f"split() sizes must be >= 1, got {list(sizes)}")
        total = sum(sizes)
        if total > len(self):
            raise CorpusError(
                f"split() sizes {' + '.join(map(str, sizes))} = {total} exceed the {len(self)} sentences "
                f"of corpus {self.name!r}"
            )
        order = list(range(len(self)))
        random.Random(seed).shuffle(order)
        parts: list[ParallelCorpus] = []
        start = 0
        for k, size in enumerate(sizes):
            rows = sorted(order[start : start + size])
            start += size
            parts.append(self.subset(rows, name=f"{self.name}[split {k + 1}/{len(sizes)} seed={seed}]"))
        return tuple(parts)

    def sample(self, n: int, seed: int = 0) -> ParallelCorpus:
        """``n`` random rows (in corpus order); the first part of ``split(n, seed=seed)``."""
        return self.split(n, seed=seed)[0]

    # ---- identity and export ------------------------------------------------------------------------

    def fingerprint(self) -> str:
        """sha256 hex digest of the languages (in order) and their sentences: a cache key for the text."""
        digest = hashlib.sha256()
        for lang, sents in self.sentences.items():
            for item in (lang, *sents):
                data = item.encode("utf-8")
                # Length prefixes keep ("ab", "c") and ("a", "bc") apart.
                digest.update(len(data).to_bytes(8, "little"))
                digest.update(data)
            digest.update(b"\xff" * 8)  # end of one language
        return digest.hexdigest()

    def sentence_hashes(self) -> dict[str, list[str]]:
        """Per language, a hash of each sentence's :func:`sentence_key`: content to compare corpora by."""
        return {
            lang: [hashlib.sha256(sentence_key(s).encode("utf-8")).hexdigest()[:20] for s in sents]
            for lang, sents in self.sentences.items()
        }

    def overlapping_rows(self, other: ParallelCorpus) -> list[int]:
        """Positions of this corpus's rows that share a sentence, in any language both have, with ``other``."""
        theirs = other.sentence_hashes()
        ours = self.sentence_hashes()
        shared = [lang for lang in ours if lang in theirs]
        seen = {lang: set(theirs[lang]) for lang in shared}
        return [i for i in range(len(self)) if any(ours[lang][i] in seen[lang] for lang in shared)]

    def __repr__(self) -> str:
        return (
            f"ParallelCorpus({self.name!r}, {len(self)} sentences x {len(self.languages)} languages: "
            f"{', '.join(self.languages[:8])}{', ...' if len(self.languages) > 8 else ''})"
        )

    def _repr_html_(self) -> str:
        first = {lang: _quote(sents[0], 70) for lang, sents in list(self.sentences.items())[:3]}
        return html_card(
            f"ParallelCorpus {self.name}",
            {
                "sentences per language": len(self),
                "languages": short_list(self.languages, 10),
                **{f"first ({lang})": text for lang, text in first.items()},
            },
        )

    def to_pandas(self) -> pd.DataFrame:
        """Tidy table with columns ``id`` (source line index), ``lang`` (FLORES code) and ``text``."""
        import pandas as pd

        return pd.DataFrame(
            {
                "id": [i for _ in self.sentences for i in self.ids],
                "lang": [lang for lang in self.sentences for _ in self.ids],
                "text": [s for sents in self.sentences.values() for s in sents],
            }
        )
