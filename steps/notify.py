"""Client e-mail steps. Each template is sent once per operation: the ``emails`` row (unique per
operation and template) is written with the send, in the step's transaction."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from pvekvm import mail, sshkeys
from pvekvm.db import scalar
from pvekvm.models import database
from steps.context import StepContext
from steps.machine import Done, Retry, StepFailed, StepResult
from steps.power import verify_running


def _values(ctx: StepContext) -> dict[str, object]:
    """The mail's variables. With SSH password login off (keys only) no mail carries the
    password or asks to change it: ``password`` and ``with_password`` are None (their lines
    drop), ``keys_only`` is "" (its line, saying to log in with the key, stays); ``ssh_keys``
    names the keys by fingerprint (None without keys: its line drops)."""
    v4, v6 = ctx.ips()
    password = _mailed_password(ctx)
    keys = sshkeys.views(ctx.ssh_keys)
    return {"hostname": ctx.service.hostname, "service_id": ctx.service.id,
            "ip": v4[0] if v4 else "DHCP", "ipv6": v6[0] if v6 else None,
            "username": ctx.service.username, "password": password,
            "template": ctx.template.name, "backup": ctx.params.get("backup_id"),
            "ssh_keys": ", ".join(f"{k['fingerprint']} ({k['comment'] or k['type']})"
                                  for k in keys) or None,
            "with_password": "" if password is not None else None,
            "keys_only": None if ctx.password_login else ""}


def _mailed_password(ctx: StepContext) -> str | None:
    """The password the mail carries: none for a package without SSH password login (the
    client logs in with its keys; the console's password is in the client area, read through
    the API's audited credentials route), in every mail (ready, reinstalled, password reset)."""
    if not ctx.password_login:
        return None
    return ctx.password


def send_once(ctx: StepContext, template: str) -> StepResult:
    if scalar("SELECT sent_at FROM emails WHERE operation_id = %s AND template = %s",
              ctx.operation.id, template) is not None:
        return Done(f"{template} already sent", skipped=True)
    try:
        msg = mail.render(ctx.settings.templates_dir, template, _values(ctx),
                          language=ctx.service.language)
        mail.send(ctx.settings.smtp, ctx.service.email, msg)
    except mail.MailError as exc:
        if exc.transient:
            return Retry(f"mail: {exc}")
        raise StepFailed(f"mail: {exc}") from exc
    except mail.TemplateError as exc:
        raise StepFailed(f"mail template: {exc}") from exc
    now = datetime.now()
    database.execute_sql(
        "INSERT INTO emails (operation_id, template, recipient, sent_at) VALUES (%s, %s, %s, %s) "
        "ON DUPLICATE KEY UPDATE sent_at = %s",
        (ctx.operation.id, template, ctx.service.email, now, now))
    return Done(f"{template} mail to {ctx.service.email}")


def use_language(ctx: StepContext) -> StepResult:
    """language_change: the service's mail language becomes ``params["language"]`` as the
    operation completes (no Proxmox, no mail); says which templates it will get."""
    tag = str(ctx.params["language"])
    try:
        used = mail.template_language(ctx.settings.templates_dir, "vm_ready", tag)
    except mail.TemplateError as exc:
        used = f"? ({exc})"
    if used == tag:
        return Done(f"mail in {tag} from now on")
    return Done(f"mail language {tag}: templates in {used} (no {tag} templates)")


def mailer(template: str) -> Callable[[StepContext], StepResult]:
    def step(ctx: StepContext) -> StepResult:
        return send_once(ctx, template)

    step.__name__ = f"send_{template}"
    return step


def verify_and_mail(template: str) -> Callable[[StepContext], StepResult]:
    """'Verify running + Email': the VM answers running, then the client gets the access mail."""
    def step(ctx: StepContext) -> StepResult:
        checked = verify_running(ctx)
        return checked if not isinstance(checked, Done) else send_once(ctx, template)

    step.__name__ = f"verify_and_send_{template}"
    return step
