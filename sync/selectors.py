"""Read paths of the sync app; `site_is_master` is the public answer to "may I edit master data"."""

import uuid
from datetime import datetime, timedelta
from typing import Any, Literal

from django.db.models import QuerySet
from django.utils import timezone

from .models import MASTER_SYNC_ID, BufferedRecord, PeerState, SyncLog, SyncPeer, SyncPreferences
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


def hosted_store_id() -> uuid.UUID | None:
    """On a satellite, the store it hosts as the master named it; None before the first sync."""
    return (
        PeerState.objects.filter(peer__sync_id=MASTER_SYNC_ID)
        .values_list("hosted_store_id", flat=True)
        .first()
    )


def sync_status(recent: int = 10) -> dict[str, Any]:
    """This site's role, each peer's state, pending changes and the latest runs."""
    preferences = preferences_get()
    peers = []
    states = {state.peer_id: state for state in PeerState.objects.all()}
    for peer in peers_list():
        state = states.get(peer.pk)
        peers.append(
            {
                "sync_id": peer.sync_id,
                "name": peer.name,
                "store": peer.store_code,
                "url": peer.url,
                "last_contact_at": state.last_contact_at if state else None,
                "last_success_at": state.last_success_at if state else None,
                "last_error": state.last_error if state else "",
                "records_received": state.records_received if state else 0,
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
    master_state = next(
        (states.get(p.pk) for p in peers_list() if p.sync_id == MASTER_SYNC_ID), None
    )
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
    from stores.models import Store

    hosted_elsewhere = SyncPeer.objects.values("store_code")
    return Store.objects.filter(pk=store_id).exclude(code__in=hosted_elsewhere).exists()


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


def sync_staleness(last_success_at: datetime | None, *, now: datetime | None = None) -> Staleness:
    """Grade a peer's last successful sync: ok, warning after a day, error after three, never."""
    if last_success_at is None:
        return "never"
    age = (now or timezone.now()) - last_success_at
    if age > STALE_ERROR_AFTER:
        return "error"
    if age > STALE_WARNING_AFTER:
        return "warning"
    return "ok"


def peer_key_status(peer: SyncPeer) -> str:
    """A satellite's key, and whether it may sync, in words (on the master)."""
    if peer.key_hash:
        status = "enrolled"
    elif peer.pending_key_hash:
        status = "key issued, not used yet"
    else:
        status = "not enrolled"
    return status if peer.enabled else f"{status}; disabled"
