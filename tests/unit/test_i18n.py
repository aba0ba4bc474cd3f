"""Languages: the catalogues match the code, every message is translated, negotiation works."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import pytest
from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po

from airtime import i18n, i18n_catalog
from airtime.accounts.service import LoginFailed, ResetLinkInvalid
from airtime.errors import AppError, InsufficientFunds, ValidationFailed
from airtime.templating import language_context
from airtime.web.context import environment

TRANSLATED = [language for language in i18n.LANGUAGES if language != i18n.DEFAULT_LANGUAGE]
UPDATE_COMMAND = "uv run python -m airtime.i18n_catalog update"


def _key(message_id: str | tuple[str, ...] | list[str]) -> str:
    return message_id[0] if isinstance(message_id, list | tuple) else message_id


@pytest.fixture(scope="module")
def extracted() -> Catalog:
    return i18n_catalog.extract()


def _ids(catalog: Catalog) -> set[str]:
    return {_key(message.id) for message in catalog if message.id}


def _read(path: Path) -> Catalog:
    with path.open("rb") as po_file:
        return read_po(po_file)


# ---------------------------------------------------------------------------------------------
# The committed catalogues are up to date with the code


def test_error_classes_defined_outside_errors_module_are_keywords() -> None:
    names, _failures = i18n_catalog.error_class_names()
    assert {"AppError", "ValidationFailed", "NotFound", "LoginFailed", "ResetLinkInvalid"} <= set(names)


def test_extraction_finds_pages_messages_and_errors(extracted: Catalog) -> None:
    ids = _ids(extracted)
    assert "Log in" in ids  # page
    assert "Welcome to %(operator)s" in ids  # email
    assert "%(value)s is not a valid email address." in ids  # ValidationFailed
    assert "Wrong email or password." in ids  # LoginFailed, a subclass in accounts.service
    assert "%(num)d day left" in ids  # ngettext
    plural = extracted.get("%(num)d day left")
    assert plural is not None and tuple(plural.id) == ("%(num)d day left", "%(num)d days left")
    assert "python-format" in plural.flags


def test_committed_template_is_up_to_date(extracted: Catalog) -> None:
    committed = _ids(_read(i18n_catalog.POT_PATH))
    assert _ids(extracted) - committed == set(), f"new messages: run `{UPDATE_COMMAND}`"
    assert committed - _ids(extracted) == set(), f"removed messages: run `{UPDATE_COMMAND}`"


@pytest.mark.parametrize("language", TRANSLATED)
def test_no_message_is_missing_from_the_catalogue(extracted: Catalog, language: str) -> None:
    catalog = i18n_catalog.read_catalog(language)
    assert catalog is not None, f"no catalogue for {language}: run `{UPDATE_COMMAND}`"
    missing = _ids(extracted) - _ids(catalog)
    assert missing == set(), f"run `{UPDATE_COMMAND}` and translate: {sorted(missing)}"
    obsolete = _ids(catalog) - _ids(extracted)
    assert obsolete == set(), f"run `{UPDATE_COMMAND}` to drop: {sorted(obsolete)}"


# ---------------------------------------------------------------------------------------------
# Every entry is translated and keeps its placeholders


@pytest.mark.parametrize("language", TRANSLATED)
def test_every_entry_is_translated_with_the_same_placeholders(language: str) -> None:
    catalog = i18n_catalog.read_catalog(language)
    assert catalog is not None
    if language == "zh_Hans":
        assert catalog.num_plurals == 1
    problems = []
    for message in catalog:
        if not message.id:
            continue
        ids = i18n_catalog.message_ids(message)
        strings = i18n_catalog.message_strings(message)
        if message.fuzzy or not all(string.strip() for string in strings):
            problems.append(f"untranslated: {ids[0]!r}")
            continue
        if len(strings) != catalog.num_plurals and message.pluralizable:
            problems.append(f"{len(strings)} plural forms for {ids[0]!r}")
        for msgid in ids:
            if i18n_catalog.placeholders(msgid) != i18n_catalog.placeholders(ids[0]):
                problems.append(f"singular and plural differ: {ids!r}")
        for string in strings:
            if i18n_catalog.placeholders(string) != i18n_catalog.placeholders(ids[-1]):
                problems.append(f"placeholders differ: {ids[0]!r} -> {string!r}")
    assert problems == []


def test_translations_are_chinese() -> None:
    catalog = i18n_catalog.read_catalog("zh_Hans")
    assert catalog is not None
    for message in catalog:
        if message.id:
            text = "".join(i18n_catalog.message_strings(message))
            assert any("\u4e00" <= char <= "\u9fff" for char in text), message.id


def test_placeholders_are_counted_with_their_conversion() -> None:
    assert i18n_catalog.placeholders("%(a)s and %(b)d, 100%%") == {"%(a)s": 1, "%(b)d": 1, "%%": 1}
    assert i18n_catalog.placeholders("%(a)s") != i18n_catalog.placeholders("%(a)d")


def test_check_finds_nothing_wrong() -> None:
    assert i18n_catalog.command_check() == 0


# ---------------------------------------------------------------------------------------------
# Merging keeps translations, adds new entries untranslated, drops removed ones


def test_merge_keeps_translations_and_never_guesses() -> None:
    existing = Catalog(locale="zh_Hans", fuzzy=False)
    existing.add("Log in", "登录")
    existing.add("Log out", "退出登录")
    template = i18n_catalog.new_template()
    template.add("Log in")
    # Close to the removed "Log out": fuzzy matching would offer its translation as a guess.
    template.add("Log out now")

    merged, dropped = i18n_catalog.merge(template, existing, "zh_Hans")

    assert merged.get("Log in").string == "登录"
    assert not merged.get("Log out now").string
    assert not merged.get("Log out now").fuzzy
    assert dropped == ["Log out"]
    assert 'Log out"' not in i18n_catalog.render_po(merged).decode()


def test_merge_creates_a_catalogue_with_one_plural_form_for_chinese() -> None:
    template = i18n_catalog.new_template()
    template.add(("%(num)d day left", "%(num)d days left"))
    merged, dropped = i18n_catalog.merge(template, None, "zh_Hans")
    written = i18n_catalog.render_po(merged)
    assert b"nplurals=1; plural=0;" in written
    assert dropped == []
    assert read_po(io.BytesIO(written)).num_plurals == 1


def test_write_if_changed_ignores_header_dates(tmp_path: Path) -> None:
    path = tmp_path / "messages.pot"
    first = b'msgid ""\nmsgstr ""\n"POT-Creation-Date: 2020-01-01 00:00+0000\\n"\n\nmsgid "a"\nmsgstr ""\n'
    later = first.replace(b"2020", b"2030")
    assert i18n_catalog.write_if_changed(path, first)
    assert not i18n_catalog.write_if_changed(path, later)
    assert path.read_bytes() == first
    assert i18n_catalog.write_if_changed(path, later + b'\nmsgid "b"\nmsgstr ""\n')


def test_text_built_at_run_time_is_reported() -> None:
    source = (
        "raise ValidationFailed(f'At most {limit} items')\n"
        "raise NotFound('No plan %(plan)s.', plan=code)\n"
        "raise Conflict('Used by ' + name)\n"
        "text = gettext(language, self.message)\n"
        "raise AppError(str(detail))\n"
    )
    keywords = i18n_catalog.keywords_for_python(["AppError", "Conflict", "NotFound", "ValidationFailed"])
    calls = i18n_catalog.untranslatable_in_python(source, "airtime/x.py", keywords)
    assert [(call.lineno, call.function) for call in calls] == [
        (1, "ValidationFailed"),
        (3, "Conflict"),
        (5, "AppError"),
    ]
    assert "f-string" in calls[0].reason
    assert str(calls[0]).startswith("airtime/x.py:1: ValidationFailed(...)")


def test_template_text_from_the_context_is_reported() -> None:
    source = "{{ _('Balance') }}\n{{ _(item.description) }}\n{{ ngettext('%(num)d day', '%(num)d days', n) }}"
    calls = i18n_catalog.untranslatable_in_template(source, "airtime/web/templates/x.html")
    assert [(call.lineno, call.function) for call in calls] == [(2, "_")]


def test_every_reported_call_points_into_the_package() -> None:
    calls = i18n_catalog.untranslatable_calls()
    assert all(call.path.startswith("airtime/") and call.lineno > 0 for call in calls)


# ---------------------------------------------------------------------------------------------
# Choosing the language


@pytest.mark.parametrize(
    ("code", "language"),
    [
        ("zh-CN", "zh_Hans"),
        ("zh_Hans", "zh_Hans"),
        ("zh-Hans-CN", "zh_Hans"),
        ("zh-SG", "zh_Hans"),
        ("zh", "zh_Hans"),
        ("zh-TW", None),
        ("zh-HK", None),
        ("zh-Hant", None),
        ("en", "en"),
        ("en-GB", "en"),
        ("EN-us", "en"),
        ("fr", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_language(code: str | None, language: str | None) -> None:
    assert i18n.parse_language(code) == language


@pytest.mark.parametrize(
    ("header", "language"),
    [
        ("zh-CN,zh;q=0.9,en;q=0.8", "zh_Hans"),
        ("en-GB,en;q=0.9,zh-CN;q=0.8", "en"),
        ("en;q=0.5, zh-CN;q=0.9", "zh_Hans"),
        ("zh-TW,zh-HK;q=0.9,en;q=0.8", "en"),
        ("zh-TW, zh;q=0.5", "zh_Hans"),
        ("zh-CN;q=0, en;q=0.1", "en"),
        ("fr-FR, de;q=0.5", None),
        ("en;q=bogus, zh-CN;q=0.2", "zh_Hans"),
        ("", None),
        (None, None),
    ],
)
def test_negotiate_respects_q_values(header: str | None, language: str | None) -> None:
    assert i18n.negotiate(header) == language


def test_require_language_accepts_variants() -> None:
    assert i18n.require_language("zh-CN") == "zh_Hans"
    assert i18n.require_language("en-GB") == "en"


def test_require_language_refuses_unknown_language() -> None:
    with pytest.raises(ValidationFailed) as raised:
        i18n.require_language("fr")
    assert raised.value.params["field"] == "language"
    assert raised.value.detail == "Unknown language fr; choose one of: en, zh_Hans."
    assert raised.value.localized("zh_Hans") == "不支持的语言 fr，请从以下语言中选择：en, zh_Hans。"


# ---------------------------------------------------------------------------------------------
# Rendering in Chinese


def test_gettext_translates_to_chinese_and_leaves_english_alone() -> None:
    assert i18n.gettext("zh_Hans", "Log in") == "登录"
    assert i18n.gettext("en", "Log in") == "Log in"
    assert i18n.gettext("zh_Hans", "A message nobody wrote") == "A message nobody wrote"


@pytest.mark.parametrize("days", [0, 1, 5])
def test_plural_messages_have_one_chinese_form(days: int) -> None:
    catalogue = i18n.translations("zh_Hans")
    text = catalogue.ngettext("%(num)d day left", "%(num)d days left", days) % {"num": days}
    assert text == f"剩余 {days} 天"


def _render_page(template: str, language: str, **context: object) -> str:
    values = {
        "request": SimpleNamespace(query_params={}),
        "customer": None,
        "csrf_field": "csrf_token",
        "csrf_token": "token",
        "languages": i18n.LANGUAGES,
        "html_lang": i18n.HTML_LANG[language],
        "operator_name": "Airtime",
        "show_outbox": True,
        "path": "/login",
        **language_context(language),
        **context,
    }
    return environment.get_template(template).render(values)


def test_login_page_renders_in_chinese() -> None:
    html = _render_page("login.html", "zh_Hans", email="", error=None, next="/lines")
    assert '<html lang="zh-Hans">' in html
    assert "<h1>登录</h1>" in html
    assert "忘记密码？" in html
    assert "Forgot your password?" not in html


def test_login_page_shows_a_localized_error() -> None:
    error = LoginFailed("Wrong email or password.")
    html = _render_page("login.html", "zh_Hans", email="a@example.com", error=error, next="/lines")
    assert "邮箱或密码错误。" in html
    english = _render_page("login.html", "en", email="a@example.com", error=error, next="/lines")
    assert "Wrong email or password." in english


def test_email_renders_in_chinese() -> None:
    from airtime.notifications.service import render

    subject, body = render("welcome", "zh_Hans", {"operator_name": "Airtime", "link": "https://x.test/login"})
    assert subject == "欢迎使用 Airtime"
    assert body.startswith("您好：")
    assert "https://x.test/login" in body


# ---------------------------------------------------------------------------------------------
# Errors in the person's language


def test_app_error_localized_fills_placeholders() -> None:
    error = ValidationFailed("%(value)s is not a valid email address.", value="not-an-email", field="email")
    assert error.detail == "not-an-email is not a valid email address."
    assert error.localized("en") == "not-an-email is not a valid email address."
    assert error.localized("zh_Hans") == "not-an-email 不是有效的邮箱地址。"


def test_app_error_with_several_placeholders() -> None:
    error = InsufficientFunds(
        "Insufficient funds: %(available)s available, %(needed)s needed.", available="£1.00", needed="£5.00"
    )
    assert error.localized("zh_Hans") == "余额不足：可用 £1.00，需要 £5.00。"


def test_app_error_without_params_and_unknown_text() -> None:
    assert ResetLinkInvalid("This reset link has expired. Ask for a new one.").localized("zh_Hans") == (
        "此重置链接已过期，请重新获取。"
    )
    assert AppError("Untranslated text").localized("zh_Hans") == "Untranslated text"
