"""The satellite's transport: retries with backoff and jitter, a proxy's 502/503/504, proxies
from the environment and verified TLS with a private CA, between real processes."""

import contextlib
import http.client
import json
import select
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import urllib3
from urllib3.exceptions import ProtocolError

from msupply.sites import Site
from sync.client import SyncRetry, pool_for
from tests.servers import Cluster
from tests.sync.realsites import sync_ok

# Short waits between retries, so a test that counts retries does not sit through real backoff.
QUICK_RETRIES = {
    "SYNC_RETRIES": "2",
    "SYNC_BACKOFF_SECONDS": "0.1",
    "SYNC_BACKOFF_JITTER_SECONDS": "0.1",
}
Answer = tuple[int, dict[str, str], bytes]


def _relay(one: socket.socket, other: socket.socket) -> None:
    """Copy bytes both ways between two sockets until either side closes."""

    def pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(64 * 1024):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (one, other):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    back = threading.Thread(target=pump, args=(other, one), daemon=True)
    back.start()
    pump(one, other)
    back.join(timeout=30)


def _forward(
    handler: BaseHTTPRequestHandler, port: int, path: str, body: bytes
) -> tuple[int, list[tuple[str, str]], bytes]:
    """Send the handler's request on to 127.0.0.1:port and return the upstream answer."""
    headers = {
        k: v
        for k, v in handler.headers.items()
        if k.lower() not in ("host", "proxy-connection", "connection")
    }
    upstream = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        upstream.request(handler.command, path, body=body or None, headers=headers)
        answer = upstream.getresponse()
        return answer.status, answer.getheaders(), answer.read()
    finally:
        upstream.close()


def _answer(
    handler: BaseHTTPRequestHandler, status: int, headers: list[tuple[str, str]], body: bytes
) -> None:
    handler.send_response(status)
    for key, value in headers:
        if key.lower() not in ("content-length", "connection", "transfer-encoding"):
            handler.send_header(key, value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


class _Server:
    """A threaded HTTP server on a free port of 127.0.0.1, serving `handler` until closed."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}/"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class Front(_Server):
    """A reverse proxy in front of the master: it gives the canned answers of `script`, one per
    request (every request, when `always`), and forwards the requests after them."""

    def __init__(self, upstream_port: int, script: list[Answer], *, always: bool = False) -> None:
        front = self
        self.script, self.always = list(script), always
        self.arrivals: list[float] = []
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with front._lock:
                    front.arrivals.append(time.monotonic())
                    canned = front.script[0] if front.script else None
                    if canned and not front.always:
                        front.script.pop(0)
                if canned is None:
                    _answer(self, *_forward(self, upstream_port, self.path, body))
                else:
                    status, headers, payload = canned
                    _answer(self, status, list(headers.items()), payload)

            do_GET = do_POST = _serve  # noqa: N815 - the names http.server looks for

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        super().__init__(Handler)

    @property
    def requests(self) -> int:
        return len(self.arrivals)


class ForwardProxy(_Server):
    """An HTTP proxy as HTTP_PROXY / HTTPS_PROXY name one: absolute-URI GET and POST are
    forwarded, CONNECT opens a tunnel. It serves 127.0.0.1 only and counts what it carried."""

    def __init__(self) -> None:
        proxy = self
        self.forwarded: list[str] = []
        self.tunnels: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                target = urlsplit(self.path)
                if target.scheme != "http" or target.hostname != "127.0.0.1" or not target.port:
                    self.send_error(400, "This proxy serves http://127.0.0.1 only.")
                    return
                proxy.forwarded.append(self.path)
                path = target.path + (f"?{target.query}" if target.query else "")
                _answer(self, *_forward(self, target.port, path, body))

            do_GET = do_POST = _serve  # noqa: N815 - the names http.server looks for

            def do_CONNECT(self) -> None:  # noqa: N802 - the name http.server looks for
                host, _, port = self.path.rpartition(":")
                if host != "127.0.0.1" or not port.isdigit():
                    self.send_error(400, "This proxy serves 127.0.0.1 only.")
                    return
                upstream = socket.create_connection(("127.0.0.1", int(port)), timeout=60)
                proxy.tunnels.append(self.path)
                self.send_response(200, "Connection established")
                self.end_headers()
                self.wfile.flush()
                self.close_connection = True
                with upstream:
                    _relay(self.connection, upstream)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        super().__init__(Handler)


class TlsFront:
    """Ends TLS on 127.0.0.1 with `certificate` and relays the plain bytes to the master."""

    def __init__(self, upstream_port: int, certificate: Path, key: Path) -> None:
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(certificate, key)
        self._upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.url = f"https://127.0.0.1:{self.port}/"
        self.sessions = 0
        self.refused = 0
        self._stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            if not select.select([self._listener], [], [], 0.2)[0]:
                continue
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        client.settimeout(30)
        try:
            secure = self._context.wrap_socket(client, server_side=True)
        except (ssl.SSLError, OSError):
            # The client refused the certificate (or spoke no TLS).
            self.refused += 1
            client.close()
            return
        self.sessions += 1
        secure.settimeout(None)
        with secure, socket.create_connection(("127.0.0.1", self._upstream_port)) as upstream:
            _relay(secure, upstream)

    def close(self) -> None:
        self._stopped.set()
        self._listener.close()


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A private CA, and a certificate it signed for 127.0.0.1 (no other name)."""
    folder = tmp_path_factory.mktemp("tls")
    openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=msupply-sync test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=folder,
    )  # fmt: skip
    openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1",
        cwd=folder,
    )  # fmt: skip
    (folder / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
    )
    openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "server.ext",
        cwd=folder,
    )  # fmt: skip
    return {name: folder / f"{name}.{ext}" for name, ext in (("ca", "pem"), ("server", "pem"))} | {
        "key": folder / "server.key"
    }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A master and one satellite that has enrolled and synced once."""
    cluster = Cluster(tmp_path_factory.mktemp("transport"), satellites=1)
    try:
        cluster.provision(items=4, names=2)
        sync_ok(cluster.satellites[0])
        yield cluster
    finally:
        cluster.destroy()


@contextlib.contextmanager
def master_at(cluster: Cluster, url: str) -> Iterator[Site]:
    """The satellite, with `url` as the master's address in its Sync with list for a while."""
    satellite = cluster.satellites[0]
    satellite.manage("sync_peer", "update", "--sync-id", "1", "--url", url)
    try:
        yield satellite
    finally:
        satellite.manage("sync_peer", "update", "--sync-id", "1", "--url", cluster.master.url)


def sync_now(satellite: Site, **env: str) -> dict[str, Any]:
    """Run sync_now on `satellite` with `env` added; returns its JSON report."""
    result = satellite.manage("sync_now", "--json", check=False, env=env)
    assert "Traceback" not in result.stderr, result.stderr
    report = dict(json.loads(result.stdout.strip().splitlines()[-1]))
    assert (report["result"] == "success") is (result.returncode == 0), report
    return report


pytestmark = pytest.mark.servers

UNAVAILABLE_PAGE = b"<html><body><h1>503 Service Unavailable</h1></body></html>"
BAD_GATEWAY_PAGE = b"<html><body><h1>502 Bad Gateway</h1></body></html>"


def test_a_503_with_retry_after_is_waited_out_and_the_sync_completes(cluster: Cluster) -> None:
    script = [(503, {"Retry-After": "2", "Content-Type": "text/html"}, UNAVAILABLE_PAGE)]
    front = Front(cluster.master.port, script)
    try:
        with master_at(cluster, front.url) as satellite:
            report = sync_now(satellite, **QUICK_RETRIES)
    finally:
        front.close()
    assert report["result"] == "success", report
    assert front.requests >= 2
    # The backoff alone would have retried after 0.1-0.2 s: the wait is the proxy's Retry-After.
    assert front.arrivals[1] - front.arrivals[0] >= 2.0


def test_a_502_on_every_request_fails_the_run_as_unavailable_after_the_retries(
    cluster: Cluster,
) -> None:
    front = Front(cluster.master.port, [(502, {}, BAD_GATEWAY_PAGE)], always=True)
    try:
        with master_at(cluster, front.url) as satellite:
            report = sync_now(satellite, **QUICK_RETRIES)
    finally:
        front.close()
    assert (report["result"], report["error_code"]) == ("failure", "unavailable"), report
    # The first try and SYNC_RETRIES=2 retries, then the run gives up.
    assert front.requests == 3
    assert "unavailable or overloaded" in report["message"]
    assert "HTTP 502, still after 2 retries" in report["message"]
    assert "a proxy" in report["message"]
    assert "next sync resumes" in report["message"]
    assert "check the URL" not in report["message"]


def test_a_crash_page_from_the_master_is_its_error_not_a_wrong_url(cluster: Cluster) -> None:
    crash = b"<h1>Server Error (500)</h1>"
    front = Front(cluster.master.port, [(500, {"Content-Type": "text/html"}, crash)], always=True)
    try:
        with master_at(cluster, front.url) as satellite:
            report = sync_now(satellite, **QUICK_RETRIES)
    finally:
        front.close()
    assert (report["result"], report["error_code"]) == ("failure", "server_error"), report
    # Not a proxy's hiccup: a crash is reported at once, not retried.
    assert front.requests == 1
    assert "HTTP 500" in report["message"]
    assert "master's log" in report["message"]
    assert "check the URL" not in report["message"]


def test_a_json_refusal_behind_a_front_is_the_masters_own_code(cluster: Cluster) -> None:
    refusal = json.dumps({"code": "satellite_disabled", "message": "Disabled here."}).encode()
    script = [(503, {"Content-Type": "application/json"}, refusal)]
    front = Front(cluster.master.port, script, always=True)
    try:
        with master_at(cluster, front.url) as satellite:
            report = sync_now(satellite, **QUICK_RETRIES)
    finally:
        front.close()
    assert (report["error_code"], report["message"]) == ("satellite_disabled", "Disabled here.")


def test_a_lockout_with_retry_after_is_not_retried_within_the_run(cluster: Cluster) -> None:
    lockout = json.dumps({"code": "locked_out", "message": "Locked out for 15 minutes."}).encode()
    script = [(429, {"Retry-After": "900", "Content-Type": "application/json"}, lockout)]
    front = Front(cluster.master.port, script, always=True)
    try:
        with master_at(cluster, front.url) as satellite:
            report = sync_now(satellite, **QUICK_RETRIES)
    finally:
        front.close()
    assert report["error_code"] == "locked_out", report
    assert front.requests == 1


def test_an_answer_cut_before_its_body_is_retried_as_a_dropped_link(cluster: Cluster) -> None:
    front = Front(cluster.master.port, [(200, {}, b"")])
    try:
        with master_at(cluster, front.url) as satellite:
            assert sync_now(satellite, **QUICK_RETRIES)["result"] == "success"
            assert front.requests >= 2
            front.script, front.always = [(200, {}, b"")], True
            failed = sync_now(satellite, **QUICK_RETRIES)
    finally:
        front.close()
    assert failed["error_code"] == "unreachable", failed
    assert "could not be reached" in failed["message"]


def test_http_proxy_carries_the_sync_and_no_proxy_bypasses_it(cluster: Cluster) -> None:
    proxy = ForwardProxy()
    try:
        through = sync_now(cluster.satellites[0], HTTP_PROXY=proxy.url, NO_PROXY="")
        carried = list(proxy.forwarded)
        bypassed = sync_now(cluster.satellites[0], HTTP_PROXY=proxy.url, NO_PROXY="127.0.0.1")
    finally:
        proxy.close()
    assert through["result"] == "success", through
    assert carried
    assert all(url.startswith(f"{cluster.master.url}api/sync/v1/") for url in carried)
    assert any("/handshake/" in url for url in carried)
    assert bypassed["result"] == "success", bypassed
    assert proxy.forwarded == carried


def test_a_private_ca_needs_sync_ca_bundle_and_then_the_master_is_trusted(
    cluster: Cluster, certificates: dict[str, Path]
) -> None:
    tls = TlsFront(cluster.master.port, certificates["server"], certificates["key"])
    proxy = ForwardProxy()
    try:
        with master_at(cluster, tls.url) as satellite:
            refused = sync_now(satellite, **QUICK_RETRIES)
            assert tls.refused >= 1
            trusted = sync_now(satellite, SYNC_CA_BUNDLE=str(certificates["ca"]))
            sessions = tls.sessions
            tunnelled = sync_now(
                satellite,
                SYNC_CA_BUNDLE=str(certificates["ca"]),
                HTTPS_PROXY=proxy.url,
                NO_PROXY="",
            )
        with master_at(cluster, f"https://localhost:{tls.port}/") as satellite:
            misnamed = sync_now(satellite, SYNC_CA_BUNDLE=str(certificates["ca"]), NO_PROXY="")
    finally:
        proxy.close()
        tls.close()
    assert (refused["result"], refused["error_code"]) == ("failure", "tls"), refused
    assert "SYNC_CA_BUNDLE" in refused["message"]
    assert "could not be reached" not in refused["message"]
    assert trusted["result"] == "success", trusted
    assert sessions >= 1
    assert tunnelled["result"] == "success", tunnelled
    assert proxy.tunnels == [f"127.0.0.1:{tls.port}"] * len(proxy.tunnels)
    assert proxy.tunnels
    assert tls.sessions > sessions
    # The certificate names 127.0.0.1, not localhost: verified against the CA, still refused.
    assert (misnamed["result"], misnamed["error_code"]) == ("failure", "tls"), misnamed


# --- the retry policy itself, without servers --------------------------------------------------


def after_errors(retry: SyncRetry, count: int) -> SyncRetry:
    for _ in range(count):
        retry = retry.increment("GET", "/api/sync/v1/pull/", error=ProtocolError("dropped"))
    return retry


@pytest.mark.parametrize("errors", [1, 3])
def test_every_retry_waits_its_backoff_plus_jitter_that_differs_between_satellites(
    errors: int,
) -> None:
    retries = [
        after_errors(SyncRetry(total=5, backoff_factor=1.0, backoff_jitter=1.0), errors)
        for _ in range(2)
    ]
    waits = [retry.get_backoff_time() for retry in retries]
    floor = 2 ** (errors - 1)
    assert all(floor <= wait <= floor + 1 for wait in waits), waits
    assert waits[0] != waits[1]


def test_backoff_and_retry_after_stop_at_their_ceilings() -> None:
    retry = SyncRetry(
        total=10, backoff_factor=1.0, backoff_jitter=1.0, backoff_max=5.0, retry_after_max=7
    )
    assert after_errors(retry, 8).get_backoff_time() == 5.0
    assert retry.parse_retry_after("86400") == 7
    assert after_errors(retry, 1).parse_retry_after("86400") == 7
    assert retry.parse_retry_after("3") == 3


def test_the_proxy_comes_from_the_environment_and_no_proxy_bypasses_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("http_proxy", "https_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://user:secret@proxy.example.org:3128")
    monkeypatch.setenv("NO_PROXY", "master.local")
    options: dict[str, Any] = {
        "ca_bundle": "",
        "retries": SyncRetry(0),
        "timeout": urllib3.Timeout(5.0),
    }
    proxied = pool_for("https://master.example.org/", **options)
    assert isinstance(proxied, urllib3.ProxyManager)
    assert proxied.proxy is not None
    assert proxied.proxy.host == "proxy.example.org"
    assert proxied.proxy_headers["proxy-authorization"].startswith("Basic ")
    assert not isinstance(pool_for("https://master.local:8443/", **options), urllib3.ProxyManager)
    # HTTPS_PROXY is for https:// masters only.
    assert not isinstance(pool_for("http://master.example.org/", **options), urllib3.ProxyManager)
