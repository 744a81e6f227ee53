"""Calling the WHMCS module's PHP functions from the tests, as WHMCS calls them: one `php`
process per call (tests/whmcs/call.php) with the ``$params`` array WHMCS passes; the WHMCS
functions it uses (localAPI, logModuleCall) are the recording stand-ins of tests/whmcs/stub."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

HERE = Path(__file__).resolve().parent
MODULE = HERE.parent.parent / "integrations" / "whmcs" / "modules" / "servers" / "pvekvm"
SMARTY = Path("/usr/share/php/smarty3/Smarty.class.php")


def php_or_skip() -> str:
    """The php binary with the curl extension, or a skip saying what is missing (scripts/test
    installs php-cli and php-curl from Debian where it can)."""
    php = shutil.which("php")
    if php is None:
        pytest.skip("php is not installed (Debian: php-cli, php-curl)")
    mods = subprocess.run([php, "-m"], capture_output=True, text=True, timeout=30).stdout
    if "curl" not in mods.split():
        pytest.skip("php has no curl extension (Debian: php-curl)")
    return php


def php_command(php: str) -> list[str]:
    """php with no php.ini and only the curl extension loaded besides what PHP always has
    (Debian builds ctype, mbstring, iconv… as separate extensions): the module must run on
    curl and json alone."""
    return [php, "-n", "-d", "extension=curl", "-d", "display_errors=stderr"]


@dataclass
class Whmcs:
    """One WHMCS installation's side: the server entry that points at the API, and what the
    stand-ins recorded."""

    php: str
    api_url: str
    token: str
    workdir: Path
    settings: Any = None  # the engine's Settings (for a deliverer started beside it)
    sim: Any = None  # pvesim (RunningSimulator), for faults
    calls_file: Path = field(init=False)

    def __post_init__(self) -> None:
        self.calls_file = self.workdir / "whmcs-calls.jsonl"

    def params(self, service_id: int, client_id: int, product: str = "vps-small",
               **over: Any) -> dict[str, Any]:
        """``$params`` as WHMCS builds it for a service of a product on a server (keys as
        developers.whmcs.com/provisioning-modules/module-parameters lists them)."""
        url = urlsplit(self.api_url)
        params: dict[str, Any] = {
            "accountid": service_id, "serviceid": service_id, "userid": client_id, "pid": 7,
            "serverid": 1, "domain": "", "username": "", "password": "Wh1tEsP4ss",
            "producttype": "server", "moduletype": "pvekvm",
            "configoption1": product, "configoption2": "", "configoption3": "",
            "configoption4": "on", "configoption5": "https://console.example.net/console/",
            "clientsdetails": {"userid": client_id, "id": client_id, "firstname": "Ada",
                               "lastname": "Lovelace", "email": f"client{client_id}@example.com",
                               "language": "german", "country": "DE"},
            "customfields": {}, "configoptions": {},
            "server": True, "serverip": url.hostname, "serverhostname": url.hostname,
            "serverusername": "", "serverpassword": "", "serveraccesshash": self.token,
            "serversecure": False, "serverport": url.port, "serverhttpprefix": "http",
        }
        params.update(over)
        return params

    def call(self, function: str, params: dict[str, Any] | None = None,
             post: dict[str, Any] | None = None, get: dict[str, Any] | None = None) -> Any:
        """What ``pvekvm_<function>($params)`` returns (and the rendered template, for a
        ClientArea answer: :meth:`render`)."""
        return self._run(function, params, post, get)["return"]

    def render(self, params: dict[str, Any], get: dict[str, Any] | None = None) -> str:
        if not SMARTY.exists():
            pytest.skip("Smarty 3 is not installed (Debian: smarty3), so the client area "
                        "template cannot be rendered")
        out = self._run("ClientArea", params, None, get)
        assert out["html"] is not None, out
        return out["html"]

    def _run(self, function: str, params: dict[str, Any] | None, post: dict[str, Any] | None,
             get: dict[str, Any] | None) -> dict[str, Any]:
        call: dict[str, Any] = {"function": function, "post": post or {}, "get": get or {}}
        if params is not None:
            call["params"] = params
        env = {**os.environ, "PVEKVM_WHMCS_CALLS": str(self.calls_file),
               "PVEKVM_SMARTY_DIR": str(self.workdir / "smarty")}
        done = subprocess.run([*php_command(self.php), str(HERE / "call.php")],
                              input=json.dumps(call), capture_output=True, text=True,
                              timeout=60, env=env)
        assert done.returncode == 0, f"php failed: {done.stderr[-3000:]}{done.stdout[-2000:]}"
        assert not done.stderr.strip(), done.stderr[-3000:]  # no warning, no notice
        return json.loads(done.stdout)

    def recorded(self, function: str | None = None) -> list[dict[str, Any]]:
        if not self.calls_file.exists():
            return []
        rows = [json.loads(line) for line in self.calls_file.read_text().splitlines()]
        return [r for r in rows if function is None or r["function"] == function]
