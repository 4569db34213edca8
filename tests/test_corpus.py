import hashlib
import re
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xlens.config import ExperimentConfig
from xlens.data.corpus import CorpusError, ParallelCorpus, duplicate_rows, sentence_key
from xlens.data.languages import UnknownLanguageError
from xlens.data.splits import load_splits


def make(n: int = 10, langs: tuple[str, ...] = ("eng_Latn", "spa_Latn", "deu_Latn")) -> ParallelCorpus:
    """Row i of every language is '<lang> sentence <i>', so alignment is checkable."""
    return ParallelCorpus(
        {lang: [f"{lang} sentence {i}" for i in range(n)] for lang in langs},
        name="toy",
        sources={lang: f"{lang}.txt" for lang in langs},
    )


def row_numbers(corpus: ParallelCorpus) -> list[list[int]]:
    """The row number written in each sentence, per language."""
    return [[int(s.rsplit(" ", 1)[1]) for s in corpus[lang]] for lang in corpus.languages]


# ---- construction and validation --------------------------------------------------------------------


def test_keys_become_flores_codes_and_sources_default():
    corpus = ParallelCorpus({"en": ["a", "b"], "Spanish": ["c", "d"]}, sources={"en": "en.txt"})
    assert corpus.languages == ["eng_Latn", "spa_Latn"]
    assert corpus.sources == {"eng_Latn": "en.txt", "spa_Latn": "<in memory>"}
    assert corpus.ids == [0, 1]
    assert len(corpus) == 2
    assert corpus.dropped_ids == []


def test_no_language():
    with pytest.raises(CorpusError, match="no languages"):
        ParallelCorpus({}, name="x")


def test_no_sentences():
    with pytest.raises(CorpusError, match="no sentences"):
        ParallelCorpus({"en": [], "es": []})


def test_length_mismatch_names_every_language_source_and_count():
    with pytest.raises(CorpusError, match="not aligned") as info:
        ParallelCorpus(
            {"en": ["a", "b", "c"], "es": ["a", "b"], "de": ["x", "y", "z"]},
            sources={"en": "en.txt", "es": "es.txt", "de": "de.txt"},
        )
    message = str(info.value)
    for part in ("eng_Latn (en.txt): 3", "spa_Latn (es.txt): 2", "deu_Latn (de.txt): 3"):
        assert part in message


@pytest.mark.parametrize("blank", ["", "   ", "\t", "\u3000"])
def test_empty_sentence_names_language_file_and_line(blank: str):
    with pytest.raises(CorpusError, match=r"1 empty sentence\(s\): spa_Latn \(es\.txt\) line 3\b"):
        ParallelCorpus({"en": ["a", "b", "c"], "es": ["a", "b", blank]}, sources={"es": "es.txt"})


def test_empty_sentence_line_comes_from_ids():
    # ids are source line indices: row 1 here was line 8 of its file.
    with pytest.raises(CorpusError, match=r"eng_Latn \(f\) line 8\b"):
        ParallelCorpus({"en": ["a", " "]}, sources={"en": "f"}, ids=[4, 7])


def test_non_text_sentence_is_reported():
    with pytest.raises(CorpusError, match=r"line 2 is NoneType, not text"):
        ParallelCorpus({"en": ["a", None]})  # type: ignore[list-item]


def test_duplicate_names_both_lines():
    with pytest.raises(CorpusError, match="repeated") as info:
        ParallelCorpus(
            {"en": ["a", "b", "c", "d"], "es": ["w", "x", "y", "x"]},
            sources={"en": "en.txt", "es": "es.txt"},
        )
    message = str(info.value)
    assert "spa_Latn (es.txt) line 4 repeats line 2: 'x'" in message
    assert "on_duplicate='drop'" in message
    assert "eng_Latn" not in message.split("repeated")[1]  # English has no repeat


def test_dedupe_drops_the_row_in_every_language():
    corpus = ParallelCorpus(
        {"en": ["a", "b", "a", "c", "d"], "es": ["v", "w", "x", "y", "w"]}, ids=[10, 11, 12, 13, 14], dedupe=True
    )
    # Row 2 repeats English 'a' (row 0); row 4 repeats Spanish 'w' (row 1).
    assert corpus["en"] == ["a", "b", "c"]
    assert corpus["es"] == ["v", "w", "y"]
    assert corpus.ids == [10, 11, 13]
    assert corpus.dropped_ids == [12, 14]


def test_duplicate_and_unknown_keys():
    with pytest.raises(CorpusError, match="'en' and 'eng' both mean eng_Latn"):
        ParallelCorpus({"en": ["a"], "eng": ["b"]})
    with pytest.raises(CorpusError, match="sources name languages without sentences"):
        ParallelCorpus({"en": ["a"]}, sources={"es": "es.txt"})
    with pytest.raises(UnknownLanguageError):
        ParallelCorpus({"klingon": ["a"]})


def test_string_instead_of_list():
    with pytest.raises(CorpusError, match="must be a list"):
        ParallelCorpus({"en": "one sentence"})  # type: ignore[dict-item]


def test_bad_ids():
    with pytest.raises(CorpusError, match="2 sentences per language but 3 ids"):
        ParallelCorpus({"en": ["a", "b"]}, ids=[0, 1, 2])
    with pytest.raises(CorpusError, match="ids must be unique"):
        ParallelCorpus({"en": ["a", "b"]}, ids=[5, 5])


def greedy_reference(rows: list[tuple[str, ...]]) -> list[int]:
    """Brute force: a row is dropped iff some column equals that column in an earlier KEPT row."""
    kept: list[tuple[str, ...]] = []
    dropped = []
    for i, row in enumerate(rows):
        if any(row[j] == k[j] for k in kept for j in range(len(row))):
            dropped.append(i)
        else:
            kept.append(row)
    return dropped


@given(st.lists(st.tuples(st.sampled_from("abcd"), st.sampled_from("wxyz")), min_size=1, max_size=30))
def test_duplicate_rows_matches_brute_force(rows: list[tuple[str, str]]):
    sentences = {"en": [r[0] for r in rows], "es": [r[1] for r in rows]}
    dropped = duplicate_rows(sentences)
    assert dropped == greedy_reference(rows)
    corpus = ParallelCorpus(sentences, dedupe=True)  # must construct: no repeat survives
    assert corpus.dropped_ids == dropped
    assert len(corpus) + len(dropped) == len(rows)


FORMS = ("NFC", "NFD", "NFKC", "NFKD")
# Text with accents, scripts and compatibility characters (ligatures, full-width forms) and inner whitespace.
TEXTS = st.text(
    alphabet=st.sampled_from("aeiou éèñüßçÅﬁ　ＡＢ１２日本語カタカナ한국어 \t\u00a0") | st.characters(codec="utf-8"),
    min_size=1,
    max_size=40,
).filter(lambda t: sentence_key(t) != "")


@settings(max_examples=200, deadline=None)
@given(
    text=TEXTS,
    form=st.sampled_from(FORMS),
    other=st.sampled_from(FORMS),
    gap=st.sampled_from([" ", "  ", "\t", "\u00a0", "\n"]),
)
def test_a_sentence_in_any_normalisation_form_and_spacing_is_the_same_sentence(
    text: str, form: str, other: str, gap: str
) -> None:
    a = unicodedata.normalize(form, text)
    b = gap + unicodedata.normalize(other, text).replace(" ", gap) + gap
    assert sentence_key(a) == sentence_key(b)
    # De-duplication and disjointness use it: the second spelling repeats the first.
    assert duplicate_rows({"en": [a, "other", b], "es": ["x", "y", "z"]}) == [2]
    assert ParallelCorpus({"en": [a, "c"], "es": ["d", "e"]}).overlapping_rows(
        ParallelCorpus({"en": [b], "es": ["f"]})
    ) == [0]


def test_two_spellings_of_one_sentence_are_a_repeat_and_never_split_apart() -> None:
    composed, decomposed = "Él está aquí.", unicodedata.normalize("NFD", "Él está aquí.")
    assert composed != decomposed
    with pytest.raises(CorpusError, match="repeats line 1"):
        ParallelCorpus({"es": [composed, decomposed], "en": ["He is here.", "He is here, too."]})
    kept = ParallelCorpus({"es": [composed, decomposed], "en": ["a", "b"]}, dedupe=True)
    assert len(kept) == 1 and kept.dropped_ids == [1]
    # Find and evaluation from two corpora: a sentence in the find corpus, in another form and spacing, is removed
    # from the evaluation corpus; the provenance says what "the same" meant.


def test_the_evaluation_split_leaves_out_the_find_splits_sentences_in_any_spelling(tmp_path) -> None:
    find = ["Ｈｅｌｌｏ  world", "The dog barks.", "It rains.", "We run."]
    evaluate = ["Hello world", "The cat sleeps.", "She reads.", "He sings.", "They swim."]
    for name, rows in (("find", find), ("eval", evaluate)):
        text = "en\tes\n" + "".join(f"{row}\t{name} {i}\n" for i, row in enumerate(rows))
        (tmp_path / f"{name}.tsv").write_text(text, encoding="utf-8")
    config = ExperimentConfig.from_dict(
        {
            "languages": ["en", "es"],
            "find": {"corpus": f"tsv:{tmp_path / 'find.tsv'}", "sentences": 4},
            "evaluate": {"corpus": f"tsv:{tmp_path / 'eval.tsv'}", "sentences": 4},
        }
    )
    splits = load_splits(config)
    assert "Hello world" not in splits.eval["en"] and len(splits.eval) == 4
    assert splits.provenance() | {"how": None} == {
        "how": None,
        "eval_rows_removed_for_overlap": 1,
        "overlapping_rows": 0,
        "same_sentence": "NFKC, whitespace collapsed",
    }


# ---- access --------------------------------------------------------------------------------------


def test_getitem_and_contains_resolve_codes():
    corpus = make(3)
    assert corpus["es"] == corpus["spa_Latn"] == corpus["Spanish"] == [f"spa_Latn sentence {i}" for i in range(3)]
    assert "de" in corpus and "German" in corpus
    assert "fr" not in corpus and "klingon" not in corpus and 3 not in corpus
    with pytest.raises(CorpusError, match=r"'fr' \(fra_Latn\) is not in corpus 'toy'.*eng_Latn, spa_Latn, deu_Latn"):
        corpus["fr"]


def test_select_keeps_rows_in_given_language_order():
    corpus = make(4)
    picked = corpus.select(["de", "en"])
    assert picked.languages == ["deu_Latn", "eng_Latn"]
    assert picked["en"] == corpus["en"] and picked.ids == corpus.ids
    assert picked.sources == {"deu_Latn": "deu_Latn.txt", "eng_Latn": "eng_Latn.txt"}
    assert corpus.select("es, en").languages == ["spa_Latn", "eng_Latn"]


def test_select_errors():
    corpus = make(4)
    with pytest.raises(CorpusError, match=r"'ja' \(jpn_Jpan\) is not in corpus.*available: eng_Latn"):
        corpus.select(["en", "ja"])
    with pytest.raises(CorpusError, match="same language twice"):
        corpus.select(["en", "eng"])
    with pytest.raises(CorpusError, match="at least one language"):
        corpus.select([])


def test_subset_keeps_provenance_and_order():
    corpus = make(10).subset([7, 2, 5])
    assert corpus.ids == [7, 2, 5]
    assert row_numbers(corpus) == [[7, 2, 5]] * 3
    assert corpus.subset([1]).ids == [2]  # positions are relative to the subset; ids stay original


@pytest.mark.parametrize(("indices", "message"), [([], "at least one"), ([0, 10], "outside 0..9"), ([1, 1], "repeat")])
def test_subset_errors(indices: list[int], message: str):
    with pytest.raises(CorpusError, match=message):
        make(10).subset(indices)


def test_head():
    corpus = make(10)
    assert corpus.head(3).ids == [0, 1, 2]
    assert len(corpus.head(50)) == 10
    with pytest.raises(CorpusError, match="n >= 1"):
        corpus.head(0)


# ---- split / sample --------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 60),
    sizes=st.lists(st.integers(1, 20), min_size=1, max_size=4),
    seed=st.integers(0, 2**32),
)
def test_split_is_disjoint_aligned_and_deterministic(n: int, sizes: list[int], seed: int):
    corpus = make(n, ("eng_Latn", "jpn_Jpan"))
    if sum(sizes) > n:
        with pytest.raises(CorpusError, match=rf"= {sum(sizes)} exceed the {n} sentences"):
            corpus.split(*sizes, seed=seed)
        return
    parts = corpus.split(*sizes, seed=seed)
    assert [len(p) for p in parts] == sizes
    all_ids = [i for p in parts for i in p.ids]
    assert len(set(all_ids)) == len(all_ids)  # disjoint
    for part in parts:
        assert part.ids == sorted(part.ids)
        en, ja = row_numbers(part)
        assert en == ja == part.ids  # the same rows in every language
    assert parts == corpus.split(*sizes, seed=seed)
    first, sampled = corpus.split(sizes[0], seed=seed)[0], corpus.sample(sizes[0], seed=seed)
    assert parts[0].ids == first.ids == sampled.ids
    assert parts[0].sentences == first.sentences == sampled.sentences


def test_split_depends_on_the_seed_and_uses_the_whole_corpus():
    corpus = make(200)
    a, b = corpus.split(100, 100, seed=0)
    assert sorted(a.ids + b.ids) == list(range(200))
    assert corpus.split(100, seed=1)[0].ids != a.ids
    assert corpus.sample(100).ids == a.ids  # default seed 0


@pytest.mark.parametrize(("sizes", "message"), [((), "at least one size"), ((3, 0), "must be >= 1")])
def test_split_bad_sizes(sizes: tuple[int, ...], message: str):
    with pytest.raises(CorpusError, match=message):
        make(5).split(*sizes)


def test_sample_larger_than_corpus():
    with pytest.raises(CorpusError, match=r"sizes 11 = 11 exceed the 10 sentences of corpus 'toy'"):
        make(10).sample(11)


# ---- fingerprint and export --------------------------------------------------------------------------


def test_fingerprint_matches_an_independent_digest():
    corpus = ParallelCorpus({"en": ["ab", "c"]})
    digest = hashlib.sha256()
    for item in ("eng_Latn", "ab", "c"):
        data = item.encode()
        digest.update(len(data).to_bytes(8, "little") + data)
    digest.update(b"\xff" * 8)
    assert corpus.fingerprint() == digest.hexdigest()


def test_fingerprint_tracks_text_and_languages_only():
    base = make(5)
    assert re.fullmatch(r"[0-9a-f]{64}", base.fingerprint())
    same = ParallelCorpus(dict(base.sentences), name="other", sources={}, ids=[9, 8, 7, 6, 5])
    assert same.fingerprint() == base.fingerprint()  # name, sources and ids are not text
    changed = {lang: list(s) for lang, s in base.sentences.items()}
    changed["spa_Latn"][4] += "!"
    assert ParallelCorpus(changed).fingerprint() != base.fingerprint()
    assert base.select(["es", "en", "de"]).fingerprint() != base.fingerprint()
    assert base.select(["en", "es"]).fingerprint() != base.fingerprint()
    # Sentence boundaries count: ['ab', 'c'] is not ['a', 'bc'].
    assert ParallelCorpus({"en": ["ab", "c"]}).fingerprint() != ParallelCorpus({"en": ["a", "bc"]}).fingerprint()


def test_to_pandas_is_tidy():
    corpus = make(3, ("eng_Latn", "fra_Latn")).subset([2, 0])
    df = corpus.to_pandas()
    assert list(df.columns) == ["id", "lang", "text"]
    assert df.values.tolist() == [
        [2, "eng_Latn", "eng_Latn sentence 2"],
        [0, "eng_Latn", "eng_Latn sentence 0"],
        [2, "fra_Latn", "fra_Latn sentence 2"],
        [0, "fra_Latn", "fra_Latn sentence 0"],
    ]
