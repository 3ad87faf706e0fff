"""The satellite's HTTP client for the master's sync API, with plain-language failures."""

import base64
import gzip
import json
import logging
import random
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any, NamedTuple
from urllib.parse import urlencode, urlsplit

import urllib3
from urllib3.exceptions import (
    HTTPError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ProxyError,
    SSLError,
)
from urllib3.exceptions import TimeoutError as Urllib3TimeoutError
from urllib3.util.retry import Retry

from .changes import ChangeSet, Cursor
from .errors import ErrorCode, SyncError
from .protocol import API_PREFIX, MAX_PULL_LIMIT, PROTOCOL_VERSION, SYNC_ID_HEADER, VERSION_HEADER
from .registry import TABLES_BY_NAME
from .snapshot import SnapshotPage, SnapshotPosition

# A link cut inside the master's answer headers makes urllib3 log a warning with a traceback
# before the read fails; the run reports that failure plainly (`unreachable`, and it resumes),
# so the warning would only print a traceback at the operator.
logging.getLogger("urllib3.connection").setLevel(logging.ERROR)

# Refusals after which the next credential is tried: a token runs out, a key is replaced.
TOKEN_REFUSALS = frozenset(
    {ErrorCode.TOKEN_EXPIRED, ErrorCode.TOKEN_INVALID, ErrorCode.TOKEN_STALE}
)
KEY_REFUSALS = frozenset({ErrorCode.KEY_INVALID, ErrorCode.NOT_ENROLLED})
# What a proxy or load balancer answers while the master is down, restarting or overloaded.
UNAVAILABLE_STATUSES = frozenset({502, 503, 504})


def _cause(error: BaseException) -> str:
    """What the operating system or the peer said, without urllib3's wrappers around it."""
    while True:
        if isinstance(error, ProxyError):
            inner: object = error.original_error
        elif isinstance(error, ProtocolError) and len(error.args) > 1:
            inner = error.args[1]
        else:
            inner = error.__cause__
        if not isinstance(inner, BaseException):
            return str(error)
        error = inner


class PulledPage(NamedTuple):
    changeset: ChangeSet
    next_cursor: Cursor
    remaining: int


class SyncRetry(Retry):
    """urllib3's Retry, with a wait before every retry and a ceiling on Retry-After."""

    # 429 (locked out, throttled) and 413 are the master's own answers: retrying them in the
    # same run only burns the lockout window. 503 with Retry-After is a proxy's or a restart's.
    RETRY_AFTER_STATUS_CODES = frozenset({503})

    # urllib3 2.8 has retry_after_max itself; urllib3 2.2, which pyproject allows, has not.
    def __init__(self, *args: Any, retry_after_max: int = 120, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retry_after_max = retry_after_max

    def new(self, **kwargs: Any) -> "SyncRetry":
        retry = super().new(**kwargs)
        retry.retry_after_max = self.retry_after_max
        return retry

    def get_backoff_time(self) -> float:
        # urllib3 sends the first retry at once and adds jitter only from the second: the 63
        # satellites behind one proxy that restarts would all come back in the same instant.
        # Here retry n waits backoff_factor * 2**(n-1) plus up to backoff_jitter seconds.
        if not self.history:
            return 0.0
        wait = self.backoff_factor * 2 ** (len(self.history) - 1)
        wait += random.random() * self.backoff_jitter  # noqa: S311 - spreading, not secrecy
        return float(min(self.backoff_max, wait))

    def parse_retry_after(self, retry_after: str) -> float:
        # A misconfigured proxy's "Retry-After: 86400" must not hold the run (and its lease).
        return min(super().parse_retry_after(retry_after), self.retry_after_max)


def pool_for(
    url: str, *, ca_bundle: str, retries: Retry, timeout: urllib3.Timeout
) -> urllib3.PoolManager:
    """A pool of one kept-alive connection to `url`, through the environment's proxy if any.

    HTTPS_PROXY / HTTP_PROXY / NO_PROXY are read as urllib reads them (curl's rules); TLS is
    always verified, against `ca_bundle` when set, else the system's trust store.
    """
    parts = urlsplit(url)
    options: dict[str, Any] = {
        "num_pools": 1,
        "maxsize": 1,
        "retries": retries,
        "timeout": timeout,
        "cert_reqs": "CERT_REQUIRED",
        "ca_certs": ca_bundle or None,
    }
    proxy = urllib.request.getproxies().get(parts.scheme, "")
    if proxy and not urllib.request.proxy_bypass(parts.netloc):
        proxy_parts = urllib3.util.parse_url(proxy)
        if proxy_parts.auth:
            options["proxy_headers"] = urllib3.make_headers(proxy_basic_auth=proxy_parts.auth)
        return urllib3.ProxyManager(proxy, **options)
    return urllib3.PoolManager(**options)


class MasterClient:
    """Talks to one master over one kept-alive connection and counts the bytes each way.

    It authenticates with the run token, else this satellite's key, else the shared password,
    which enrols the Sync ID: the master answers with a key, which `on_key` must keep.
    Connection failures, dropped links and a proxy's 502/503/504 are retried `retries` times
    with exponential backoff and jitter: every request is safe to repeat (pushes are
    idempotent by batch id).
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
        ca_bundle: str = "",
        backoff: float = 1.0,
        backoff_jitter: float = 1.0,
        backoff_max: float = 60.0,
        retry_after_max: int = 120,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SyncError(ErrorCode.WRONG_URL, f"{url!r} is not an http:// or https:// URL.")
        self.url = url
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._base = parts.path.rstrip("/") + API_PREFIX
        self.sync_id = sync_id
        self._basic = (
            base64.b64encode(f"{username}:{password}".encode()).decode() if password else ""
        )
        self.key = key
        self._on_key = on_key
        self.token = token
        self.retry = SyncRetry(
            total=retries,
            # A certificate refused stays refused: only the link and the statuses below retry.
            other=0,
            redirect=False,
            status_forcelist=UNAVAILABLE_STATUSES,
            allowed_methods=None,
            backoff_factor=backoff,
            backoff_jitter=backoff_jitter,
            backoff_max=backoff_max,
            raise_on_status=False,
            respect_retry_after_header=True,
            retry_after_max=retry_after_max,
        )
        self._ca_bundle = ca_bundle
        self._pool = pool_for(
            url,
            ca_bundle=ca_bundle,
            retries=self.retry,
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
        )
        self.protocol_version = protocol_version
        # Records this satellite has still to push, reported to the master at the handshake.
        self.to_push = to_push
        self.bytes_sent = 0
        self.bytes_received = 0

    def close(self) -> None:
        self._pool.clear()

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
        retry: Retry = self.retry
        while True:
            try:
                response = self._pool.urlopen(
                    method,
                    self._origin + path,
                    body=payload,
                    headers=headers,
                    retries=retry,
                    redirect=False,
                    # The bytes as they came, gzip and all: they are what the link carried.
                    decode_content=False,
                )
                raw = response.data
                if raw:
                    break
                # Every answer of the sync API has a body: the link dropped inside the answer's
                # headers, which is not a wrong URL. It spends a retry like any dropped link.
                self.close()
                retry = (response.retries or retry).increment(
                    method, path, error=ProtocolError("The answer ended before its body.")
                )
                retry.sleep()
            except MaxRetryError as exhausted:
                self.close()
                raise self._unreachable(exhausted.reason or exhausted) from exhausted
            except HTTPError as error:
                self.close()
                raise self._unreachable(error) from error
        self.bytes_sent += len(payload or b"")
        self.bytes_received += len(raw)
        return self._decode(response, raw)

    def _unreachable(self, error: Exception) -> SyncError:
        resumes = "The next sync resumes where this one stopped."
        if isinstance(error, ProxyError):
            if not isinstance(error.original_error, SSLError):
                return SyncError(
                    ErrorCode.UNREACHABLE,
                    f"The proxy on the way to the master at {self.url} could not be reached "
                    f"({_cause(error)}): check HTTPS_PROXY / HTTP_PROXY (and NO_PROXY) "
                    f"in this server's environment. {resumes}",
                )
            error = error.original_error
        if isinstance(error, SSLError):
            trust = (
                f"the CA bundle {self._ca_bundle}"
                if self._ca_bundle
                else "this server's trust store"
            )
            return SyncError(
                ErrorCode.TLS,
                f"The master at {self.url} did not prove its identity over HTTPS ({error}): "
                f"its certificate is not trusted by {trust}, has expired or does not name the "
                "host in the URL. If the master uses a private certificate authority, set "
                "SYNC_CA_BUNDLE to that authority's certificate on this server; otherwise fix "
                "the master's certificate.",
            )
        if isinstance(error, Urllib3TimeoutError | TimeoutError) and not isinstance(
            error, NewConnectionError
        ):
            return SyncError(
                ErrorCode.TIMEOUT,
                f"The master at {self.url} stopped answering (timed out): the link may be slow or "
                f"down. {resumes}",
            )
        return SyncError(
            ErrorCode.UNREACHABLE,
            f"The master at {self.url} could not be reached ({_cause(error)}): check the URL in "
            f"Sync with and this server's network connection. {resumes}",
        )

    def _decode(self, response: urllib3.BaseHTTPResponse, raw: bytes) -> dict[str, Any]:
        try:
            if response.headers.get("Content-Encoding", "") == "gzip":
                raw = gzip.decompress(raw)
            data = json.loads(raw)
        except (OSError, ValueError, EOFError):
            data = None
        if not isinstance(data, dict) and response.status in UNAVAILABLE_STATUSES:
            retried = f", still after {self.retry.total} retries" if self.retry.total else ""
            raise SyncError(
                ErrorCode.UNAVAILABLE,
                f"The master at {self.url} is unavailable or overloaded, or a proxy on the way "
                f"to it is (HTTP {response.status}{retried}). "
                "Nothing is lost: the next sync resumes where this one stopped. If it keeps "
                "happening, check that the master and its proxy are running.",
                status=response.status,
            )
        if not isinstance(data, dict) and response.status >= 500:
            # The master's own crash page (its database refused a connection, say): the URL
            # is right, and what went wrong is in the master's log.
            raise SyncError(
                ErrorCode.SERVER_ERROR,
                f"The master at {self.url} failed with an unexpected error (HTTP "
                f"{response.status}). Nothing is lost: the next sync resumes where this one "
                "stopped. If it keeps happening, its administrator should look at the master's "
                "log.",
                status=response.status,
            )
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
            raise _unreadable("a pull answer", error) from error

    def snapshot(
        self, *, start: Cursor | None, position: SnapshotPosition, limit: int
    ) -> SnapshotPage:
        """One page of the snapshot that began at `start` (None: begin one), read and checked."""
        query: dict[str, Any] = {"limit": min(limit, MAX_PULL_LIMIT)}
        if start is not None:
            query.update(cursor=str(start), table=position.table)
            if position.after is not None:
                query["after"] = position.after.hex
        answer = self.request("GET", "snapshot/", query=query)
        try:
            following = (
                None
                if answer["done"]
                else SnapshotPosition(
                    TABLES_BY_NAME[answer["table"]].name,
                    uuid.UUID(answer["after"]) if answer["after"] else None,
                )
            )
            total = answer["total"]
            return SnapshotPage(
                # Decoded now: a row the model's rules refuse fails before anything is applied.
                ChangeSet.from_wire(answer["changes"]).decode(),
                Cursor.parse(str(answer["cursor"])),
                following,
                None if total is None else int(total),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise _unreadable("a snapshot page", error) from error


def _unreadable(what: str, error: Exception) -> SyncError:
    return SyncError(
        ErrorCode.BAD_ANSWER,
        f"The master sent {what} this satellite cannot read ({error}). Install the same "
        "msupply-sync release on both servers.",
    )
