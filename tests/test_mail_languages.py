"""Mail in the client's language: every shipped mail in every shipped language, received over
real SMTP; the fallbacks; and the language on an order validated like every other field."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from producers.events import CreateEvent, InvalidEvent, parse_event
from pvekvm import languages
from pvekvm.config import ROOT
from pvekvm.mail import render, send, template_variables
from tests.smtp_sink import SmtpSink

TEMPLATES = ROOT / "config" / "mail"
MAILS = ("welcome", "vm_ready", "reinstalled", "password_reset", "backup_restored")
GREETING = {"en": "Hello", "de": "Guten Tag", "fr": "Bonjour", "es": "Hola",
            "ru": "Здравствуйте"}
VALUES = {"hostname": "web1.example.com", "service_id": 5546, "ip": "203.0.113.10",
          "ipv6": "2001:db8::10", "username": "root", "password": "S3cr€t$pw",
          "template": "debian-12", "backup": "2026-04-10 03:00"}


@pytest.fixture(scope="module")
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as s:
        yield s


def test_shipped_languages_cover_every_mail_with_the_same_variables():
    assert set(GREETING) == set(languages.SHIPPED)
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
        got = sink.wait_for(lambda m, to=to: m.rcpt_tos == [to])
        assert got.message["Content-Language"] == lang
        assert got.message.get_content_charset() == "utf-8"
        assert "web1.example.com" in got.subject
        assert (got.subject == english[name]) == (lang == "en"), (name, got.subject)
        assert got.body.startswith(GREETING[lang]), (name, got.body[:40])
        assert "5546" in got.body and "$" not in got.body.replace("S3cr€t$pw", "")
        if name in ("vm_ready", "reinstalled", "password_reset"):
            assert "S3cr€t$pw" in got.body and "203.0.113.10" in got.body


@pytest.mark.parametrize("asked,used", [
    ("de-AT", "de"),      # a regional variant falls back to its language
    ("pt-BR", "en"),      # no Portuguese templates: English
    ("ja", "en"),
    (None, "en"),
    ("ru", "ru"),
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
    ("Russian", "ru"), ("ja", "ja"),
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
