"""Message catalogues: find every translatable string and merge it into each language.

    uv run python -m airtime.i18n_catalog extract   # write airtime/locale/messages.pot
    uv run python -m airtime.i18n_catalog update    # extract, then merge into every .po
    uv run python -m airtime.i18n_catalog check     # exit 1 if a catalogue is stale or incomplete

Translatable strings are (a) the first argument of ``_()``, ``gettext()`` and the two
arguments of ``ngettext()`` in Python code, pages and messages, and (b) the first positional
argument of every ``AppError`` subclass, which is English source text translated by
``AppError.localized``. ``update`` keeps existing translations, adds new entries
untranslated (no fuzzy guesses: a wrong guess would ship unnoticed) and drops entries whose
text is no longer in the code; git keeps them if they come back.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import io
import pkgutil
import re
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from babel.messages.catalog import Catalog, Message
from babel.messages.extract import extract_from_dir
from babel.messages.pofile import read_po, write_po
from jinja2 import Environment, TemplateSyntaxError
from jinja2.ext import extract_from_ast

import airtime
from airtime.errors import AppError
from airtime.i18n import DEFAULT_LANGUAGE, LANGUAGES, LOCALE_DIR

PACKAGE_DIR = Path(airtime.__file__).resolve().parent
POT_PATH = LOCALE_DIR / "messages.pot"
DOMAIN = "messages"
# Modules never imported to discover error classes: the CLI builds consoles and the
# migrations run Alembic at import. Their classes are still found by reading the source.
SKIPPED_MODULES = ("airtime.cli", "airtime.migrations", "airtime.i18n_catalog", "airtime.__main__")
# Paths are relative to airtime/, matched in order; the first match decides.
JINJA_EXTRACTOR = "jinja2.ext:babel_extract"
METHOD_MAP = [
    ("migrations/**", "ignore"),
    ("**.py", "python"),
    ("**/templates/**.html", JINJA_EXTRACTOR),
    ("**/templates/**.txt", JINJA_EXTRACTOR),
]
# Template syntax errors must stop the extraction: silently skipping a template would
# drop its translations at the next update.
JINJA_OPTIONS = {"extensions": "jinja2.ext.i18n", "silent": "false", "trim_blocks": "true"}
# Arity-keyed specs: in Python code ``gettext`` is ``airtime.i18n.gettext(language, message)``,
# so a two-argument call carries its message second; a one-argument call is the usual one.
PYTHON_KEYWORDS: dict[str, Any] = {
    "_": None,
    "gettext": {1: (1,), 2: (2,)},
    "ngettext": (1, 2),
    # For text written in one place and translated in another (a transfer description,
    # say): ``N_ = lambda text: text`` marks it for extraction without translating it.
    "N_": None,
}
JINJA_KEYWORDS: dict[str, Any] = {"_": None, "gettext": None, "ngettext": (1, 2)}
COMMENT_TAGS = ("Translators:",)
PLACEHOLDER_PATTERN = re.compile(r"%(?:\([^)]*\))?[#0 +-]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[diouxXeEfFgGcrsa%]")
# Header lines that change on every run; ignored when deciding whether a file changed.
VOLATILE_HEADER = re.compile(
    rb'^"(?:POT-Creation-Date|PO-Revision-Date|Generated-By): .*\\n"\n', re.MULTILINE
)
# Header comments are re-wrapped at 76 columns when written, so their lines stay shorter.
POT_HEADER_COMMENT = (
    "# Airtime messages: English source text of pages, emails, SMS, errors.\n"
    "# Made by `uv run python -m airtime.i18n_catalog update`; do not edit."
)
PO_HEADER_COMMENT = (
    "# Airtime messages in {name} ({language}).\n"
    "# Merged by `uv run python -m airtime.i18n_catalog update`. Translate\n"
    "# each empty msgstr; keep every %(name)s placeholder of the msgid."
)


@dataclass(frozen=True)
class UntranslatableCall:
    """A translation call whose text is built at run time, so no catalogue can hold it."""

    path: str
    lineno: int
    function: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.lineno}: {self.function}(...) {self.reason}"


# --- error classes ----------------------------------------------------------------------


def _import_airtime_modules() -> list[str]:
    """Import every airtime module except the skipped ones; the failures, as messages."""
    failures: list[str] = []

    def walk(path: list[str], prefix: str) -> None:
        for module in pkgutil.iter_modules(path, prefix):
            if module.name.startswith(SKIPPED_MODULES):
                continue
            try:
                imported = importlib.import_module(module.name)
            except Exception as exc:  # noqa: BLE001 - a broken module must not stop extraction
                failures.append(f"{module.name}: {type(exc).__name__}: {exc}")
                continue
            if module.ispkg:
                walk(list(imported.__path__), module.name + ".")

    walk(list(airtime.__path__), "airtime.")
    return failures


def _subclass_names(cls: type[AppError]) -> Iterator[str]:
    for subclass in cls.__subclasses__():
        # Only the product's own classes: ones a test defines must not change the catalogue.
        if subclass.__module__.startswith("airtime."):
            yield subclass.__name__
        yield from _subclass_names(subclass)


def _python_files() -> list[Path]:
    return sorted(path for path in PACKAGE_DIR.rglob("*.py") if "migrations" not in path.parts)


def _base_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def _subclass_names_in_source(known: set[str]) -> set[str]:
    """Class names deriving from ``known`` ones, read from the source without importing it.

    This catches subclasses in modules that are skipped or fail to import (a colleague's
    half-written file), whose messages would otherwise be dropped as obsolete.
    """
    bases: dict[str, set[str]] = {}
    for path in _python_files():
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                names = {name for base in node.bases if (name := _base_name(base))}
                bases.setdefault(node.name, set()).update(names)
    found = set(known)
    changed = True
    while changed:
        changed = False
        for name, parents in bases.items():
            if name not in found and parents & found:
                found.add(name)
                changed = True
    return found


def error_class_names() -> tuple[list[str], list[str]]:
    """The names of ``AppError`` and all its subclasses, and the modules that failed to import."""
    failures = _import_airtime_modules()
    names = {AppError.__name__, *_subclass_names(AppError)}
    return sorted(_subclass_names_in_source(names)), failures


# --- extraction -------------------------------------------------------------------------


def keywords_for_python(error_names: list[str]) -> dict[str, Any]:
    return {**PYTHON_KEYWORDS, **dict.fromkeys(error_names, (1,))}


def _relative(filename: str) -> str:
    """``airtime/...`` for a path relative to the package, as catalogues and reports show it."""
    return (Path(PACKAGE_DIR.name) / filename).as_posix()


def _relative_path(path: Path) -> str:
    return _relative(str(path.relative_to(PACKAGE_DIR)))


def new_template() -> Catalog:
    return Catalog(
        domain=DOMAIN,
        header_comment=POT_HEADER_COMMENT,
        project="Airtime",
        version=airtime.__version__,
        msgid_bugs_address="",
        charset="utf-8",
        fuzzy=False,
    )


def extract(error_names: list[str] | None = None) -> Catalog:
    """Every translatable message in the code and templates, as a template catalogue."""
    if error_names is None:
        error_names, failures = error_class_names()
        for failure in failures:
            print(f"warning: could not import {failure}", file=sys.stderr)
    python_keywords = keywords_for_python(error_names)
    catalog = new_template()
    for method in ("python", JINJA_EXTRACTOR):
        # One pass per method, so each gets its own keywords: ``gettext`` differs.
        method_map = [(pattern, m if m == method else "ignore") for pattern, m in METHOD_MAP]
        keywords = python_keywords if method == "python" else JINJA_KEYWORDS
        options_map = {pattern: JINJA_OPTIONS for pattern, m in METHOD_MAP if m == JINJA_EXTRACTOR}
        for filename, lineno, message, comments, context in extract_from_dir(
            PACKAGE_DIR,
            method_map=method_map,
            options_map=options_map,
            keywords=keywords,
            comment_tags=COMMENT_TAGS,
            strip_comment_tags=True,
        ):
            catalog.add(
                message, None, [(_relative(filename), lineno)], auto_comments=comments, context=context
            )
    return catalog


# --- run-time text that cannot be extracted ---------------------------------------------


def untranslatable_in_python(source: str, path: str, keywords: dict[str, Any]) -> list[UntranslatableCall]:
    """Calls in Python ``source`` whose message is not a literal the extractor can read."""
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as exc:
        return [UntranslatableCall(path, exc.lineno or 0, "module", f"does not parse: {exc.msg}")]
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or (function := _base_name(node.func)) not in keywords:
            continue
        if not node.args or isinstance(node.args[0], ast.Starred):
            continue
        spec = keywords[function]
        if isinstance(spec, dict):
            spec = spec.get(len(node.args))
        for index in spec or (1,):
            if not isinstance(index, int) or index > len(node.args):
                continue
            argument = node.args[index - 1]
            if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                continue
            # A bare name passes on text written (and extracted) somewhere else.
            if isinstance(argument, ast.Name | ast.Attribute):
                continue
            if isinstance(argument, ast.JoinedStr):
                reason = "is given an f-string; use %(name)s placeholders and keyword params"
            elif isinstance(argument, ast.BinOp):
                reason = "is given text built with an operator; pass the literal and params"
            else:
                reason = "is given text computed at run time"
            found.append(UntranslatableCall(path, node.lineno, function, reason))
    return found


def _template_files() -> list[Path]:
    return sorted(
        path
        for path in PACKAGE_DIR.rglob("*")
        if "templates" in path.relative_to(PACKAGE_DIR).parts and path.suffix in {".html", ".txt"}
    )


def untranslatable_in_template(source: str, path: str) -> list[UntranslatableCall]:
    """Calls in a Jinja2 template whose message comes from the page context, not a literal."""
    environment = Environment(extensions=["jinja2.ext.i18n"], autoescape=True)
    try:
        tree = environment.parse(source)
    except TemplateSyntaxError as exc:
        return [UntranslatableCall(path, exc.lineno, "template", f"does not parse: {exc.message}")]
    found = []
    for lineno, function, strings in extract_from_ast(tree, tuple(JINJA_KEYWORDS)):
        arguments = strings if isinstance(strings, tuple) else (strings,)
        needed = arguments[:2] if function == "ngettext" else arguments[:1]
        if any(argument is None for argument in needed):
            found.append(
                UntranslatableCall(
                    path, lineno, function, "is given a value from the page context, not a literal"
                )
            )
    return found


def untranslatable_calls(error_names: list[str] | None = None) -> list[UntranslatableCall]:
    """Translation calls whose text no catalogue can contain, for people to fix."""
    if error_names is None:
        error_names, _failures = error_class_names()
    keywords = keywords_for_python(error_names)
    calls = [
        call
        for path in _python_files()
        if path != Path(__file__).resolve()
        for call in untranslatable_in_python(path.read_text(encoding="utf-8"), _relative_path(path), keywords)
    ]
    for path in _template_files():
        calls.extend(untranslatable_in_template(path.read_text(encoding="utf-8"), _relative_path(path)))
    return sorted(calls, key=lambda call: (call.path, call.lineno))


# --- catalogue files --------------------------------------------------------------------


def po_path(language: str) -> Path:
    return LOCALE_DIR / language / "LC_MESSAGES" / f"{DOMAIN}.po"


def translated_languages() -> list[str]:
    return [language for language in LANGUAGES if language != DEFAULT_LANGUAGE]


def render_po(catalog: Catalog) -> bytes:
    buffer = io.BytesIO()
    # No line numbers and sorted by msgid: an edit elsewhere in a file does not rewrite
    # the catalogue, so parallel changes merge cleanly.
    write_po(buffer, catalog, sort_output=True, include_lineno=False, ignore_obsolete=True)
    return buffer.getvalue()


def write_if_changed(path: Path, content: bytes) -> bool:
    """Write ``content`` unless only the dates in the header differ; True if written."""
    if path.exists() and VOLATILE_HEADER.sub(b"", path.read_bytes()) == VOLATILE_HEADER.sub(b"", content):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return True


def read_catalog(language: str) -> Catalog | None:
    path = po_path(language)
    if not path.exists():
        return None
    with path.open("rb") as po_file:
        return read_po(po_file, locale=language, domain=DOMAIN)


def merge(template: Catalog, existing: Catalog | None, language: str) -> tuple[Catalog, list[str]]:
    """``existing`` (or a new catalogue) updated to ``template``, and the msgids it dropped."""
    catalog = existing
    if catalog is None:
        catalog = Catalog(
            locale=language,
            domain=DOMAIN,
            header_comment=PO_HEADER_COMMENT.format(name=LANGUAGES[language], language=language),
            project="Airtime",
            version=airtime.__version__,
            msgid_bugs_address="",
            language_team=LANGUAGES[language],
            charset="utf-8",
            fuzzy=False,
        )
    catalog.update(template, no_fuzzy_matching=True, update_header_comment=False)
    dropped = sorted(str(key) for key in catalog.obsolete)
    catalog.obsolete.clear()
    return catalog, dropped


def message_ids(message: Message) -> tuple[str, ...]:
    return tuple(message.id) if isinstance(message.id, list | tuple) else (message.id,)


def message_strings(message: Message) -> tuple[str, ...]:
    return tuple(message.string) if isinstance(message.string, list | tuple) else (message.string or "",)


def placeholders(text: str) -> Counter[str]:
    """The %-format placeholders in ``text`` (``%%`` included), counted."""
    return Counter(match.group(0) for match in PLACEHOLDER_PATTERN.finditer(text))


def problems(template: Catalog, language: str) -> list[str]:
    """What is wrong with one language's catalogue against ``template``, in words."""
    catalog = read_catalog(language)
    if catalog is None:
        return [f"{po_path(language)} does not exist"]
    found: list[str] = []
    for message in template:
        if not message.id:
            continue
        translated = catalog.get(message.id, context=message.context)
        if translated is None:
            found.append(f"{language}: missing {message.id!r}")
    for message in catalog:
        if not message.id:
            continue
        if template.get(message.id, context=message.context) is None:
            found.append(f"{language}: obsolete {message.id!r}")
        strings = message_strings(message)
        if message.fuzzy or not all(string.strip() for string in strings):
            found.append(f"{language}: untranslated {message.id!r}")
            continue
        expected = placeholders(message_ids(message)[-1])
        for string in strings:
            if placeholders(string) != expected:
                found.append(f"{language}: placeholders differ in {string!r} for {message.id!r}")
    return found


# --- command line -----------------------------------------------------------------------


def command_extract() -> Catalog:
    template = extract()
    written = write_if_changed(POT_PATH, render_po(template))
    print(f"{POT_PATH.relative_to(PACKAGE_DIR.parent)}: {len(template)} messages", end="")
    print(" (written)" if written else " (unchanged)")
    return template


def command_update() -> None:
    template = command_extract()
    for language in translated_languages():
        catalog, dropped = merge(template, read_catalog(language), language)
        path = po_path(language)
        written = write_if_changed(path, render_po(catalog))
        untranslated = sum(1 for message in catalog if message.id and not all(message_strings(message)))
        print(
            f"{path.relative_to(PACKAGE_DIR.parent)}: {len(catalog)} messages, {untranslated} to translate,"
            f" {len(dropped)} dropped" + (" (written)" if written else " (unchanged)")
        )
        for msgid in dropped:
            print(f"  dropped: {msgid}")


def command_check() -> int:
    error_names, failures = error_class_names()
    for failure in failures:
        print(f"warning: could not import {failure}", file=sys.stderr)
    template = extract(error_names)
    found = [found for language in translated_languages() for found in problems(template, language)]
    for line in found:
        print(line)
    return 1 if found else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m airtime.i18n_catalog", description=__doc__.split("\n")[0]
    )
    parser.add_argument("command", choices=["extract", "update", "check"])
    arguments = parser.parse_args(argv)
    if arguments.command == "extract":
        command_extract()
    elif arguments.command == "update":
        command_update()
    status = command_check() if arguments.command == "check" else 0
    for call in untranslatable_calls():
        print(f"warning: {call}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
