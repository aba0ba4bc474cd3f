"""Languages: English and Simplified Chinese, from Babel message catalogues.

The ``.po`` files are compiled in memory at first use, so no binary ``.mo`` file is
kept in the repository and a catalogue edit needs no build step.
"""

from __future__ import annotations

import io
from functools import cache
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import NullTranslations, Translations

from airtime.errors import ValidationFailed

LOCALE_DIR = Path(__file__).resolve().parent / "locale"
DEFAULT_LANGUAGE = "en"
LANGUAGES = {"en": "English", "zh_Hans": "简体中文"}
_ALIASES = {
    "en": "en",
    "zh": "zh_Hans",
    "zh_hans": "zh_Hans",
    "zh_cn": "zh_Hans",
    "zh_sg": "zh_Hans",
    "zh_hans_cn": "zh_Hans",
}
HTML_LANG = {"en": "en", "zh_Hans": "zh-Hans"}


def parse_language(code: str | None) -> str | None:
    """Map ``zh-CN``, ``zh_Hans``, ``en-GB``... to a supported language, or None."""
    if not code:
        return None
    key = code.strip().replace("-", "_").lower()
    if key in _ALIASES:
        return _ALIASES[key]
    base = key.split("_", 1)[0]
    if base == "en":
        return "en"
    if base == "zh" and "hant" not in key and not key.endswith(("_tw", "_hk", "_mo")):
        return "zh_Hans"
    return None


def require_language(code: str) -> str:
    """The supported language for ``code``, or a refusal naming the ones we have."""
    language = parse_language(code)
    if language is None:
        raise ValidationFailed(
            "Unknown language %(code)s; choose one of: %(languages)s.",
            code=code[:20],
            languages=", ".join(LANGUAGES),
            field="language",
        )
    return language


def negotiate(accept_language: str | None) -> str | None:
    """The best supported language in an ``Accept-Language`` header, by its q-values."""
    if not accept_language:
        return None
    weighted: list[tuple[float, int, str]] = []
    for position, part in enumerate(accept_language.split(",")[:20]):
        pieces = part.strip().split(";")
        quality = 1.0
        for piece in pieces[1:]:
            if piece.strip().startswith("q="):
                try:
                    quality = float(piece.strip()[2:])
                except ValueError:
                    quality = 0.0
        language = parse_language(pieces[0])
        if language and quality > 0:
            weighted.append((-quality, position, language))
    return min(weighted)[2] if weighted else None


@cache
def translations(language: str) -> NullTranslations:
    """The gettext translations for a supported language (English is the source text)."""
    po_path = LOCALE_DIR / language / "LC_MESSAGES" / "messages.po"
    if language == DEFAULT_LANGUAGE or not po_path.exists():
        return NullTranslations()
    with po_path.open("rb") as po_file:
        catalog = read_po(po_file, locale=language)
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return Translations(buffer)


def N_(message: str) -> str:
    """Mark text for the catalogue where it is defined; it is translated where it is shown."""
    return message


def gettext(language: str, message: str) -> str:
    return translations(language).gettext(message)
