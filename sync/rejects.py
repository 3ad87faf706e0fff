"""Rejected records: what a satellite pushed that the master could not integrate.

A field-rule violation or a forgery refuses the whole batch (the security rule, sync.push). A
record that is valid but conflicts with the master's data (a constraint that only the master's
rows break, as after a satellite restored from a backup) is set aside instead, with the reason,
and the rest of its batch is applied. Records that depend on it (the lines of a rejected
transaction) wait with it, in the same batch or a later one. Every integration of the
satellite's pushes, each handshake and every `migrate` retry them; an administrator may retry
them at once or discard them with a note, both written to the satellite's admin history.
"""

import logging
import uuid
from collections.abc import Iterable
from dataclasses import dataclass

from django.contrib.auth.models import AbstractUser
from django.core.exceptions import PermissionDenied
from django.db import DEFAULT_DB_ALIAS, DatabaseError, transaction
from django.db.models import Count, IntegerField, OuterRef, Q, QuerySet, Subquery
from django.utils import timezone
from django.utils.translation import gettext

from .changes import ChangeSet
from .errors import SyncError
from .integration import (
    IsolatedResult,
    MissingParentError,
    OwnershipError,
    SetAside,
    changeset_apply_isolated,
    changeset_check_ownership,
)
from .keys import peer_history
from .models import HeldStatus, PeerState, RejectedRecord, SyncPeer
from .registry import SYNCED_TABLES

logger = logging.getLogger(__name__)

# How many set-aside records an answer or a log message names; the admin lists them all.
NAMED_AT_MOST = 5
RESOLVE_PERMISSION = "sync.resolve_rejectedrecord"


def _ensure_may_resolve(user: AbstractUser) -> None:
    if not user.has_perm(RESOLVE_PERMISSION):
        raise PermissionDenied(
            gettext(
                "%(user)s may not retry or discard rejected records (permission %(permission)s)."
            )
            % {"user": user.get_username(), "permission": RESOLVE_PERMISSION}
        )


def held_ids(sync_id: int) -> dict[str, set[uuid.UUID]]:
    """The ids of satellite `sync_id`'s set-aside records, per table."""
    held: dict[str, set[uuid.UUID]] = {}
    rows = RejectedRecord.objects.filter(sync_id=sync_id).values_list("table_name", "record_id")
    for table_name, record_id in rows:
        held.setdefault(table_name, set()).add(record_id)
    return held


def held_merge(*, sync_id: int, changeset: ChangeSet, store_id: uuid.UUID) -> ChangeSet:
    """`changeset` with the satellite's set-aside records that it does not carry a newer state
    of, so they are tried again with it; the ones it carries or deletes are forgotten.

    The set-aside rows pass the ownership check again, against the master's data as it is now:
    if another store's record has since taken a parent's id, they stay aside.
    """
    held = RejectedRecord.objects.filter(sync_id=sync_id)
    if not held.exists():
        return changeset
    carried = {
        table.name: changeset.ids(table) | set(changeset.deletes.get(table.name, []))
        for table in SYNCED_TABLES
    }
    retry = ChangeSet()
    superseded = []
    for record in held.order_by("pk"):
        if record.record_id in carried.get(record.table_name, set()):
            superseded.append(record.pk)
        else:
            retry.upserts.setdefault(record.table_name, []).append(record.row)
    RejectedRecord.objects.filter(pk__in=superseded).delete()
    if not retry.upserts:
        return changeset
    try:
        changeset_check_ownership(changeset=retry.decode(), store_id=store_id)
    except OwnershipError as error:
        logger.warning("Satellite %s's rejected records stay aside: %s", sync_id, error)
        return changeset
    merged = ChangeSet(deletes=dict(changeset.deletes))
    for table in SYNCED_TABLES:
        rows = changeset.upserts.get(table.name, []) + retry.upserts.get(table.name, [])
        if rows:
            merged.upserts[table.name] = rows
    return merged.decode()


def held_store(*, sync_id: int, result: IsolatedResult) -> None:
    """Forget the set-aside records that applied; keep (or update) the ones still aside."""
    applied = Q()
    for table_name, ids in result.upserted.items():
        if ids:
            applied |= Q(table_name=table_name, record_id__in=ids)
    if applied:
        RejectedRecord.objects.filter(applied, sync_id=sync_id).delete()
    aside = [(record, HeldStatus.REJECTED) for record in result.rejected]
    aside += [(record, HeldStatus.WAITING) for record in result.waiting]
    if not aside:
        return
    known = {
        (table_name, record_id): attempts
        for table_name, record_id, attempts in RejectedRecord.objects.filter(
            sync_id=sync_id
        ).values_list("table_name", "record_id", "attempts")
    }
    now = timezone.now()
    RejectedRecord.objects.bulk_create(
        [
            RejectedRecord(
                sync_id=sync_id,
                table_name=record.table_name,
                record_id=record.record_id,
                row=record.row,
                status=status,
                reason=record.reason,
                awaited_table=record.awaited_table,
                awaited_id=record.awaited_id,
                retried_at=now if (record.table_name, record.record_id) in known else None,
                attempts=known.get((record.table_name, record.record_id), 0) + 1,
            )
            for record, status in aside
        ],
        update_conflicts=True,
        unique_fields=["sync_id", "table_name", "record_id"],
        update_fields=[
            "row",
            "status",
            "reason",
            "awaited_table",
            "awaited_id",
            "retried_at",
            "attempts",
        ],
    )


def set_aside_summary(records: Iterable[SetAside]) -> list[dict[str, str]]:
    """The first few set-aside records as the push answer names them."""
    return [
        {"table": record.table_name, "id": str(record.record_id), "reason": record.reason}
        for _, record in zip(range(NAMED_AT_MOST), records, strict=False)
    ]


@dataclass(frozen=True)
class RetryOutcome:
    retried: int
    applied: int
    still_aside: int


def rejected_retry(*, sync_id: int) -> RetryOutcome:
    """Try satellite `sync_id`'s set-aside records again, under its integration lock."""
    from .push import peer_store

    if not RejectedRecord.objects.filter(sync_id=sync_id).exists():
        return RetryOutcome(0, 0, 0)  # every contact asks: no lock when nothing is aside
    with transaction.atomic():
        # The same row lock a push takes: one integration at a time per satellite.
        state = PeerState.objects.select_for_update().filter(peer__sync_id=sync_id).first()
        count = RejectedRecord.objects.filter(sync_id=sync_id).count()
        if state is None or not count:
            return RetryOutcome(0, 0, count)
        peer = SyncPeer.objects.get(sync_id=sync_id)
        changeset = held_merge(sync_id=sync_id, changeset=ChangeSet(), store_id=peer_store(peer).pk)
        if not len(changeset):
            return RetryOutcome(0, 0, count)
        result = changeset_apply_isolated(
            changeset=changeset, source_site=sync_id, held=held_ids(sync_id)
        )
        held_store(sync_id=sync_id, result=result)
        if result.applied:
            PeerState.objects.filter(pk=state.pk).update(
                records_integrated=state.records_integrated + result.applied
            )
        still = RejectedRecord.objects.filter(sync_id=sync_id).count()
    if result.applied:
        logger.info("Satellite %s: %s rejected records applied on retry.", sync_id, result.applied)
    return RetryOutcome(len(changeset), result.applied, still)


def rejected_retry_all(using: str = DEFAULT_DB_ALIAS) -> dict[int, RetryOutcome]:
    """Retry every satellite's set-aside records (after an upgrade, from `migrate`).

    A satellite whose records cannot be tried (its Sync with entry names no store) is logged
    and skipped: an upgrade never stops on it.
    """
    if using != DEFAULT_DB_ALIAS:
        return {}
    try:
        sync_ids = list(
            RejectedRecord.objects.values_list("sync_id", flat=True).distinct().order_by()
        )
    except DatabaseError:  # migrated back to before rejected records existed
        return {}
    outcomes = {}
    for sync_id in sync_ids:
        try:
            outcomes[sync_id] = rejected_retry(sync_id=sync_id)
        except (SyncError, MissingParentError, DatabaseError):
            logger.warning(
                "Could not retry satellite %s's rejected records.", sync_id, exc_info=True
            )
    return outcomes


def rejected_retry_by(*, sync_ids: Iterable[int], user: AbstractUser) -> dict[int, RetryOutcome]:
    """An administrator's Retry now, written to each satellite's admin history."""
    _ensure_may_resolve(user)
    outcomes = {}
    for sync_id in sorted(set(sync_ids)):
        outcome = outcomes[sync_id] = rejected_retry(sync_id=sync_id)
        _history(
            user,
            sync_id,
            f"Retried its rejected records: {outcome.applied} applied, {outcome.still_aside} "
            "still set aside.",
        )
    return outcomes


@transaction.atomic
def rejected_discard(*, records: Iterable[RejectedRecord], user: AbstractUser, note: str) -> int:
    """Discard set-aside records, and the ones that wait for them, with the user's note."""
    _ensure_may_resolve(user)
    note = note.strip()
    if not note:
        raise ValueError(gettext("Say why these records are discarded: a note is required."))
    discarded = 0
    by_satellite: dict[int, list[RejectedRecord]] = {}
    for record in records:
        by_satellite.setdefault(record.sync_id, []).append(record)
    for sync_id, chosen in by_satellite.items():
        doomed = {record.pk: record for record in chosen}
        # What waits for a discarded record would wait forever: it goes with it.
        frontier = [(record.table_name, record.record_id) for record in chosen]
        while frontier:
            waiting = Q()
            for table_name, record_id in frontier:
                waiting |= Q(awaited_table=table_name, awaited_id=record_id)
            found = [
                record
                for record in RejectedRecord.objects.filter(waiting, sync_id=sync_id)
                if record.pk not in doomed
            ]
            doomed.update({record.pk: record for record in found})
            frontier = [(record.table_name, record.record_id) for record in found]
        names = ", ".join(
            f"{record.table_name} {record.record_id}" for record in list(doomed.values())[:20]
        )
        RejectedRecord.objects.filter(pk__in=doomed).delete()
        discarded += len(doomed)
        _history(user, sync_id, f"Discarded {len(doomed)} rejected records ({names}): {note}")
    return discarded


def _history(user: AbstractUser, sync_id: int, message: str) -> None:
    peer = SyncPeer.objects.filter(sync_id=sync_id).first()
    if peer is not None:
        peer_history(user, peer, message)


def with_held_counts(peers: QuerySet[SyncPeer]) -> QuerySet[SyncPeer]:
    """`peers` annotated with their rejected and waiting records' counts, in the same query."""

    def count(status: str) -> Subquery:
        return Subquery(
            RejectedRecord.objects.filter(sync_id=OuterRef("sync_id"), status=status)
            .order_by()
            .values("sync_id")
            .annotate(n=Count("pk"))
            .values("n")[:1],
            output_field=IntegerField(),
        )

    return peers.annotate(
        held_rejected=count(HeldStatus.REJECTED), held_waiting=count(HeldStatus.WAITING)
    )


def held_counts(sync_id: int | None = None) -> dict[int, dict[str, int]]:
    """Per satellite (or only `sync_id`): how many records are rejected, how many wait."""
    counts: dict[int, dict[str, int]] = {}
    held = RejectedRecord.objects.all()
    if sync_id is not None:
        held = held.filter(sync_id=sync_id)
    rows = held.values("sync_id", "status").annotate(n=Count("pk")).order_by()
    for row in rows:
        counts.setdefault(row["sync_id"], {})[row["status"]] = row["n"]
    return counts


def stage_counts(
    *, sync_id: int, peer: SyncPeer | None = None, state: PeerState | None = None
) -> dict[str, object]:
    """On the master, satellite `sync_id`'s records by stage, each counted once, with the
    reasons of the first ones set aside: what the master reports to the satellite. `peer` and
    `state`, when the caller has just read them, save reading them again."""
    from .selectors import peer_stages

    if peer is None:
        peer = SyncPeer.objects.filter(sync_id=sync_id).first()
    if state is None:
        state = PeerState.objects.filter(peer__sync_id=sync_id).first()
    stages: dict[str, object] = {
        "to_push": 0,
        "acknowledged": 0,
        "integrated": 0,
        "waiting": 0,
        "rejected": 0,
    }
    held = held_counts(sync_id=sync_id)
    if peer is not None:
        stages = peer_stages(peer, state, is_master=True, held=held)
    if not held:
        stages["set_aside"] = []
        return stages
    aside = RejectedRecord.objects.filter(sync_id=sync_id).order_by("status", "received_at")
    stages["set_aside"] = [
        {
            "table": record.table_name,
            "id": str(record.record_id),
            "status": record.status,
            "reason": record.reason,
        }
        for record in aside[:NAMED_AT_MOST]
    ]
    return stages
