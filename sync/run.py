"""One satellite sync run: handshake, push, then pull; the one call every front door uses."""

import hashlib
import json
import logging
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from .changes import ChangePage, ChangeSet, Cursor, changes_page
from .client import MasterClient, SyncFailure
from .integration import changeset_apply
from .locks import lock_acquire, lock_release, lock_renew
from .models import (
    MASTER_SYNC_ID,
    PeerState,
    SyncLog,
    SyncPeer,
    SyncPreferences,
    SyncResult,
    SyncTrigger,
)
from .protocol import MAX_PULL_LIMIT, PROTOCOL_VERSION
from .registry import LOCAL_STORE_DATA_SCOPE
from .selectors import preferences_get

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]


RUN_LOCK = "sync_run"


class SyncAlreadyRunning(Exception):
    """Raised instead of starting a second run while one is going on."""

    def __init__(self) -> None:
        super().__init__("A sync is already running: this one was not started.")


def _quiet(message: str) -> None:
    """Default progress sink: runs from Celery have nobody to tell."""


def sync_run(
    *,
    trigger: str = SyncTrigger.COMMAND,
    request_id: str = "",
    progress: Progress = _quiet,
    protocol_version: int = PROTOCOL_VERSION,
) -> SyncLog:
    """Run one sync with the master and return its log row (result success or failure).

    Raises SyncAlreadyRunning, and does nothing else, while another run holds the lease.
    """
    holder = uuid.uuid4().hex
    ttl = settings.SYNC_LOCK_TTL_SECONDS
    if not lock_acquire(name=RUN_LOCK, holder=holder, ttl_seconds=ttl):
        raise SyncAlreadyRunning

    def heartbeat(message: str) -> None:
        # Every batch renews the lease, so only a dead run's lease runs out.
        lock_renew(name=RUN_LOCK, holder=holder, ttl_seconds=ttl)
        progress(message)

    try:
        return _run(trigger, request_id, heartbeat, protocol_version)
    finally:
        lock_release(name=RUN_LOCK, holder=holder)


def _run(trigger: str, request_id: str, progress: Progress, protocol_version: int) -> SyncLog:
    # Holding the lease proves no other run is alive: a run still marked running has died.
    SyncLog.objects.filter(result=SyncResult.RUNNING).update(
        result=SyncResult.FAILURE,
        ended_at=timezone.now(),
        error_code="interrupted",
        message="This run stopped before it ended (its process was stopped or crashed). The "
        "next run resumed where it stopped.",
    )
    preferences = preferences_get()
    log = SyncLog.objects.create(
        peer_sync_id=MASTER_SYNC_ID,
        started_at=timezone.now(),
        trigger=trigger,
        request_id=request_id,
    )
    client: MasterClient | None = None
    state: PeerState | None = None
    try:
        if preferences.is_master:
            raise SyncFailure(
                "is_master",
                "This server is the master (Sync ID 1): satellites start syncs, the master waits "
                "for them.",
            )
        peer, state = _master_peer()
        client = _client(preferences, peer, state, protocol_version)
        _step(log, "handshake")
        answer = client.handshake()
        state.auth_token = client.token
        state.hosted_store_id = answer["store"]["id"]
        state.last_contact_at = timezone.now()
        state.save()
        progress(f"Connected to the master; this satellite hosts store {answer['store']['code']}.")
        _step(log, "push")
        _push(client, state, log, progress)
        _step(log, "pull")
        _pull(client, state, log, progress)
        log.result = SyncResult.SUCCESS
        state.last_success_at = timezone.now()
        state.last_error = ""
    except SyncFailure as failure:
        log.result = SyncResult.FAILURE
        log.error_code = failure.code
        log.message = failure.message
        if state is not None:
            state.last_error = failure.message
    except Exception as error:
        # A bug or a database failure: record it where operators look, keep the traceback.
        logger.exception("Sync run %s failed unexpectedly", log.pk)
        log.result = SyncResult.FAILURE
        log.error_code = "internal_error"
        log.message = (
            f"The sync stopped on an unexpected error ({error.__class__.__name__}: {error}). "
            "The next run resumes where this one stopped; if it happens again, send the server "
            "log to your support team."
        )
        if state is not None:
            state.last_error = log.message
    finally:
        log.ended_at = timezone.now()
        if client is not None:
            client.close()
            log.bytes_sent = client.bytes_sent
            log.bytes_received = client.bytes_received
        log.save()
        if state is not None:
            state.save(update_fields=["last_success_at", "last_error", "auth_token"])
    return log


def _master_peer() -> tuple[SyncPeer, PeerState]:
    peer = SyncPeer.objects.filter(sync_id=MASTER_SYNC_ID).first()
    if peer is None:
        raise SyncFailure(
            "no_master",
            "The master is not in Sync with: add it (Sync ID 1, its store and URL) in "
            "Preferences > Synchronisation.",
        )
    return peer, PeerState.objects.get_or_create(peer=peer)[0]


def _client(
    preferences: SyncPreferences,
    peer: SyncPeer,
    state: PeerState,
    protocol_version: int,
    retries: int | None = None,
) -> MasterClient:
    return MasterClient(
        url=peer.url,
        sync_id=preferences.sync_id,
        username=preferences.username,
        password=preferences.password,
        token=state.auth_token,
        connect_timeout=settings.SYNC_CONNECT_TIMEOUT,
        read_timeout=settings.SYNC_READ_TIMEOUT,
        retries=settings.SYNC_RETRIES if retries is None else retries,
        protocol_version=protocol_version,
    )


def connection_test() -> str:
    """Handshake with the master only, with the password; returns what went right.

    Raises SyncFailure whose message says in plain words what is wrong.
    """
    preferences = preferences_get()
    if preferences.is_master:
        raise SyncFailure(
            "is_master", "This server is the master: satellites connect to it, not the reverse."
        )
    peer, state = _master_peer()
    # The password, not a saved token, and no retries: the operator waits for the answer.
    state.auth_token = ""
    client = _client(preferences, peer, state, PROTOCOL_VERSION, retries=0)
    try:
        answer = client.handshake()
    finally:
        client.close()
    return (
        f"Connected to the master at {peer.url}: it accepts this satellite (Sync ID "
        f"{preferences.sync_id}) for store {answer['store']['code']} {answer['store']['name']}."
    )


def _step(log: SyncLog, step: str) -> None:
    log.step = step
    log.save(update_fields=["step"])


def push_batch_id(sync_id: int, start: Cursor, end: Cursor, changes: dict[str, Any]) -> str:
    """The same changes always travel under the same id, so a re-sent batch is recognised.

    The content is part of the id: a satellite rebuilt from empty or restored from a backup
    reuses change-log positions, and an id made of positions alone would let the master take
    its new changes for a batch it already applied and skip them.
    """
    content = json.dumps(changes, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{sync_id}:{start}:{end}:{content}".encode()).hexdigest()[:32]


def _push(client: MasterClient, state: PeerState, log: SyncLog, progress: Progress) -> None:
    def send(page: ChangePage) -> None:
        if len(page.changeset):
            changes = page.changeset.to_wire()
            batch_id = push_batch_id(client.sync_id, page.start, page.end, changes)
            client.push(batch_id=batch_id, changes=changes)

    # While the master applies one batch, the next one is read here.
    sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sync-push")
    try:
        page = changes_page(
            Cursor(state.push_txid, state.push_seq),
            LOCAL_STORE_DATA_SCOPE,
            settings.SYNC_BATCH_SIZE,
        )
        while page.end != page.start:
            sent = sender.submit(send, page)
            following = changes_page(page.end, LOCAL_STORE_DATA_SCOPE, settings.SYNC_BATCH_SIZE)
            sent.result()
            # Only an acknowledged batch moves the cursor; a lost answer means the same batch.
            state.push_txid, state.push_seq = page.end
            state.save(update_fields=["push_txid", "push_seq"])
            log.records_pushed += len(page.changeset)
            log.save(update_fields=["records_pushed"])
            progress(f"Pushed {log.records_pushed} records, {page.remaining} changes to go.")
            page = following
    finally:
        sender.shutdown(wait=False, cancel_futures=True)


def _pull(client: MasterClient, state: PeerState, log: SyncLog, progress: Progress) -> None:
    initial = not state.initialised

    def fetch(cursor: Cursor) -> tuple[ChangeSet, Cursor, int]:
        limit = min(settings.SYNC_BATCH_SIZE, MAX_PULL_LIMIT)
        answer = client.pull(cursor=str(cursor), limit=limit, initial=initial)
        try:
            return (
                ChangeSet.from_wire(answer["changes"]),
                Cursor.parse(str(answer["next_cursor"])),
                int(answer["remaining"]),
            )
        except (KeyError, TypeError, ValueError) as error:
            raise SyncFailure(
                "bad_answer",
                f"The master sent a pull answer this satellite cannot read ({error}). Install "
                "the same msupply-sync release on both servers.",
            ) from error

    # While one page is applied here, the next one is already on its way: the master builds it
    # and the link carries it instead of both waiting for this database.
    prefetch = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sync-pull")
    try:
        page = prefetch.submit(fetch, Cursor(state.pull_txid, state.pull_seq))
        while True:
            changeset, next_cursor, remaining = page.result()
            if remaining:
                page = prefetch.submit(fetch, next_cursor)
            with transaction.atomic():
                # The batch and its cursor commit together: a dropped link resumes right here.
                changeset_apply(changeset=changeset, source_site=MASTER_SYNC_ID)
                state.pull_txid, state.pull_seq = next_cursor
                state.initialised = state.initialised or remaining == 0
                state.save(update_fields=["pull_txid", "pull_seq", "initialised"])
            log.records_pulled += len(changeset)
            log.save(update_fields=["records_pulled"])
            progress(f"Pulled {log.records_pulled} records, {remaining} to go.")
            if remaining == 0:
                return
    finally:
        # After a failure a fetch may still be in flight; closing the client ends it.
        prefetch.shutdown(wait=False, cancel_futures=True)
