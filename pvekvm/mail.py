"""Client e-mail: plain-text templates rendered with ``string.Template``, sent with smtplib.

Templates live in ``<templates_dir>/<name>.txt`` (UTF-8, English, the fallback) and
``<templates_dir>/<language>/<name>.txt`` per client language (``de``, ``fr``, ``pt-BR``, …;
:func:`render` with ``language="de-AT"`` tries ``de-AT/``, then ``de/``, then the English one)::

    Subject: Your server $hostname is ready
    <blank line>
    body with $variables ...

Rules:

- Substitution is strict: a variable the template uses but the context lacks raises
  :class:`TemplateError` naming it (never ``safe_substitute``: a mail with a literal ``$password``
  is worse than no mail). ``$$`` is a literal dollar.
- A body line whose variables include one set to ``None`` is left out, for optional values such as
  ``ipv6`` ("IPv6 address: $ipv6" disappears for a VM without IPv6). ``None`` in the subject is an
  error.
- Values are inserted as ``str(value)``; a subject containing a line break is refused.

Templates shipped in ``config/mail`` and their variables: ``welcome`` (hostname, service_id),
``vm_ready`` / ``reinstalled`` (hostname, service_id, ip, ipv6, username, password, ssh_keys,
with_password, keys_only; reinstalled also template), ``backup_restored`` (hostname, service_id,
backup), ``password_reset`` (hostname, service_id, ip, username, password, ssh_keys,
with_password, keys_only). :func:`template_variables` lists them. ``with_password`` and
``keys_only`` are markers: "" (the line stays, showing nothing of them) or None (it drops), for a
sentence that is only for a password login or only for a keys-only one (steps/notify.py).

:func:`send` raises :class:`MailError` with ``transient=True`` when retrying later may help
(connection refused or dropped, timeouts, 4xx replies) and ``transient=False`` when it will not
(5xx replies, TLS/authentication/configuration problems, a bad recipient address).
"""

from __future__ import annotations

import html
import re
import smtplib
import ssl
import uuid
from base64 import encodebytes
from binascii import b2a_qp
from collections.abc import Mapping
from dataclasses import dataclass
from email.header import Header
from email.utils import formatdate, make_msgid
from pathlib import Path
from string import Template
from typing import Any

from pvekvm import languages
from pvekvm.config import SmtpSettings

_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_LANG_DIR = re.compile(r"[a-z]{2,3}(-[A-Za-z0-9]{2,8}){0,3}")
_ADDRESS = re.compile(r"[^\s@<>,;\"]+@[A-Za-z0-9.-]+")


class TemplateError(ValueError):
    """A template that cannot be rendered: unknown, malformed, or a variable is missing."""


class MailError(Exception):
    """Sending failed. ``transient``: worth retrying later. ``smtp_code``: the reply, if any."""

    def __init__(self, message: str, transient: bool, smtp_code: int | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.smtp_code = smtp_code


# --------------------------------------------------------------------------- rendering

@dataclass(frozen=True)
class Mail:
    """A rendered mail: its subject, its plain text body and the language of the template."""

    subject: str
    body: str
    language: str

    def mime(self) -> bytes:
        """The message without From/To/Date/Message-ID, CRLF line ends, ``Content-Language``
        on the message and on each part; a non-ASCII subject as RFC 2047 encoded words.

        Left-to-right languages: one UTF-8 text/plain part. Right-to-left ones (ar, he, fa, …:
        :func:`languages.is_rtl`): multipart/alternative of that text/plain part (for clients
        that show plain text; their bidi algorithm takes each line's direction from its first
        letter) and a text/html part with ``dir="rtl"``, which is what webmail and most clients
        display: they render text/plain in an element whose base direction is left to right,
        so an Arabic line's full stop and colon land on the wrong side. Each part is 7bit when
        ASCII with lines of at most 78 characters, else quoted-printable or base64, whichever
        is shorter (base64 for mostly non-Latin text). Written out: through ``EmailMessage``
        and its header registry this cost a tenth of a deploy's worker CPU."""
        subject = self.subject if self.subject.isascii() else \
            Header(self.subject, "utf-8").encode().replace("\n", "\r\n")
        head = f"Subject: {subject}\r\nMIME-Version: 1.0\r\n"
        plain = _part("text/plain", self.body, self.language)
        if not languages.is_rtl(self.language):  # the part's headers are the message's: once
            return head.encode() + plain
        head += f"Content-Language: {self.language}\r\n"
        boundary = f"=_pvekvm_{uuid.uuid4().hex}"  # "=_" never occurs in QP nor base64
        rich = _part("text/html", rtl_html(self.subject, self.body, self.language),
                     self.language)
        return (f'{head}Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'
                f"--{boundary}\r\n").encode() + plain + \
            f"\r\n--{boundary}\r\n".encode() + rich + f"\r\n--{boundary}--\r\n".encode()


def _part(content_type: str, text: str, language: str) -> bytes:
    """One UTF-8 part with its headers (Content-Type through the blank line), CRLF ends."""
    raw = text.encode()
    if text.isascii() and "\r" not in text and all(len(line) <= 78
                                                    for line in text.split("\n")):
        encoding, body = "7bit", raw.replace(b"\n", b"\r\n")
    else:
        qp = b2a_qp(raw, istext=True).replace(b"\n", b"\r\n")
        b64 = encodebytes(raw).replace(b"\n", b"\r\n")
        encoding, body = ("quoted-printable", qp) if len(qp) <= len(b64) else ("base64", b64)
    return (f'Content-Type: {content_type}; charset="utf-8"\r\n'
            f"Content-Transfer-Encoding: {encoding}\r\n"
            f"Content-Language: {language}\r\n\r\n").encode() + body


LRI, PDI = "\u2066", "\u2069"  # LEFT-TO-RIGHT ISOLATE, POP DIRECTIONAL ISOLATE
_ISOLATED = re.compile(f"{LRI}([^{LRI}{PDI}]*){PDI}")


def rtl_html(subject: str, body: str, language: str) -> str:
    """``body`` as an HTML document written right to left: every element that a client may keep
    carries ``dir="rtl"`` (webmail drops ``<html>`` and ``<body>``; the outer ``<div>`` says
    ``lang`` too, for fonts and screen readers), one line per ``<div>``; a value the template
    isolates (U+2066 … U+2069) becomes ``<span dir="ltr">``, HTML's own isolate, without the
    invisible characters, so a password copied from the displayed mail is the password. All text
    is escaped."""
    def line(text: str) -> str:
        text = _ISOLATED.sub(lambda m: f'<span dir="ltr">{m.group(1)}</span>',
                             html.escape(text.strip(), quote=False))
        return f'<div dir="rtl">{text}</div>' if text else '<div dir="rtl">&nbsp;</div>'

    lines = "\n".join(line(t) for t in body.rstrip("\n").split("\n"))
    title = html.escape(_ISOLATED.sub(lambda m: m.group(1), subject), quote=False)
    lang = html.escape(language)
    return (f'<!DOCTYPE html>\n<html dir="rtl" lang="{lang}">\n<head>'
            f'<meta charset="utf-8"><title>{title}</title></head>\n'
            f'<body dir="rtl" style="direction: rtl; text-align: right">\n'
            f'<div dir="rtl" lang="{lang}" style="direction: rtl; text-align: right">\n'
            f"{lines}\n</div>\n"
            f"</body>\n</html>\n")


def _template_path(templates_dir: str | Path, name: str,
                   language: str | None = None) -> tuple[Path, str]:
    """The template file for ``name`` in ``language`` (or its fallback) and the language used."""
    if not _NAME.fullmatch(name):
        raise TemplateError(f"invalid template name {name!r}")
    for lang in languages.candidates(language):
        if lang == languages.DEFAULT or not _LANG_DIR.fullmatch(lang):
            continue
        path = Path(templates_dir) / lang / f"{name}.txt"
        if path.is_file():
            return path, lang
    path = Path(templates_dir) / f"{name}.txt"
    if not path.is_file():
        raise TemplateError(f"mail template {name!r} not found: {path}")
    return path, languages.DEFAULT


def template_language(templates_dir: str | Path, name: str, language: str | None) -> str:
    """The language template ``name`` is sent in for a client of ``language``."""
    return _template_path(templates_dir, name, language)[1]


def _split(name: str, source: str) -> tuple[str, str]:
    first, sep, rest = source.partition("\n")
    if not first.startswith("Subject:") or not sep:
        raise TemplateError(f"template {name!r}: first line must be 'Subject: ...'")
    blank, sep, body = rest.partition("\n")
    if blank.strip() or not sep:
        raise TemplateError(f"template {name!r}: a blank line must follow the subject")
    return first[len("Subject:"):].strip(), body


def template_variables(templates_dir: str | Path, name: str,
                       language: str | None = None) -> set[str]:
    """The variables template ``name`` uses (subject and body)."""
    source = _template_path(templates_dir, name, language)[0].read_text(encoding="utf-8")
    return set(Template(source.replace("\r\n", "\n")).get_identifiers())


def _substitute(name: str, part: str, text: str, context: Mapping[str, Any]) -> str:
    try:
        return Template(text).substitute(context)
    except KeyError as exc:
        raise TemplateError(
            f"template {name!r}: missing variable {exc.args[0]!r} in the {part}") from None
    except ValueError as exc:
        raise TemplateError(f"template {name!r}: malformed placeholder in the {part}: {exc}") \
            from None


def render(templates_dir: str | Path, name: str, context: Mapping[str, Any],
           language: str | None = None) -> Mail:
    """Render template ``name`` (in ``language`` when there is one, else English) with
    ``context`` into a subject (one line) and a plain text body ending with a line break."""
    path, used = _template_path(templates_dir, name, language)
    source = path.read_text(encoding="utf-8")
    subject_t, body_t = _split(name, source.replace("\r\n", "\n"))
    if any(context.get(v, "") is None for v in Template(subject_t).get_identifiers()):
        raise TemplateError(f"template {name!r}: subject variables must not be None")
    subject = _substitute(name, "subject", subject_t, context)
    if "\r" in subject or "\n" in subject:
        raise TemplateError(f"template {name!r}: subject contains a line break")
    lines = [line for line in body_t.split("\n")
             if not any(v in context and context[v] is None
                        for v in Template(line).get_identifiers())]
    body = _substitute(name, "body", "\n".join(lines), context)
    if not body.endswith("\n"):
        body += "\n"

    return Mail(subject, body, used)


# --------------------------------------------------------------------------- sending

def _reply_error(what: str, code: int, reply: bytes | str) -> MailError:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    return MailError(f"{what}: {code} {text}".strip(), transient=not 500 <= code < 600,
                     smtp_code=code)


def send(smtp: SmtpSettings, to: str, msg: Mail) -> None:
    """Send ``msg`` to ``to`` from ``smtp.sender``, with a Date and a Message-ID.

    Uses SMTP_SSL when ``smtp.ssl``, else SMTP with STARTTLS when ``smtp.starttls``; logs in when
    ``smtp.user`` is set; every network operation is bounded by ``smtp.timeout``."""
    if not isinstance(to, str) or not _ADDRESS.fullmatch(to):
        raise MailError(f"invalid recipient address {to!r}", transient=False)
    if "\r" in smtp.sender or "\n" in smtp.sender:
        raise MailError(f"invalid sender address {smtp.sender!r}", transient=False)
    # the addresses are checked above: no header can be smuggled in through them
    data = (f"From: {smtp.sender}\r\nTo: {to}\r\n"
            f"Date: {formatdate(localtime=False, usegmt=True)}\r\n"
            f"Message-ID: {make_msgid(domain=smtp.sender.rpartition('@')[2] or None)}\r\n"
            ).encode() + msg.mime()

    where = f"{smtp.host}:{smtp.port}"
    try:
        context = ssl.create_default_context() if smtp.ssl or smtp.starttls else None
        client: smtplib.SMTP
        if smtp.ssl:
            client = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=smtp.timeout, context=context)
        else:
            client = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout)
        with client:
            if smtp.starttls and not smtp.ssl:
                client.starttls(context=context)
            if smtp.user:
                client.login(smtp.user, smtp.password)
            client.sendmail(smtp.sender, [to], data)
    except smtplib.SMTPRecipientsRefused as exc:
        code, reply = exc.recipients.get(to, (550, b"recipient refused"))
        raise _reply_error(f"{where} refused recipient {to}", code, reply) from exc
    except smtplib.SMTPResponseException as exc:
        # sender refused, data refused, HELO/auth failures, or a 421 "closing" at any stage
        raise _reply_error(f"{where} answered", exc.smtp_code, exc.smtp_error) from exc
    except smtplib.SMTPServerDisconnected as exc:
        raise MailError(f"{where} closed the connection: {exc}", transient=True) from exc
    except ssl.SSLCertVerificationError as exc:
        raise MailError(f"{where}: TLS certificate rejected: {exc}", transient=False) from exc
    except smtplib.SMTPException as exc:
        # e.g. STARTTLS or AUTH not supported by the server: configuration, not luck
        raise MailError(f"{where}: {exc}", transient=False) from exc
    except OSError as exc:  # refused, unreachable, DNS, timeouts, TLS handshake dropped
        raise MailError(f"cannot talk to {where}: {exc}", transient=True) from exc


__all__ = ["LRI", "PDI", "Mail", "MailError", "TemplateError", "render", "rtl_html", "send",
           "template_language", "template_variables"]
