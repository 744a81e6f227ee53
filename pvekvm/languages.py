"""The client's language: validated on the order, kept on the service, used to pick mail
templates.

An order may carry ``language`` as a BCP 47-style tag (``de``, ``pt-BR``, ``zh-Hans``) or as the
lower-case English name billing systems such as WHMCS store (``german``, ``russian``). Rules:

- malformed (not 2-3 letters optionally followed by ``-`` subtags of 2-8 letters/digits, or longer
  than 35 characters) → :class:`ValueError` naming what is wrong; intake refuses the order;
- well-formed → normalised (``DE_at`` → ``de-AT``, ``german`` → ``de``) and stored, even when no
  template exists for it: mail falls back from ``de-AT`` to ``de`` to English, so adding a
  language later is a matter of adding its template folder.

:data:`MANUAL_LANGUAGES` are the 25 languages of the manual's module (by the names of its WHMCS
language files, ``lang/arabic.php`` … ``lang/ukranian.php``: WHMCS spells Ukrainian that way, and
that is the name it stores for a client, so both spellings are read); templates ship for all of
them, :data:`SHIPPED` (English at the top of ``config/mail``, the others in
``config/mail/<code>/``). Chinese is Simplified (WHMCS's ``chinese``), Norwegian is Bokmål
(``nb``; ``no`` and ``nn`` fall back to it). :func:`is_rtl` says which tags are written right to
left (mail adds an HTML part for them: pvekvm/mail.py).
"""

from __future__ import annotations

import re

DEFAULT = "en"
MAX_LENGTH = 35
_TAG = re.compile(r"([A-Za-z]{2,3})((?:[-_][A-Za-z0-9]{2,8}){0,3})")

# The manual's 25 languages: English name (as WHMCS stores it) → ISO 639-1 code.
MANUAL_LANGUAGES: dict[str, str] = {
    "arabic": "ar", "azerbaijani": "az", "catalan": "ca", "chinese": "zh", "croatian": "hr",
    "czech": "cs", "danish": "da", "dutch": "nl", "english": "en", "estonian": "et",
    "farsi": "fa", "french": "fr", "german": "de", "hebrew": "he", "hungarian": "hu",
    "italian": "it", "macedonian": "mk", "norwegian": "nb", "polish": "pl", "romanian": "ro",
    "russian": "ru", "spanish": "es", "swedish": "sv", "turkish": "tr", "ukrainian": "uk",
}
# Other spellings billing systems store: WHMCS's language file for Ukrainian is "ukranian".
NAME_ALIASES: dict[str, str] = {"ukranian": "uk"}
# Languages whose templates ship in config/mail (tests/test_mail_languages.py sends each):
# the manual's; add a tag here with its folder to ship another.
SHIPPED: tuple[str, ...] = tuple(sorted(MANUAL_LANGUAGES.values()))
# Scripts written right to left (primary subtags): the manual's ar, he, fa, and a few more
# whose templates an operator may add.
RTL: frozenset[str] = frozenset({"ar", "he", "fa", "ur", "ps", "yi", "dv", "ckb", "sd", "ug",
                                 "iw"})
# A language whose texts another shipped language's reader reads as their own: Norwegian
# ("no", Nynorsk "nn") reads Bokmål; "iw" is Hebrew's withdrawn code.
_READS: dict[str, str] = {"no": "nb", "nn": "nb", "iw": "he"}


def normalize(value: str) -> str:
    """The canonical tag for ``value``; raises ValueError (with the reason) when malformed."""
    if len(value) > MAX_LENGTH:
        raise ValueError(f"too long: {len(value)} characters (max {MAX_LENGTH})")
    name = MANUAL_LANGUAGES.get(value.lower()) or NAME_ALIASES.get(value.lower())
    if name is not None:
        return name
    m = _TAG.fullmatch(value)
    if m is None:
        raise ValueError(f"not a language tag (like 'de', 'pt-BR') or a known language name: "
                         f"{value!r}")
    subtags = [s for s in re.split(r"[-_]", m.group(2)) if s]
    out = [m.group(1).lower()]
    for s in subtags:
        out.append(s.upper() if len(s) == 2 and s.isalpha() else
                   s.title() if len(s) == 4 and s.isalpha() else s.lower())
    return "-".join(out)


def candidates(tag: str | None) -> list[str]:
    """Template folders to try, most specific first: ``de-AT`` → ``de-AT``, ``de``;
    ``no-NO`` → ``no-NO``, ``no``, ``nb``; English (the top folder) is the caller's fallback."""
    if not tag:
        return []
    parts = tag.split("-")
    out = ["-".join(parts[:i]) for i in range(len(parts), 0, -1)]
    reads = _READS.get(parts[0].lower())
    return [*out, reads] if reads else out


def is_rtl(tag: str | None) -> bool:
    """Whether ``tag``'s script is written right to left (by its primary subtag; a script
    subtag overrides: ``az-Arab`` is, ``ar-Latn`` is not)."""
    if not tag:
        return False
    parts = tag.split("-")
    scripts = {p.title() for p in parts[1:] if len(p) == 4 and p.isalpha()}
    if scripts & {"Arab", "Hebr", "Thaa", "Syrc", "Nkoo", "Adlm", "Rohg"}:
        return True
    if scripts:
        return False
    return parts[0].lower() in RTL


def schema_pattern() -> str:
    """What :func:`normalize` accepts, as a JSON Schema (ECMA-262) pattern: a well-formed tag
    or one of the manual's language names in any case (at most ``MAX_LENGTH`` characters is
    the schema's ``maxLength``)."""
    names = "|".join("".join(f"[{c.upper()}{c}]" if c.isalpha() else c for c in name)
                     for name in (*MANUAL_LANGUAGES, *NAME_ALIASES))
    return f"^(?:{_TAG.pattern}|{names})$"


__all__ = ["DEFAULT", "MANUAL_LANGUAGES", "NAME_ALIASES", "RTL", "SHIPPED", "candidates",
           "is_rtl", "normalize", "schema_pattern"]
