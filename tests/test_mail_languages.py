"""Mail in the client's language: every shipped mail in every shipped language, received over
real SMTP; the fallbacks; and the language on an order validated like every other field."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator

import pytest

from producers.events import CreateEvent, InvalidEvent, parse_event
from pvekvm import languages
from pvekvm.config import ROOT
from pvekvm.mail import LRI, PDI, render, send, template_variables
from workers.testing.smtp_sink import Received, SmtpSink

TEMPLATES = ROOT / "config" / "mail"
MAILS = ("welcome", "vm_ready", "reinstalled", "password_reset", "backup_restored")
GREETING = {"en": "Hello", "de": "Guten Tag", "fr": "Bonjour", "es": "Hola",
            "ru": "Здравствуйте", "ar": "مرحبًا", "az": "Salam", "ca": "Hola", "zh": "您好",
            "hr": "Poštovani", "cs": "Dobrý den", "da": "Hej", "nl": "Hallo", "et": "Tere",
            "fa": "سلام", "he": "שלום", "hu": "Tisztelt Ügyfelünk", "it": "Gentile cliente",
            "mk": "Почитувани", "nb": "Hei", "pl": "Dzień dobry", "ro": "Bună ziua",
            "sv": "Hej", "tr": "Merhaba", "uk": "Вітаємо"}
VALUES = {"hostname": "web1.example.com", "service_id": 5546, "ip": "203.0.113.10",
          "ipv6": "2001:db8::10", "username": "root", "password": "S3cr€t$pw",
          "template": "debian-12", "backup": "2026-04-10 03:00", "ssh_keys": None,
          "with_password": "", "keys_only": None}  # a password login (steps/notify.py)
FINGERPRINT = "SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s (ada@laptop)"
# keys only (a package without SSH password login): no password, the keys by fingerprint
KEYS_ONLY = {**VALUES, "password": None, "ssh_keys": FINGERPRINT, "with_password": None,
             "keys_only": ""}
ACCESS_MAILS = ("vm_ready", "reinstalled", "password_reset")


@pytest.fixture(scope="module")
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as s:
        yield s


def test_shipped_languages_cover_every_mail_with_the_same_variables():
    assert set(GREETING) == set(languages.SHIPPED) >= set(languages.MANUAL_LANGUAGES.values())
    assert len(languages.MANUAL_LANGUAGES) == 25
    for name in MAILS:
        english = template_variables(TEMPLATES, name)
        for lang in languages.SHIPPED:
            assert (TEMPLATES / lang / f"{name}.txt").is_file() or lang == "en", (lang, name)
            assert template_variables(TEMPLATES, name, lang) == english, (lang, name)


@pytest.mark.parametrize("lang", languages.SHIPPED)
def test_every_mail_is_received_in_the_clients_language(sink: SmtpSink, lang: str):
    english = {name: render(TEMPLATES, name, VALUES).subject for name in MAILS}
    for name in MAILS:
        to = f"{name.replace('_', '-')}.{lang}@example.com"
        send(sink.settings(), to, render(TEMPLATES, name, VALUES, language=lang))
        def to_them(m: Received, to: str = to) -> bool:
            return m.rcpt_tos == [to]
        got = sink.wait_for(to_them)
        assert got.message["Content-Language"] == lang
        plain = got.message.get_body(("plain",))
        assert plain is not None and plain.get_content_charset() == "utf-8"
        assert "web1.example.com" in got.subject
        assert (got.subject == english[name]) == (lang == "en"), (name, got.subject)
        assert got.body.startswith(GREETING[lang]), (name, got.body[:40])
        assert "5546" in got.body and "$" not in got.body.replace("S3cr€t$pw", "")
        assert (got.message.get_content_type() == "text/plain") != languages.is_rtl(lang)
        if name in ("vm_ready", "reinstalled", "password_reset"):
            assert "S3cr€t$pw" in got.body and "203.0.113.10" in got.body


@pytest.mark.parametrize("asked,used", [
    ("de-AT", "de"),      # a regional variant falls back to its language
    ("pt-BR", "en"),      # no Portuguese templates: English
    ("ja", "en"),
    (None, "en"),
    ("ru", "ru"),
    ("no-NO", "nb"),      # Norwegian reads Bokmål
    ("nn", "nb"),
    ("zh-Hans-CN", "zh"),
])
def test_fallback_to_the_language_then_english(asked, used):
    msg = render(TEMPLATES, "welcome", VALUES, language=asked)
    assert msg.language == used
    assert msg.body.startswith(GREETING[used])


def _create(**extra) -> dict:
    return {"version": 1, "type": "create", "idempotency_key": "k1", "service_id": 1,
            "client_id": 2, "product": "vps-small", "email": "a@example.com", **extra}


@pytest.mark.parametrize("given,stored", [
    ("de", "de"), ("DE_at", "de-AT"), ("zh-hans-cn", "zh-Hans-CN"), ("german", "de"),
    ("Russian", "ru"), ("ja", "ja"), ("ukranian", "uk"), ("Ukrainian", "uk"), ("farsi", "fa"),
    ("norwegian", "nb"), ("chinese", "zh"), ("hebrew", "he"),
])
def test_order_language_is_normalised(given, stored):
    event = parse_event(json.dumps(_create(language=given)))
    assert isinstance(event, CreateEvent) and event.language == stored


@pytest.mark.parametrize("given,why", [
    ("de;rm -rf", "not a language tag"), ("d", "not a language tag"), ("../etc", "not a"),
    ("x" * 40, "too long"), (7, "expected string"), ("de-", "not a language tag"),
])
def test_malformed_language_is_refused_with_a_reason(given, why):
    with pytest.raises(InvalidEvent, match=why) as err:
        parse_event(json.dumps(_create(language=given)))
    assert "field 'language'" in err.value.reason


# --------------------------------------------------------------------------- right to left

RTL = [lang for lang in languages.SHIPPED if languages.is_rtl(lang)]
ISOLATED = re.compile(f"{LRI}\\$([a-z_][a-z0-9_]*){PDI}")


def test_the_manuals_right_to_left_languages_are_the_ones_shipped_rtl():
    assert RTL == ["ar", "fa", "he"]
    assert languages.is_rtl("ar-EG") and languages.is_rtl("az-Arab")
    assert not languages.is_rtl("ar-Latn") and not languages.is_rtl("de") \
        and not languages.is_rtl(None)


@pytest.mark.parametrize("lang", RTL)
def test_every_value_in_a_right_to_left_template_is_isolated_left_to_right(lang: str):
    """Host names, addresses and passwords inside Arabic, Hebrew or Farsi text stay in their
    order: every variable of the template sits between U+2066 and U+2069."""
    for name in MAILS:
        source = (TEMPLATES / lang / f"{name}.txt").read_text(encoding="utf-8")
        bare = ISOLATED.sub("", source)
        assert "$" not in bare, (lang, name, bare)
        assert set(ISOLATED.findall(source)) == template_variables(TEMPLATES, name)


@pytest.mark.parametrize("lang", RTL)
def test_a_right_to_left_mail_arrives_with_a_right_to_left_html_part(sink: SmtpSink, lang: str):
    """Over real SMTP: multipart/alternative of the UTF-8 plain text (values isolated, the
    isolates intact through the transfer encoding) and an HTML part whose every container says
    dir="rtl", values in <span dir="ltr"> without invisible characters, everything escaped;
    the RFC 2047 subject decodes to the rendered one; Content-Language everywhere."""
    values = {**VALUES, "password": "p<b>&\"q'"}
    msg = render(TEMPLATES, "vm_ready", values, language=lang)
    head = msg.mime().split(b"\r\n\r\n", 1)[0]
    assert head.isascii() and head.startswith(b"Subject: =?utf-8?b?")  # RFC 2047 words
    to = f"rtl.{lang}@example.com"
    send(sink.settings(), to, msg)
    got = sink.wait_for(lambda m: m.rcpt_tos == [to])
    header = got.message["Subject"]
    assert not header.defects and str(header) == msg.subject
    assert f"{LRI}web1.example.com{PDI}" in got.subject
    assert got.message.get_content_type() == "multipart/alternative"
    assert got.message["Content-Language"] == lang
    plain, rich = got.message.iter_parts()  # the payload's parts, typed
    for part, kind in ((plain, "text/plain"), (rich, "text/html")):
        assert part.get_content_type() == kind and part.get_content_charset() == "utf-8"
        assert part["Content-Language"] == lang
        assert part["Content-Transfer-Encoding"] in ("base64", "quoted-printable")
    text = plain.get_content()
    assert text == msg.body and text.startswith(GREETING[lang])
    assert f"{LRI}203.0.113.10{PDI}" in text and f"{LRI}p<b>&\"q'{PDI}" in text
    page = rich.get_content()
    assert f'<html dir="rtl" lang="{lang}">' in page and '<body dir="rtl"' in page
    assert f'<div dir="rtl" lang="{lang}"' in page  # what webmail keeps of the document
    assert '<span dir="ltr">203.0.113.10</span>' in page
    assert '<span dir="ltr">p&lt;b&gt;&amp;"q\'</span>' in page and "<b>" not in page
    assert LRI not in page and PDI not in page
    lines = [line for line in page.splitlines() if line.startswith("<div")]
    assert lines and all(line.startswith('<div dir="rtl"') for line in lines)
    assert GREETING[lang] in lines[1]


def test_a_left_to_right_mail_stays_one_plain_part(sink: SmtpSink):
    send(sink.settings(), "ltr@example.com", render(TEMPLATES, "vm_ready", VALUES, language="uk"))
    got = sink.wait_for(lambda m: m.rcpt_tos == ["ltr@example.com"])
    assert got.message.get_content_type() == "text/plain"
    assert got.message["Content-Language"] == "uk"
    assert got.message["Content-Transfer-Encoding"] == "base64"  # mostly Cyrillic: shorter
    assert got.body.startswith("Вітаємо") and LRI not in got.body


@pytest.mark.parametrize("lang", languages.SHIPPED)
def test_keys_only_mails_carry_no_password_and_name_the_keys(sink: SmtpSink, lang: str):
    """With SSH password login off, the ready, reinstalled and password reset mails carry no
    password and do not ask to change it (the sentence the password mail ends with is gone);
    they name the keys' fingerprints and say to log in with the key, in the client's language
    (the keys-only sentence is translated: not the English one) and, for a right-to-left one,
    with the fingerprints isolated left-to-right."""
    english = {name: render(TEMPLATES, name, KEYS_ONLY).body.rstrip("\n").split("\n")[-1]
               for name in ACCESS_MAILS}
    for name in ACCESS_MAILS:
        with_password = render(TEMPLATES, name, VALUES, language=lang).body
        keys_only = render(TEMPLATES, name, KEYS_ONLY, language=lang)
        change_sentence = with_password.rstrip("\n").split("\n")[-1]
        assert "S3cr€t$pw" not in keys_only.body and FINGERPRINT in keys_only.body, (lang, name)
        assert change_sentence not in keys_only.body, (lang, name)  # "change the password"
        ends = keys_only.body.rstrip("\n").split("\n")[-1]
        assert "SSH" in ends and ends not in with_password, (lang, name)
        assert (ends == english[name]) == (lang == "en"), (lang, name, ends)
        assert FINGERPRINT not in with_password and "$" not in keys_only.body
        if languages.is_rtl(lang):
            assert f"{LRI}{FINGERPRINT}{PDI}" in keys_only.body, (lang, name)
        to = f"keys.{name.replace('_', '-')}.{lang}@example.com"
        send(sink.settings(), to, keys_only)
        got = sink.wait_for(_to(to))
        assert FINGERPRINT in got.body and "S3cr€t$pw" not in got.body
        assert got.message["Content-Language"] == lang


def _to(address: str) -> Callable[[Received], bool]:
    """The mail sent to ``address`` (a condition bound to it, not to the loop's variable)."""
    return lambda m: m.rcpt_tos == [address]
