"""On the master: one e-mail when a satellite turns stale or failing, and one when it is OK again.

A satellite's alert state is its health (sync.selectors.satellite_health) with the alert
thresholds: failing after SYNC_ALERT_FAILURES failed requests in a row, stale after
SYNC_ALERT_STALE_INTERVALS of its Sync time intervals without a complete sync (never less than
SYNC_ALERT_STALE_MINIMUM_MINUTES). "Never synced" is no alert: a satellite that is being set up
is not in trouble until its requests fail. Each change of state is mailed once; back to OK is a
change too, so whoever was told of the trouble is told it is over.
"""

import logging
import smtplib
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _

from .display import local_time_text
from .models import MASTER_SYNC_ID, AlertState, SatelliteAlert, SyncPeer, SyncPreferences
from .selectors import peers_with_exchanges, preferences_get, satellite_health

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Alert:
    """One satellite's change of alert state: mailed, or (with `error`) not, to retry next time."""

    sync_id: int
    name: str
    store: str
    state: str
    previous: str
    recipients: list[str]
    error: str = ""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def alert_stale_after(peer: SyncPeer, *, preferences: SyncPreferences) -> timedelta:
    """How long `peer` may go without a complete sync before it is stale, by its interval."""
    interval = peer.sync_interval_minutes
    if interval is None:
        interval = preferences.sync_interval_minutes
    minutes = max(
        settings.SYNC_ALERT_STALE_INTERVALS * interval, settings.SYNC_ALERT_STALE_MINIMUM_MINUTES
    )
    return timedelta(minutes=minutes)


def alert_state(
    peer: SyncPeer, *, stale_after: timedelta, now: datetime | None = None
) -> AlertState:
    """A peers_with_exchanges() row's alert state: its health with the alert thresholds."""
    health = satellite_health(
        peer, now=now, stale_after=stale_after, failures=settings.SYNC_ALERT_FAILURES
    )
    return AlertState(health) if health in (AlertState.STALE, AlertState.FAILING) else AlertState.OK


def alerts_send(*, now: datetime | None = None) -> list[Alert]:
    """Mail SYNC_ALERT_EMAILS once for each satellite whose alert state changed; return them.

    Nothing on a satellite or without addresses (states are then not recorded either, so the
    trouble of the moment is mailed once addresses are set). Safe to run in several workers:
    each change is claimed under its satellite's row lock, and a mail that fails leaves the
    state as it was, to be sent by the next run.
    """
    recipients = list(settings.SYNC_ALERT_EMAILS)
    preferences = preferences_get()
    if not preferences.is_master or not recipients:
        return []
    now = now or timezone.now()
    satellites = SyncPeer.objects.exclude(sync_id=MASTER_SYNC_ID)
    SatelliteAlert.objects.bulk_create(
        [SatelliteAlert(peer_id=pk) for pk in satellites.values_list("pk", flat=True)],
        ignore_conflicts=True,
    )
    alerts = []
    for peer in peers_with_exchanges(satellites).select_related("state", "alert"):
        stale_after = alert_stale_after(peer, preferences=preferences)
        state = alert_state(peer, stale_after=stale_after, now=now)
        if state == peer.alert.state:
            continue
        alert = Alert(
            sync_id=peer.sync_id,
            name=peer.name,
            store=peer.store_code,
            state=state,
            previous=peer.alert.state,
            recipients=recipients,
        )
        body = alert_body(peer, alert=alert, stale_after=stale_after, now=now)
        sent = _alert_change(peer=peer, alert=alert, body=body, now=now)
        if sent is not None:
            alerts.append(sent)
    return alerts


def _alert_change(*, peer: SyncPeer, alert: Alert, body: str, now: datetime) -> Alert | None:
    """Mail `alert` and record its state, unless another worker already did; None then."""
    try:
        with transaction.atomic():
            stored = SatelliteAlert.objects.select_for_update().get(peer=peer)
            if stored.state != alert.previous:
                return None
            # Sent inside the transaction: if the mail server refuses it, the state stays as it
            # was and the next run tries again; a second worker waits on the lock, then sees it.
            send_mail(alert_subject(alert), body, None, alert.recipients)
            SatelliteAlert.objects.filter(peer=peer).update(state=alert.state, sent_at=now)
    except (smtplib.SMTPException, OSError) as error:
        logger.warning(
            "Could not send the sync alert for satellite %s.", peer.sync_id, exc_info=True
        )
        return replace(alert, error=str(error) or type(error).__name__)
    return alert


# Mails go out in the site's language (LANGUAGE_CODE): a worker has no viewer.
SUBJECTS = {
    AlertState.FAILING: _("[msupply-sync] Satellite %(sync_id)s %(name)s is failing to sync"),
    AlertState.STALE: _(
        "[msupply-sync] Satellite %(sync_id)s %(name)s has not synced for too long"
    ),
    AlertState.OK: _("[msupply-sync] Satellite %(sync_id)s %(name)s is syncing again"),
}


def alert_subject(alert: Alert) -> str:
    """The subject line: the satellite and its new state."""
    return str(SUBJECTS[AlertState(alert.state)]) % {"sync_id": alert.sync_id, "name": alert.name}


def alert_body(peer: SyncPeer, *, alert: Alert, stale_after: timedelta, now: datetime) -> str:
    """The message in plain words: which satellite, what is wrong, since when, where to look."""
    streak = getattr(peer, "failure_streak", 0)
    last_success = peer.state.last_success_at if hasattr(peer, "state") else None
    satellite = gettext('Satellite %(sync_id)s "%(name)s" (store %(store)s)') % {
        "sync_id": peer.sync_id,
        "name": peer.name,
        "store": peer.store_code,
    }
    if alert.state == AlertState.FAILING:
        what = gettext(
            "%(satellite)s is failing: its last %(streak)s requests to the master failed. Until "
            "it succeeds again, its store's changes do not reach the master."
        ) % {"satellite": satellite, "streak": streak}
    elif alert.state == AlertState.STALE:
        what = gettext(
            "%(satellite)s has had no complete sync with the master for over "
            "%(duration)s. Check that the satellite is running and online, and "
            "that its Sync time interval is not 0."
        ) % {"satellite": satellite, "duration": _duration(stale_after)}
    else:
        what = gettext(
            "%(satellite)s is OK again: it syncs with the master (it was %(previous)s)."
        ) % {"satellite": satellite, "previous": alert.previous}
    lines = [
        what,
        "",
        gettext("Last successful sync: %(when)s.") % {"when": _when(last_success, now=now)},
    ]
    # As in the Sync with list: an error the satellite has since synced past is not current.
    if streak and alert.state != AlertState.OK:
        error = f"{getattr(peer, 'last_error_code', '')}: {getattr(peer, 'last_error_message', '')}"
        lines.append(gettext("Last error: %(error)s") % {"error": error})
        lines.append(
            gettext("Last failed request: %(when)s.")
            % {"when": _when(getattr(peer, "last_failed_at", None), now=now)}
        )
    changelist = reverse("admin:sync_syncpeer_changelist")
    lines += [
        "",
        gettext("Sync with list: %(url)s")
        % {"url": f"{settings.SITE_URL.rstrip('/')}{changelist}"},
    ]
    return "\n".join(lines) + "\n"


def _when(moment: datetime | None, *, now: datetime) -> str:
    if moment is None:
        return gettext("never")
    ago = (
        gettext("just now")
        if now - moment < timedelta(minutes=1)
        else gettext("%(duration)s ago") % {"duration": _duration(now - moment)}
    )
    return f"{local_time_text(moment)} ({ago})"


def _duration(span: timedelta) -> str:
    minutes = int(span.total_seconds() // 60)
    if minutes >= 48 * 60:
        days = minutes // (24 * 60)
        return ngettext("%(count)d day", "%(count)d days", days) % {"count": days}
    if minutes >= 120:
        hours = minutes // 60
        return ngettext("%(count)d hour", "%(count)d hours", hours) % {"count": hours}
    return ngettext("%(count)d minute", "%(count)d minutes", minutes) % {"count": minutes}
