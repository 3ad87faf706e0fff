"""Push history: each satellite's batches are applied on the master in order and once.

A satellite's push history is a run of batches, each covering a range of its change log. The
master keeps the last batch it applied from each satellite (its `PushRecord`) and applies a new
batch only if it starts where that one ended, in the same history generation, or opens a newer
generation. So a batch the link delivers late, after a newer one, is refused as `stale_batch`
and can never put older data back. A satellite restored from a backup or rebuilt no longer has
the history the master recorded; it sees that in the record the handshake returns, heals (see
sync.heal) and opens the next generation.
"""

import logging
from dataclasses import dataclass, field
from typing import Any

from django.db import DatabaseError, transaction
from django.utils import timezone

from stores.models import Store
from stores.transfers import inbounds_make

from .changes import ChangeSet, Cursor, WireError
from .errors import ErrorCode, SyncError
from .integration import (
    IsolatedResult,
    MissingParentError,
    OwnershipError,
    SetAside,
    changeset_apply_isolated,
    changeset_check_line_quantities,
    changeset_check_ownership,
)
from .models import (
    AppliedBatch,
    PeerState,
    SyncLog,
    SyncPeer,
    SyncResult,
    SyncStep,
    SyncTrigger,
)
from .registry import SYNCED_TABLES
from .rejects import held_ids, held_merge, held_store, set_aside_summary
from .selectors import hosted_store_ids

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PushRecord:
    """A batch's place in its satellite's push history: generation, log range and its digest."""

    generation: int = 0
    start: Cursor = Cursor()
    end: Cursor = Cursor()
    digest: str = ""

    def to_wire(self) -> dict[str, Any]:
        return {
            "generation": self.generation,
            "start": str(self.start),
            "end": str(self.end),
            "digest": self.digest,
        }

    @classmethod
    def from_wire(cls, data: Any) -> "PushRecord":
        """Read a record; raises ValueError saying what is wrong."""
        if not isinstance(data, dict):
            raise ValueError("a push record must be an object.")
        generation = data.get("generation")
        if not isinstance(generation, int) or isinstance(generation, bool) or generation < 0:
            raise ValueError("generation must be a whole number, 0 or more.")
        return cls(
            generation,
            Cursor.parse(str(data.get("start", ""))),
            Cursor.parse(str(data.get("end", ""))),
            str(data.get("digest", ""))[:64],
        )

    @classmethod
    def of(cls, state: PeerState) -> "PushRecord":
        """The record the master keeps in a satellite's state."""
        return cls(
            state.push_generation,
            Cursor(state.push_start_txid, state.push_start_seq),
            Cursor(state.push_txid, state.push_seq),
            state.push_digest,
        )


def peer_store(peer: SyncPeer) -> Store:
    """The master's store that `peer` hosts, as the Sync with list names it."""
    store = Store.objects.filter(code=peer.store_code).first()
    if store is None:
        raise SyncError(
            ErrorCode.STORE_MISSING,
            f"The master's Sync with entry for Sync ID {peer.sync_id} names store "
            f"{peer.store_code!r}, which does not exist on the master: fix the entry there.",
        )
    return store


@dataclass(frozen=True)
class PushOutcome:
    applied: int
    duplicate: bool
    record: PushRecord
    # This batch's records (or earlier ones retried with it) that the master set aside.
    rejected: list[SetAside] = field(default_factory=list)
    waiting: list[SetAside] = field(default_factory=list)


def push_batch_apply(
    *,
    peer: SyncPeer,
    batch_id: str,
    record: PushRecord,
    changeset: ChangeSet,
    to_push: int | None = None,
) -> PushOutcome:
    """Apply one batch of `peer`'s store data on the master, atomically, in order and once.

    A batch already applied is acknowledged as a duplicate and changes nothing; its id sent
    with other changes raises SyncError `batch_id_reused` (409). A batch older than the
    last one applied raises SyncError `stale_batch` (409), carrying the master's record so
    the satellite can tell whether it may count the batch as acknowledged. A record the
    master's data refuses is set aside (sync.rejects) and the rest applied. `to_push` is the
    satellite's report of the records it still has to push after this batch.
    """
    store = peer_store(peer)
    digest = changeset.digest()
    with transaction.atomic(durable=True):
        # One integration at a time per satellite: the row lock queues its other requests.
        state = PeerState.objects.select_for_update().get(peer=peer)
        applied = PushRecord.of(state)
        known = (
            AppliedBatch.objects.filter(sync_id=peer.sync_id, batch_id=batch_id)
            .values_list("digest", flat=True)
            .first()
        )
        if known is not None:
            _ensure_same_batch(peer, batch_id, known, digest)
            if to_push is not None:
                PeerState.objects.filter(pk=state.pk).update(records_to_push=to_push)
            return PushOutcome(0, True, applied)
        _ensure_in_order(peer, record, applied)
        result = _apply(peer, store, changeset)
        # An outbound transfer to a store the master hosts is received here (sync.transfers).
        inbounds_make(store_ids=hosted_store_ids())
        AppliedBatch.objects.create(
            sync_id=peer.sync_id, batch_id=batch_id, records=len(changeset), digest=digest
        )
        if record.generation > applied.generation:
            _history_opened(peer, record, applied)
        state.push_generation = record.generation
        state.push_start_txid, state.push_start_seq = record.start
        state.push_txid, state.push_seq = record.end
        state.push_digest = record.digest
        state.records_received += len(changeset)
        state.records_integrated += result.applied
        if to_push is not None:
            state.records_to_push = to_push
        state.save(
            update_fields=[
                "records_integrated",
                "records_to_push",
                "push_generation",
                "push_start_txid",
                "push_start_seq",
                "push_txid",
                "push_seq",
                "push_digest",
                "records_received",
            ]
        )
    # The answer names this batch's records set aside; earlier ones retried with it are in
    # the stage counts.
    pushed = (
        {(table.name, record_id) for table in SYNCED_TABLES for record_id in changeset.ids(table)}
        if result.rejected or result.waiting
        else set()
    )
    return PushOutcome(
        result.applied,
        False,
        record,
        [aside for aside in result.rejected if (aside.table_name, aside.record_id) in pushed],
        [aside for aside in result.waiting if (aside.table_name, aside.record_id) in pushed],
    )


def _ensure_same_batch(peer: SyncPeer, batch_id: str, known: str, digest: str) -> None:
    # A batch applied before digests were kept has none: it can only be taken as the same.
    if not known or known == digest:
        return
    raise SyncError(
        ErrorCode.BATCH_ID_REUSED,
        f"Batch id {batch_id!r} was already applied from satellite {peer.sync_id} with other "
        "changes: this batch was not applied, and nothing of it was. A satellite gives each "
        "batch a new id, so this points at a satellite restored or copied from another: send "
        "both servers' logs to your support team.",
    )


def _ensure_in_order(peer: SyncPeer, record: PushRecord, applied: PushRecord) -> None:
    if record.generation > applied.generation:
        return
    if record.generation == applied.generation and record.start == applied.end:
        return
    logger.warning(
        "Refused a stale push from satellite %s: batch %s-%s of generation %s, after %s-%s of %s",
        peer.sync_id,
        record.start,
        record.end,
        record.generation,
        applied.start,
        applied.end,
        applied.generation,
    )
    raise SyncError(
        ErrorCode.STALE_BATCH,
        f"This batch (changes {record.start} to {record.end}) is older than what the master "
        f"already applied from satellite {peer.sync_id} (up to {applied.end}): it was not "
        "applied, so it cannot put older data back. The satellite checks the master's record "
        "and carries on from there at once; nothing needs doing.",
        push=applied.to_wire(),
    )


def _apply(peer: SyncPeer, store: Store, changeset: ChangeSet) -> IsolatedResult:
    try:
        changeset_check_ownership(changeset=changeset, store_id=store.pk)
    except OwnershipError as error:
        raise SyncError(ErrorCode.FORBIDDEN_RECORD, str(error)) from error
    try:
        changeset_check_line_quantities(changeset=changeset)
    except WireError as error:
        raise SyncError(ErrorCode.MALFORMED, str(error)) from error
    merged = held_merge(sync_id=peer.sync_id, changeset=changeset, store_id=store.pk)
    try:
        result = changeset_apply_isolated(
            changeset=merged, source_site=peer.sync_id, held=held_ids(peer.sync_id)
        )
    except MissingParentError as error:
        raise SyncError(
            ErrorCode.MISSING_PARENT,
            f"The master refused this batch: {error}. Nothing of it was applied. Items and names "
            "are never deleted once a satellite may hold them, so this points at a damaged "
            "database on one of the servers: send both servers' logs to your support team.",
        ) from error
    except DatabaseError as error:
        # Only a refused delete gets here (a refused upsert is set aside): a typed answer, as
        # a satellite reads a 500 page as a wrong URL.
        raise SyncError(
            ErrorCode.REJECTED_RECORD,
            f"The master refused a deletion in this batch: {error}. Nothing of it was applied, "
            "and this satellite's other changes wait behind it; master data still arrives. Send "
            "both servers' logs to your support team.",
        ) from error
    held_store(sync_id=peer.sync_id, result=result)
    if result.rejected:
        logger.warning(
            "Satellite %s: %s records set aside as rejected, %s waiting for them; first: %s",
            peer.sync_id,
            len(result.rejected),
            len(result.waiting),
            set_aside_summary(result.rejected)[0],
        )
    return result


def _history_opened(peer: SyncPeer, record: PushRecord, applied: PushRecord) -> None:
    """Say on the master's sync log that a satellite started a new push history."""
    if applied.generation == 0:
        return
    now = timezone.now()
    SyncLog.objects.create(
        peer_sync_id=peer.sync_id,
        trigger=SyncTrigger.SATELLITE,
        started_at=now,
        ended_at=now,
        step=SyncStep.PUSH,
        result=SyncResult.SUCCESS,
        message=(
            f"Satellite {peer.sync_id} ({peer.name}) no longer held the changes the master had "
            f"received from it up to {applied.end}: it was restored from a backup or rebuilt. "
            f"It took back its store's records from the master, kept the work entered since, "
            f"and started push history {record.generation} from {record.start}."
        ),
    )
