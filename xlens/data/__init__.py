"""Parallel corpora and language codes: load N-way aligned sentences keyed by FLORES-200 code."""

from xlens.data.corpus import SAME_SENTENCE, OnDuplicate, ParallelCorpus, duplicate_rows, sentence_key
from xlens.data.languages import Language, all_languages, flores_code, resolve_language
from xlens.data.loaders import (
    CORPUS_SPEC_FORMS,
    load_builtin,
    load_corpus,
    load_dir,
    load_flores,
    load_hf,
    load_ntrex,
    load_tsv,
    resolve_spec_paths,
)
from xlens.data.mining import MiningSet, load_bucc, mining_set, write_bucc
from xlens.data.pivot import PivotPairs, load_pivot_pairs
from xlens.errors import CorpusError, HubError, UnknownLanguageError

__all__ = [
    "CORPUS_SPEC_FORMS",
    "SAME_SENTENCE",
    "CorpusError",
    "HubError",
    "Language",
    "MiningSet",
    "OnDuplicate",
    "ParallelCorpus",
    "PivotPairs",
    "UnknownLanguageError",
    "all_languages",
    "duplicate_rows",
    "flores_code",
    "load_bucc",
    "load_builtin",
    "load_corpus",
    "load_dir",
    "load_flores",
    "load_hf",
    "load_ntrex",
    "load_pivot_pairs",
    "load_tsv",
    "mining_set",
    "resolve_language",
    "resolve_spec_paths",
    "sentence_key",
    "write_bucc",
]
