"""Read path of the sync status report: how syncing goes for each satellite, at a glance."""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.utils import timezone
from django.utils.timesince import timesince
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from stores.models import Store
from stores.reports import ReportScope

from .errors import error_text
from .models import MASTER_SYNC_ID, SyncPeer
from .selectors import (
    Staleness,
    peers_with_exchanges,
    peers_with_last_run_failure,
    site_sync_id,
    state_error_text,
    sync_staleness,
)

STALENESS_LABELS: dict[Staleness, Any] = {
    "ok": _("OK"),
    "warning": _("Over a day"),
    "error": _("Over three days"),
    "never": _("Never synced"),
}


@dataclass(frozen=True)
class SatelliteStatus:
    """One satellite's link to the master: contact, last success and what went wrong last."""

    sync_id: int
    name: str
    store_code: str
    store_name: str
    last_contact_at: datetime | None
    last_success_at: datetime | None
    records_received: int
    last_error: str
    staleness: Staleness
    # On the master, from the satellite's exchange records (selectors.peers_with_exchanges).
    failure_streak: int = 0
    last_failed_at: datetime | None = None

    @property
    def staleness_label(self) -> str:
        return str(STALENESS_LABELS[self.staleness])

    def since_success(self, now: datetime | None = None) -> str:
        """How long ago the last successful sync was, in words."""
        if self.last_success_at is None:
            return gettext("never")
        return gettext("%(time)s ago") % {
            "time": timesince(self.last_success_at, now or timezone.now())
        }


def satellite_statuses(*, scope: ReportScope) -> list[SatelliteStatus]:
    """On the master, every satellite in the Sync with list; on a satellite, its own link."""
    # A satellite's only peer is the master, whose entry names the master's store; the satellite
    # reports under its own store instead, so no other store appears there.
    now = timezone.now()
    if scope.is_master:
        peers = list(
            peers_with_last_run_failure(
                peers_with_exchanges(SyncPeer.objects.exclude(sync_id=MASTER_SYNC_ID))
            )
            .select_related("state")
            .order_by("sync_id")
        )
        names = dict(
            Store.objects.filter(code__in=[peer.store_code for peer in peers]).values_list(
                "code", "name"
            )
        )
        links = [(peer, peer.sync_id, peer.name, peer.store_code) for peer in peers]
    else:
        master = (
            peers_with_last_run_failure(SyncPeer.objects.filter(sync_id=MASTER_SYNC_ID))
            .select_related("state")
            .first()
        )
        code = scope.store.code if scope.store else ""
        names = {code: scope.store.name} if scope.store else {}
        links = [(master, site_sync_id(), gettext("This satellite"), code)] if master else []
    statuses = []
    for peer, sync_id, name, store_code in links:
        state = getattr(peer, "state", None)
        last_success_at = state.last_success_at if state else None
        streak = getattr(peer, "failure_streak", 0)
        if streak:
            code = getattr(peer, "last_error_code", "") or ""
            message = getattr(peer, "last_error_message", "") or ""
            last_error = f"{code}: {error_text(code, message)}"
        else:
            last_error = state_error_text(peer)
        statuses.append(
            SatelliteStatus(
                sync_id=sync_id,
                name=name,
                store_code=store_code,
                store_name=names.get(store_code, ""),
                last_contact_at=state.last_contact_at if state else None,
                last_success_at=last_success_at,
                records_received=state.records_received if state else 0,
                last_error=last_error,
                staleness=sync_staleness(last_success_at, now=now),
                failure_streak=streak,
                last_failed_at=getattr(peer, "last_failed_at", None),
            )
        )
    return statuses
