"""Mail: rendering the shipped templates and sending them through a real SMTP server."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword

from pvekvm.config import ROOT, SmtpSettings
from pvekvm.mail import MailError, TemplateError, render, send, template_variables
from workers.testing.smtp_sink import Received, SmtpSink

TEMPLATES = ROOT / "config" / "mail"
ACCESS = {"hostname": "web1.example.com", "service_id": 5546, "ip": "203.0.113.10",
          "ipv6": "2001:db8::10", "username": "root", "password": "S3cr€t$pw",
          "template": "debian-12", "backup": "2026-04-10 03:00", "ssh_keys": None,
          "with_password": "", "keys_only": None}  # a password login (steps/notify.py)


@pytest.fixture()
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as s:
        yield s


def test_every_shipped_template_renders_with_its_variables() -> None:
    for name in ("welcome", "vm_ready", "backup_restored", "password_reset", "reinstalled"):
        needed = template_variables(TEMPLATES, name)
        assert {"hostname", "service_id"} <= needed, name
        msg = render(TEMPLATES, name, {k: ACCESS[k] for k in needed})
        assert "web1.example.com" in msg.subject
        body = msg.body
        assert "$" not in body.replace("S3cr€t$pw", ""), (name, body)
        assert "5546" in body


def test_vm_ready_sent_and_received(sink: SmtpSink) -> None:
    msg = render(TEMPLATES, "vm_ready", ACCESS)
    send(sink.settings(sender="noc@provider.example"), "client@example.com", msg)

    got = sink.wait_for(lambda m: "client@example.com" in m.rcpt_tos)
    assert got.mail_from == "noc@provider.example"
    assert got.message["To"] == "client@example.com"
    assert got.message["From"] == "noc@provider.example"
    assert got.message["Message-ID"] and got.message["Date"]
    assert got.subject == "Your virtual server web1.example.com is ready"
    assert got.message.get_content_charset() == "utf-8"
    for value in ("203.0.113.10", "2001:db8::10", "root", "S3cr€t$pw", "5546"):
        assert value in got.body


def test_optional_none_value_drops_its_line(sink: SmtpSink) -> None:
    msg = render(TEMPLATES, "vm_ready", {**ACCESS, "ipv6": None})
    send(sink.settings(), "client@example.com", msg)
    body = sink.wait_for().body
    assert "IPv6" not in body
    assert "IPv4 address: 203.0.113.10" in body


def test_welcome_received_with_hostname_and_service(sink: SmtpSink) -> None:
    send(sink.settings(), "a@example.com", render(TEMPLATES, "welcome", ACCESS))
    got = sink.wait_for()
    assert "web1.example.com" in got.subject
    assert "Service ID: 5546" in got.body


def test_what_is_received_is_exactly_what_was_rendered(sink: SmtpSink, tmp_path: Path) -> None:
    """Subject and body come out of a real SMTP server and the email package's parser as they
    were rendered: a non-ASCII subject, long lines, '=', a leading '.', trailing spaces."""
    long_line = "Ihr Server " + "ä" * 50 + " = bereit " + "x" * 80
    (tmp_path / "odd.txt").write_text(
        "Subject: Ihr Server $hostname ist bereit — grüße\n\n"
        f"{long_line}\n.\n. leading dot\ntrailing spaces   \n$hostname\n", encoding="utf-8")
    for name, values in (("odd", {"hostname": "web1.example.com"}), ("welcome", ACCESS)):
        rendered = render(TEMPLATES if name == "welcome" else tmp_path, name, values)
        to = f"{name}@example.com"
        send(sink.settings(), to, rendered)
        def to_them(m: Received, to: str = to) -> bool:
            return m.rcpt_tos == [to]
        got = sink.wait_for(to_them)
        assert got.subject == rendered.subject
        assert got.body.replace("\r\n", "\n") == rendered.body
        assert got.message.get_content_charset() == "utf-8"
        assert got.message["Content-Language"] == "en"


def test_missing_variable_raises_naming_it() -> None:
    context = {k: v for k, v in ACCESS.items() if k != "password"}
    with pytest.raises(TemplateError, match="missing variable 'password'"):
        render(TEMPLATES, "vm_ready", context)


def test_template_format_and_name_errors(tmp_path: Path) -> None:
    (tmp_path / "nosubject.txt").write_text("Hello $x\n")
    (tmp_path / "noblank.txt").write_text("Subject: hi\nbody\n")
    (tmp_path / "badph.txt").write_text("Subject: hi\n\ncost ${oops\n")
    with pytest.raises(TemplateError, match="Subject"):
        render(tmp_path, "nosubject", {"x": 1})
    with pytest.raises(TemplateError, match="blank line"):
        render(tmp_path, "noblank", {})
    with pytest.raises(TemplateError, match="malformed"):
        render(tmp_path, "badph", {})
    with pytest.raises(TemplateError, match="not found"):
        render(tmp_path, "absent", {})
    with pytest.raises(TemplateError, match="invalid template name"):
        render(tmp_path, "../etc/passwd", {})


def test_header_injection_through_subject_is_refused() -> None:
    with pytest.raises(TemplateError, match="line break"):
        render(TEMPLATES, "welcome", {**ACCESS, "hostname": "x\nBcc: victim@example.com"})


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_server_down_is_transient() -> None:
    smtp = SmtpSettings(host="127.0.0.1", port=_closed_port(), timeout=2.0)
    with pytest.raises(MailError) as err:
        send(smtp, "client@example.com", render(TEMPLATES, "welcome", ACCESS))
    assert err.value.transient is True


def test_silent_server_times_out_transient() -> None:
    with socket.socket() as listener:  # accepts (backlog) but never sends a greeting
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        smtp = SmtpSettings(host="127.0.0.1", port=listener.getsockname()[1], timeout=0.5)
        with pytest.raises(MailError) as err:
            send(smtp, "client@example.com", render(TEMPLATES, "welcome", ACCESS))
    assert err.value.transient is True


def test_550_on_data_is_permanent() -> None:
    with SmtpSink(data_reply="550 5.7.1 Message rejected as spam") as sink:
        with pytest.raises(MailError) as err:
            send(sink.settings(), "client@example.com", render(TEMPLATES, "welcome", ACCESS))
        assert sink.messages == []
    assert err.value.transient is False
    assert err.value.smtp_code == 550
    assert "rejected as spam" in str(err.value)


def test_550_on_recipient_is_permanent() -> None:
    with SmtpSink(rcpt_reply="550 5.1.1 No such user") as sink, pytest.raises(MailError) as err:
        send(sink.settings(), "nobody@example.com", render(TEMPLATES, "welcome", ACCESS))
    assert err.value.transient is False
    assert err.value.smtp_code == 550


def test_451_is_transient() -> None:
    with SmtpSink(data_reply="451 4.3.0 Try again later") as sink, \
            pytest.raises(MailError) as err:
        send(sink.settings(), "client@example.com", render(TEMPLATES, "welcome", ACCESS))
    assert err.value.transient is True
    assert err.value.smtp_code == 451


def test_starttls_unsupported_is_permanent(sink: SmtpSink) -> None:
    with pytest.raises(MailError) as err:
        send(sink.settings(starttls=True), "a@example.com", render(TEMPLATES, "welcome", ACCESS))
    assert err.value.transient is False


def test_bad_recipient_address_is_permanent_and_nothing_sent(sink: SmtpSink) -> None:
    with pytest.raises(MailError) as err:
        send(sink.settings(), "a@example.com\r\nRCPT TO:<x@evil>", render(
            TEMPLATES, "welcome", ACCESS))
    assert err.value.transient is False
    assert sink.messages == []


def test_sink_wait_for_times_out_with_what_arrived(sink: SmtpSink) -> None:
    send(sink.settings(), "a@example.com", render(TEMPLATES, "welcome", ACCESS))
    sink.wait_for(lambda m: m.rcpt_tos == ["a@example.com"])
    with pytest.raises(TimeoutError, match="a@example.com"):
        sink.wait_for(lambda m: m.rcpt_tos == ["b@example.com"], timeout=0.2)


def test_sink_wakes_waiter_from_another_thread(sink: SmtpSink) -> None:
    msg = render(TEMPLATES, "welcome", ACCESS)
    sender = threading.Thread(target=send, args=(sink.settings(), "late@example.com", msg))
    sender.start()
    got = sink.wait_for(lambda m: m.rcpt_tos == ["late@example.com"], timeout=5)
    sender.join(5)
    assert got.subject.startswith("Your virtual server")


# handled=False below: aiosmtpd then answers 535 itself (with the default it sends nothing).
AUTH_SINK: dict[str, Any] = {"authenticator": None, "auth_require_tls": False,
                             "auth_required": True}
auth_warning = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")


def _authenticator(server, session, envelope, mechanism, auth_data) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        b"mailer", b"pa55")
    return AuthResult(success=ok, handled=False)


AUTH_SINK["authenticator"] = _authenticator


@auth_warning
def test_login_then_send() -> None:
    with SmtpSink(**AUTH_SINK) as s:
        send(s.settings(user="mailer", password="pa55"), "a@example.com",
             render(TEMPLATES, "password_reset", ACCESS))
        got = s.wait_for()
    assert "New password: S3cr€t$pw" in got.body


@auth_warning
def test_wrong_password_is_permanent() -> None:
    with SmtpSink(**AUTH_SINK) as s:
        with pytest.raises(MailError) as err:
            send(s.settings(user="mailer", password="wrong"), "a@example.com",
                 render(TEMPLATES, "welcome", ACCESS))
        assert s.messages == []
    assert err.value.transient is False
    assert err.value.smtp_code == 535


@auth_warning
def test_auth_required_but_not_configured_is_permanent() -> None:
    with SmtpSink(**AUTH_SINK) as s, \
            pytest.raises(MailError) as err:
        send(s.settings(), "a@example.com", render(TEMPLATES, "welcome", ACCESS))
    assert err.value.transient is False
