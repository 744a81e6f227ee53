"""The browser console (issue 27) through the real path: API (console token) → console proxy
(the only holder of the Proxmox token) → pvesim's vncwebsocket speaking RFB 3.8. Headless
Debian chromium runs noVNC from Debian's novnc package; one browser for the module."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus

from pvekvm.config import ROOT, ConsoleSettings
from pvekvm.models import AuditLog, Service, database
from tests.api.conftest import BILLING_TOKEN, SID_A, SID_B, ApiEnv
from tests.api.console_client import Console, ProxyThread
from workers.testing.harness import all_ready, wait_until

SID_C = 7190  # this module's own service: it gets suspended
NOVNC = Path("/usr/share/novnc/core/rfb.js")
ARTIFACTS = ROOT / "var" / "artifacts" / "console"


@pytest.fixture(scope="module")
def svc_c(api_env: ApiEnv) -> int:
    api_env.billing.create(service_id=SID_C, client_id=3, product="vps-small",
                           email="c@example.com")
    wait_until(all_ready([SID_C]), 60, "service C deployed")
    return SID_C


@pytest.fixture(scope="module")
def proxy(api_env: ApiEnv):
    if not NOVNC.exists():
        pytest.skip("Debian's novnc package is not installed (/usr/share/novnc)")
    settings = replace(api_env.settings, console=ConsoleSettings(check_interval_s=0.25))
    with ProxyThread(settings) as p:
        yield p


@pytest.fixture(scope="module")
def strict_proxy(api_env: ApiEnv):
    """Another proxy process: 1 s idle, 2.5 s at most, one session per service."""
    settings = replace(api_env.settings, console=ConsoleSettings(
        check_interval_s=0.25, idle_timeout_s=1, max_session_s=2, sessions_per_service=1))
    with ProxyThread(settings) as p:
        yield p


@pytest.fixture(scope="module")
def browser():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("Debian's chromium and chromium-driver are not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=800,600",
                "--force-device-scale-factor=1", "--disable-dev-shm-usage"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    b = webdriver.Chrome(service=DriverService(executable_path=driver), options=opts)
    b.set_page_load_timeout(15)
    yield b
    b.quit()


def mint(api_env: ApiEnv, sid: int, token: str | None = None, **body: object):
    r = api_env.api.post(f"/v1/services/{sid}/console", token or api_env.client_token(sid),
                         json=body or None)
    return r


def path_of(api_env: ApiEnv, sid: int) -> str:
    r = mint(api_env, sid)
    assert r.status_code == 200, r.text
    return r.json()["path"]


def screen(api_env: ApiEnv, vmid: int) -> dict:
    import requests

    conn = api_env.sim.connection
    r = requests.get(f"{conn['control_url']}/console/{vmid}", verify=conn["ca_bundle"],
                     timeout=10)
    return r.json()["data"] if r.status_code == 200 else {}


def canvas_pixels(b):
    from PIL import Image
    from selenium.webdriver.common.by import By

    png = b.find_element(By.CSS_SELECTOR, "#screen canvas").screenshot_as_png
    return png, Image.open(io.BytesIO(png)).convert("RGB")


def band_matches(img, shot: dict, row: int) -> float:
    """Share of the pixels of text row ``row`` (as pvesim drew it) that the screenshot shows
    identically."""
    from PIL import Image

    drawn = Image.frombytes("RGB", (shot["width"], shot["height"]),
                            base64.b64decode(shot["rgb"]))
    top = shot["top"] + row * shot["line_height"]
    box = (0, top, shot["width"], top + shot["line_height"])
    raw_a, raw_b = drawn.crop(box).tobytes(), img.crop(box).tobytes()
    a = [raw_a[i:i + 3] for i in range(0, len(raw_a), 3)]
    b = [raw_b[i:i + 3] for i in range(0, len(raw_b), 3)]
    inked = [i for i, p in enumerate(a) if p != a[0]]  # the glyphs' pixels, not background
    assert len(inked) > 50, "pvesim drew no text on that row"
    return sum(a[i] == b[i] for i in inked) / len(inked)


def wait_state(b, state: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = b.execute_script("return [document.body.dataset.state, "
                                "document.getElementById('status')?.textContent || "
                                "document.body.textContent]")
        if body[0] == state:
            return body[1]
        time.sleep(0.05)
    logs = [e["message"][:300] for e in b.get_log("browser")][-10:]
    raise AssertionError(f"page never reached {state!r}: {body}; browser log: {logs}")


def test_the_browser_shows_the_vm_screen_and_echoes_typed_keys(api_env, svc_c, proxy, browser):
    """A client token mints a console token; Chromium opens the proxy's page; noVNC's canvas
    shows what pvesim drew for the VM (its name), and keys typed appear on it."""
    from selenium.webdriver.common.action_chains import ActionChains

    svc = Service.get_by_id(svc_c)
    vmid = svc.vmid
    assert vmid is not None
    r = mint(api_env, svc_c)
    assert r.status_code == 200, r.text
    access = r.json()
    assert access["bound_address"] == "127.0.0.1" and access["url"] is None
    body = json.dumps(access)
    conn = api_env.settings.proxmox
    assert conn.token_secret not in body and conn.token_id not in body and "PVEVNC" not in body
    browser.get(proxy.url + access["path"])
    wait_state(browser, "connected", 15)
    shot = screen(api_env, vmid)
    assert shot["name"] == api_env.sim.vm(vmid)["config"]["name"] == shot["lines"][0]
    # the first frame may still be on its way; if it never matches, the assertion below says
    # so after the screenshot is kept
    with contextlib.suppress(AssertionError):
        wait_until(lambda: band_matches(canvas_pixels(browser)[1], shot, 0) > 0.99, 10,
                   "the first frame", db=False)
    png, img = canvas_pixels(browser)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "console-connected.png").write_bytes(browser.get_screenshot_as_png())
    assert img.size == (640, 400)
    assert band_matches(img, shot, 0) > 0.99, "the VM's name is not on the canvas"
    ActionChains(browser).send_keys("ok7").perform()
    wait_until(lambda: screen(api_env, vmid)["lines"][-1].endswith("login: ok7"), 10,
               "pvesim echoed the keys")
    shot = screen(api_env, vmid)
    last = len(shot["lines"]) - 1
    wait_until(lambda: band_matches(canvas_pixels(browser)[1], shot, last) >= 0.99, 10,
               "the typed keys to show on the canvas", db=False)
    (ARTIFACTS / "console-typed.png").write_bytes(browser.get_screenshot_as_png())
    browser.find_element("id", "cad").click()  # the page's Ctrl-Alt-Del button
    wait_until(lambda: any("[Ctrl-Alt-Del]" in line
                           for line in screen(api_env, vmid)["lines"]), 10,
               "pvesim got Ctrl-Alt-Del")
    opened = (AuditLog.select().where((AuditLog.service_id == svc_c)
                                      & (AuditLog.event == "console_session_opened"))
              .order_by(AuditLog.id.desc()).first())
    who = json.loads(opened.detail)
    assert who["from"] == "127.0.0.1" and who["by"].startswith(f"client:{svc_c}/")
    browser.get("about:blank")  # the page goes: the session ends, its length is logged
    wait_until(lambda: AuditLog.select().where(
        (AuditLog.service_id == svc_c) & (AuditLog.event == "console_session_closed")).count(),
        10, "the closed session audited")
    closed = json.loads(AuditLog.select().where(
        (AuditLog.service_id == svc_c) & (AuditLog.event == "console_session_closed"))
        .order_by(AuditLog.id.desc()).first().detail)
    assert closed["duration_s"] > 0 and closed["bytes_down"] > 640 * 400 * 4
    assert closed["from"] == "127.0.0.1" and closed["session"] == who["session"]


def test_reused_expired_and_other_services_tokens_are_refused(api_env, svc_c, proxy, browser):
    used = path_of(api_env, svc_c)

    async def use_once() -> None:
        c = await Console.open(proxy.ws_url(used))
        await c.ws.close()

    asyncio.run(use_once())
    browser.get(proxy.url + used)
    assert "used already" in wait_state(browser, "refused", 5)
    with pytest.raises(InvalidStatus) as e:
        asyncio.run(Console.open(proxy.ws_url(used)))
    assert e.value.response.status_code == 403

    expired = path_of(api_env, svc_c)
    database.execute_sql("UPDATE console_sessions SET connect_by = NOW(3) - INTERVAL 1 SECOND "
                         "WHERE id = %s", (expired.split("token=con.")[1][:16],))
    browser.get(proxy.url + expired)
    assert "expired" in wait_state(browser, "refused", 5)

    other = path_of(api_env, svc_c).replace(f"service={svc_c}", f"service={SID_A}")
    browser.get(proxy.url + other)
    assert "another service" in wait_state(browser, "refused", 5)
    with pytest.raises(InvalidStatus):  # and the websocket, which would use it up
        asyncio.run(Console.open(proxy.ws_url(other)))
    # the API: another service's client token, a suspended service, a client naming an address
    assert mint(api_env, SID_A, api_env.client_token(svc_c)).status_code == 404
    refused = mint(api_env, SID_B, BILLING_TOKEN)
    assert refused.status_code == 409 and "suspended" in refused.json()["detail"]
    assert mint(api_env, svc_c, client_address="192.0.2.7").status_code == 403
    for bad in ({"client_address": "x" * 100_000}, {"client_address": "::1", "extra": 1}):
        assert mint(api_env, svc_c, BILLING_TOKEN, **bad).status_code == 422
    browser.get(proxy.url + "/console/?token=" + "A" * 5000)
    assert "malformed" in wait_state(browser, "refused", 5)


def test_a_token_bound_to_another_address_and_the_session_bound(api_env, svc_c, proxy,
                                                                strict_proxy):
    """Billing binds the token to the browser's address: from elsewhere it is refused; the
    number of sessions per service is bounded across proxies."""
    r = mint(api_env, svc_c, BILLING_TOKEN, client_address="192.0.2.7")
    assert r.json()["bound_address"] == "192.0.2.7"
    with pytest.raises(InvalidStatus):
        asyncio.run(Console.open(proxy.ws_url(r.json()["path"])))
    first, second = path_of(api_env, svc_c), path_of(api_env, svc_c)

    async def two() -> str:
        c = await Console.open(strict_proxy.ws_url(first))
        try:
            await Console.open(strict_proxy.ws_url(second))
        except InvalidStatus as exc:
            return exc.response.body.decode()
        finally:
            await c.ws.close()
        return "admitted"

    assert "at most 1" in asyncio.run(two())


def test_revoking_the_client_token_cuts_its_console_and_bad_input_is_refused(api_env, svc_c,
                                                                            proxy):
    minted = api_env.api.post(f"/v1/services/{svc_c}/client-token", BILLING_TOKEN).json()
    path = mint(api_env, svc_c, minted["token"]).json()["path"]

    async def cut() -> tuple[int | None, str]:
        c = await Console.open(proxy.ws_url(path))
        r = api_env.api.delete(f"/v1/client-tokens/{minted['token_id']}", BILLING_TOKEN)
        assert r.status_code == 204
        return await c.closed(5)

    assert asyncio.run(cut()) == (4003, "the client token ended")

    async def huge_frame() -> int | None:
        c = await Console.open(proxy.ws_url(path_of(api_env, svc_c)))
        await c.ws.send(b"\x05" * (129 * 1024))  # over pveproxy's 128 KiB frame limit
        return (await c.closed(5))[0]

    assert asyncio.run(huge_frame()) == 1009  # message too big, nothing sent on to PVE
    import requests

    for rel in ("/console/novnc/../../../etc/passwd", "/console/novnc/%2e%2e/%2e%2e/etc/passwd",
                "/console/novnc/", "/console/index.html/../../x"):
        r = requests.get(proxy.url + rel, timeout=10)
        assert r.status_code == 404 and "root:" not in r.text, rel
    broken = path_of(api_env, svc_c)  # claimed, then the websocket handshake fails
    r = requests.get(proxy.url + broken.replace("/console/?", "/console/websocket?"), timeout=10,
                     headers={"Connection": "Upgrade", "Upgrade": "websocket",
                              "Sec-WebSocket-Version": "12", "Sec-WebSocket-Key": "bad"})
    assert r.status_code in (400, 426)
    ended = database.execute_sql("SELECT used_at IS NOT NULL, ended_at IS NOT NULL, end_reason "
                                 "FROM console_sessions WHERE id = %s",
                                 (broken.split("token=con.")[1][:16],)).fetchone()
    assert ended == (1, 1, "websocket handshake failed")
    assert requests.get(proxy.url + "/console/novnc/core/rfb.js", timeout=10).headers[
        "Content-Type"] == "text/javascript"
    deep = "[" * 30000 + "]" * 30000
    r = requests.post(f"{api_env.api.url}/v1/services/{svc_c}/console", data=deep, timeout=10,
                      headers={"Authorization": f"Bearer {BILLING_TOKEN}",
                               "Content-Type": "application/json"})
    assert r.status_code == 422 and len(r.text) < 2000


def test_the_proxy_serves_tls_itself_when_given_a_certificate(api_env, tmp_path):
    """``[console] tls_cert/tls_key``: the page and the websocket over TLS (wss://)."""
    import ssl

    import requests

    from pvesim.certs import ensure_certs

    ca, cert, key = ensure_certs(tmp_path / "tls", ["127.0.0.1"])
    settings = replace(api_env.settings, console=ConsoleSettings(tls_cert=str(cert),
                                                                 tls_key=str(key)))
    with ProxyThread(settings) as p:
        path = path_of(api_env, SID_A)
        page = requests.get(f"https://127.0.0.1:{p.port}{path}", verify=str(ca), timeout=10)
        assert page.status_code == 200 and "console.js" in page.text

        async def over_tls() -> bytes:
            c = await Console.open(f"wss://127.0.0.1:{p.port}" + path.replace(
                "/console/?", "/console/websocket?"), ssl=ssl.create_default_context(
                    cafile=str(ca)))
            await c.ws.close()
            return c.name

        assert asyncio.run(over_tls()).decode() == api_env.sim.vm(
            Service.get_by_id(SID_A).vmid)["config"]["name"]
        with pytest.raises(requests.exceptions.ConnectionError):  # no plain HTTP beside it
            requests.get(f"http://127.0.0.1:{p.port}/healthz", timeout=5)


def test_racing_claims_for_the_last_place_admit_one(api_env):
    """Eight browsers claim at once with a limit of one: one session opens, seven are refused
    (the proxies' claims of a service take turns)."""
    from concurrent.futures import ThreadPoolExecutor

    from pvekvm.console import sessions

    tokens = [mint(api_env, SID_A, BILLING_TOKEN).json()["token"] for _ in range(8)]

    def claim(token: str) -> str:  # each thread: its own connection of the bound database
        try:
            c = sessions.claim(token, SID_A, "127.0.0.1", "race", 1)
        except sessions.Refused as exc:
            return str(exc)
        return c.session_id

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(claim, tokens))
    opened = [r for r in results if len(r) == 16]
    assert len(opened) == 1 and all("at most 1" in r for r in results if r not in opened)
    database.execute_sql("UPDATE console_sessions SET ended_at = NOW(3), end_reason = 'test' "
                         "WHERE id = %s", (opened[0],))


def test_sessions_ended_a_month_ago_are_forgotten_the_audit_log_kept(api_env):
    from pvekvm.console import sessions

    old, fresh = (mint(api_env, SID_A, BILLING_TOKEN).json()["token"][4:20] for _ in range(2))
    database.execute_sql("UPDATE console_sessions SET connect_by = NOW(3) - INTERVAL 31 DAY "
                         "WHERE id = %s", (old,))
    assert sessions.purge_ended() >= 1
    left = {r[0] for r in database.execute_sql(
        "SELECT id FROM console_sessions WHERE id IN (%s, %s)", (old, fresh)).fetchall()}
    assert left == {fresh}
    assert AuditLog.select().where(AuditLog.detail.contains(old)).exists()


def test_idle_and_maximum_session_time_close_the_session(api_env, svc_c, strict_proxy):
    async def idle() -> tuple[int | None, str]:
        c = await Console.open(strict_proxy.ws_url(path_of(api_env, svc_c)))
        await c.update(False)
        return await c.closed(5)

    started = time.monotonic()
    code, why = asyncio.run(idle())
    assert (code, why) == (4001, "no input for 1 s") and time.monotonic() - started < 4

    async def busy() -> tuple[int | None, str]:
        c = await Console.open(strict_proxy.ws_url(path_of(api_env, svc_c)))
        for _ in range(30):  # typing all along: never idle
            await c.key(ord("z"))
            try:
                async with asyncio.timeout(0.2):
                    await c.ws.recv()
            except TimeoutError:
                pass
            except Exception:  # noqa: BLE001 - closed by the proxy
                break
        return await c.closed(5)

    assert asyncio.run(busy()) == (4002, "the session reached its maximum of 2 s")


def test_a_stopped_vm_refuses_as_pve_does(api_env, svc_c, proxy):
    svc = Service.get_by_id(svc_c)
    px = api_env.sim.proxmox().nodes(svc.node).qemu(svc.vmid)
    api_env.sim.wait_task(px.status.stop.post())
    try:
        async def go() -> tuple[int | None, str]:
            ws_url = proxy.ws_url(path_of(api_env, svc_c))
            from websockets.asyncio.client import connect

            async with connect(ws_url, proxy=None) as ws:
                with contextlib.suppress(Exception):
                    await ws.recv()
                return ws.close_code, ws.close_reason or ""

        assert asyncio.run(go()) == (4004, "the VM is not running (stopped)")
    finally:
        api_env.sim.wait_task(px.status.start.post())


def test_suspending_the_service_closes_the_open_session(api_env, svc_c, proxy, browser):
    browser.get(proxy.url + path_of(api_env, svc_c))
    wait_state(browser, "connected", 15)
    suspended_at = time.monotonic()
    api_env.billing.suspend(service_id=svc_c)
    text = wait_state(browser, "disconnected", 20)
    took = time.monotonic() - suspended_at
    assert "suspended" in text, text
    (ARTIFACTS / "console-suspended.png").write_bytes(browser.get_screenshot_as_png())
    print(f"session cut {took:.1f} s after the suspend was published")
    wait_until(lambda: Service.get_by_id(svc_c).status == "suspended", 30, "C suspended")
    assert mint(api_env, svc_c).status_code == 409


def test_the_console_proxy_command_serves_and_refuses_without_novnc(api_env, database,
                                                                   database_url, tmp_path):
    """``python -m pvekvm console-proxy`` on the API's least-privilege MariaDB user
    (pvekvm.grants): serves a session (SIGTERM ends it with a reason, recorded); without
    noVNC it says which setting and exits 3."""
    from tests.test_grants import db_roles

    with db_roles(database, database_url) as sql:
        _command(api_env, replace(api_env.settings, database_url=sql["api"]), tmp_path)


def _command(api_env, settings, tmp_path) -> None:
    import subprocess
    import sys

    import requests

    from workers.testing.harness import write_config

    config = write_config(settings, tmp_path / "pvekvm.toml")
    env = {k: v for k, v in __import__("os").environ.items()
           if k not in ("DATABASE_URL", "AMQP_URL")}
    missing = tmp_path / "missing.toml"
    missing.write_text(config.read_text() + '[console]\nnovnc_dir = "/nonexistent"\n')
    out = subprocess.run([sys.executable, "-m", "pvekvm", "--config", str(missing),
                          "console-proxy", "--port", "21001"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 3 and "novnc_dir = /nonexistent" in out.stderr, out.stderr
    log = tmp_path / "console-proxy.log"
    proc = subprocess.Popen([sys.executable, "-m", "pvekvm", "--config", str(config),
                             "console-proxy", "--port", "21002"], cwd=ROOT, env=env,
                            stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                assert requests.get("http://127.0.0.1:21002/healthz", timeout=2).text == "ok\n"
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline and proc.poll() is None, "did not start"
                time.sleep(0.1)
        r = requests.get("http://127.0.0.1:21002/console/?token=con.x", timeout=5)
        assert r.status_code == 403 and "not a console token" in r.text
        path = path_of(api_env, SID_A)

        async def stopped() -> tuple[int | None, str]:
            c = await Console.open("ws://127.0.0.1:21002" + path.replace(
                "/console/?", "/console/websocket?"))
            proc.terminate()
            return await c.closed(10)

        assert asyncio.run(stopped()) == (4003, "the console proxy stopped")
        assert proc.wait(10) == 0, log.read_text()
        row = database.execute_sql("SELECT end_reason FROM console_sessions WHERE id = %s",
                                   (path.split("token=con.")[1][:16],)).fetchone()
        assert row == ("the console proxy stopped",)
    finally:
        proc.terminate()
        proc.wait(10)
