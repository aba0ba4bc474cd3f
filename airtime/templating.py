"""Jinja2 environments for pages and messages, translated per render (thread-safe)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from airtime.accounts.phone import format_msisdn, mask_msisdn
from airtime.i18n import translations
from airtime.money import format_money


def make_environment(template_dir: Path, *, autoescape: bool) -> Environment:
    environment = Environment(
        loader=FileSystemLoader(template_dir),
        # Plain-text messages (email, SMS) are not HTML; escaping them would corrupt links.
        autoescape=select_autoescape(default=True) if autoescape else False,  # noqa: S701
        undefined=StrictUndefined,
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
        # Templates ship with the code and change only with it (and a restart): without this,
        # every page and every message would stat its template files to see if they changed.
        auto_reload=False,
    )
    environment.filters["msisdn"] = format_msisdn
    environment.filters["masked"] = mask_msisdn
    return environment


def language_context(language: str) -> dict[str, Any]:
    """The gettext callables and money formatter for one render in ``language``."""
    catalogue = translations(language)

    def money(amount_minor: int, currency: str) -> str:
        return format_money(amount_minor, currency, language)

    return {
        "_": catalogue.gettext,
        "gettext": catalogue.gettext,
        "ngettext": catalogue.ngettext,
        "money": money,
        "language": language,
    }
