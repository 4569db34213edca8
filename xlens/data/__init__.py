"""Parallel corpora and language codes: load N-way aligned sentences keyed by FLORES-200 code."""

from xlens.data.corpus import OnDuplicate, ParallelCorpus, duplicate_rows
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
from xlens.errors import CorpusError, HubError, UnknownLanguageError

__all__ = [
    "CORPUS_SPEC_FORMS",
    "CorpusError",
    "HubError",
    "Language",
    "OnDuplicate",
    "ParallelCorpus",
    "UnknownLanguageError",
    "all_languages",
    "duplicate_rows",
    "flores_code",
    "load_builtin",
    "load_corpus",
    "load_dir",
    "load_flores",
    "load_hf",
    "load_ntrex",
    "load_tsv",
    "resolve_language",
    "resolve_spec_paths",
]
