"""The satellite's HTTP client for the master's sync API, with plain-language failures."""

import base64
import gzip
import http.client
import json
import socket
import time
from collections.abc import Callable
from typing import Any, NamedTuple
from urllib.parse import urlencode, urlsplit

from .changes import ChangeSet, Cursor
from .errors import ErrorCode, SyncError
from .protocol import API_PREFIX, MAX_PULL_LIMIT, PROTOCOL_VERSION, SYNC_ID_HEADER, VERSION_HEADER

# Refusals after which the next credential is tried: a token runs out, a key is replaced.
TOKEN_REFUSALS = frozenset(
    {ErrorCode.TOKEN_EXPIRED, ErrorCode.TOKEN_INVALID, ErrorCode.TOKEN_STALE}
)
KEY_REFUSALS = frozenset({ErrorCode.KEY_INVALID, ErrorCode.NOT_ENROLLED})


class PulledPage(NamedTuple):
    changeset: ChangeSet
    next_cursor: Cursor
    remaining: int


class MasterClient:
    """Talks to one master over one kept-alive connection and counts the bytes each way.

    It authenticates with the run token, else this satellite's key, else the shared password,
    which enrols the Sync ID: the master answers with a key, which `on_key` must keep.
    """

    def __init__(
        self,
        *,
        url: str,
        sync_id: int,
        username: str,
        password: str,
        key: str = "",
        on_key: Callable[[str], None] | None = None,
        token: str = "",
        connect_timeout: float = 10.0,
        read_timeout: float = 120.0,
        retries: int = 0,
        protocol_version: int = PROTOCOL_VERSION,
        to_push: int | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SyncError(ErrorCode.WRONG_URL, f"{url!r} is not an http:// or https:// URL.")
        self.url = url
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._base = parts.path.rstrip("/") + API_PREFIX
        self.sync_id = sync_id
        self._basic = (
            base64.b64encode(f"{username}:{password}".encode()).decode() if password else ""
        )
        self.key = key
        self._on_key = on_key
        self.token = token
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._retries = retries
        self.protocol_version = protocol_version
        # Records this satellite has still to push, reported to the master at the handshake.
        self.to_push = to_push
        self._connection: http.client.HTTPConnection | None = None
        self.bytes_sent = 0
        self.bytes_received = 0

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _connect(self) -> http.client.HTTPConnection:
        if self._connection is None:
            connection_class = (
                http.client.HTTPSConnection if self._https else http.client.HTTPConnection
            )
            connection = connection_class(self._host, self._port, timeout=self._connect_timeout)
            connection.connect()
            # The connect timeout got us a socket; from now on a silent link is given this long.
            if connection.sock is not None:
                connection.sock.settimeout(self._read_timeout)
            self._connection = connection
        return self._connection

    def request(
        self,
        method: str,
        endpoint: str,
        *,
        body: Any = None,
        query: dict[str, Any] | None = None,
        credentials: str | None = None,
    ) -> dict[str, Any]:
        """Send one request and return the JSON answer; raises SyncError on any failure."""
        path = self._base + endpoint + (f"?{urlencode(query)}" if query else "")
        if credentials is None:
            credentials = f"Bearer {self.token}" if self.token else f"Key {self.key}"
        headers = {
            SYNC_ID_HEADER: str(self.sync_id),
            VERSION_HEADER: str(self.protocol_version),
            "Authorization": credentials,
            "Accept": "application/json",
            "Accept-Encoding": "gzip",
        }
        payload = None
        if body is not None:
            payload = gzip.compress(json.dumps(body, separators=(",", ":")).encode(), 6)
            headers.update({"Content-Type": "application/json", "Content-Encoding": "gzip"})
        # Every request is safe to repeat (pushes are idempotent by batch id), so a dropped
        # connection is retried with backoff before the run gives up.
        for attempt in range(self._retries + 1):
            try:
                connection = self._connect()
                connection.request(method, path, body=payload, headers=headers)
                response = connection.getresponse()
                raw = response.read()
                if not raw:
                    # Every answer of the sync API has a body: the link dropped inside the
                    # answer's headers, which is not a wrong URL.
                    raise http.client.IncompleteRead(raw)
                break
            except (OSError, http.client.HTTPException) as error:
                self.close()
                if attempt == self._retries:
                    raise self._unreachable(error) from error
                time.sleep(2**attempt)
        self.bytes_sent += len(payload or b"")
        self.bytes_received += len(raw)
        if response.getheader("Connection", "").lower() == "close":
            self.close()
        return self._decode(response, raw)

    def _unreachable(self, error: Exception) -> SyncError:
        if isinstance(error, socket.timeout | TimeoutError):
            return SyncError(
                ErrorCode.TIMEOUT,
                f"The master at {self.url} stopped answering (timed out): the link may be slow or "
                "down. The next sync resumes where this one stopped.",
            )
        return SyncError(
            ErrorCode.UNREACHABLE,
            f"The master at {self.url} could not be reached ({error}): check the URL in Sync "
            "with and this server's network connection. The next sync resumes where this one "
            "stopped.",
        )

    def _decode(self, response: http.client.HTTPResponse, raw: bytes) -> dict[str, Any]:
        try:
            if response.getheader("Content-Encoding", "") == "gzip":
                raw = gzip.decompress(raw)
            data = json.loads(raw)
        except (OSError, ValueError, EOFError):
            data = None
        if not isinstance(data, dict):
            raise SyncError(
                ErrorCode.WRONG_URL,
                f"The server at {self.url} did not answer as an msupply-sync master (HTTP "
                f"{response.status}): check the URL in Sync with.",
                status=response.status,
            )
        if response.status >= 400:
            raise SyncError(
                str(data.get("code") or ErrorCode.BAD_ANSWER),
                str(
                    data.get("message")
                    or f"The master refused the request (HTTP {response.status})."
                ),
                status=response.status,
                answer=data,
            )
        return data

    def handshake(self) -> dict[str, Any]:
        """Introduce this satellite with its token, else its key, else enrol with the password."""
        if self.token:
            try:
                return self._shake(f"Bearer {self.token}")
            except SyncError as failure:
                if failure.code not in TOKEN_REFUSALS:
                    raise
                self.token = ""
        if self.key:
            try:
                return self._shake(f"Key {self.key}")
            except SyncError as failure:
                if not (failure.code in KEY_REFUSALS and self._basic):
                    raise
        if not self._basic:
            raise SyncError(
                ErrorCode.CREDENTIALS_MISSING,
                "This satellite holds neither its key nor the sync password: enter the shared "
                "sync user name and password in Preferences > Synchronisation.",
            )
        enrolment = self._shake(f"Basic {self._basic}")
        if not enrolment.get("key"):
            raise SyncError(
                ErrorCode.BAD_ANSWER,
                "The master accepted the sync password but issued no key. Install the same "
                "msupply-sync release on both servers.",
            )
        # Kept before it is used: the master confirms the key at its first use, below.
        self.key = str(enrolment["key"])
        if self._on_key is not None:
            self._on_key(self.key)
        return self._shake(f"Key {self.key}")

    def _shake(self, credentials: str) -> dict[str, Any]:
        body: dict[str, Any] = {"sync_id": self.sync_id, "protocol_version": self.protocol_version}
        if self.to_push is not None:
            body["to_push"] = self.to_push
        answer = self.request("POST", "handshake/", body=body, credentials=credentials)
        self.token = str(answer.get("token", ""))
        return answer

    def push(
        self,
        *,
        batch_id: str,
        changes: dict[str, Any],
        generation: int,
        start: str,
        end: str,
        digest: str,
        to_push: int | None = None,
    ) -> dict[str, Any]:
        """Send one batch with its place in this satellite's push history (sync.push)."""
        body: dict[str, Any] = {
            "batch_id": batch_id,
            "generation": generation,
            "start": start,
            "end": end,
            "digest": digest,
            "changes": changes,
        }
        if to_push is not None:
            body["to_push"] = to_push
        return self.request("POST", "push/", body=body)

    def pull(
        self, *, cursor: Cursor, limit: int, initial: bool, store_only: bool = False
    ) -> PulledPage:
        """One page of changes after `cursor`, read and checked."""
        query = {
            "cursor": str(cursor),
            "limit": min(limit, MAX_PULL_LIMIT),
            "initial": "true" if initial else "false",
            "store_only": "true" if store_only else "false",
        }
        answer = self.request("GET", "pull/", query=query)
        try:
            return PulledPage(
                # Decoded now: a row the model's rules refuse fails the pull before anything of
                # the page is applied.
                ChangeSet.from_wire(answer["changes"]).decode(),
                Cursor.parse(str(answer["next_cursor"])),
                int(answer["remaining"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise SyncError(
                ErrorCode.BAD_ANSWER,
                f"The master sent a pull answer this satellite cannot read ({error}). Install "
                "the same msupply-sync release on both servers.",
            ) from error
