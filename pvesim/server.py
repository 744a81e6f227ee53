"""HTTPS server (stdlib http.server + ssl) speaking ``/api2/json`` like pveproxy: one listener
for the cluster, or one per node (``per_node_api``: every node's pveproxy, sharing one state),
each of which an operator can take down and bring back (``set_api``); the daemons' worker
limits and the VM config lock as :mod:`pvesim.limits` models them."""

from __future__ import annotations

import contextlib
import email.utils
import hashlib
import json
import re
import socket
import ssl
import struct
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from . import access as _access  # noqa: F401 - registers routes
from . import auth as _auth  # noqa: F401
from . import cluster as _cluster  # noqa: F401
from . import console as _console  # noqa: F401
from . import firewall as _firewall  # noqa: F401
from . import qemu as _qemu  # noqa: F401
from . import qemu_ops as _qemu_ops  # noqa: F401
from .auth import Auth, AuthError
from .certs import ensure_certs
from .faults import Faults
from .limits import Limits, NodeApis, ProxyTimeout
from .model import Cluster, PVEError
from .routes import ROUTES, Ctx, match
from .schema import ParamError, method_info, validator
from .tasks import TaskManager

API_PREFIX = "/api2/json"
STATE_FILE = "pvesim-state.json"
SECRETS_FILE = "pvesim-secrets.json"


class Simulator:
    """Everything a running pvesim owns: state, tasks, faults, auth, HTTPS server."""

    def __init__(self, host: str = "127.0.0.1", port: int = 8006, state_dir: Path | None = None,
                 task_time_scale: float = 1.0, faults: Faults | None = None,
                 nodes: list[str] | None = None, clone_storage_limit: int = 2,
                 cert_dir: Path | None = None, verbose: bool = False,
                 template_replicas: bool = False, per_node_api: bool = False,
                 limits: Limits | None = None):
        self.host, self.verbose = host, verbose
        self.apis = NodeApis(limits or Limits())
        self.state_dir = Path(state_dir) if state_dir else None
        self.faults = faults or Faults()
        self.clone_storage_limit = clone_storage_limit
        self.active_clones: dict[tuple[str, str], int] = {}
        self.most_clones: dict[tuple[str, str], int] = {}  # high-water mark, for tests
        self.cluster = Cluster(nodes, template_replicas)
        self.auth = self._load_auth()
        self.tasks = TaskManager(self.cluster.lock, task_time_scale,
                                 lambda: self.faults.roll(self.faults.task_error_rate))
        if self.state_dir and (self.state_dir / STATE_FILE).exists():
            self.cluster.load_json(json.loads((self.state_dir / STATE_FILE).read_text()))
        cdir = cert_dir or self.state_dir
        if cdir is None:
            raise ValueError("need state_dir or cert_dir for the CA/server certificate")
        self.ca_path, cert, key = ensure_certs(Path(cdir), [host])
        self.cert_pem = Path(cert).read_text()
        self.vnc_sessions: dict[str, dict[str, Any]] = {}  # vncproxy ticket -> session
        self.vnc_screens: dict[int, Any] = {}  # vmid -> pvesim.vnc.Screen (the VM's display)
        der = ssl.PEM_cert_to_DER_cert(Path(cert).read_text())
        fp = hashlib.sha256(der).hexdigest().upper()
        self.fingerprint = ":".join(fp[i:i + 2] for i in range(0, len(fp), 2))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.ssl_ctx = ctx
        self.servers: dict[str, _Server] = {}  # node -> its listener, while its API is up
        self.api_ports: dict[str, int] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._started = False
        for i, node in enumerate(self.cluster.nodes if per_node_api else self.cluster.nodes[:1]):
            srv = self._listen(node, port + i if port else 0)
            self.api_ports[node] = srv.server_address[1]
        self.httpd = self.servers[self.cluster.nodes[0]]
        self.port = self.api_ports[self.cluster.nodes[0]]

    def _listen(self, node: str, port: int) -> _Server:
        srv = _Server((self.host, port), _Handler)
        srv.sim, srv.ssl_ctx, srv.node = self, self.ssl_ctx, node
        self.servers[node] = srv
        return srv

    def set_api(self, node: str, up: bool) -> None:
        """Take ``node``'s API down (its listener refuses connections, open ones are cut, as
        when its pveproxy stops or the path to it is cut; the node itself runs on, so other
        nodes still proxy to it) or bring it back on the same port."""
        if node not in self.api_ports:
            raise KeyError(node)
        srv = self.servers.get(node)
        if not up and srv is not None:
            del self.servers[node]
            if self._started:
                srv.shutdown()
            srv.server_close()
            srv.cut_connections()
        elif up and srv is None:
            self._listen(node, self.api_ports[node])
            if self._started:
                self._serve(node)

    def _serve(self, node: str) -> None:
        t = threading.Thread(target=self.servers[node].serve_forever,
                             kwargs={"poll_interval": 0.1}, daemon=True,
                             name=f"pvesim-http-{node}")
        self._threads[node] = t
        t.start()

    def _load_auth(self) -> Auth:
        if self.state_dir is None:
            return Auth()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        f = self.state_dir / SECRETS_FILE
        if f.exists():
            d = json.loads(f.read_text())
            return Auth(d["password"], d["tokens"], bytes.fromhex(d["key"]))
        a = Auth()
        f.write_text(json.dumps({"password": a.users["root@pam"], "tokens": a.tokens,
                                 "key": a.key.hex()}))
        f.chmod(0o600)
        return a

    # --- lifecycle -------------------------------------------------------------------------
    def connection(self) -> dict[str, Any]:
        """The connection description written to ``--connection-file``."""
        host = self.host if self.host not in ("0.0.0.0", "::") else "127.0.0.1"
        token_id, secret = next(iter(self.auth.tokens.items()))
        return {
            "base_url": f"https://{host}:{self.port}{API_PREFIX}",
            "endpoints": [f"https://{host}:{p}{API_PREFIX}" for p in self.api_ports.values()],
            "node_endpoints": {n: f"https://{host}:{p}{API_PREFIX}"
                               for n, p in self.api_ports.items()},
            "host": host, "port": self.port, "nodes": list(self.cluster.nodes),
            "user": "root@pam", "password": self.auth.users["root@pam"],
            "token_id": token_id, "token_name": token_id.split("!", 1)[1],
            "token_secret": secret, "ca_bundle": str(self.ca_path),
            "control_url": f"https://{host}:{self.port}/_sim",
            "templates": {name: {"vmid": vmid, "node": node, "storage": st}
                          for vmid, name, node, st, _ in reversed(self.cluster.template_copies())
                          if vmid in self.cluster.vms},
            "template_copies": [{"name": name, "vmid": vmid, "node": node, "storage": st}
                                for vmid, name, node, st, _ in self.cluster.template_copies()
                                if vmid in self.cluster.vms],
            "storages": {sid: {"type": s["type"], "content": s["content"],
                               "shared": bool(s["shared"])}
                         for sid, s in self.cluster.storages.items()},
            "fingerprint": self.fingerprint,
        }

    def start(self) -> Simulator:
        self._started = True
        for node in list(self.servers):
            self._serve(node)
        return self

    def shutdown(self) -> None:
        """Stop serving, finish due work and save state (when a state dir is set)."""
        for node, srv in list(self.servers.items()):
            if self._started:
                srv.shutdown()
                self._threads[node].join(timeout=5)
            srv.server_close()
        self.servers.clear()
        self.tasks.stop()
        self.tasks.finish_all()
        if self.state_dir:
            self.cluster.save(self.state_dir / STATE_FILE)

    def reset(self, state: bool = False) -> None:
        self.faults = Faults()
        if state:
            with self.cluster.lock:
                fresh = Cluster(self.cluster.nodes, self.cluster.template_replicas)
                self.cluster.vms, self.cluster.volumes = fresh.vms, fresh.volumes
                self.cluster.hardware = fresh.hardware

    # --- dispatch --------------------------------------------------------------------------
    def api(self, method: str, path: str, params: dict[str, Any], headers: Any,
            entry: str | None = None) -> tuple[int, str, Any, dict[str, str] | None]:
        """Answer one API call received by ``entry``'s pveproxy: (status, reason, data,
        errors)."""
        try:
            user = self.auth.authenticate(method, path, headers)
        except AuthError as e:
            return 401, str(e), None, None
        faults = self.faults
        if path != "/access/ticket" or faults.apply_to_ticket:
            if faults.latency_ms:
                time.sleep(faults.latency_ms / 1000.0)
            if ((not faults.error_path or re.search(faults.error_path, f"{method} {path}"))
                    and faults.roll(faults.error_rate)):
                return faults.error_status, faults.error_message, None, faults.error_errors
        m = match(path)
        if m is None or (method, m[0]) not in ROUTES:
            return 501, f"Method '{method} {path}' not implemented", None, None
        template, pathp = m
        info = method_info(method, template) or {}
        for k, v in params.items():
            if k in pathp and pathp[k] != str(v):
                return 400, "Parameter verification failed.", None, {
                    k: "duplicate parameter (already defined in URI) with conflicting values!"}
        params.update(pathp)
        if user and "!" in user and not info.get("allowtoken", 1):
            return 403, (f"Permission check failed (URI '{path}' not available with API "
                         "token, need proper ticket."), None, None
        node = pathp.get("node")
        if node is not None and info.get("proxyto") == "node":
            if node not in self.cluster.nodes:
                return 500, (f"hostname lookup '{node}' failed - failed to get address info "
                             f"for: {node}: Name or service not known"), None, None
            if node in faults.down_nodes:
                return 595, "No route to host", None, None
        entry = entry or self.cluster.nodes[0]
        protected = bool(info.get("protected"))
        target = node if node is not None and info.get("proxyto") == "node" else entry
        vmid = pathp.get("vmid")
        locks = (protected and method != "GET" and vmid is not None and "/qemu/" in template
                 and not template.endswith("/clone") and vmid.isdigit())

        def work() -> Any:
            with self.cluster.lock:
                return ROUTES[(method, template)](Ctx(self, user or "", params), params)

        try:
            validator(method, template).validate(params)
            data = self.apis.run(target, protected, target != entry or protected,
                                 int(vmid) if locks and vmid else None, work)
        except ParamError as e:
            return 400, "Parameter verification failed.", None, e.errors
        except PVEError as e:
            return e.status, e.message, None, None
        except ProxyTimeout:
            return 596, "Connection timed out", None, None
        return 200, "OK", data, None

    def control(self, method: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        """``/_sim`` control endpoints (not part of the PVE API)."""
        if path == "/_sim/faults" and method == "GET":
            return 200, self.faults.to_dict()
        if path == "/_sim/faults" and method in ("PUT", "POST"):
            try:
                self.faults = Faults.from_dict(body)
            except (TypeError, ValueError) as e:
                return 400, {"error": str(e)}
            return 200, self.faults.to_dict()
        if path == "/_sim/reset" and method == "POST":
            self.reset(bool(body.get("state")))
            return 200, {"ok": True}
        if path == "/_sim/connection" and method == "GET":
            return 200, self.connection()
        if path.startswith("/_sim/api/") and method in ("PUT", "POST"):
            node = path[len("/_sim/api/"):]
            if node not in self.api_ports or not isinstance(body.get("up"), bool | str):
                return 400, {"error": f"expected /_sim/api/NODE (one of "
                                      f"{', '.join(self.api_ports)}) and {{\"up\": bool}}"}
            # not from this listener's own thread when it is the one going down
            up = body["up"] in (True, "1", "true")
            threading.Thread(target=self.set_api, args=(node, up), daemon=True).start()
            return 200, {"node": node, "up": up}
        m = re.fullmatch(r"/_sim/nodes/([A-Za-z0-9][A-Za-z0-9-]{0,62})", path)
        if m and method in ("PUT", "POST"):  # a node's hardware, or a node joining
            try:
                hardware = {k: int(v) if isinstance(v, str) and v.isdigit() else v
                            for k, v in body.items()}  # a form body sends strings
                with self.cluster.lock:
                    return 200, self.cluster.set_node(m.group(1), **hardware)
            except (TypeError, ValueError) as e:
                return 400, {"error": str(e)}
        m = re.fullmatch(r"/_sim/storages/([A-Za-z][A-Za-z0-9_.-]{0,63})", path)
        if m and method in ("PUT", "POST"):  # a storage's size
            total = body.get("total")
            try:
                with self.cluster.lock:
                    self.cluster.set_storage(m.group(1), int(total) if isinstance(
                        total, str) and total.isdigit() else total)  # type: ignore[arg-type]
            except (TypeError, ValueError) as e:
                return 400, {"error": str(e)}
            return 200, {"storage": m.group(1), "total": self.cluster.storages[m.group(1)]["total"]}
        if path == "/_sim/limits" and method == "GET":
            return 200, {**self.apis.limits.to_dict(), "stats": dict(self.apis.stats)}
        if path == "/_sim/limits" and method in ("PUT", "POST"):
            try:
                self.apis.limits = Limits.from_dict(body)
            except (TypeError, ValueError) as e:
                return 400, {"error": str(e)}
            return 200, self.apis.limits.to_dict()
        m = re.fullmatch(r"/_sim/vms/(\d{1,9})/hold-lock", path)
        if m and method == "POST":
            try:
                seconds = float(body.get("seconds", 0))
            except (TypeError, ValueError):
                seconds = -1.0
            if not 0 < seconds <= 3600:
                return 400, {"error": "expected {\"seconds\": 0 < s <= 3600}"}
            self.apis.hold_lock(int(m.group(1)), seconds)
            return 200, {"vmid": int(m.group(1)), "seconds": seconds}
        if path.startswith("/_sim/vms") and method == "GET":
            with self.cluster.lock:
                rest = path[len("/_sim/vms"):].strip("/")
                if rest:
                    vm = self.cluster.vms.get(int(rest)) if rest.isdigit() else None
                    return (200, json.loads(json.dumps(vm))) if vm else (404, {"error": rest})
                return 200, json.loads(json.dumps(self.cluster.vms))
        if path.startswith("/_sim/console/") and method == "GET":
            rest = path[len("/_sim/console/"):]
            screen = self.vnc_screens.get(int(rest)) if rest.isdigit() else None
            return (200, screen.snapshot()) if screen else (404, {"error": "no screen " + rest})
        if path == "/_sim/tasks" and method == "GET":
            return 200, [t.status_dict() for t in self.tasks.tasks.values()]
        return 404, {"error": f"no such control endpoint {method} {path}"}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128
    sim: Simulator
    ssl_ctx: ssl.SSLContext
    node: str

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.open: set[socket.socket] = set()
        self.open_lock = threading.Lock()

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = self.socket.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # handshake happens lazily in the handler thread, not in the accept loop
        tls = self.ssl_ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        with self.open_lock:
            self.open.add(tls)
        return tls, addr

    def shutdown_request(self, request: Any) -> None:
        with self.open_lock:
            self.open.discard(request)
        super().shutdown_request(request)

    def cut_connections(self) -> None:
        """Close every open connection (the API went down under them)."""
        with self.open_lock:
            socks, self.open = list(self.open), set()
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ssl.SSLError, ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


_date_cache: tuple[int, str] = (0, "")


def _http_date() -> str:
    """The Date header's value, formatted once per second (every answer carries it twice)."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, email.utils.formatdate(now, usegmt=True))
    return _date_cache[1]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "pve-api-daemon/3.0"
    sys_version = ""
    server: _Server

    def setup(self) -> None:
        self.request.settimeout(120)
        try:
            self.request.do_handshake()
        except (ssl.SSLError, OSError):
            self.close_connection = True
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.sim.verbose:
            sys.stderr.write("pvesim: " + (format % args) + "\n")

    def _params(self) -> tuple[str, dict[str, Any]]:
        url = urllib.parse.urlsplit(self.path)
        params: dict[str, Any] = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            raw = self.rfile.read(length)
            ctype = self.headers.get("Content-Type", "")
            if "json" in ctype:
                body = json.loads(raw or b"{}")
                if isinstance(body, dict):
                    params.update(body)
            else:
                params.update(urllib.parse.parse_qsl(raw.decode("utf-8"),
                                                     keep_blank_values=True))
        return urllib.parse.unquote(url.path), params

    def _send(self, status: int, reason: str, body: bytes, close: bool = False,
              ctype: str = "application/json;charset=UTF-8") -> None:
        reason = reason.splitlines()[0] if reason else ""
        date = _http_date()
        head = (f"HTTP/1.1 {status} {reason}\r\n"
                f"Server: {self.server_version}\r\n"
                f"Date: {date}\r\n"
                "Cache-Control: max-age=0\r\nPragma: no-cache\r\nExpires: "
                f"{date}\r\n"
                f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n")
        if close:
            head += "Connection: close\r\n"
            self.close_connection = True
        self.wfile.write(head.encode("latin-1") + b"\r\n" + body)
        self.log_request(status, len(body))

    def _dispatch(self, method: str) -> None:
        sim = self.server.sim
        try:
            path, params = self._params()
        except (ValueError, UnicodeDecodeError) as e:
            self._send(400, "Bad Request", json.dumps({"data": None, "message": str(e)})
                       .encode(), close=True)
            return
        if path.startswith("/_sim"):
            status, data = sim.control(method, path.rstrip("/"), params)
            self._send(status, "OK" if status == 200 else "Error",
                       json.dumps({"data": data}).encode())
            return
        if not path.startswith(API_PREFIX + "/"):
            self._send(404, "Not Found", b"", close=True)
            return
        api_path = path[len(API_PREFIX):].rstrip("/") or "/"
        try:
            status, reason, data, errors = sim.api(method, api_path, params, self.headers,
                                                   self.server.node)
        except Exception as e:  # noqa: BLE001 - answer like pveproxy on internal errors
            status, reason, data, errors = 500, f"internal error: {e}", None, None
        if (status == 200 and method == "GET" and api_path.endswith("/vncwebsocket")
                and (self.headers.get("Upgrade") or "").lower() == "websocket"):
            self._websocket(params)
            return
        if status == 401 and reason != "authentication failure":
            self._send(401, reason, b"", close=True)
            return
        out: dict[str, Any] = {"data": data}
        if errors:
            out["errors"] = errors
        if status >= 400:
            out["message"] = reason + ("\n" if status != 501 else "")
        self._send(status, reason, json.dumps(out, separators=(",", ":")).encode(),
                   close=status >= 400)

    def _websocket(self, params: dict[str, Any]) -> None:
        """pveproxy's websocket_proxy: 101, then the VNC stream (or a close when the vncproxy
        task has no connection to give)."""
        from . import console, vnc

        self.close_connection = True
        version, key = self.headers.get("Sec-WebSocket-Version"), self.headers.get(
            "Sec-WebSocket-Key")
        if version != "13" or not key:
            self._send(400, "unsupported websocket-version or missing websocket-key", b"",
                       close=True)
            return
        proto = self.headers.get("Sec-WebSocket-Protocol") or ""
        self.wfile.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                          "Connection: upgrade\r\n"
                          f"Sec-WebSocket-Accept: {vnc.accept_key(key)}\r\n"
                          + (f"Sec-WebSocket-Protocol: {proto}\r\n" if proto else "")
                          + "\r\n").encode("latin-1"))
        self.wfile.flush()
        self.log_request(101)
        stream = console.vnc_stream(self.server.sim, params)
        if stream is None:
            return
        screen, password = stream
        self.request.settimeout(None)
        try:
            with contextlib.suppress(vnc.Closed, OSError, struct.error):
                vnc.RfbSession(vnc.WebSocket(self.request, self.rfile), screen, password).serve()
        finally:  # the vncproxy task ends with its connection: the port is free again
            with self.server.sim.cluster.lock:
                ended = self.server.sim.vnc_sessions.get(str(params.get("vncticket")))
                if ended is not None:
                    ended["closed"] = True

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")
