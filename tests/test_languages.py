from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from xlens.data.languages import (
    Language,
    UnknownLanguageError,
    all_languages,
    flores_code,
    resolve_language,
)

LANGS = all_languages()


def test_table_has_the_204_flores_varieties_once_each():
    flores = [lang for lang in LANGS if lang.in_flores200]
    assert len(flores) == 204
    assert len({lang.flores for lang in LANGS}) == len(LANGS)


@pytest.mark.parametrize("lang", LANGS, ids=lambda lang: lang.flores)
def test_row_is_consistent(lang: Language):
    iso3, script = lang.flores.split("_")
    assert (lang.iso639_3, lang.script) == (iso3, script)
    assert len(iso3) == 3 and iso3.islower()
    assert len(script) == 4 and script.istitle()
    assert lang.iso639_1 is None or (len(lang.iso639_1) == 2 and lang.iso639_1.islower())
    assert lang.name and lang.name == lang.name.strip()
    # The row's own FLORES code and name lead back to it; ISO codes lead to the same language (the
    # default script of it when several rows share a code).
    assert resolve_language(lang.flores) == lang
    assert resolve_language(lang.name) == lang
    assert resolve_language(lang.iso639_3).iso639_3 == lang.iso639_3
    if lang.iso639_1:
        assert resolve_language(lang.iso639_1).iso639_1 == lang.iso639_1


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("en", "eng_Latn"),
        ("eng", "eng_Latn"),
        ("eng_Latn", "eng_Latn"),
        ("English", "eng_Latn"),
        ("  ENG_latn \n", "eng_Latn"),
        ("Spanish", "spa_Latn"),
        ("es", "spa_Latn"),
        ("de", "deu_Latn"),
        ("ger", "deu_Latn"),
        ("ja", "jpn_Jpan"),
        ("jpn", "jpn_Jpan"),
        # macrolanguages and multi-script languages: documented defaults
        ("zh", "zho_Hans"),
        ("zho", "zho_Hans"),
        ("Chinese", "zho_Hans"),
        ("ar", "arb_Arab"),
        ("ara", "arb_Arab"),
        ("arb", "arb_Arab"),
        ("Arabic", "arb_Arab"),
        ("fa", "pes_Arab"),
        ("fas", "pes_Arab"),
        ("Farsi", "pes_Arab"),
        ("ms", "zsm_Latn"),
        ("msa", "zsm_Latn"),
        ("et", "est_Latn"),
        ("lv", "lvs_Latn"),
        ("lav", "lvs_Latn"),
        ("sw", "swh_Latn"),
        ("swa", "swh_Latn"),
        ("uz", "uzn_Latn"),
        ("uzb", "uzn_Latn"),
        ("no", "nob_Latn"),
        ("nb", "nob_Latn"),
        ("nn", "nno_Latn"),
        ("mn", "khk_Cyrl"),
        ("ne", "npi_Deva"),
        ("ps", "pbt_Arab"),
        ("sq", "als_Latn"),
        ("az", "azj_Latn"),
        ("ku", "kmr_Latn"),
        ("fil", "tgl_Latn"),
        ("kas", "kas_Arab"),
        ("knc", "knc_Latn"),
        ("sr", "srp_Cyrl"),
        ("yue", "yue_Hant"),
        # NTREX-128 / BCP-47 style codes, regional variants included
        ("aze-Latn", "azj_Latn"),
        ("zho-CN", "zho_Hans"),
        ("zho-TW", "zho_Hant"),
        ("zh-HK", "zho_Hant"),
        ("zh-Hant", "zho_Hant"),
        ("zh-Hans-TW", "zho_Hans"),  # an explicit script beats the region
        ("por-BR", "por_Latn"),
        ("pt-BR", "por_Latn"),
        ("eng-GB", "eng_Latn"),
        ("en_US", "eng_Latn"),
        ("spa-419", "spa_Latn"),
        ("fra-CA", "fra_Latn"),
        ("srp-Latn", "srp_Latn"),
        ("srp-Cyrl", "srp_Cyrl"),
        ("ckb-Arab", "ckb_Arab"),
        ("knc-Arab", "knc_Arab"),
        ("ar-Latn", "arb_Latn"),
        ("eng-Latn", "eng_Latn"),
        ("Ta'izzi-Adeni Arabic", "acq_Arab"),  # ASCII apostrophe for the table's ’
    ],
)
def test_resolve(code: str, expected: str):
    assert resolve_language(code).flores == expected
    assert flores_code(code) == expected


def test_resolved_fields():
    assert resolve_language("es") == Language("spa_Latn", "spa", "es", "Spanish", "Latn")
    assert resolve_language("zho_Hant").iso639_1 == "zh"
    assert resolve_language("acm_Arab").iso639_1 is None  # a regional dialect, not what 'ar' means
    assert not resolve_language("dv").in_flores200


def test_unknown_code_lists_close_matches():
    with pytest.raises(UnknownLanguageError) as info:
        resolve_language("Spanihs")
    message = str(info.value)
    assert "'Spanihs'" in message
    assert "spa_Latn (Spanish)" in message.split("closest matches:")[1]
    assert "all_languages()" in message
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("code", ["", "   ", "xx", "klingon", "eng_Xxxx", "en-GB-oxendict", "zz-Latn"])
def test_unknown_codes_raise(code: str):
    with pytest.raises(UnknownLanguageError, match="all_languages"):
        resolve_language(code)


def test_missing_script_variant_says_which_language_it_found():
    with pytest.raises(UnknownLanguageError, match=r"uzn_Latn \(Northern Uzbek\).*no Cyrl script"):
        resolve_language("uzb-Cyrl")


@given(lang=st.sampled_from(LANGS), data=st.data())
def test_case_and_whitespace_do_not_matter(lang: Language, data: st.DataObject):
    flips = data.draw(st.lists(st.booleans(), min_size=len(lang.flores), max_size=len(lang.flores)))
    messy = "".join(c.swapcase() if f else c for c, f in zip(lang.flores, flips, strict=True))
    pad = data.draw(st.sampled_from(["", " ", "\t", "\n "]))
    assert resolve_language(pad + messy + pad) == lang


@pytest.mark.integration
def test_every_flores_file_stem_resolves_to_itself(shared_data: Path):
    stems = sorted(p.name.removesuffix(".devtest") for p in (shared_data / "flores200" / "devtest").glob("*.devtest"))
    assert len(stems) == 204
    assert [flores_code(s) for s in stems] == stems
    assert {lang.flores for lang in LANGS if lang.in_flores200} == set(stems)


@pytest.mark.integration
def test_every_ntrex_code_resolves(shared_data: Path):
    codes = [
        line.split()[0]
        for line in (shared_data / "ntrex128" / "LANGUAGES.tsv").read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    assert len(codes) >= 128
    resolved = {code: resolve_language(code) for code in codes}
    # The ISO 639-3 part of the code is kept, or mapped from the macrolanguage to FLORES's variety.
    assert resolved["fas"].flores == "pes_Arab"
    assert resolved["msa"].flores == "zsm_Latn"
    assert resolved["gsw-ZH"].flores == "gsw_Latn"
    same_iso = [c for c, lang in resolved.items() if c.split("-")[0] == lang.iso639_3]
    assert len(same_iso) >= 110
