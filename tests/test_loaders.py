import random
import re
import unicodedata
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from xlens.data import loaders
from xlens.data.corpus import CorpusError, ParallelCorpus
from xlens.data.loaders import (
    CORPUS_SPEC_FORMS,
    HubError,
    load_builtin,
    load_corpus,
    load_dir,
    load_flores,
    load_hf,
    load_ntrex,
    load_tsv,
)

FIVE = ["eng_Latn", "spa_Latn", "deu_Latn", "fra_Latn", "jpn_Jpan"]


def write(path: Path, lines: list[str], end: str = "\n") -> Path:
    path.write_text("".join(line + end for line in lines), encoding="utf-8")
    return path


def digits(text: str) -> list[str]:
    # NFKC folds full-width digits (common in Japanese) to ASCII.
    return sorted(re.findall(r"[0-9]", unicodedata.normalize("NFKC", text)))


def digit_agreement(corpus: ParallelCorpus, lang: str, order: list[int] | None = None) -> float:
    """Share of English sentences with digits whose digits reappear in row ``order[i]`` of ``lang``."""
    en, other = corpus["en"], corpus[lang]
    order = order or list(range(len(en)))
    rows = [i for i, s in enumerate(en) if digits(s)]
    return sum(digits(en[i]) == digits(other[order[i]]) for i in rows) / len(rows)


def assert_aligned(corpus: ParallelCorpus) -> None:
    shuffled = list(range(len(corpus)))
    random.Random(0).shuffle(shuffled)
    for lang in corpus.languages[1:]:
        # Aligned rows share their numbers far more often than shuffled ones (measured: 0.7-0.9 vs ~0).
        assert digit_agreement(corpus, lang) > 0.6
        assert digit_agreement(corpus, lang, shuffled) < 0.05


# ---- real corpora (../shared/data) --------------------------------------------------------------


@pytest.mark.integration
def test_flores_devtest_five_languages(shared_data: Path):
    corpus = load_flores(shared_data / "flores200" / "devtest", langs=["en", "es", "de", "fr", "ja"])
    assert corpus.languages == FIVE
    assert len(corpus) == 1012 and corpus.ids == list(range(1012)) and corpus.dropped_ids == []
    assert corpus.sources["jpn_Jpan"].endswith("jpn_Jpan.devtest")
    assert all(s == s.strip() for lang in FIVE for s in corpus[lang])
    assert_aligned(corpus)
    # The parent folder with a devtest/ subfolder and the spec string load the same corpus.
    spec = load_corpus(f"flores:{shared_data / 'flores200'}:devtest", langs="en,es,de,fr,ja")
    assert spec.fingerprint() == corpus.fingerprint()


@pytest.mark.integration
def test_flores_real_duplicates(shared_data: Path):
    folder = shared_data / "flores200" / "devtest"
    with pytest.raises(CorpusError, match=r"bam_Latn \(.*bam_Latn\.devtest\) line 161 repeats line 160"):
        load_flores(folder, langs=["en", "bam_Latn"], on_duplicate="error")
    corpus = load_flores(folder, langs=["en", "bam_Latn"])
    assert len(corpus) + len(corpus.dropped_ids) == 1012
    assert 160 in corpus.dropped_ids and 159 in corpus.ids  # 0-based: line 161 dropped, line 160 kept


@pytest.mark.integration
def test_ntrex_five_languages(shared_data: Path):
    folder = shared_data / "ntrex128"
    corpus = load_ntrex(folder, langs=["en", "es", "de", "fr", "ja"])
    assert corpus.languages == FIVE
    # NTREX repeats lines 427 (es/de/fr/ja), 546 and 1403 (ja); those rows go in every language.
    assert corpus.dropped_ids == [426, 545, 1402]
    assert len(corpus) == 1997 - 3
    assert corpus.sources["eng_Latn"].endswith("newstest2019-src.eng.txt")
    assert corpus.sources["spa_Latn"].endswith("newstest2019-ref.spa.txt")
    assert_aligned(corpus)
    with pytest.raises(CorpusError, match=r"spa_Latn \(.*ref\.spa\.txt\) line 427 repeats line 424"):
        load_ntrex(folder, langs=["en", "es"], on_duplicate="error")


@pytest.mark.integration
def test_ntrex_variants(shared_data: Path):
    corpus = load_corpus(f"ntrex:{shared_data / 'ntrex128'}", langs=["pt", "zh", "zho-TW", "aze-Latn"])
    assert corpus.languages == ["por_Latn", "zho_Hans", "zho_Hant", "azj_Latn"]
    names = {lang: Path(src).name for lang, src in corpus.sources.items()}
    assert names == {
        "por_Latn": "newstest2019-ref.por.txt",
        "zho_Hans": "newstest2019-ref.zho-CN.txt",
        "zho_Hant": "newstest2019-ref.zho-TW.txt",
        "azj_Latn": "newstest2019-ref.aze-Latn.txt",
    }
    brazil = load_ntrex(shared_data / "ntrex128", langs=["eng-GB", "por-BR"])
    assert [Path(s).name for s in brazil.sources.values()] == [
        "newstest2019-ref.eng-GB.txt",
        "newstest2019-ref.por-BR.txt",
    ]


# ---- FLORES / NTREX layouts on small files ------------------------------------------------------


def test_flores_reads_only_requested_files(tmp_path: Path):
    write(tmp_path / "eng_Latn.devtest", ["One 1.", "Two 2. "])
    write(tmp_path / "spa_Latn.devtest", ["Uno 1.", "Dos 2."])
    (tmp_path / "deu_Latn.devtest").write_bytes(b"\xff\xfe not utf-8")  # would fail if read
    write(tmp_path / "metadata_devtest.tsv", ["url\tdomain"])
    write(tmp_path / "eng_Latn.dev", ["other split"])
    corpus = load_flores(tmp_path, langs=["es", "en"])
    assert corpus.languages == ["spa_Latn", "eng_Latn"]
    assert corpus["en"] == ["One 1.", "Two 2."]
    assert corpus.name == f"flores:{tmp_path}:devtest"
    with pytest.raises(CorpusError, match=r"deu_Latn\.devtest is not UTF-8"):
        load_flores(tmp_path)
    assert load_flores(tmp_path, split="dev").languages == ["eng_Latn"]


def test_flores_errors(tmp_path: Path):
    write(tmp_path / "eng_Latn.devtest", ["a"])
    with pytest.raises(CorpusError, match=r"no text for 'fr' \(fra_Latn\).*available: eng_Latn"):
        load_flores(tmp_path, langs=["fr"])
    with pytest.raises(CorpusError, match=r"no FLORES files \*\.test"):
        load_flores(tmp_path, split="test")
    with pytest.raises(CorpusError, match="FLORES folder not found"):
        load_flores(tmp_path / "missing")


def test_ntrex_picks_main_variant_and_allows_explicit_ones(tmp_path: Path):
    write(tmp_path / "newstest2019-src.eng.txt", ["Hello 1", "Bye 2"])
    write(tmp_path / "newstest2019-ref.eng-GB.txt", ["Hello 1 (GB)", "Bye 2 (GB)"])
    write(tmp_path / "newstest2019-ref.por.txt", ["Olá 1 (PT)", "Adeus 2 (PT)"])
    write(tmp_path / "newstest2019-ref.por-BR.txt", ["Olá 1 (BR)", "Tchau 2 (BR)"])
    write(tmp_path / "newstest2019-ref.zho-CN.txt", ["你好 1", "再见 2"])
    write(tmp_path / "newstest2019-ref-2.spa.txt", ["second reference"])  # ignored
    corpus = load_ntrex(tmp_path)
    assert corpus.languages == ["eng_Latn", "por_Latn", "zho_Hans"]
    assert corpus["en"][0] == "Hello 1" and corpus["pt"][0] == "Olá 1 (PT)"
    assert load_ntrex(tmp_path, langs=["por-BR", "eng-GB"])["pt"][1] == "Tchau 2 (BR)"
    assert load_ntrex(tmp_path, langs=["por-BR", "eng-GB"])["en"][1] == "Bye 2 (GB)"
    with pytest.raises(CorpusError, match="same language twice"):
        load_ntrex(tmp_path, langs=["por", "por-BR"])
    with pytest.raises(CorpusError, match=r"no text for 'ja' \(jpn_Jpan\).*available: eng, eng-GB, por"):
        load_ntrex(tmp_path, langs=["ja"])
    with pytest.raises(CorpusError, match="no NTREX files"):
        load_ntrex(_empty_dir(tmp_path))


def _empty_dir(root: Path) -> Path:
    empty = root / "empty"
    empty.mkdir()
    return empty


# ---- plain folders ------------------------------------------------------------------------------


def test_dir_any_code_as_file_name(tmp_path: Path):
    write(tmp_path / "en.txt", ["\ufeffHello.", "Good  bye. "], end="\r\n")  # BOM, CRLF, trailing space
    write(tmp_path / "spa_Latn.txt", ["Hola.", "Adiós."])
    write(tmp_path / "German.txt", ["Hallo.", "Tschüss."])
    corpus = load_dir(tmp_path)
    assert corpus.languages == ["deu_Latn", "eng_Latn", "spa_Latn"]
    assert corpus["en"] == ["Hello.", "Good  bye."]
    assert corpus.sources["spa_Latn"] == f"{tmp_path}/spa_Latn.txt"
    assert load_corpus(f"dir:{tmp_path}", langs=["es"]).languages == ["spa_Latn"]


def test_dir_line_separator_is_only_newline(tmp_path: Path):
    write(tmp_path / "en.txt", ["a\u2028still line one", "b"])
    assert load_dir(tmp_path)["en"] == ["a\u2028still line one", "b"]


def test_dir_misaligned_files_named(tmp_path: Path):
    write(tmp_path / "en.txt", ["a", "b", "c"])
    write(tmp_path / "fr.txt", ["a", "b"])
    with pytest.raises(CorpusError, match=rf"eng_Latn \({tmp_path}/en\.txt\): 3, fra_Latn \({tmp_path}/fr\.txt\): 2"):
        load_dir(tmp_path)


def test_dir_empty_line_named(tmp_path: Path):
    write(tmp_path / "en.txt", ["a", "b", "c"])
    write(tmp_path / "fr.txt", ["a", "  ", "c"])
    with pytest.raises(CorpusError, match=rf"fra_Latn \({tmp_path}/fr\.txt\) line 2\b"):
        load_dir(tmp_path)


def test_dir_duplicates(tmp_path: Path):
    write(tmp_path / "en.txt", ["a", "b", "c", "d"])
    write(tmp_path / "fr.txt", ["w", "x", "w", "z"])
    with pytest.raises(CorpusError, match=r"fr\.txt\) line 3 repeats line 1: 'w'"):
        load_dir(tmp_path, on_duplicate="error")
    corpus = load_dir(tmp_path)  # default: drop
    assert corpus["en"] == ["a", "b", "d"] and corpus.dropped_ids == [2]
    with pytest.raises(CorpusError, match="on_duplicate must be"):
        load_dir(tmp_path, on_duplicate="keep")  # type: ignore[arg-type]


def test_dir_errors(tmp_path: Path):
    write(tmp_path / "en.txt", ["a"])
    write(tmp_path / "eng_Latn.txt", ["a"])
    with pytest.raises(CorpusError, match=r"en\.txt and .*eng_Latn\.txt are both eng_Latn"):
        load_dir(tmp_path)
    (tmp_path / "eng_Latn.txt").unlink()
    write(tmp_path / "notes.txt", ["a"])
    with pytest.raises(CorpusError, match=r"notes\.txt: the file name must be a language code"):
        load_dir(tmp_path)
    with pytest.raises(CorpusError, match=r"no <language>\.txt files"):
        load_dir(_empty_dir(tmp_path))
    with pytest.raises(CorpusError, match="corpus folder not found"):
        load_dir(tmp_path / "nope")
    (tmp_path / "notes.txt").unlink()
    with pytest.raises(CorpusError, match="langs is empty"):
        load_dir(tmp_path, langs=[])


# ---- TSV --------------------------------------------------------------------------------------------


def test_tsv(tmp_path: Path):
    lines = ["en\tSpanish\tfra_Latn", 'He said "hi".\tDijo "hola".\tIl a dit « salut ».', "Yes\tSí\tOui "]
    path = write(tmp_path / "pairs.tsv", lines)
    corpus = load_tsv(path)
    assert corpus.languages == ["eng_Latn", "spa_Latn", "fra_Latn"]
    assert corpus["es"] == ['Dijo "hola".', "Sí"]  # quotes are text
    assert corpus["fr"][1] == "Oui"
    assert corpus.ids == [1, 2]  # physical line indices; the header is line 0
    assert corpus.sources["spa_Latn"] == f"{path} (column 'Spanish')"
    assert load_corpus(f"tsv:{path}", langs="fr").languages == ["fra_Latn"]


def test_tsv_errors_name_real_lines(tmp_path: Path):
    path = write(tmp_path / "t.tsv", ["en\tes", "a\tb", "c\t ", "d\te"])
    with pytest.raises(CorpusError, match=r"spa_Latn \(.*t\.tsv \(column 'es'\)\) line 3\b"):
        load_tsv(path)
    write(path, ["en\tes", "a\tb", "c"])
    with pytest.raises(CorpusError, match="line 3 has 1 tab-separated fields but the header has 2"):
        load_tsv(path)
    write(path, ["en\tid_col"])
    with pytest.raises(CorpusError, match="header column 2 'id_col' is not a language code"):
        load_tsv(path)
    write(path, ["en\teng"])
    with pytest.raises(CorpusError, match="names eng_Latn twice"):
        load_tsv(path)
    write(path, [])
    with pytest.raises(CorpusError, match="is empty"):
        load_tsv(path)


# ---- builtin ------------------------------------------------------------------------------------


def test_builtin():
    corpus = load_builtin()
    assert len(corpus) >= 200
    for code in ["en", "es", "de", "fr", "ja", "zh"]:
        assert code in corpus
    assert all(src.startswith("builtin/") for src in corpus.sources.values())
    assert load_corpus("builtin", langs=["ja", "en"]).languages == ["jpn_Jpan", "eng_Latn"]
    assert load_corpus().fingerprint() == corpus.fingerprint()


# ---- Hugging Face -------------------------------------------------------------------------------

datasets = pytest.importorskip("datasets")


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep datasets' cache inside tmp_path."""
    cache = tmp_path / "hf_cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    return cache


def test_hf_saved_dataset_with_language_columns(tmp_path: Path, hf_cache: Path):
    data = {"id": [0, 1, 2], "en": ["One.", "Two.", "Three."], "sentence_spa_Latn": ["Uno.", "Dos.", "Tres."]}
    data["url"] = ["u0", "u1", "u2"]
    datasets.DatasetDict({"test": datasets.Dataset.from_dict(data)}).save_to_disk(tmp_path / "saved")
    corpus = load_corpus(f"hf:{tmp_path / 'saved'}")
    assert corpus.languages == ["eng_Latn", "spa_Latn"]  # 'id' is ids, not Indonesian; 'url' is metadata
    assert corpus["es"] == ["Uno.", "Dos.", "Tres."]
    assert corpus.ids == [0, 1, 2]


def test_hf_long_layout_aligns_by_id(tmp_path: Path, hf_cache: Path):
    rows = [
        (1, "eng", "Latn", "Two."),
        (0, "spa", "Latn", "Uno."),
        (0, "eng", "Latn", "One."),
        (1, "spa", "Latn", "Dos."),
    ]
    ds = datasets.Dataset.from_dict(
        {k: [r[i] for r in rows] for i, k in enumerate(["id", "iso_639_3", "iso_15924", "text"])}
    )
    ds.to_parquet(str(tmp_path / "long.parquet"))
    corpus = load_hf(str(tmp_path / "long.parquet"), langs=["es", "en"])
    assert corpus["en"] == ["One.", "Two."] and corpus["es"] == ["Uno.", "Dos."]
    assert corpus.languages == ["spa_Latn", "eng_Latn"]


def test_hf_translation_column_and_missing_values(tmp_path: Path, hf_cache: Path):
    pairs = [{"de": "Hallo", "en": "Hello"}, {"de": "Tschüss", "en": None}]
    datasets.Dataset.from_dict({"translation": pairs}).save_to_disk(tmp_path / "wmt")
    with pytest.raises(CorpusError, match=r"eng_Latn \(hf:.*wmt\) line 2\b"):
        load_hf(str(tmp_path / "wmt"))
    corpus = load_hf(str(tmp_path / "wmt"), langs=["de"])
    assert corpus["de"] == ["Hallo", "Tschüss"]


def test_hf_csv_folder_and_errors(tmp_path: Path, hf_cache: Path):
    folder = tmp_path / "csv"
    folder.mkdir()
    (folder / "data.csv").write_text("en,fr\nYes,Oui\nNo,Non\n", encoding="utf-8")
    assert load_hf(str(folder))["fr"] == ["Oui", "Non"]
    with pytest.raises(CorpusError, match=r"no text for 'ja' \(jpn_Jpan\)"):
        load_hf(str(folder), langs=["ja"])
    (folder / "data.csv").write_text("url,score\nx,1\n", encoding="utf-8")
    datasets.Dataset.from_dict({"url": ["x"], "score": [1]}).save_to_disk(tmp_path / "nolang")
    with pytest.raises(CorpusError, match=r"no language columns among \['url', 'score'\]"):
        load_hf(str(tmp_path / "nolang"))


class FakeHub:
    """Stands in for the hub: per-language configs like openlanguagedata/flores_plus."""

    def __init__(self, texts: dict[str, list[str]]):
        self.texts = texts
        self.loaded: list[tuple[str, str | None]] = []

    def config_names(self, dataset: str) -> list[str]:
        return [*self.texts, "default"]

    def load_dataset(self, dataset: str, name: str, split: str | None = None) -> Any:
        self.loaded.append((name, split))
        iso3, script = name.split("_")
        texts = self.texts[name]

        def make(tag: str) -> Any:
            n = len(texts)
            columns = {"id": list(range(n)), "iso_639_3": [iso3] * n, "iso_15924": [script] * n}
            return datasets.Dataset.from_dict({**columns, "text": [f"{t} {tag}" for t in texts]})

        splits = datasets.DatasetDict({"dev": make("dev"), "devtest": make("devtest")})
        return splits if split is None else splits[split]


@pytest.fixture
def reachable_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub answers the connectivity probe (what datasets does next is faked by each test)."""
    from xlens import hub

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "_last", None)
    monkeypatch.setattr(hub, "_connects", lambda host, port, timeout: True)


def test_hf_per_language_configs(monkeypatch: pytest.MonkeyPatch, reachable_hub: None):
    hub = FakeHub({"eng_Latn": ["Hi", "Bye"], "spa_Latn": ["Hola", "Adiós"], "deu_Latn": ["Hallo", "Tschüss"]})
    monkeypatch.setattr(datasets, "get_dataset_config_names", hub.config_names)
    monkeypatch.setattr(datasets, "load_dataset", hub.load_dataset)
    corpus = load_corpus("hf:openlanguagedata/flores_plus", langs=["es", "en"])
    assert corpus.languages == ["spa_Latn", "eng_Latn"]
    assert corpus["en"] == ["Hi devtest", "Bye devtest"]  # devtest preferred over dev
    assert hub.loaded == [("spa_Latn", None), ("eng_Latn", None)]  # German was never loaded
    assert load_corpus("hf:openlanguagedata/flores_plus::dev", langs=["de"])["de"] == ["Hallo dev", "Tschüss dev"]
    with pytest.raises(CorpusError, match="one config per language: pass langs"):
        load_hf("openlanguagedata/flores_plus")
    with pytest.raises(CorpusError, match=r"no text for 'ja' \(jpn_Jpan\) in openlanguagedata/flores_plus configs"):
        load_hf("openlanguagedata/flores_plus", langs=["ja"])


def _gated() -> Exception:
    from datasets.exceptions import DatasetNotFoundError
    from huggingface_hub.errors import GatedRepoError

    # What datasets raises for a gated repo without accepted terms / token.
    response: Any = SimpleNamespace(headers={}, request=None, status_code=403)
    cause = GatedRepoError("403 Client Error", response=response)
    error = DatasetNotFoundError("Dataset 'x' is a gated dataset on the Hub. You must be authenticated to access it.")
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    ("raised", "message"),
    [
        (
            _gated(),
            "gated dataset: accept its terms on the hub and log in with `huggingface-cli login` or set HF_TOKEN",
        ),
        (
            ConnectionError("Couldn't reach 'x' on the Hub (LocalEntryNotFoundError)"),
            "hub unreachable or not in local cache: x .*set HF_HUB_OFFLINE=0 and check network, or use flores:PATH",
        ),
        (TimeoutError("read timed out"), "hub unreachable or not in local cache"),
        (ValueError("BuilderConfig 'xx' not found. Available: ['a']"), "cannot load .*BuilderConfig 'xx' not found"),
    ],
)
def test_hf_hub_errors(monkeypatch: pytest.MonkeyPatch, raised: Exception, message: str, reachable_hub: None):
    def fail(*args: object, **kwargs: object) -> list[str]:
        raise raised

    monkeypatch.setattr(datasets, "get_dataset_config_names", fail)
    monkeypatch.setattr(datasets, "load_dataset", fail)
    with pytest.raises((CorpusError, HubError), match=message) as info:
        load_hf("x", config="cfg", langs=["en"])
    assert info.value.__cause__ is raised
    assert isinstance(info.value, HubError) == (not isinstance(raised, ValueError))


def test_hf_gated_error_raised_directly_by_huggingface_hub(monkeypatch: pytest.MonkeyPatch, reachable_hub: None):
    gated = _gated().__cause__
    assert gated is not None

    def fail(*args: object, **kwargs: object) -> None:
        raise gated

    monkeypatch.setattr(datasets, "load_dataset", fail)
    with pytest.raises(HubError, match="gated dataset"):
        load_hf("x", config="cfg")


def test_hf_offline_with_an_empty_cache_is_one_hub_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    import huggingface_hub.constants

    # HF_HUB_OFFLINE=1 is read at import time, so set what the libraries read from it too.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "empty_cache")
    for config in (None, "eng_Latn"):
        with pytest.raises(HubError, match="hub unreachable or not in local cache: openlanguagedata/flores_plus"):
            load_hf("openlanguagedata/flores_plus", config=config, langs=["en"])


def test_an_unreachable_hub_fails_after_one_probe_without_touching_datasets(monkeypatch: pytest.MonkeyPatch):
    from xlens import hub

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("datasets was asked to download")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "_last", None)
    monkeypatch.setattr(hub, "_connects", lambda host, port, timeout: False)
    monkeypatch.setattr(datasets, "load_dataset", never)
    monkeypatch.setattr(datasets, "get_dataset_config_names", never)
    with pytest.raises(HubError, match=r"dataset 'org/data' needs the Hugging Face hub.*Set HF_HUB_OFFLINE=1 to read"):
        load_corpus("hf:org/data", langs=["en"])


# ---- corpus specs -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "call"),
    [
        ("hf:org/name", ("org/name", None, None)),
        ("hf:org/name:cfg", ("org/name", "cfg", None)),
        ("hf:org/name:cfg:test", ("org/name", "cfg", "test")),
        ("hf:org/name::test", ("org/name", None, "test")),
        (" HF:org/name ", ("org/name", None, None)),
    ],
)
def test_hf_spec_parsing(monkeypatch: pytest.MonkeyPatch, spec: str, call: tuple[object, ...]):
    seen: list[tuple[object, ...]] = []
    monkeypatch.setattr(loaders, "load_hf", lambda *args: seen.append(args) or "corpus")
    assert load_corpus(spec, langs=["en"]) == "corpus"
    assert seen == [(*call, ["en"], "drop")]


def test_flores_spec_with_split(tmp_path: Path):
    write(tmp_path / "eng_Latn.dev", ["dev sentence"])
    write(tmp_path / "eng_Latn.devtest", ["devtest sentence"])
    assert load_corpus(f"flores:{tmp_path}:dev")["en"] == ["dev sentence"]
    assert load_corpus(f"flores:{tmp_path}")["en"] == ["devtest sentence"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "unknown corpus spec ''; accepted forms:\n  builtin"),
        ("/some/path", "unknown corpus spec '/some/path'"),
        ("flores", r"corpus spec 'flores' needs a path or dataset after 'flores:' \(forms: builtin; flores:PATH"),
        ("builtin:extra", "(?s)accepted forms:.*tsv:PATH"),
        ("ntrex:", r"needs a path or dataset after 'ntrex:'"),
        ("hf:a:b:c:d", r"expected hf:DATASET\[:CONFIG\[:SPLIT\]\]"),
        ("dir:/definitely/missing", "corpus folder not found: /definitely/missing does not exist"),
        ("tsv:/definitely/missing.tsv", "TSV file not found"),
        ("flores:/definitely/missing:dev", "FLORES folder not found: /definitely/missing does not exist"),
        ("ntrex:/definitely/missing", "NTREX folder not found"),
    ],
)
def test_bad_specs(spec: str, message: str):
    with pytest.raises(CorpusError, match=message):
        load_corpus(spec)


def test_spec_forms_are_documented():
    assert [f.split()[0] for f in CORPUS_SPEC_FORMS] == [
        "builtin",
        "flores:PATH[:SPLIT]",
        "ntrex:PATH",
        "hf:DATASET[:CONFIG[:SPLIT]]",
        "dir:PATH",
        "tsv:PATH",
    ]
