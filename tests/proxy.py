"""A small threaded TCP proxy on 127.0.0.1 that can cut the link, for sync tests.

`LinkProxy(upstream_port)` listens on a free port of 127.0.0.1 and forwards every connection to
127.0.0.1:upstream_port. `cut_after(direction, nbytes)` arms a one-shot cut: once `nbytes` more
bytes have gone in `direction` (counted over all connections), the connection carrying them is
dropped after exactly that many bytes, and the proxy passes everything through again.
`on_request_sent(fragment, callback)` calls `callback` once, when a whole HTTP request whose
request line contains `fragment` has gone upstream. `hold(fragment)` keeps the next such request
from going upstream at all, whatever its client does meanwhile, until `deliver_held()` sends it
on a connection of its own, as a late packet would arrive, and returns the answer.
`capture(fragment)` keeps every whole request naming `fragment`, as the client sent it (even one
a cut kept from the server), in `captured`, so a test can send it again later;
`drop_request(fragment)` drops the link instead of forwarding the last part of the next such
request, so the server never gets it whole. The proxy is bounded: at most `max_connections` at a
time, and it stops itself after `lifetime` seconds.
"""

import contextlib
import http.client
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType

TO_SERVER = "to_server"
TO_CLIENT = "to_client"
CHUNK = 16 * 1024


class _RequestTracker:
    """Finds where HTTP/1.1 requests end in a client's byte stream (Content-Length bodies only)."""

    def __init__(self) -> None:
        self._head = b""
        self._line = ""
        self._request = b""
        self._body_left: int | None = None

    @property
    def between_requests(self) -> bool:
        """Whether the next byte fed starts a new request."""
        return self._body_left is None and not self._head

    def feed(self, data: bytes) -> list[tuple[str, bytes]]:
        """Take the next bytes of the stream; return each request now complete: line and bytes."""
        complete: list[tuple[str, bytes]] = []
        while data:
            if self._body_left is None:
                self._head += data
                end = self._head.find(b"\r\n\r\n")
                if end < 0:
                    return complete
                head, data = self._head[: end + 4], self._head[end + 4 :]
                self._head = b""
                self._request = head
                lines = head.decode("latin-1").split("\r\n")
                self._line = lines[0]
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    if name.strip().lower() == "content-length" and value.strip().isdigit():
                        length = int(value.strip())
                self._body_left = length
            taken = min(self._body_left, len(data))
            self._body_left -= taken
            self._request += data[:taken]
            data = data[taken:]
            if self._body_left == 0:
                complete.append((self._line, self._request))
                self._body_left = None
        return complete


class _Link:
    """One proxied connection: the client's socket and the upstream socket."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.sockets = {TO_SERVER: upstream, TO_CLIENT: client}
        self.sources = {TO_SERVER: client, TO_CLIENT: upstream}
        self.tracker = _RequestTracker()
        # What the client sent, cut or not: the tracker above sees only what went upstream.
        self.sent_tracker = _RequestTracker()
        # Set while this link's client sends a request that the proxy holds back.
        self.held: _RequestTracker | None = None
        self.finished: set[str] = set()
        self._closed = threading.Event()

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        for sock in self.sockets.values():
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()


class LinkProxy:
    """Forwards 127.0.0.1:port to 127.0.0.1:upstream_port; cuts the link when told to."""

    def __init__(
        self, upstream_port: int, *, lifetime: float = 600.0, max_connections: int = 32
    ) -> None:
        self.upstream_port = upstream_port
        self.max_connections = max_connections
        self._deadline = time.monotonic() + lifetime
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._cut: tuple[str, int] | None = None
        self._watch: tuple[str, Callable[[], None]] | None = None
        self._capture: str | None = None
        self._drop: str | None = None
        self.captured: list[bytes] = []
        self._hold: str | None = None
        self._held = bytearray()
        self._held_complete = threading.Event()
        self._links: set[_Link] = set()
        self.cuts = 0
        self.forwarded = {TO_SERVER: 0, TO_CLIENT: 0}
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = int(self._listener.getsockname()[1])
        self._thread = threading.Thread(target=self._accept_loop, name="link-proxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def cut_after(self, direction: str, nbytes: int) -> None:
        """Drop the link once `nbytes` more bytes have gone in `direction`; only once."""
        if direction not in self.forwarded or nbytes < 0:
            raise ValueError(f"Cannot cut {direction!r} after {nbytes} bytes.")
        with self._lock:
            self._cut = (direction, nbytes)

    def on_request_sent(self, fragment: str, callback: Callable[[], None]) -> None:
        """Call `callback` (in its own thread) once a request naming `fragment` went upstream."""
        with self._lock:
            self._watch = (fragment, callback)

    def capture(self, fragment: str | None) -> None:
        """Keep each whole request naming `fragment` in `captured` from now on (None: stop)."""
        with self._lock:
            self._capture = fragment

    def drop_request(self, fragment: str) -> None:
        """Drop the link as the next request naming `fragment` completes; only once."""
        with self._lock:
            self._drop = fragment

    def hold(self, fragment: str) -> None:
        """Keep the next request naming `fragment` from going upstream until deliver_held()."""
        with self._lock:
            self._hold = fragment
            self._held = bytearray()
            self._held_complete.clear()

    def deliver_held(self, timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
        """Send the held request upstream on a new connection; returns status, headers, body.

        Waits up to `timeout` seconds for the request to have arrived whole.
        """
        if not self._held_complete.wait(timeout):
            raise TimeoutError(f"No whole request was held within {timeout} s.")
        with self._lock:
            request = bytes(self._held)
            self._held = bytearray()
            self._held_complete.clear()
        with socket.create_connection(("127.0.0.1", self.upstream_port), timeout=60) as upstream:
            upstream.sendall(request)
            response = http.client.HTTPResponse(upstream)
            response.begin()
            return (
                response.status,
                {k.lower(): v for k, v in response.getheaders()},
                response.read(),
            )

    def pass_through(self) -> None:
        """Disarm any cut, drop, request watch or hold: forward everything."""
        with self._lock:
            self._cut = None
            self._watch = None
            self._hold = None
            self._drop = None

    def close(self) -> None:
        """Stop listening and drop every open link."""
        self._shutdown()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)

    def _shutdown(self) -> None:
        self._stopped.set()
        self._listener.close()
        with self._lock:
            links = list(self._links)
        for link in links:
            link.close()

    def __enter__(self) -> "LinkProxy":
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _running(self) -> bool:
        return not self._stopped.is_set() and time.monotonic() < self._deadline

    def _accept_loop(self) -> None:
        try:
            while self._running():
                try:
                    client, _ = self._listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                self._serve(client)
        finally:
            # Past its lifetime the proxy stops itself.
            self._shutdown()

    def _serve(self, client: socket.socket) -> None:
        with self._lock:
            crowded = len(self._links) >= self.max_connections
        if crowded:
            client.close()
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
        except OSError:
            client.close()
            return
        link = _Link(client, upstream)
        with self._lock:
            self._links.add(link)
        for direction in (TO_SERVER, TO_CLIENT):
            threading.Thread(
                target=self._pump, args=(link, direction), name=f"link-{direction}", daemon=True
            ).start()

    def _pump(self, link: _Link, direction: str) -> None:
        source, target = link.sources[direction], link.sockets[direction]
        try:
            source.settimeout(0.5)
            while self._running() and not link.closed:
                try:
                    data = source.recv(CHUNK)
                except TimeoutError:
                    continue
                if not data:
                    target.shutdown(socket.SHUT_WR)
                    return
                if direction == TO_SERVER and self._capture_requests(link, data):
                    link.close()
                    return
                if direction == TO_SERVER and self._held_back(link, data):
                    continue
                keep, drop = self._take(direction, data)
                target.sendall(keep)
                if drop:
                    link.close()
                    return
                if direction == TO_SERVER:
                    self._watch_requests(link, keep)
        except OSError:
            link.close()
        finally:
            with self._lock:
                link.finished.add(direction)
                over = len(link.finished) == 2 or not self._running()
            if over:
                link.close()
            if link.closed:
                with self._lock:
                    self._links.discard(link)

    def _take(self, direction: str, data: bytes) -> tuple[bytes, bool]:
        """The part of `data` to forward, and whether to drop the link after it."""
        with self._lock:
            drop = False
            if self._cut is not None and self._cut[0] == direction:
                left = self._cut[1]
                if len(data) >= left:
                    data, drop = data[:left], True
                    self._cut = None
                    self.cuts += 1
                else:
                    self._cut = (direction, left - len(data))
            self.forwarded[direction] += len(data)
            return data, drop

    def _capture_requests(self, link: _Link, data: bytes) -> bool:
        """Keep the requests `data` completes that `capture` asks for; True to drop the link."""
        drop = False
        for request_line, request in link.sent_tracker.feed(data):
            with self._lock:
                if self._capture is not None and self._capture in request_line:
                    self.captured.append(request)
                if self._drop is not None and self._drop in request_line:
                    self._drop = None
                    self.cuts += 1
                    drop = True
        return drop

    def _held_back(self, link: _Link, data: bytes) -> bool:
        """Whether `data`, going upstream, belongs to the request being held (and is kept)."""
        with self._lock:
            if link.held is None:
                if self._hold is None or not link.tracker.between_requests:
                    return False
                # A client sends a request only after the previous answer: it starts a chunk.
                request_line = data.split(b"\r\n", 1)[0].decode("latin-1")
                if self._hold not in request_line:
                    return False
                self._hold = None
                link.held = _RequestTracker()
            self._held += data
            if link.held.feed(data):
                self._held_complete.set()
            return True

    def _watch_requests(self, link: _Link, data: bytes) -> None:
        for request_line, _ in link.tracker.feed(data):
            with self._lock:
                watch = self._watch
                if watch is None or watch[0] not in request_line:
                    continue
                self._watch = None
            threading.Thread(target=watch[1], name="link-callback", daemon=True).start()


class ForwardingProxy:
    """A reverse proxy on 127.0.0.1 that forwards HTTP to `upstream_port` from `source_address`
    and appends the client's address to X-Forwarded-For, as nginx's
    `proxy_add_x_forwarded_for` does."""

    def __init__(self, upstream_port: int, *, source_address: str) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                forwarded = self.headers.get("X-Forwarded-For")
                client = self.client_address[0]
                headers["X-Forwarded-For"] = f"{forwarded}, {client}" if forwarded else client
                upstream = http.client.HTTPConnection(
                    "127.0.0.1", upstream_port, timeout=60, source_address=(source_address, 0)
                )
                try:
                    upstream.request(self.command, self.path, body=body or None, headers=headers)
                    answer = upstream.getresponse()
                    payload = answer.read()
                finally:
                    upstream.close()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("content-length", "connection", "transfer-encoding"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _forward  # noqa: N815 - the names http.server looks for

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                proxy.requests += 1

        self.requests = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
