"""Logs of a whole VM life, every logger at DEBUG in both formats, hold no password, token or
key; they do hold the manual's step lines, power blocks naming their action, and JSON lines a
shipper can parse."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

from apscheduler.schedulers.background import BackgroundScheduler

from producers.api import OrderClient
from pvekvm import logs, secrets
from pvekvm.models import Operation, Service
from workers import admin, scheduler
from workers.testing.harness import InProcessWorkers, all_ready, describe_ops, wait_until

SID = 5151


def _done(kind: str, count: int = 1) -> None:
    def check() -> bool:
        return Operation.select().where((Operation.service_id == SID) & (Operation.kind == kind)
                                        & (Operation.status == "done")).count() >= count
    try:
        wait_until(check, 60, f"{kind} done")
    except AssertionError:
        raise AssertionError(describe_ops([SID])) from None


def test_no_secret_reaches_any_log_of_a_vm_lifecycle(settings, sink):
    text, jsonl = io.StringIO(), io.StringIO()
    handlers = [logging.StreamHandler(text), logging.StreamHandler(jsonl)]
    handlers[0].setFormatter(logging.Formatter(logs.TEXT_FORMAT, logs.TEXT_DATEFMT))
    handlers[1].setFormatter(logs.JsonFormatter())
    for h in handlers:  # the test's own SMTP server (aiosmtpd) logs what it receives
        h.addFilter(lambda record: not record.name.startswith("mail.log"))
    root = logging.getLogger()
    old_level = root.level
    for h in handlers:
        root.addHandler(h)
    root.setLevel(logging.DEBUG)
    passwords: list[str] = []

    def password() -> str:
        password_enc = Service.get_by_id(SID).password_enc
        assert password_enc is not None
        return secrets.decrypt(settings.secret_key_file, password_enc)

    try:
        with InProcessWorkers(settings, concurrency=4), \
                OrderClient(settings.amqp_url, settings.namespace) as billing:
            billing.create(service_id=SID, client_id=5, product="vps-small",
                           email="l@example.com", language="ru")
            wait_until(all_ready([SID]), 60, "deploy")
            passwords.append(password())
            billing.reset_password(service_id=SID)
            _done("reset_password")
            passwords.append(password())
            billing.power(service_id=SID, action="stop")
            _done("power")
            billing.power(service_id=SID, action="start")
            _done("power", 2)
            billing.reinstall(service_id=SID)
            _done("reinstall")
            passwords.append(password())
            scheduler.build(settings, BackgroundScheduler).get_job("reconcile").func()
            billing.terminate(service_id=SID)
            wait_until(lambda: Service.get_by_id(SID).status == "terminated", 60, "terminated")
        history = admin.history(SID)
    finally:
        for h in handlers:
            root.removeHandler(h)
        root.setLevel(old_level)

    secret_values = {
        "VM password": passwords,
        "Proxmox API token secret": [settings.proxmox.token_secret],
        "secret key file": [Path(settings.secret_key_file).read_text().strip()],
    }
    assert len(set(passwords)) == 3 and all(len(p) >= 8 for p in passwords)
    for p in passwords:  # they are real: the client received each one by mail
        sink.wait_for(lambda m, p=p: p in m.body, 5)
    logs_by_name = {"text log": text.getvalue(), "JSON log": jsonl.getvalue(),
                    "history": history}
    for log_name, content in logs_by_name.items():
        for what, values in secret_values.items():
            for value in values:
                assert value and value not in content, f"{what} found in the {log_name}"

    # what the logs are for is there
    assert f"sid:{SID} [+]" in text.getvalue()
    assert "[reconcile] Done (" in text.getvalue()
    for block in ("Power (stop)", "Power (start)"):
        assert f"--- {block} complete: service={SID}" in text.getvalue()
        assert f"--- {block}: service={SID}" in history
    records = [json.loads(line) for line in jsonl.getvalue().splitlines()]
    steps = [r for r in records if r["logger"] == "pvekvm.steps"]
    assert steps and all(r["service_id"] == SID for r in steps
                         if "paused: waiting at" not in r["message"])  # the manual's shape
    assert {"ts", "level", "logger", "thread", "message"} <= set(records[0])
