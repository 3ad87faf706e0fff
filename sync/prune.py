"""Bounded growth: compact the change log and drop old logs, failed logins and batch ids.

What each site's change log is for decides what may go:

- A change travels as the record's *current* row (changes.changeset_build), so a change that a
  newer change of the same record follows tells nothing the newer one does not: it may go once
  every consumer has passed it, and the newest change per record always stays, so the log still
  lists every current record. A protocol 3 satellite initialises from it (a pull from 0.0 with
  initial=true), at one row per record however often they changed; newer ones read a snapshot
  of the tables (sync.snapshot), whose position counts as their pull cursor here.
- A delete marker is the newest change of a record that no longer exists: it stays until every
  consumer has passed it (one that holds the record learns of the delete from it), then goes
  with the record's older changes. An initialisation that starts later never held the record.
- Nothing at or above the lowest consumer position is touched: a page reads in log order, and
  on a push the master refuses a record whose parent has not arrived (push.py), so the changes
  still ahead of a consumer keep their order.

Consumers. On a satellite, its push cursor (PeerState of the master) consumes its own store
data (registry.LOCAL_STORE_DATA_SCOPE). Rows written by integration (source_site set) are never
pushed and nothing else reads them, so they compact up to the top of the log. On the master, the
consumers are the satellites' pull cursors (what each has applied, as PullView stores it) for
every row. A satellite silent longer than SYNC_PEER_RETENTION_DAYS stops being one: when
compaction passes its cursor it is marked (PeerState.log_expired_at), and its next pull that is
not a fresh initialisation gets 409 `reinitialise_required`; its run then pushes first as
always and initialises from 0.0 (run._pull). A satellite never heard of holds nothing and waits
for nobody. Each batch locks the peers' states and computes its bound again, so a pull that
starts meanwhile either counts or waits; on PostgreSQL the top of the log is the read horizon
(changes.POSTGRESQL_HORIZON), below which every transaction has ended.
"""

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection, models, transaction
from django.db.models import BooleanField, Exists, Max, OuterRef, Q
from django.db.models.expressions import RawSQL
from django.utils import timezone
from rest_framework import status

from .changes import POSTGRESQL_HORIZON, Cursor, changes_last
from .errors import ErrorCode, SyncError
from .models import (
    MASTER_SYNC_ID,
    AppliedBatch,
    AuthFailure,
    ChangeAction,
    ChangeLog,
    PeerState,
    PruneMark,
    SyncExchange,
    SyncLog,
    SyncPeer,
    SyncRequest,
)
from .registry import LOCAL_STORE_DATA_SCOPE
from .selectors import preferences_get

REINITIALISE_REQUIRED = ErrorCode.REINITIALISE_REQUIRED


@dataclass
class PruneReport:
    """What one sync_prune removed, by kind, and the satellites told to initialise again."""

    changes: int = 0
    sync_logs: int = 0
    exchanges: int = 0
    sync_requests: int = 0
    auth_failures: int = 0
    applied_batches: int = 0
    expired_satellites: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sync_prune(*, batch_size: int | None = None) -> PruneReport:
    """Remove what this site no longer needs, in batches of at most `batch_size` rows."""
    size = batch_size or settings.SYNC_PRUNE_BATCH_SIZE
    report = PruneReport()
    if preferences_get().is_master:
        report.changes = _compact(scope=Q(), bound=_master_bound, size=size, report=report)
    else:
        report.changes = _compact(
            scope=LOCAL_STORE_DATA_SCOPE, bound=_push_bound, size=size, report=report
        )
        report.changes += _compact(
            scope=~LOCAL_STORE_DATA_SCOPE, bound=_top_bound, size=size, report=report
        )
    now = timezone.now()
    report.sync_logs = _delete_batched(
        SyncLog.objects.filter(
            started_at__lt=now - timedelta(days=settings.SYNC_LOG_RETENTION_DAYS)
        ),
        size,
    )
    # A satellite's failure streak counts back from its newest exchanges, which stay.
    report.exchanges = _delete_batched(
        SyncExchange.objects.filter(
            started_at__lt=now - timedelta(days=settings.SYNC_EXCHANGE_RETENTION_DAYS)
        ),
        size,
    )
    report.sync_requests = _delete_batched(
        SyncRequest.objects.filter(
            queued_at__lt=now - timedelta(days=settings.SYNC_LOG_RETENTION_DAYS)
        ),
        size,
    )
    # Counting failures needs the lockout window's worth of them, whatever the setting says.
    auth_keep = max(
        timedelta(days=settings.SYNC_AUTH_FAILURE_RETENTION_DAYS),
        timedelta(seconds=settings.SYNC_AUTH_LOCKOUT_SECONDS),
    )
    report.auth_failures = _delete_batched(
        AuthFailure.objects.filter(failed_at__lt=now - auth_keep), size
    )
    # The newest batch of each satellite stays: a re-sent last batch (its answer lost) is
    # recognised by its id (push.push_batch_apply); older ones are refused as stale anyway.
    newest = AppliedBatch.objects.values("sync_id").annotate(newest=Max("pk")).values("newest")
    report.applied_batches = _delete_batched(
        AppliedBatch.objects.filter(
            applied_at__lt=now - timedelta(days=settings.SYNC_APPLIED_BATCH_RETENTION_DAYS)
        ).exclude(pk__in=newest),
        size,
    )
    return report


def _log_top() -> Cursor:
    """A position below which every change this log will ever hold has been written."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT {POSTGRESQL_HORIZON}")  # noqa: S608 - a constant
            return Cursor(int(cursor.fetchone()[0]), 0)
    return changes_last()


def _top_bound(report: PruneReport) -> Cursor:
    """For rows no consumer reads: the top of the log."""
    return _log_top()


def _push_bound(report: PruneReport) -> Cursor:
    """On a satellite: its push cursor; nothing it has not pushed may go."""
    state = PeerState.objects.filter(peer__sync_id=MASTER_SYNC_ID).first()
    return Cursor(state.push_txid, state.push_seq) if state else Cursor()


def _master_bound(report: PruneReport) -> Cursor:
    """On the master: the lowest pull cursor of the satellites heard from within retention.

    Satellites silent for longer whose cursor lies below it are marked to initialise again.
    """
    since = timezone.now() - timedelta(days=settings.SYNC_PEER_RETENTION_DAYS)
    states = (
        PeerState.objects.select_for_update(of=("self",))
        .exclude(peer__sync_id=MASTER_SYNC_ID)
        .filter(last_contact_at__isnull=False, log_expired_at__isnull=True)
        .order_by("pk")
    )
    cursors = [
        (Cursor(txid, seq), contact is not None and contact >= since, sync_id)
        for txid, seq, contact, sync_id in states.values_list(
            "pull_txid", "pull_seq", "last_contact_at", "peer__sync_id"
        )
    ]
    bound = min([*(cursor for cursor, heard, _ in cursors if heard), _log_top()])
    expired = [sync_id for cursor, heard, sync_id in cursors if not heard and cursor < bound]
    if expired:
        PeerState.objects.filter(peer__sync_id__in=expired).update(log_expired_at=timezone.now())
        report.expired_satellites += expired
    return bound


def _compact(
    *, scope: Q, bound: Callable[[PruneReport], Cursor], size: int, report: PruneReport
) -> int:
    """Delete, batch by batch, the changes in `scope` below `bound(report)` that a newer change
    of the same record follows, and the delete markers; returns how many went."""
    newer = ChangeLog.objects.filter(
        Q(txid__gt=OuterRef("txid")) | Q(txid=OuterRef("txid"), seq__gt=OuterRef("seq")),
        record_id=OuterRef("record_id"),
        table_name=OuterRef("table_name"),
    )
    PruneMark.objects.get_or_create(pk=PruneMark.SINGLETON_ID)
    marks = PruneMark.objects.filter(pk=PruneMark.SINGLETON_ID)
    removed, start = 0, Cursor()
    while True:
        with transaction.atomic():
            # A write first, so the batch holds the write lock before it reads (SQLite) and two
            # prunes take turns (PostgreSQL).
            marks.update(pruned_at=timezone.now())
            below = bound(report)
            after = RawSQL("(txid, seq) > (%s, %s)", (start.txid, start.seq), BooleanField())
            before = RawSQL("(txid, seq) < (%s, %s)", (below.txid, below.seq), BooleanField())
            batch = list(
                ChangeLog.objects.filter(scope, after, before)
                .filter(Q(action=ChangeAction.DELETE) | Exists(newer))
                .order_by("txid", "seq")
                .values_list("txid", "seq")[:size]
            )
            if batch:
                ChangeLog.objects.filter(seq__in=[seq for _, seq in batch]).delete()
                removed += len(batch)
                start = Cursor(*batch[-1])
            marks.filter(Q(txid__lt=below.txid) | Q(txid=below.txid, seq__lt=below.seq)).update(
                txid=below.txid, seq=below.seq
            )
        if len(batch) < size:
            return removed


def _delete_batched(rows: "models.QuerySet[Any]", size: int) -> int:
    """Delete `rows` at most `size` at a time, each batch in its own transaction."""
    removed = 0
    while True:
        with transaction.atomic():
            pks = list(rows.order_by("pk").values_list("pk", flat=True)[:size])
            removed += rows.model._default_manager.filter(pk__in=pks).delete()[0]
        if len(pks) < size:
            return removed


def prune_mark() -> Cursor:
    """The position below which this site's change log may have been compacted (0.0: never)."""
    mark = PruneMark.objects.values_list("txid", "seq").first()
    return Cursor(*mark) if mark else Cursor()


def pull_expiry_check(*, peer: SyncPeer, cursor: Cursor, initial: bool) -> None:
    """On the master: refuse a pull that relies on changes pruned while the satellite was silent.

    A fresh initialisation (from 0.0) is always served, and clears the mark.
    """
    expired = PeerState.objects.filter(peer=peer, log_expired_at__isnull=False)
    if cursor == Cursor() and initial:
        expired.update(log_expired_at=None)
    elif cursor != Cursor() and expired.exists():
        raise SyncError(
            REINITIALISE_REQUIRED,
            f"Satellite {peer.sync_id} was silent for more than "
            f"{settings.SYNC_PEER_RETENTION_DAYS} days (SYNC_PEER_RETENTION_DAYS), so the master "
            "no longer keeps the changes it missed. It must initialise again: its next sync does "
            "so by itself once its own changes are pushed (run sync_now, or wait for the "
            "schedule); nothing it has not pushed is lost.",
            status=status.HTTP_409_CONFLICT,
        )
