"""The WHMCS provisioning module (integrations/whmcs), its PHP functions called with the
``$params`` WHMCS passes, against a running pvekvm: the API over HTTP, the engine's workers on
RabbitMQ and MariaDB, pvesim. One stack for the module; the tests run in order on two services
(A ordered by client 31, B by client 32)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests

from pvekvm import secrets as secretbox
from pvekvm.models import AuditLog, Backup, IpAddress, Operation, Service, Snapshot
from tests.whmcs.conftest import TOKEN
from tests.whmcs.phpcall import Whmcs
from workers.testing.harness import describe_ops, wait_until

SID_A, SID_B = 7301, 7302
CLIENT_A, CLIENT_B = 31, 32


def ops(sid: int, action: str) -> list[Operation]:
    """The operations this module ordered for the service with that action, oldest first."""
    return list(Operation.select().where(
        (Operation.service_id == sid)
        & Operation.idempotency_key.startswith(f"whmcs:{sid}:{action}:")).order_by(Operation.id))


def wait_done(sid: int, action: str, count: int = 1) -> Operation:
    def done() -> Operation | None:
        found = ops(sid, action)
        if len(found) >= count and found[count - 1].status in ("done", "failed"):
            return found[count - 1]
        return None
    try:
        op = wait_until(done, 60, f"{action} of {sid} finished")
    except AssertionError:
        raise AssertionError(describe_ops([sid])) from None
    assert op.status == "done", (op.kind, op.error)
    return op


def key_file(whmcs: Whmcs) -> str:
    return str(whmcs.workdir / "secret.key")  # where make_settings created it


def _password(whmcs: Whmcs, svc: Service) -> str:
    """The service's password, decrypted with the key this WHMCS's engine uses."""
    assert svc.password_enc is not None, f"service {svc.id} stores no password"
    return secretbox.decrypt(key_file(whmcs), svc.password_enc)


def status(sid: int) -> str:
    return Service.get_by_id(sid).status


def test_connection_config_options_and_the_catalog(whmcs: Whmcs):
    p = whmcs.params(SID_A, CLIENT_A)
    assert whmcs.call("TestConnection", p) == {"success": True, "error": ""}
    wrong = whmcs.call("TestConnection", {**p, "serveraccesshash": "not-the-token"})
    assert wrong["success"] is False and "refused the token" in wrong["error"]
    meta = whmcs.call("MetaData")
    assert meta["APIVersion"] == "1.1" and meta["RequiresServer"] is True
    options = whmcs.call("ConfigOptions")
    assert list(options)[:4] == ["Product", "Template", "Location", "IPv6"]
    assert options["Product"]["Loader"] == "pvekvm_ProductLoader"
    products = whmcs.call("ProductLoader", p)
    assert products["vps-small"] == "vps-small (2 vCPU, 2048 MB, 20 GB)" and "vps-large" in products
    assert "ubuntu-2204" in whmcs.call("TemplateLoader", p)


def test_create_account_deploys_the_vm_and_a_retry_is_no_second_order(whmcs: Whmcs):
    a = whmcs.params(SID_A, CLIENT_A)
    key = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPgNLhvOUtXpnWHDBHrLnuy2j9pSNRZYtOqU0FUWjs7h"
           " ada@laptop")
    b = whmcs.params(SID_B, CLIENT_B, domain="Shop.Example.COM",
                     customfields={"SSH Public Keys": f"\r\n{key}\r\n\r\n"})
    assert whmcs.call("CreateAccount", {**a, "domain": "not a host!"}).startswith(
        "the service's domain is not a host name")
    assert whmcs.call("CreateAccount", {**a, "configoption1": ""}).startswith(
        "the product's pvekvm product")
    assert ops(SID_A, "create") == []  # refused before anything was ordered
    assert whmcs.call("CreateAccount", a) == "success"
    assert whmcs.call("CreateAccount", b) == "success"
    create = wait_done(SID_A, "create")
    wait_done(SID_B, "create")
    svc_a, svc_b = Service.get_by_id(SID_A), Service.get_by_id(SID_B)
    assert (svc_a.status, svc_a.client_id, svc_a.email) == (
        "ready", CLIENT_A, "client31@example.com")
    assert svc_a.language == "de" and svc_a.want_ipv6  # WHMCS's "german", the IPv6 setting
    assert svc_b.hostname == "shop.example.com" and svc_b.vmid and svc_b.node
    assert svc_b.ssh_keys == key and svc_a.ssh_keys is None  # the "SSH Public Keys" field
    # WHMCS's module queue retrying the create: answered success, nothing ordered again
    assert whmcs.call("CreateAccount", a) == "success"
    assert [o.id for o in ops(SID_A, "create")] == [create.id]
    # the same service id in another client's name is not taken for this one
    assert whmcs.call("CreateAccount", whmcs.params(SID_A, CLIENT_B)) == \
        f"pvekvm's service {SID_A} belongs to another client"


def test_a_create_proxmox_refused_answers_what_to_do_and_terminate_then_create_works(
        whmcs: Whmcs):
    sid, client = 7304, 34
    p = whmcs.params(sid, client)
    whmcs.sim.set_faults(error_rate=1.0, error_path=r"^POST /nodes/[^/]+/qemu/\d+/clone$",
                         error_status=400, error_message="Parameter verification failed.",
                         error_errors={"target": "no such node"})
    try:
        assert whmcs.call("CreateAccount", p) == "success"
        wait_until(lambda: ops(sid, "create") and ops(sid, "create")[0].status == "failed", 30,
                   "the deploy failed")
    finally:
        whmcs.sim.set_faults()
    assert status(sid) == "failed"
    assert whmcs.call("CreateAccount", p) == (
        f"pvekvm's service {sid} failed to deploy (python -m pvekvm history {sid} says why): "
        f"terminate it, then create it again")
    assert whmcs.call("TerminateAccount", p) == "success"
    wait_done(sid, "terminate")
    assert whmcs.call("CreateAccount", p) == "success"
    wait_done(sid, "create", 2)
    assert status(sid) == "ready"


BUTTONS: list[tuple[str, dict[str, str] | None, str]] = [
    ("stop", None, "power_stop"), ("start", None, "power_start"),
    ("reboot", None, "power_reboot"), ("shutdown", None, "power_shutdown"),
    ("start", None, "power_start"),
    ("snapshotCreate", {"pvekvm_snapshot": "before_upgrade",
                        "pvekvm_description": "<script>alert(1)</script>"}, "snapshot_create"),
    ("snapshotRollback", {"pvekvm_snapshot": "before_upgrade"}, "snapshot_rollback"),
    ("backupCreate", None, "backup_create"),
    ("isoMount", {"pvekvm_iso": "Debian-12.5.0-amd64-netinst.iso"}, "iso_mount"),
    ("isoUnmount", None, "iso_unmount"),
    ("resetPassword", None, "reset_password"),
]


def test_every_button_orders_its_operation_on_the_service_whmcs_gave(whmcs: Whmcs):
    a = whmcs.params(SID_A, CLIENT_A)
    before = _password(whmcs, Service.get_by_id(SID_A))
    seen: dict[str, int] = {}
    for function, post, action in BUTTONS:
        # a client's form may carry any field: the service is the one WHMCS passes
        extra = {"serviceid": str(SID_B), "id": str(SID_B)}
        assert whmcs.call(function, a, post={**(post or {}), **extra} if post else None) == \
            "success", function
        seen[action] = seen.get(action, 0) + 1
        wait_done(SID_A, action, seen[action])
    assert ops(SID_B, "snapshot_create") == [] and Snapshot.get(Snapshot.service_id == SID_A)
    after = _password(whmcs, Service.get_by_id(SID_A))
    assert after != before  # the reset gave the VM a new password

    backup = Backup.get(Backup.service_id == SID_A)
    for function in ("backupRestore", "backupDelete"):
        assert whmcs.call(function, a, post={"pvekvm_backup": str(backup.id)}) == "success"
    wait_done(SID_A, "backup_restore")
    wait_done(SID_A, "backup_delete")
    assert not Backup.select().where(Backup.service_id == SID_A).exists()

    ip = IpAddress.get((IpAddress.service_id == SID_A) & (IpAddress.version == 4)).address
    host = Service.get_by_id(SID_A).hostname
    assert whmcs.call("rdnsSet", a, post={"pvekvm_address": ip,
                                          "pvekvm_hostname": f"mail.{host}"}) == "success"
    wait_until(lambda: IpAddress.get(IpAddress.address == ip).ptr == f"mail.{host}", 30,
               "the PTR set")
    assert whmcs.call("rdnsReset", a, post={"pvekvm_address": ip}) == "success"
    wait_until(lambda: IpAddress.get(IpAddress.address == ip).ptr is None, 30, "PTR reset")

    assert whmcs.call("snapshotDelete", a, post={"pvekvm_snapshot": "before_upgrade"}) == "success"
    wait_done(SID_A, "snapshot_delete")
    assert whmcs.call("reinstall", a, post={"pvekvm_template": "ubuntu-2204"}) == "success"
    wait_done(SID_A, "reinstall")
    assert Service.get_by_id(SID_A).username == "ubuntu"
    assert status(SID_A) == "ready"


def test_bad_input_from_a_client_is_refused_with_its_reason_and_orders_nothing(whmcs: Whmcs):
    a = whmcs.params(SID_A, CLIENT_A)
    before = Operation.select().where(Operation.service_id == SID_A).count()
    assert whmcs.call("snapshotCreate", a, post={"pvekvm_snapshot": "1<b>"}).startswith(
        "field pvekvm_snapshot: not a snapshot name")
    assert "reserves" in whmcs.call("snapshotCreate", a, post={"pvekvm_snapshot": "current"})
    assert whmcs.call("snapshotCreate", a) == "this action is sent by its form (POST)"
    assert "at most 40 characters" in whmcs.call(
        "snapshotCreate", a, post={"pvekvm_snapshot": "a" * 1_000_000})
    assert whmcs.call("isoMount", a, post={"pvekvm_iso": "../../etc/passwd"}).startswith(
        "field pvekvm_iso: not an ISO file name")
    assert whmcs.call("rdnsSet", a, post={"pvekvm_address": "10.0.0.1; rm",
                                          "pvekvm_hostname": "x.example"}).startswith(
        "field pvekvm_address")
    # another service's backup and address: refused, by the module and by the API
    other_ip = IpAddress.get((IpAddress.service_id == SID_B) & (IpAddress.version == 4)).address
    reason = whmcs.call("rdnsSet", a, post={"pvekvm_address": other_ip,
                                            "pvekvm_hostname": "mail.example.net"})
    assert reason == f"address {other_ip} is not held by service {SID_A}"
    assert whmcs.call("backupRestore", a, post={"pvekvm_backup": "1"}) == \
        "backup 1 is not a backup of this service"
    assert Operation.select().where(Operation.service_id == SID_A).count() == before
    assert IpAddress.get(IpAddress.address == other_ip).ptr is None


def test_client_area_shows_the_service_escaped_and_reveals_the_login_on_request(whmcs: Whmcs):
    a = whmcs.params(SID_A, CLIENT_A)
    assert whmcs.call("snapshotCreate", a, post={
        "pvekvm_snapshot": "xss", "pvekvm_description": '"><script>alert(1)</script>'}) == "success"
    wait_until(lambda: Snapshot.get_or_none((Snapshot.service_id == SID_A)
                                            & (Snapshot.name == "xss")), 30, "snapshot xss")
    area = whmcs.call("ClientArea", a)
    assert area["templatefile"] == "clientarea"
    svc = Service.get_by_id(SID_A)
    v = area["vars"]
    assert (v["pvekvm_status"], v["pvekvm_hostname"], v["pvekvm_power"]) == (
        "ready", svc.hostname, "running")
    assert {x["address"] for x in v["pvekvm_addresses"]} == {
        str(r.address) if r.prefixlen is None else str(r.address)
        for r in IpAddress.select().where(IpAddress.service_id == SID_A)}
    assert "xss" in [s["name"] for s in v["pvekvm_snapshots"]]
    assert "pvekvm_credentials" not in v and {g["metric"] for g in v["pvekvm_graphs"]} == {
        "cpu", "network"}
    assert v["pvekvm_usage"]["quota"] == "unlimited" and v["pvekvm_isos"][0]["group"] == "Debian"

    html = whmcs.render(a)
    (whmcs.workdir / "clientarea.html").write_text(html)  # kept with the test's files
    assert svc.hostname in html and "<script>" not in html
    assert "&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in html
    def reads() -> int:
        return AuditLog.select().where((AuditLog.service_id == SID_A)
                                       & (AuditLog.event == "api_credentials_read")).count()
    before = reads()
    html = whmcs.render(a, get={"pvekvm_view": "credentials"})
    password = _password(whmcs, svc)
    assert f"<code>{svc.username}</code>" in html and password in html
    assert reads() == before + 1
    logged = " ".join(str(r["args"]) for r in whmcs.recorded("logModuleCall"))
    assert password not in logged and TOKEN not in logged  # WHMCS's module log
    html = whmcs.render(a, get={"pvekvm_view": "console"})
    assert f"https://console.example.net/console/?service={SID_A}#token=svc." in html


def test_admin_tab_shows_the_operations_and_their_step_lines(whmcs: Whmcs):
    tab = whmcs.call("AdminServicesTabFields", whmcs.params(SID_A, CLIENT_A))
    assert tab["pvekvm service"].startswith("ready · VM ")
    assert "<strong>snapshot_create</strong> done" in tab["pvekvm operations"]
    assert "[+]" in tab["pvekvm operations"]


class LossyProxy:
    """Between the module and the API: forwards every request, but the first answer to
    ``POST /v1/events`` is lost after the API took it (the connection closes unanswered), as
    when the network drops between billing and the API."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.event_keys: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                r = requests.request(self.command, proxy.upstream + self.path, data=body or None,
                                     headers={k: v for k, v in self.headers.items()
                                              if k.lower() in ("authorization", "content-type")},
                                     timeout=30)
                if self.command == "POST" and self.path == "/v1/events":
                    proxy.event_keys.append(json.loads(body)["idempotency_key"])
                    if len(proxy.event_keys) == 1:
                        self.close_connection = True
                        return  # the API published it; the answer never reaches billing
                self.send_response(r.status_code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(r.content)))
                self.end_headers()
                self.wfile.write(r.content)

            do_GET = do_POST = _forward

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> LossyProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_an_answer_lost_after_the_publish_is_retried_with_its_key_and_ordered_once(whmcs: Whmcs):
    with LossyProxy(whmcs.api_url) as proxy:
        a = whmcs.params(SID_A, CLIENT_A, serverport=proxy.port)
        assert whmcs.call("snapshotCreate", a, post={"pvekvm_snapshot": "retried"}) == "success"
    first, again = proxy.event_keys  # the module sent it twice, with one key
    assert first == again and first.startswith(f"whmcs:{SID_A}:snapshot_create:")
    wait_until(lambda: Snapshot.get_or_none((Snapshot.service_id == SID_A)
                                            & (Snapshot.name == "retried")), 30, "the snapshot")
    assert Operation.select().where(Operation.idempotency_key == first).count() == 1
    assert len(ops(SID_A, "snapshot_create")) == 3  # before_upgrade, xss, retried: one each


def test_over_the_packages_snapshot_limit_is_answered_at_once(whmcs: Whmcs):
    a = whmcs.params(SID_A, CLIENT_A)
    held = Snapshot.select().where(Snapshot.service_id == SID_A).count()
    assert held == 2  # xss, retried; vps-small allows 3
    assert whmcs.call("snapshotCreate", a, post={"pvekvm_snapshot": "third"}) == "success"
    wait_until(lambda: Snapshot.get_or_none((Snapshot.service_id == SID_A)
                                            & (Snapshot.name == "third")), 30, "snapshot third")
    before = len(ops(SID_A, "snapshot_create"))
    assert whmcs.call("snapshotCreate", a, post={"pvekvm_snapshot": "fourth"}) == \
        "snapshot limit reached (3/3)"
    assert len(ops(SID_A, "snapshot_create")) == before


def test_change_package_moves_the_vm_to_the_new_product(whmcs: Whmcs):
    b = whmcs.params(SID_B, CLIENT_B, product="vps-large")
    assert whmcs.call("ChangePackage", b) == "success"
    wait_done(SID_B, "change_package")
    svc = Service.get_by_id(SID_B)
    assert svc.status == "ready" and svc.product_id != Service.get_by_id(SID_A).product_id
    assert whmcs.call("ChangePackage", b) == "success"  # options only: nothing to change
    assert len(ops(SID_B, "change_package")) == 1


def test_suspend_blocks_the_buttons_until_unsuspend(whmcs: Whmcs):
    b = whmcs.params(SID_B, CLIENT_B, product="vps-large")
    assert whmcs.call("SuspendAccount", b) == "success"
    wait_done(SID_B, "suspend")
    assert status(SID_B) == "suspended"
    assert whmcs.call("SuspendAccount", b) == "success" and len(ops(SID_B, "suspend")) == 1
    before = Operation.select().where(Operation.service_id == SID_B).count()
    blocked = (f"service {SID_B} is suspended: only unsuspend, terminate and package changes "
               f"are accepted")
    for function, post in [("start", None), ("reboot", None), ("resetPassword", None),
                           ("ChangePassword", None), ("backupCreate", None), ("isoUnmount", None),
                           ("snapshotCreate", {"pvekvm_snapshot": "s1"}),
                           ("isoMount", {"pvekvm_iso": "myfile.iso"}),
                           ("reinstall", {"pvekvm_template": "debian-12"})]:
        assert whmcs.call(function, b, post=post) == blocked, function
    area = whmcs.call("ClientArea", b)["vars"]
    assert area["pvekvm_blocked"] == blocked and "pvekvm_console_link" not in area
    assert Operation.select().where(Operation.service_id == SID_B).count() == before

    assert whmcs.call("languageSync", b) == "success"  # the mail language: also when suspended
    wait_done(SID_B, "language_change")
    assert Service.get_by_id(SID_B).language == "de"  # the client's WHMCS language, german
    farsi = {**b["clientsdetails"], "language": "farsi"}
    assert whmcs.call("languageSync", {**b, "clientsdetails": farsi}) == "success"
    wait_done(SID_B, "language_change", 2)
    assert Service.get_by_id(SID_B).language == "fa"
    unknown = {**b["clientsdetails"], "language": "klingon"}
    assert whmcs.call("languageSync", {**b, "clientsdetails": unknown}).startswith(
        "the client has no language pvekvm knows")
    assert len(ops(SID_B, "language_change")) == 2

    assert whmcs.call("UnsuspendAccount", b) == "success"
    wait_done(SID_B, "unsuspend")
    assert whmcs.call("start", b) == "success"
    wait_done(SID_B, "power_start")


def test_terminate_ends_the_service_and_a_retry_is_success(whmcs: Whmcs):
    b = whmcs.params(SID_B, CLIENT_B)
    assert whmcs.call("TerminateAccount", b) == "success"
    wait_done(SID_B, "terminate")
    assert status(SID_B) == "terminated"
    assert whmcs.call("TerminateAccount", b) == "success"
    assert len(ops(SID_B, "terminate")) == 1
    assert whmcs.call("start", b).endswith("is terminated: only unsuspend, terminate and "
                                           "package changes are accepted")
