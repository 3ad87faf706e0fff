"""Read paths of the sync app; the site-identity ones answer msupply.identity's questions."""

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from django.db.models import Count, IntegerField, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from .errors import StrOrPromise, error_text
from .models import (
    MASTER_SYNC_ID,
    BufferedRecord,
    ChangeLog,
    ExchangeResult,
    PeerState,
    SyncExchange,
    SyncLog,
    SyncPeer,
    SyncPreferences,
    SyncRequest,
    SyncResult,
)
from .registry import LOCAL_STORE_DATA_SCOPE, MASTER_DATA_SCOPE


def preferences_get() -> SyncPreferences:
    """Return this site's preferences, creating the defaults (a master) on first use."""
    return SyncPreferences.objects.get_or_create(pk=SyncPreferences.SINGLETON_ID)[0]


def site_sync_id() -> int:
    """Return this site's sync ID: 1 on the master, 2-64 on a satellite."""
    sync_id = (
        SyncPreferences.objects.filter(pk=SyncPreferences.SINGLETON_ID)
        .values_list("sync_id", flat=True)
        .first()
    )
    return MASTER_SYNC_ID if sync_id is None else sync_id


def site_is_master() -> bool:
    """Tell whether this site is the master, the only site where master data may be written."""
    return site_sync_id() == MASTER_SYNC_ID


def peers_list() -> QuerySet[SyncPeer]:
    """Return the Sync with list in sync ID order."""
    return SyncPeer.objects.order_by("sync_id")


def pending_changes_count(state: PeerState | None) -> int:
    """Local store-data changes not yet acknowledged by the master."""
    from .changes import Cursor, changes_since

    cursor = Cursor(state.push_txid, state.push_seq) if state else Cursor()
    return changes_since(cursor, LOCAL_STORE_DATA_SCOPE).count()


def unpushed_records_count(state: PeerState | None) -> int:
    """Records (each counted once) with local store-data changes not yet acknowledged."""
    from .changes import Cursor, changes_since

    cursor = Cursor(state.push_txid, state.push_seq) if state else Cursor()
    return (
        changes_since(cursor, LOCAL_STORE_DATA_SCOPE)
        .values("table_name", "record_id")
        .distinct()
        .order_by()
        .count()
    )


def hosted_store_id() -> uuid.UUID | None:
    """On a satellite, the store it hosts as the master named it; None before the first sync."""
    return (
        PeerState.objects.filter(peer__sync_id=MASTER_SYNC_ID)
        .values_list("hosted_store_id", flat=True)
        .first()
    )


def sync_status(recent: int = 10) -> dict[str, Any]:
    """This site's role, each peer's state, pending changes and the latest runs.

    On the master each satellite's last error (code and message), failure streak and last
    failure come from its exchange records; on a satellite, from its own latest failed run.
    """
    preferences = preferences_get()
    peers = []
    states = {state.peer_id: state for state in PeerState.objects.all()}
    listed = list(peers_with_exchanges() if preferences.is_master else peers_list())
    held = None
    if preferences.is_master:
        from .rejects import held_counts

        held = held_counts()
    for peer in listed:
        state = states.get(peer.pk)
        peers.append(
            {
                "sync_id": peer.sync_id,
                "name": peer.name,
                "store": peer.store_code,
                "url": peer.url,
                "last_contact_at": state.last_contact_at if state else None,
                "last_success_at": state.last_success_at if state else None,
                **_trouble(peer, preferences.is_master),
                "records_received": state.records_received if state else 0,
                "stages": peer_stages(peer, state, preferences.is_master, held),
                "push_cursor": f"{state.push_txid}.{state.push_seq}" if state else "0.0",
                "pull_cursor": f"{state.pull_txid}.{state.pull_seq}" if state else "0.0",
                "initialised": state.initialised if state else False,
                # On the master: since when the satellite must initialise again (sync.prune).
                "log_expired_at": state.log_expired_at if state else None,
                # On the master, the satellite's key; on a satellite, whether it holds its own.
                "key": peer_key_status(peer)
                if preferences.is_master
                else ("held" if preferences.sync_key else "not enrolled"),
            }
        )
    master_state = next((states.get(p.pk) for p in listed if p.sync_id == MASTER_SYNC_ID), None)
    return {
        "sync_id": preferences.sync_id,
        "role": "master" if preferences.is_master else "satellite",
        "peers": peers,
        "pending_changes": 0 if preferences.is_master else pending_changes_count(master_state),
        "buffered_records": BufferedRecord.objects.count(),
        "recent_runs": list(
            SyncLog.objects.values(
                "started_at",
                "ended_at",
                "result",
                "records_pushed",
                "records_pulled",
                "bytes_sent",
                "bytes_received",
                "error_code",
                "message",
            )[:recent]
        ),
    }


def peer_stages(
    peer: SyncPeer,
    state: PeerState | None,
    is_master: bool,
    held: dict[int, dict[str, int]] | None = None,
) -> dict[str, Any]:
    """A satellite's records by stage, the same figures on both sides: each stage is counted
    by the side that owns it (the satellite what it has to push, the master the rest) and
    reported to the other at every exchange. `held`: the master's sync.rejects.held_counts(),
    read once for a whole list."""
    if is_master:
        from .models import HeldStatus
        from .rejects import held_counts

        aside = (held if held is not None else held_counts()).get(peer.sync_id, {})
        return {
            "to_push": state.records_to_push if state else 0,
            "acknowledged": state.records_received if state else 0,
            "integrated": state.records_integrated if state else 0,
            "waiting": aside.get(HeldStatus.WAITING, 0),
            "rejected": aside.get(HeldStatus.REJECTED, 0),
        }
    return {
        "to_push": unpushed_records_count(state),
        "acknowledged": state.reported_acknowledged if state else 0,
        "integrated": state.reported_integrated if state else 0,
        "waiting": state.reported_waiting if state else 0,
        "rejected": state.reported_rejected if state else 0,
        "reported_at": state.reported_at if state else None,
    }


def _trouble(peer: SyncPeer, is_master: bool) -> dict[str, Any]:
    """A peer's current error (blank once it succeeded again), failure streak and last failure:
    on the master from peers_with_exchanges, on a satellite (its one peer) from its own runs."""
    if is_master:
        streak = getattr(peer, "failure_streak", 0)
        return {
            "last_error_code": (getattr(peer, "last_error_code", None) or "") if streak else "",
            "last_error": (getattr(peer, "last_error_message", None) or "") if streak else "",
            "failure_streak": streak,
            "last_failed_at": getattr(peer, "last_failed_at", None),
        }
    runs = SyncLog.objects.filter(peer_sync_id=peer.sync_id).exclude(result=SyncResult.RUNNING)
    success_at = (
        runs.filter(result=SyncResult.SUCCESS)
        .order_by("-started_at")
        .values_list("started_at", flat=True)
        .first()
    )
    failed = runs.filter(result=SyncResult.FAILURE).order_by("-started_at", "-pk")
    current = failed.filter(started_at__gt=success_at or EPOCH)
    last = current.first()
    return {
        "last_error_code": last.error_code if last else "",
        "last_error": last.message if last else "",
        "failure_streak": current.count(),
        "last_failed_at": failed.values_list("started_at", flat=True).first(),
    }


def records_with_last_change(records: QuerySet[Any]) -> QuerySet[Any]:
    """`records` of a synced table with their newest change: `last_changed_by` (a user name, or
    empty), `last_changed_at` and `last_change_source` (the site it came from by sync, or None).

    Pruning keeps the newest change of every record (sync.prune), so this is always there.
    """
    newest = ChangeLog.objects.filter(
        table_name=records.model._meta.db_table, record_id=OuterRef("pk")
    ).order_by("-txid", "-seq")
    return records.annotate(
        last_changed_by=Subquery(newest.values("changed_by")[:1]),
        last_changed_at=Subquery(newest.values("changed_at")[:1]),
        last_change_source=Subquery(newest.values("source_site")[:1]),
    )


def master_record_may_be_held(*, table_name: str, record_id: uuid.UUID) -> bool:
    """Tell whether any satellite may hold this master record: a pull has been served since it
    was first logged. Run inside the transaction that deletes it: the peers' rows stay locked
    until it commits, so a pull cannot start reading in between.
    """
    from django.db.models import F

    from .models import ChangeLog, PruneMark

    served = list(PeerState.objects.select_for_update().values_list("served_txid", "served_seq"))
    first = (
        ChangeLog.objects.filter(table_name=table_name, record_id=record_id)
        .order_by(F("txid"), F("seq"))
        .values_list("txid", "seq")
        .first()
    )
    if first is None:
        return False
    # Pruning may have removed the record's first changes (sync.prune): any served position past
    # where compaction reached may then have carried it.
    mark = PruneMark.objects.values_list("txid", "seq").first()
    since = min(first, mark) if mark and mark > (0, 0) else first
    return any(position >= since for position in served)


def store_hosting_peer(*, code: str) -> SyncPeer | None:
    """The satellite in Sync with that hosts the store with `code`, if any."""
    return SyncPeer.objects.filter(store_code=code).first()


def store_is_hosted_here(store_id: uuid.UUID) -> bool:
    """Tell whether this site writes `store_id`'s transactions and stock.

    A satellite hosts the store the master named in its handshake; the master hosts every store
    that no satellite in its Sync with list names.
    """
    if not site_is_master():
        return store_id == hosted_store_id()
    return _stores_hosted_on_master().filter(pk=store_id).exists()


def hosted_store_ids() -> frozenset[uuid.UUID]:
    """The stores this site writes, by the rule of store_is_hosted_here: on a satellite its one
    store (none before the first sync), on the master every store no satellite hosts."""
    if not site_is_master():
        store_id = hosted_store_id()
        return frozenset() if store_id is None else frozenset({store_id})
    return frozenset(_stores_hosted_on_master().values_list("pk", flat=True))


def _stores_hosted_on_master() -> QuerySet[Any]:
    from stores.models import Store

    return Store.objects.exclude(code__in=SyncPeer.objects.values("store_code"))


def pending_changes_for(peer: SyncPeer) -> int:
    """Changes this site holds that `peer` has not received yet.

    A satellite counts its own store data the master has not acknowledged; the master counts
    the master data after the cursor the satellite last pulled from.
    """
    from .changes import Cursor, changes_since

    state = PeerState.objects.filter(peer=peer).first()
    if not site_is_master():
        return pending_changes_count(state)
    cursor = Cursor(state.pull_txid, state.pull_seq) if state else Cursor()
    return changes_since(cursor, MASTER_DATA_SCOPE).count()


Staleness = Literal["ok", "warning", "error", "never"]
# A peer is worth a look after a day without a successful sync and an alarm after three.
STALE_WARNING_AFTER = timedelta(days=1)
STALE_ERROR_AFTER = timedelta(days=3)


def sync_staleness(
    last_success_at: datetime | None,
    *,
    now: datetime | None = None,
    warning_after: timedelta = STALE_WARNING_AFTER,
) -> Staleness:
    """Grade a peer's last successful sync: ok, warning after a day (or `warning_after`), error
    after three days (never before the warning), never."""
    if last_success_at is None:
        return "never"
    age = (now or timezone.now()) - last_success_at
    if age > max(STALE_ERROR_AFTER, warning_after):
        return "error"
    if age > warning_after:
        return "warning"
    return "ok"


def peer_key_status(peer: SyncPeer) -> str:
    """A satellite's key, and whether it may sync, in words (on the master)."""
    if peer.key_hash:
        status = gettext("enrolled")
    elif peer.pending_key_hash:
        status = gettext("key issued, not used yet")
    else:
        status = gettext("not enrolled")
    return status if peer.enabled else gettext("%(status)s; disabled") % {"status": status}


# Before any exchange: a failure streak with no success yet counts from here.
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _latest(field: str, **conditions: Any) -> Subquery:
    exchanges = SyncExchange.objects.filter(sync_id=OuterRef("sync_id"), **conditions)
    return Subquery(exchanges.order_by("-started_at", "-pk").values(field)[:1])


def peers_with_last_run_failure(peers: QuerySet[SyncPeer]) -> QuerySet[SyncPeer]:
    """`peers` annotated with their last failed run that has a code, in the same query:
    run_error_code and run_error_message (None when there is none)."""
    failed = (
        SyncLog.objects.filter(peer_sync_id=OuterRef("sync_id"), result=SyncResult.FAILURE)
        .exclude(error_code="")
        .order_by("-started_at")
    )
    return peers.annotate(
        run_error_code=Subquery(failed.values("error_code")[:1]),
        run_error_message=Subquery(failed.values("message")[:1]),
    )


def state_error_text(peer: SyncPeer) -> str:
    """The error a peer's state keeps, in the viewer's language when its last failed run (see
    peers_with_last_run_failure) has the same message: the state keeps the English text only."""
    state = getattr(peer, "state", None)
    if not (state and state.last_error):
        return ""
    code = getattr(peer, "run_error_code", None)
    if code and getattr(peer, "run_error_message", None) == state.last_error:
        return error_text(code, state.last_error)
    return str(state.last_error)


def peers_with_exchanges(peers: QuerySet[SyncPeer] | None = None) -> QuerySet[SyncPeer]:
    """On the master, `peers` (all by default) annotated from their exchange records, in one
    query: exchange_success_at, last_failed_at, last_result, last_error_code, last_error_message
    (of the latest failure) and failure_streak (failed exchanges since the latest success).

    By the claimed Sync ID, so refused logins count for the satellite they named.
    """
    failure = ExchangeResult.FAILURE
    streak = (
        SyncExchange.objects.filter(
            sync_id=OuterRef("sync_id"),
            result=failure,
            started_at__gt=Coalesce(OuterRef("exchange_success_at"), Value(EPOCH)),
        )
        .order_by()
        .values("sync_id")
        .annotate(count=Count("pk"))
        .values("count")
    )
    return (
        (peers if peers is not None else peers_list())
        .annotate(
            exchange_success_at=_latest("started_at", result=ExchangeResult.SUCCESS),
            last_failed_at=_latest("started_at", result=failure),
            last_result=_latest("result"),
            last_error_code=_latest("error_code", result=failure),
            last_error_message=_latest("message", result=failure),
        )
        .annotate(failure_streak=Coalesce(Subquery(streak, output_field=IntegerField()), Value(0)))
    )


SatelliteHealth = Literal["ok", "stale", "failing", "never"]
SATELLITE_HEALTH_LABELS: dict[SatelliteHealth, StrOrPromise] = {
    "ok": _("OK"),
    "stale": _("Stale (no success for over a day)"),
    "failing": _("Failing"),
    "never": _("Never synced"),
}


def satellite_health_q(health: SatelliteHealth, *, now: datetime | None = None) -> Q:
    """The condition on peers_with_exchanges() rows for one health, each peer in exactly one:
    failing (its latest exchange failed) before never synced, then stale (no complete sync
    for over a day, as sync_staleness grades it) or OK."""
    if health == "failing":
        return Q(last_result=ExchangeResult.FAILURE)
    # Spelled out: NOT over a NULL subquery (no exchange yet) is NULL in SQL, not true.
    not_failing = Q(last_result=ExchangeResult.SUCCESS) | Q(last_result__isnull=True)
    if health == "never":
        return not_failing & Q(state__last_success_at__isnull=True)
    day_ago = (now or timezone.now()) - STALE_WARNING_AFTER
    if health == "stale":
        return not_failing & Q(state__last_success_at__lt=day_ago)
    return not_failing & Q(state__last_success_at__gte=day_ago)


def satellite_health(
    peer: SyncPeer,
    *,
    now: datetime | None = None,
    stale_after: timedelta = STALE_WARNING_AFTER,
    failures: int = 1,
) -> SatelliteHealth:
    """One peers_with_exchanges() row's health, by the same rules as satellite_health_q; alerts
    (sync.alerts) pass their own thresholds: stale after `stale_after` without a complete sync,
    failing once its latest `failures` exchanges (at least one) failed in a row."""
    failing = getattr(peer, "last_result", None) == ExchangeResult.FAILURE
    if failing and getattr(peer, "failure_streak", 0) >= failures:
        return "failing"
    state = getattr(peer, "state", None)
    staleness = sync_staleness(
        state.last_success_at if state else None, now=now, warning_after=stale_after
    )
    if staleness == "never":
        return "never"
    return "ok" if staleness == "ok" else "stale"


def satellite_health_counts() -> dict[SatelliteHealth, int]:
    """On the master, how many satellites are OK, stale, failing and never synced: one query."""
    now = timezone.now()
    counts: dict[SatelliteHealth, int] = dict.fromkeys(SATELLITE_HEALTH_LABELS, 0)
    for peer in peers_with_exchanges().exclude(sync_id=MASTER_SYNC_ID).select_related("state"):
        counts[satellite_health(peer, now=now)] += 1
    return counts


# A Sync now press that no worker has started after this long says so, instead of waiting on.
SYNC_NOW_PICKUP = timedelta(seconds=30)

SyncNowState = Literal["queued", "no_worker", "running", "interrupted", "success", "failure"]


@dataclass(frozen=True)
class SyncNowStatus:
    """Where a Sync now press stands: its run's log (or the run already going), and its state."""

    state: SyncNowState
    log: SyncLog | None
    # The run was already going when the button was pressed: this press started none.
    joined: bool

    @property
    def finished(self) -> bool:
        return self.state not in ("queued", "running")


def sync_now_status(*, request_id: str, now: datetime | None = None) -> SyncNowStatus:
    """The state of the Sync now press `request_id`, for its page to show until it finishes.

    A run marked running whose lease nobody holds any more has died (its worker was stopped):
    it is shown as interrupted at once, not left running until the next run notices.
    """
    from .locks import lock_held
    from .run import RUN_LOCK

    now = now or timezone.now()
    log = SyncLog.objects.filter(request_id=request_id).first()
    press = SyncRequest.objects.filter(request_id=request_id).select_related("joined").first()
    joined = log is None and press is not None and press.joined is not None
    if joined:
        log = press.joined  # type: ignore[union-attr]
    if log is None:
        waited = press is not None and now - press.queued_at > SYNC_NOW_PICKUP
        return SyncNowStatus("no_worker" if waited else "queued", None, False)
    if log.result == SyncResult.RUNNING:
        alive = lock_held(name=RUN_LOCK, now=now)
        return SyncNowStatus("running" if alive else "interrupted", log, joined)
    return SyncNowStatus("success" if log.result == SyncResult.SUCCESS else "failure", log, joined)
