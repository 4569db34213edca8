"""Language codes: one table that resolves every code users type to a FLORES-200 language.

Every language is keyed by its FLORES-200 code ``<ISO 639-3>_<ISO 15924 script>`` (``eng_Latn``).
:func:`resolve_language` accepts, case-insensitively and ignoring surrounding whitespace:

* a FLORES code: ``eng_Latn`` (also written ``eng-Latn``);
* an ISO 639-1 code: ``en``; an ISO 639-3 code: ``eng``; ISO 639-2/B codes such as ``ger``, ``fre``, ``chi``;
* an English name: ``English``, ``Spanish``, ``Persian``, ``Farsi``, ``Chinese (Traditional)``;
* an NTREX-128 / BCP-47 style code ``<language>[-<Script>][-<REGION>]``: ``aze-Latn``, ``zho-CN``, ``por-BR``,
  ``sr-Latn``, ``zh-Hant-TW``.

Defaults where a code names a macrolanguage or a language FLORES has in several scripts (the variety that
FLORES, NTREX and most models treat as the standard written form):

* ``zh``/``zho``/``Chinese`` -> ``zho_Hans``; ``ar``/``ara``/``arb``/``Arabic`` -> ``arb_Arab`` (Modern
  Standard); ``fa``/``fas``/``Persian`` -> ``pes_Arab``; ``ms``/``msa``/``Malay`` -> ``zsm_Latn``;
  ``et``/``est`` -> ``est_Latn``; ``lv``/``lav`` -> ``lvs_Latn``; ``sw``/``swa`` -> ``swh_Latn``;
  ``uz``/``uzb`` -> ``uzn_Latn``; ``no``/``nb``/``nor`` -> ``nob_Latn``; ``mn``/``mon`` -> ``khk_Cyrl``;
  ``ne``/``nep`` -> ``npi_Deva``; ``ps``/``pus`` -> ``pbt_Arab``; ``om``/``orm`` -> ``gaz_Latn``;
  ``mg``/``mlg`` -> ``plt_Latn``; ``sq``/``sqi`` -> ``als_Latn``; ``az``/``aze`` -> ``azj_Latn``;
  ``ku``/``kur`` -> ``kmr_Latn`` (Kurmanji; Sorani is ``ckb``); ``yi`` -> ``ydd_Hebr``;
  ``qu`` -> ``quy_Latn``; ``ay`` -> ``ayr_Latn``; ``ff``/``ful`` -> ``fuv_Latn``;
  ``fil``/``Filipino`` -> ``tgl_Latn``; ``sr``/``srp`` -> ``srp_Cyrl``.
* Several scripts: ``ace``, ``bjn``, ``min``, ``knc``, ``taq`` -> ``_Latn``; ``kas`` -> ``kas_Arab``;
  ``arb`` -> ``arb_Arab``; ask for another one with its script: ``knc-Arab``, ``zh-Hant``.

Regional variants (NTREX-128 ships some) resolve to the language's FLORES code, because FLORES has one
variety per language: ``eng-GB``/``eng-US``/``eng-IN`` -> ``eng_Latn``, ``por-BR`` -> ``por_Latn``,
``fra-CA`` -> ``fra_Latn``, ``spa-MX`` -> ``spa_Latn``, ``gsw-BE``/``gsw-ZH`` -> ``gsw_Latn``. Chinese regions
pick the script: ``zho-CN``/``zh-SG`` -> ``zho_Hans``, ``zho-TW``/``zh-HK``/``zh-MO`` -> ``zho_Hant``.

The table (``languages.tsv`` beside this module) holds the 204 FLORES-200 varieties plus the NTREX-128
languages FLORES lacks (``div_Thaa``, ``srp_Latn``, ``ton_Latn``, ...; ``Language.in_flores200`` is False).
``Language.iso639_1`` is the two-letter code of the language, or of its macrolanguage when the row is that
code's standard variety (``pes_Arab`` -> ``fa``); regional dialects such as ``acm_Arab`` have none.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

from xlens.errors import UnknownLanguageError

__all__ = [
    "Language",
    "UnknownLanguageError",
    "all_languages",
    "flores_code",
    "resolve_language",
]


@dataclass(frozen=True)
class Language:
    """One language variety, identified by its FLORES-200 code."""

    flores: str
    iso639_3: str
    iso639_1: str | None
    name: str
    script: str
    in_flores200: bool = True


# Region subtags that decide the Chinese script when none is given.
_CHINESE_REGION_SCRIPT = {"cn": "Hans", "sg": "Hans", "my": "Hans", "tw": "Hant", "hk": "Hant", "mo": "Hant"}
# <language>[-<Script>][-<REGION>], with '-' or '_' as separator (BCP-47, NTREX-128 file names).
_TAGGED = re.compile(r"^([a-z]{2,3})(?:[-_]([a-z]{4}))?(?:[-_]([a-z]{2}|\d{3}))?$")


def _key(text: str) -> str:
    # Curly apostrophes and doubled spaces are typing accidents, not different names.
    return " ".join(text.replace("’", "'").split()).casefold()


@dataclass(frozen=True)
class _Table:
    languages: tuple[Language, ...]
    by_flores: dict[str, Language]
    index: dict[str, Language]  # normalised code/name -> language


@cache
def _table() -> _Table:
    text = files("xlens.data").joinpath("languages.tsv").read_text(encoding="utf-8")
    rows = [line.split("\t") for line in text.splitlines() if line and not line.startswith("#")]
    header, body = rows[0], rows[1:]
    if header != ["flores", "iso639_1", "name", "flores200", "aliases"]:
        raise RuntimeError(f"languages.tsv has an unexpected header: {header}")
    languages: list[Language] = []
    aliases: dict[str, list[str]] = {}
    for row in body:
        flores, iso1, name, in_flores, alias_field = row
        iso3, script = flores.split("_")
        lang = Language(flores, iso3, None if iso1 == "-" else iso1, name, script, in_flores == "yes")
        languages.append(lang)
        aliases[flores] = [a.strip() for a in alias_field.split(",") if a.strip()]

    flores_keys = {_key(lang.flores): lang for lang in languages}
    # Implicit keys (ISO codes, name) may be shared by several rows (arb_Arab/arb_Latn); an explicit alias
    # names the default, and any implicit key still shared is a table bug.
    implicit: dict[str, set[str]] = {}
    for lang in languages:
        for k in (lang.iso639_3, lang.iso639_1, lang.name):
            if k:
                implicit.setdefault(_key(k), set()).add(lang.flores)
    explicit: dict[str, str] = {}
    for lang in languages:
        for alias in aliases[lang.flores]:
            k = _key(alias)
            if k in explicit or k in flores_keys:
                raise RuntimeError(f"languages.tsv: alias {alias!r} of {lang.flores} is claimed twice")
            explicit[k] = lang.flores
    index: dict[str, Language] = dict(flores_keys)
    lookup = {lang.flores: lang for lang in languages}
    for k, owners in implicit.items():
        if k in explicit or k in index:
            continue
        if len(owners) > 1:
            raise RuntimeError(f"languages.tsv: {k!r} is shared by {sorted(owners)}; add it as an alias of one")
        index[k] = lookup[next(iter(owners))]
    index.update((k, lookup[f]) for k, f in explicit.items())
    return _Table(tuple(languages), lookup, index)


def all_languages() -> list[Language]:
    """Every language in the table: the 204 FLORES-200 varieties, then the NTREX-128 extras."""
    return list(_table().languages)


def resolve_language(code: str) -> Language:
    """Resolve a FLORES, ISO 639-1/-3, NTREX/BCP-47 code or English name (see module docstring)."""
    table = _table()
    key = _key(code)
    found = table.index.get(key)
    if found is not None:
        return found
    tagged = _resolve_tagged(key, table)
    if tagged is not None:
        return tagged
    raise UnknownLanguageError(_unknown_message(code, table))


def flores_code(code: str) -> str:
    """Shortcut: the FLORES-200 code of any accepted language code or name."""
    return resolve_language(code).flores


def _resolve_tagged(key: str, table: _Table) -> Language | None:
    match = _TAGGED.match(key)
    if match is None:
        return None
    base_code, script, region = match.groups()
    base = table.index.get(base_code)
    if base is None:
        return None
    if script is None and region is not None and base.iso639_3 == "zho":
        script = _CHINESE_REGION_SCRIPT.get(region)
    if script is None or script == base.script.casefold():
        return base
    # Same language, other script: zh-Hant -> zho_Hant, knc-Arab -> knc_Arab.
    return table.by_flores.get(f"{base.iso639_3}_{script.title()}")


def _unknown_message(code: str, table: _Table) -> str:
    key = _key(code)
    match = _TAGGED.match(key)
    if match and match.group(2) and match.group(1) in table.index:
        base = table.index[match.group(1)]
        return (
            f"unknown language {code!r}: {match.group(1)!r} is {base.flores} ({base.name}), but the table "
            f"has no {match.group(2).title()} script variant of it; list them all with "
            "xlens.data.all_languages()."
        )
    close = difflib.get_close_matches(key, list(table.index), n=12, cutoff=0.6) if key else []
    suggestions: list[str] = []
    seen: set[str] = set()
    for k in close:
        lang = table.index[k]
        if lang.flores not in seen:
            seen.add(lang.flores)
            suggestions.append(f"{lang.flores} ({lang.name})")
    hint = f"closest matches: {', '.join(suggestions[:5])}" if suggestions else "no close match"
    return (
        f"unknown language {code!r}: {hint}. Use a FLORES-200 code (eng_Latn), an ISO 639-1/639-3 code "
        f"(en, eng) or an English name; list them all with xlens.data.all_languages()."
    )
