"""One satellite sync run: handshake, push, then pull; the one call every front door uses."""

import enum
import hashlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.utils import timezone
from django.utils.translation import gettext

from msupply.progress import Progress, progress_quiet
from stores.transfers import inbounds_make

from .changes import ChangePage, Cursor, changes_page, changes_since, range_digest
from .client import MasterClient, PulledPage
from .errors import REMEDIES, ErrorCode, SyncError
from .heal import store_heal
from .integration import changeset_apply
from .keys import satellite_key_keep, satellite_password_forget
from .locks import lock_acquire, lock_release, lock_renew
from .models import (
    MASTER_SYNC_ID,
    PeerState,
    SyncLog,
    SyncPeer,
    SyncPreferences,
    SyncResult,
    SyncStep,
    SyncTrigger,
)
from .protocol import PROTOCOL_VERSION
from .prune import REINITIALISE_REQUIRED
from .push import PushRecord
from .registry import LOCAL_STORE_DATA_SCOPE
from .selectors import preferences_get, unpushed_records_count
from .snapshot import FIRST, SnapshotPosition, snapshot_progress

logger = logging.getLogger(__name__)

RUN_LOCK = "sync_run"
# A failed push ends the run here only when the master cannot be reached at all; otherwise the
# pull still runs, so master data keeps arriving while a store record is in trouble.
LINK_FAILURES = {ErrorCode.UNREACHABLE, ErrorCode.TIMEOUT, ErrorCode.WRONG_URL}


class SyncAlreadyRunning(Exception):
    """Raised instead of starting a second run while one is going on."""

    def __init__(self) -> None:
        super().__init__("A sync is already running: this one was not started.")


@dataclass
class Run:
    """A run under way: its log row, and the client and peer state once they exist."""

    log: SyncLog
    progress: Progress
    client: MasterClient | None = None
    state: PeerState | None = None
    # Plain-language notes for the log's message, such as what healing a restore kept.
    notes: list[str] = field(default_factory=list)

    def step(self, step: SyncStep) -> None:
        self.log.step = step
        self.log.save(update_fields=["step"])


def sync_run(
    *,
    trigger: str = SyncTrigger.COMMAND,
    request_id: str = "",
    progress: Progress = progress_quiet,
    protocol_version: int = PROTOCOL_VERSION,
) -> SyncLog:
    """Run one sync with the master and return its log row (result success or failure).

    Raises SyncAlreadyRunning, and does nothing else, while another run holds the lease.
    """
    with _lease(), _logged_run(trigger, request_id, progress) as run:
        _sync_steps(run, protocol_version)
    return run.log


@contextmanager
def _lease() -> Iterator[None]:
    """Hold the run lease for the whole run, renewed in the background however long a request
    waits (a read timeout times retries outlasts any fixed lease), so two runs never overlap.
    Only a dead process stops renewing, and its lease expires after SYNC_LOCK_TTL_SECONDS.
    """
    holder, ttl = uuid.uuid4().hex, settings.SYNC_LOCK_TTL_SECONDS
    if not lock_acquire(name=RUN_LOCK, holder=holder, ttl_seconds=ttl):
        raise SyncAlreadyRunning
    done = threading.Event()
    keeper = threading.Thread(
        target=_lease_keep, args=(holder, ttl, done), name="sync-lease", daemon=True
    )
    keeper.start()
    try:
        yield
    finally:
        done.set()
        keeper.join(timeout=ttl)
        lock_release(name=RUN_LOCK, holder=holder)


def _lease_keep(holder: str, ttl: float, done: threading.Event) -> None:
    try:
        while not done.wait(ttl / 4):
            try:
                lock_renew(name=RUN_LOCK, holder=holder, ttl_seconds=ttl)
            except DatabaseError:
                logger.warning("Could not renew the sync run lease; trying again.", exc_info=True)
    finally:
        connection.close()


@contextmanager
def _logged_run(trigger: str, request_id: str, progress: Progress) -> Iterator[Run]:
    """The run's log row, owned here: created first, and finished and saved whatever happens."""
    # Holding the lease proves no other run is alive: a run still marked running has died.
    SyncLog.objects.filter(result=SyncResult.RUNNING).update(
        result=SyncResult.FAILURE,
        ended_at=timezone.now(),
        error_code=ErrorCode.INTERRUPTED,
        message="This run stopped before it ended (its process was stopped or crashed). What "
        "it had committed stays; the next run carried on from there.",
    )
    run = Run(
        log=SyncLog.objects.create(
            peer_sync_id=MASTER_SYNC_ID,
            started_at=timezone.now(),
            trigger=trigger,
            request_id=request_id,
        ),
        progress=progress,
    )
    try:
        yield run
        run.log.result = SyncResult.SUCCESS
    except SyncError as failure:
        _failed(run, failure.code, failure.message)
    except Exception as error:
        # A bug or a database failure: record it where operators look, keep the traceback.
        logger.exception("Sync run %s failed unexpectedly", run.log.pk)
        _failed(
            run,
            ErrorCode.INTERNAL_ERROR,
            f"The sync stopped on an unexpected error ({error.__class__.__name__}: {error}). "
            "What the failed step was doing was not applied. Send the server log to your "
            "support team: if it happens at every run, it needs a fix.",
        )
    finally:
        _finish(run)


def _failed(run: Run, code: str, message: str) -> None:
    run.log.result = SyncResult.FAILURE
    run.log.error_code = code
    run.log.message = message


def _finish(run: Run) -> None:
    log = run.log
    log.ended_at = timezone.now()
    log.message = " ".join(filter(None, [log.message, *run.notes]))
    if run.client is not None:
        run.client.close()
        log.bytes_sent = run.client.bytes_sent
        log.bytes_received = run.client.bytes_received
    log.save()
    if run.state is not None:
        outcome: dict[str, Any] = {"last_error": "" if log.error_code == "" else log.message}
        if log.result == SyncResult.SUCCESS:
            outcome["last_success_at"] = log.ended_at
        PeerState.objects.filter(pk=run.state.pk).update(**outcome)


def _sync_steps(run: Run, protocol_version: int) -> None:
    preferences = preferences_get()
    if preferences.is_master:
        raise SyncError(
            ErrorCode.IS_MASTER,
            "This server is the master (Sync ID 1): satellites start syncs, the master waits "
            "for them.",
        )
    peer, state = _master_peer()
    run.state = state
    client = run.client = _client(preferences, peer, state, protocol_version)
    master_record = _handshake(run, client, state)
    try:
        _push(run, client, state, master_record)
    except SyncError as failure:
        if failure.code in LINK_FAILURES:
            raise
        _pull(run, client, state)
        raise SyncError(
            failure.code,
            f"{failure.message} Master data was still received: the pull after the push went "
            "through.",
        ) from failure
    _pull(run, client, state)
    _inbound_transfers(run, client, state)


def _inbound_transfers(run: Run, client: MasterClient, state: PeerState) -> None:
    """Make the inbound transfers of the outbounds the pull brought, and push them at once."""
    if state.hosted_store_id is None:
        return
    made = len(inbounds_make(store_ids=[uuid.UUID(str(state.hosted_store_id))]))
    if not made:
        return
    run.notes.append(f"{made} inbound transfer(s) arrived, to be received.")
    run.step(SyncStep.PUSH)
    _push_batches(run, client, state, PushRecord(generation=state.push_generation))


def _master_peer() -> tuple[SyncPeer, PeerState]:
    peer = SyncPeer.objects.filter(sync_id=MASTER_SYNC_ID).first()
    if peer is None:
        raise SyncError(
            ErrorCode.NO_MASTER,
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
        key=preferences.sync_key,
        on_key=satellite_key_keep,
        token=state.auth_token,
        connect_timeout=settings.SYNC_CONNECT_TIMEOUT,
        read_timeout=settings.SYNC_READ_TIMEOUT,
        retries=settings.SYNC_RETRIES if retries is None else retries,
        protocol_version=protocol_version,
        ca_bundle=settings.SYNC_CA_BUNDLE,
        backoff=settings.SYNC_BACKOFF_SECONDS,
        backoff_jitter=settings.SYNC_BACKOFF_JITTER_SECONDS,
        backoff_max=settings.SYNC_BACKOFF_MAX_SECONDS,
        retry_after_max=settings.SYNC_RETRY_AFTER_MAX_SECONDS,
    )


def connection_test() -> str:
    """Handshake with the master only, with the key or enrolling; returns what went right.

    Raises SyncError whose message says in plain words what is wrong.
    """
    preferences = preferences_get()
    if preferences.is_master:
        raise SyncError(
            ErrorCode.IS_MASTER,
            "This server is the master: satellites connect to it, not the reverse.",
        )
    peer, state = _master_peer()
    # The key (or the password, to enrol), not a saved token, and no retries: the operator
    # waits for the answer.
    state.auth_token = ""
    client = _client(preferences, peer, state, PROTOCOL_VERSION, retries=0)
    try:
        answer = client.handshake()
    finally:
        client.close()
    satellite_password_forget()
    return gettext(
        "Connected to the master at %(url)s: it accepts this satellite (Sync ID %(sync_id)s) "
        "for store %(code)s %(name)s."
    ) % {
        "url": peer.url,
        "sync_id": preferences.sync_id,
        "code": answer["store"]["code"],
        "name": answer["store"]["name"],
    }


def _handshake(run: Run, client: MasterClient, state: PeerState) -> PushRecord:
    """Introduce this satellite; returns the master's record of its push history."""
    run.step(SyncStep.HANDSHAKE)
    client.to_push = unpushed_records_count(state)
    answer = client.handshake()
    satellite_password_forget()
    _stages_keep(state, answer)
    state.auth_token = client.token
    state.hosted_store_id = answer["store"]["id"]
    state.last_contact_at = timezone.now()
    state.save(update_fields=["auth_token", "hosted_store_id", "last_contact_at"])
    run.progress(
        gettext("Connected to the master; this satellite hosts store %(store)s.")
        % {"store": answer["store"]["code"]}
    )
    return _master_record(answer)


def _master_record(answer: dict[str, Any]) -> PushRecord:
    try:
        return PushRecord.from_wire(answer.get("push"))
    except ValueError as error:
        raise SyncError(
            ErrorCode.BAD_ANSWER,
            f"The master's answer has no readable push record ({error}). Install the same "
            "msupply-sync release on both servers.",
        ) from error


class History(enum.Enum):
    """How this satellite's push history stands against the master's record of it."""

    IN_STEP = "in step"
    # The master applied the batch this satellite last sent but the answer was lost (or the
    # master is behind, restored): carry on from the master's end.
    CARRY_ON = "carry on"
    # A history the master has not seen yet: the next push opens it.
    NEW = "new"
    # The master holds changes from this satellite that it no longer has: restored or rebuilt.
    RESTORED = "restored"


def history_compare(*, state: PeerState, master: PushRecord) -> History:
    """Compare this satellite's push cursor and change log with the master's record."""
    own = Cursor(state.push_txid, state.push_seq)
    if master.generation == 0 or state.push_generation > master.generation:
        return History.NEW
    if state.push_generation == master.generation:
        if own == master.end:
            return History.IN_STEP
        if own > master.end:
            return History.CARRY_ON
        if own == master.start and (
            range_digest(master.start, master.end, LOCAL_STORE_DATA_SCOPE) == master.digest
        ):
            return History.CARRY_ON
    # Never initialised: a rebuilt satellite, whose initial pull brings its store data back.
    return History.RESTORED if state.initialised else History.NEW


def _history_settle(run: Run, client: MasterClient, state: PeerState, master: PushRecord) -> None:
    """Bring this satellite's push history in line with the master's record, healing a restore."""
    verdict = history_compare(state=state, master=master)
    if verdict is History.CARRY_ON:
        state.push_txid, state.push_seq = master.end
    elif verdict is History.NEW:
        state.push_generation = max(state.push_generation, master.generation + 1)
    elif verdict is History.RESTORED:
        run.step(SyncStep.RESTORE)
        logger.warning("This satellite was restored from a backup: healing from the master.")
        report = store_heal(
            client=client,
            store_id=uuid.UUID(str(state.hosted_store_id)),
            since=Cursor(state.push_txid, state.push_seq),
            progress=run.progress,
            batch_size=settings.SYNC_BATCH_SIZE,
        )
        run.notes.append(report.message)
        run.log.records_pulled += report.records_received
        state.push_generation = master.generation + 1
    state.save(update_fields=["push_txid", "push_seq", "push_generation"])


def push_batch_id(sync_id: int, start: Cursor, end: Cursor, changes: dict[str, Any]) -> str:
    """The same changes always travel under the same id, so a re-sent batch is recognised.

    The content is part of the id: a satellite rebuilt from empty or restored from a backup
    reuses change-log positions, and an id made of positions alone would let the master take
    its new changes for a batch it already applied and skip them.
    """
    content = json.dumps(changes, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{sync_id}:{start}:{end}:{content}".encode()).hexdigest()[:32]


def _push(run: Run, client: MasterClient, state: PeerState, master: PushRecord) -> None:
    """Send this satellite's changes in order; a stale answer is settled once, then retried."""
    run.step(SyncStep.PUSH)
    _history_settle(run, client, state, master)
    try:
        _push_batches(run, client, state, master)
    except SyncError as failure:
        if failure.code != ErrorCode.STALE_BATCH:
            raise
        # A late copy of an earlier batch got there first: count it as acknowledged only if
        # the master's record matches this satellite's log.
        master = _master_record(failure.answer)
        _history_settle(run, client, state, master)
        _push_batches(run, client, state, master)


def _push_batches(run: Run, client: MasterClient, state: PeerState, master: PushRecord) -> None:
    log = run.log
    # A new history is opened on the master even when there is nothing to send.
    opening = state.push_generation > master.generation

    def send(page: ChangePage) -> dict[str, Any]:
        changes = page.changeset.to_wire()
        return client.push(
            batch_id=push_batch_id(client.sync_id, page.start, page.end, changes),
            changes=changes,
            generation=state.push_generation,
            start=str(page.start),
            end=str(page.end),
            digest=page.digest,
            to_push=page.remaining,
        )

    # While the master applies one batch, the next one is read here.
    sender = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sync-push")
    try:
        page = changes_page(
            Cursor(state.push_txid, state.push_seq),
            LOCAL_STORE_DATA_SCOPE,
            settings.SYNC_BATCH_SIZE,
        )
        while page.end != page.start or opening:
            opening = False
            sent = sender.submit(send, page)
            following = changes_page(page.end, LOCAL_STORE_DATA_SCOPE, settings.SYNC_BATCH_SIZE)
            answer = sent.result()
            _stages_keep(state, answer)
            _rejections_note(run, answer)
            # Only an acknowledged batch moves the cursor; a lost answer means the same batch.
            state.push_txid, state.push_seq = page.end
            state.save(update_fields=["push_txid", "push_seq"])
            log.records_pushed += len(page.changeset)
            log.save(update_fields=["records_pushed"])
            run.progress(
                gettext("Pushed %(pushed)s records, %(remaining)s changes to go.")
                % {"pushed": log.records_pushed, "remaining": page.remaining},
                done=log.records_pushed,
                total=log.records_pushed + page.remaining,
                label=gettext("Pushing"),
            )
            page = following
    finally:
        sender.shutdown(wait=False, cancel_futures=True)


def _stages_keep(state: PeerState, answer: dict[str, Any]) -> None:
    """Keep the master's report of this satellite's records by stage, as it stands now."""
    stages = answer.get("stages")
    if not isinstance(stages, dict):
        return  # a master of an older release
    try:
        figures = {
            f"reported_{stage}": int(stages[stage])
            for stage in ("acknowledged", "integrated", "waiting", "rejected")
        }
    except (KeyError, TypeError, ValueError):
        return
    PeerState.objects.filter(pk=state.pk).update(**figures, reported_at=timezone.now())


def _rejections_note(run: Run, answer: dict[str, Any]) -> None:
    """Say in the run's log which records the master set aside, and what to do."""
    rejected = answer.get("rejected") or []
    waiting = int(answer.get("waiting") or 0)
    if not rejected and not waiting:
        return
    named = "; ".join(
        f"{entry.get('table')} {entry.get('id')}: {entry.get('reason')}"
        for entry in rejected
        if isinstance(entry, dict)
    )
    run.log.error_code = ErrorCode.REJECTED_RECORD
    run.notes.append(
        f"The master set aside {len(rejected)} record(s) of a batch it could not integrate"
        + (f" ({named})" if named else "")
        + (f", and {waiting} record(s) wait for them" if waiting else "")
        + f". The rest of the batch was applied. {REMEDIES[ErrorCode.REJECTED_RECORD]}"
    )


def _pull(run: Run, client: MasterClient, state: PeerState) -> None:
    """Pull after the cursor; initialise again from 0.0 when the master has pruned past it."""
    run.step(SyncStep.PULL)
    try:
        _pull_pages(run, client, state)
    except SyncError as failure:
        if failure.code != REINITIALISE_REQUIRED:
            raise
        if changes_since(Cursor(state.push_txid, state.push_seq), LOCAL_STORE_DATA_SCOPE).exists():
            # The initial pull brings the master's copy of this store: unpushed work first.
            raise SyncError(
                failure.code,
                f"{failure.message} This satellite still has changes the master has not "
                "accepted: they must push first, so fix the push failure above.",
            ) from failure
        logger.warning("The master pruned past this satellite's cursor: initialising again.")
        state.pull_txid, state.pull_seq, state.initialised = 0, 0, False
        state.snapshot_table = ""
        state.save(update_fields=["pull_txid", "pull_seq", "initialised", "snapshot_table"])
        run.notes.append(
            "This satellite had been silent longer than the master keeps its change log, so it "
            "initialised again from the master (its own changes were pushed first)."
        )
        _pull_pages(run, client, state)


def _pull_pages(run: Run, client: MasterClient, state: PeerState) -> None:
    if not state.initialised and Cursor(state.pull_txid, state.pull_seq) == Cursor():
        _snapshot_pages(run, client, state)
    log = run.log
    initial = not state.initialised

    def fetch(cursor: Cursor) -> PulledPage:
        return client.pull(cursor=cursor, limit=settings.SYNC_BATCH_SIZE, initial=initial)

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
            run.progress(
                gettext("Pulled %(pulled)s records, %(remaining)s to go.")
                % {"pulled": log.records_pulled, "remaining": remaining},
                done=log.records_pulled,
                total=log.records_pulled + remaining,
                label=gettext("Pulling"),
            )
            if remaining == 0:
                return
    finally:
        # After a failure a fetch may still be in flight; closing the client ends it.
        prefetch.shutdown(wait=False, cancel_futures=True)


SNAPSHOT_FIELDS = [
    "snapshot_txid",
    "snapshot_seq",
    "snapshot_table",
    "snapshot_after",
    "snapshot_done",
    "snapshot_total",
    "pull_txid",
    "pull_seq",
    "initialised",
]


def _snapshot_pages(run: Run, client: MasterClient, state: PeerState) -> None:
    """Initialise from a snapshot of the master's current rows (sync.snapshot), going on with
    one under way; the log pulls then start at the snapshot's position."""
    limit = settings.SYNC_BATCH_SIZE
    resumed = bool(state.snapshot_table)
    start = Cursor(state.snapshot_txid, state.snapshot_seq) if resumed else None
    position = SnapshotPosition(state.snapshot_table, state.snapshot_after) if resumed else FIRST
    clock, done_before = time.monotonic(), state.snapshot_done if resumed else 0
    prefetch = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sync-snapshot")
    try:
        page = prefetch.submit(client.snapshot, start=start, position=position, limit=limit)
        while True:
            got = page.result()
            if got.next is not None:
                page = prefetch.submit(
                    client.snapshot, start=got.start, position=got.next, limit=limit
                )
            with transaction.atomic():
                # The page and where the next one starts commit together: a dropped link
                # resumes the snapshot right here.
                changeset_apply(changeset=got.changeset, source_site=MASTER_SYNC_ID)
                if got.total is not None:
                    state.snapshot_total, state.snapshot_done = got.total, 0
                state.snapshot_done += len(got.changeset)
                state.snapshot_txid, state.snapshot_seq = got.start
                state.snapshot_table = got.next.table if got.next else ""
                state.snapshot_after = got.next.after if got.next else None
                if got.next is None:
                    state.pull_txid, state.pull_seq = got.start
                    state.initialised = True
                state.save(update_fields=SNAPSHOT_FIELDS)
            run.log.records_pulled += len(got.changeset)
            run.log.save(update_fields=["records_pulled"])
            run.progress(
                snapshot_progress(
                    done=state.snapshot_done,
                    total=state.snapshot_total,
                    done_here=state.snapshot_done - done_before,
                    seconds=time.monotonic() - clock,
                ),
                done=state.snapshot_done,
                total=state.snapshot_total,
                label=gettext("Initialising"),
            )
            if got.next is None:
                return
    finally:
        # After a failure a fetch may still be in flight; closing the client ends it.
        prefetch.shutdown(wait=False, cancel_futures=True)
