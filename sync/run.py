"""One satellite sync run: handshake, push, then pull; the one call every front door uses."""

import hashlib
from collections.abc import Callable

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from .changes import ChangeSet, Cursor, changes_since, changeset_build
from .client import MasterClient, SyncFailure
from .integration import changeset_apply
from .models import MASTER_SYNC_ID, PeerState, SyncLog, SyncPeer, SyncResult
from .protocol import PROTOCOL_VERSION
from .registry import STORE_TABLE_NAMES
from .selectors import preferences_get

Progress = Callable[[str], None]

# A satellite pushes the store data written here, never what it received.
PUSH_SCOPE = Q(table_name__in=STORE_TABLE_NAMES, source_site__isnull=True)


def _quiet(message: str) -> None:
    """Default progress sink: runs from Celery have nobody to tell."""


def sync_run(*, progress: Progress = _quiet, protocol_version: int = PROTOCOL_VERSION) -> SyncLog:
    """Run one sync with the master and return its log row (result success or failure)."""
    preferences = preferences_get()
    log = SyncLog.objects.create(peer_sync_id=MASTER_SYNC_ID, started_at=timezone.now())
    client: MasterClient | None = None
    state: PeerState | None = None
    try:
        if preferences.is_master:
            raise SyncFailure(
                "is_master",
                "This server is the master (Sync ID 1): satellites start syncs, the master waits "
                "for them.",
            )
        peer = SyncPeer.objects.filter(sync_id=MASTER_SYNC_ID).first()
        if peer is None:
            raise SyncFailure(
                "no_master",
                "The master is not in Sync with: add it (Sync ID 1, its store and URL) in "
                "Preferences > Synchronisation.",
            )
        state = PeerState.objects.get_or_create(peer=peer)[0]
        client = MasterClient(
            url=peer.url,
            sync_id=preferences.sync_id,
            username=preferences.username,
            password=preferences.password,
            token=state.auth_token,
            connect_timeout=settings.SYNC_CONNECT_TIMEOUT,
            read_timeout=settings.SYNC_READ_TIMEOUT,
            protocol_version=protocol_version,
        )
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


def _step(log: SyncLog, step: str) -> None:
    log.step = step
    log.save(update_fields=["step"])


def push_batch_id(sync_id: int, start: Cursor, end: Cursor) -> str:
    """The same changes always travel under the same id, so a re-sent batch is recognised."""
    return hashlib.sha256(f"{sync_id}:{start}:{end}".encode()).hexdigest()[:32]


def _push(client: MasterClient, state: PeerState, log: SyncLog, progress: Progress) -> None:
    while True:
        start = Cursor(state.push_txid, state.push_seq)
        changes = list(changes_since(start, PUSH_SCOPE)[: settings.SYNC_BATCH_SIZE])
        if not changes:
            return
        end = Cursor.of(changes[-1])
        changeset = changeset_build(changes)
        if len(changeset):
            client.push(
                batch_id=push_batch_id(client.sync_id, start, end), changes=changeset.to_wire()
            )
        # Only an acknowledged batch moves the cursor; a lost answer means the same batch again.
        state.push_txid, state.push_seq = end
        state.save(update_fields=["push_txid", "push_seq"])
        log.records_pushed += len(changeset)
        log.save(update_fields=["records_pushed"])
        progress(f"Pushed {log.records_pushed} records.")


def _pull(client: MasterClient, state: PeerState, log: SyncLog, progress: Progress) -> None:
    while True:
        answer = client.pull(
            cursor=str(Cursor(state.pull_txid, state.pull_seq)),
            limit=settings.SYNC_BATCH_SIZE,
            initial=not state.initialised,
        )
        try:
            changeset = ChangeSet.from_wire(answer["changes"])
            next_cursor = Cursor.parse(str(answer["next_cursor"]))
            remaining = int(answer["remaining"])
        except (KeyError, TypeError, ValueError) as error:
            raise SyncFailure(
                "bad_answer",
                f"The master sent a pull answer this satellite cannot read ({error}). Install "
                "the same msupply-sync release on both servers.",
            ) from error
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
