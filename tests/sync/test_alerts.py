"""Alerts on the master: one e-mail per change of a satellite's state, thresholds by interval."""

import io
import json
import smtplib
import threading
import time
from datetime import datetime, timedelta
from typing import Any

import pytest
from celery import current_app
from django.core import mail
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from pytest_django.fixtures import Settings

from sync import alerts
from sync.alerts import alert_stale_after, alerts_send
from sync.models import AlertState, ExchangeResult, PeerState, SatelliteAlert, SyncPeer
from sync.selectors import preferences_get
from sync.services import ALERTS_SCHEDULE_NAME, peer_save, preferences_update
from sync.tasks import sync_alerts
from tests.factories import StoreFactory, SyncExchangeFactory

pytestmark = pytest.mark.django_db

RECIPIENTS = ["ops@example.org", "lead@example.org"]


@pytest.fixture(autouse=True)
def alert_settings(settings: Settings) -> Settings:
    """Failing after 3 failures in a row; stale after 3 intervals, never under 15 minutes."""
    settings.SYNC_ALERT_EMAILS = RECIPIENTS
    settings.SYNC_ALERT_FAILURES = 3
    settings.SYNC_ALERT_STALE_INTERVALS = 3
    settings.SYNC_ALERT_STALE_MINIMUM_MINUTES = 15
    settings.SITE_URL = "https://master.example.org/"
    return settings


@pytest.fixture
def peer() -> SyncPeer:
    """This site as the master of satellite 3, which syncs every 10 minutes, last a minute ago."""
    preferences_update(sync_id=1)
    StoreFactory(code="S003")
    peer = peer_save(
        peer=SyncPeer(
            sync_id=3,
            name="Island Clinic",
            store_code="S003",
            url="http://127.0.0.1:9/",
            sync_interval_minutes=10,
        )
    )
    PeerState.objects.create(peer=peer, last_success_at=timezone.now() - timedelta(minutes=1))
    return peer


def fail(times: int) -> None:
    for _ in range(times):
        SyncExchangeFactory(sync_id=3, error_code="wrong_credentials")


def recover(peer: SyncPeer) -> None:
    SyncExchangeFactory(sync_id=3, result=ExchangeResult.SUCCESS, error_code="", message="")
    PeerState.objects.filter(peer=peer).update(last_success_at=timezone.now())


def states(sent: list[alerts.Alert]) -> list[tuple[int, str, str]]:
    return [(alert.sync_id, alert.previous, alert.state) for alert in sent]


def test_a_failing_streak_reaching_the_limit_sends_one_mail(
    peer: SyncPeer, mailoutbox: list[mail.EmailMessage]
) -> None:
    fail(2)
    assert alerts_send() == []
    fail(1)
    assert states(alerts_send()) == [(3, "ok", "failing")]
    assert len(mailoutbox) == 1
    message = mailoutbox[0]
    assert message.to == RECIPIENTS
    assert message.subject == "[msupply-sync] Satellite 3 Island Clinic is failing to sync"
    assert 'Satellite 3 "Island Clinic" (store S003) is failing' in message.body
    assert "its last 3 requests to the master failed" in message.body
    assert "Last error: wrong_credentials: The master refused the password." in message.body
    assert "Last successful sync: " in message.body
    assert "(1 minute ago)" in message.body
    assert "Sync with list: https://master.example.org/admin/sync/syncpeer/" in message.body

    fail(2)
    assert alerts_send() == []
    assert len(mailoutbox) == 1
    assert SatelliteAlert.objects.get(peer=peer).state == AlertState.FAILING


def test_recovery_sends_one_mail(peer: SyncPeer, mailoutbox: list[mail.EmailMessage]) -> None:
    fail(3)
    alerts_send()
    recover(peer)
    assert states(alerts_send()) == [(3, "failing", "ok")]
    assert alerts_send() == []
    assert [message.subject for message in mailoutbox] == [
        "[msupply-sync] Satellite 3 Island Clinic is failing to sync",
        "[msupply-sync] Satellite 3 Island Clinic is syncing again",
    ]
    assert "is OK again: it syncs with the master (it was failing)" in mailoutbox[1].body
    assert "Last error" not in mailoutbox[1].body


def test_stale_threshold_follows_the_satellites_interval(
    peer: SyncPeer, mailoutbox: list[mail.EmailMessage]
) -> None:
    success_at = PeerState.objects.get(peer=peer).last_success_at
    assert success_at is not None
    # An error it has since synced past is no longer current: the stale mail leaves it out.
    SyncExchangeFactory(sync_id=3, started_at=success_at - timedelta(minutes=5))
    SyncExchangeFactory(sync_id=3, result=ExchangeResult.SUCCESS, started_at=success_at)
    # Every 10 minutes, 3 intervals: stale after 30 minutes without a complete sync.
    assert alerts_send(now=success_at + timedelta(minutes=29)) == []
    assert states(alerts_send(now=success_at + timedelta(minutes=31))) == [(3, "ok", "stale")]
    assert mailoutbox[0].subject.endswith("has not synced for too long")
    assert "no complete sync with the master for over 30 minutes" in mailoutbox[0].body
    assert "Last error" not in mailoutbox[0].body

    # A satellite that syncs hourly is not late yet at 31 minutes: back to OK.
    SyncPeer.objects.filter(pk=peer.pk).update(sync_interval_minutes=60)
    assert states(alerts_send(now=success_at + timedelta(minutes=31))) == [(3, "stale", "ok")]
    assert alerts_send(now=success_at + timedelta(minutes=179)) == []
    assert len(mailoutbox) == 2


def test_sync_peer_sets_the_interval_alerts_use(peer: SyncPeer) -> None:
    call_command("sync_peer", "update", "--sync-id", "3", "--interval", "60", stdout=io.StringIO())
    peer.refresh_from_db()
    assert alert_stale_after(peer, preferences=preferences_get()) == timedelta(minutes=180)


@pytest.mark.parametrize(
    ("satellite_minutes", "master_minutes", "stale_minutes"),
    [(10, 20, 30), (None, 20, 60), (0, 20, 15), (2, 20, 15)],
    ids=["own-interval", "masters-interval", "paused-minimum", "short-minimum"],
)
def test_stale_after_is_the_satellites_or_the_masters_interval_never_under_the_minimum(
    peer: SyncPeer, satellite_minutes: int | None, master_minutes: int, stale_minutes: int
) -> None:
    preferences_update(sync_interval_minutes=master_minutes)
    peer.sync_interval_minutes = satellite_minutes
    stale_after = alert_stale_after(peer, preferences=preferences_get())
    assert stale_after == timedelta(minutes=stale_minutes)


def test_never_synced_satellite_is_no_alert_until_it_fails(
    peer: SyncPeer, mailoutbox: list[mail.EmailMessage]
) -> None:
    PeerState.objects.filter(peer=peer).update(last_success_at=None)
    assert alerts_send() == []
    fail(3)
    assert states(alerts_send()) == [(3, "ok", "failing")]
    assert "Last successful sync: never." in mailoutbox[0].body


def test_no_recipients_sends_nothing_and_records_nothing(
    peer: SyncPeer, alert_settings: Settings, mailoutbox: list[mail.EmailMessage]
) -> None:
    alert_settings.SYNC_ALERT_EMAILS = []
    fail(3)
    assert alerts_send() == []
    assert mailoutbox == []
    assert not SatelliteAlert.objects.exists()
    out = io.StringIO()
    call_command("sync_alerts", stdout=out)
    assert "SYNC_ALERT_EMAILS is empty" in out.getvalue()


def test_a_refused_mail_is_sent_by_the_next_run(
    peer: SyncPeer, mailoutbox: list[mail.EmailMessage], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> int:
        raise smtplib.SMTPServerDisconnected("Connection unexpectedly closed")

    fail(3)
    with monkeypatch.context() as patch:
        patch.setattr(alerts, "send_mail", refuse)
        (refused,) = alerts_send()
    assert refused.error == "Connection unexpectedly closed"
    assert SatelliteAlert.objects.get(peer=peer).state == AlertState.OK
    assert states(alerts_send()) == [(3, "ok", "failing")]
    assert len(mailoutbox) == 1


def test_a_satellite_sends_no_alerts_and_schedules_none(
    satellite: int, mailoutbox: list[mail.EmailMessage]
) -> None:
    SyncExchangeFactory.create_batch(3, sync_id=1)
    assert alerts_send() == []
    assert mailoutbox == []
    assert not PeriodicTask.objects.filter(name=ALERTS_SCHEDULE_NAME, enabled=True).exists()
    out = io.StringIO()
    call_command("sync_alerts", stdout=out)
    assert "only the master sends sync alerts" in out.getvalue()


def test_the_master_schedules_the_alerts_task_in_celery_beat(peer: SyncPeer) -> None:
    task = PeriodicTask.objects.get(name=ALERTS_SCHEDULE_NAME)
    assert (task.task, task.enabled, task.interval.every) == ("sync.alerts", True, 300)
    assert current_app.tasks[task.task].name == sync_alerts.name
    # Turning the master into a satellite stops its alerts.
    peer.delete()
    preferences_update(sync_id=2, username="sync", password="a long sync password")
    assert not PeriodicTask.objects.get(name=ALERTS_SCHEDULE_NAME).enabled


def test_task_and_command_report_what_they_sent(
    peer: SyncPeer, mailoutbox: list[mail.EmailMessage]
) -> None:
    fail(3)
    assert [(a["sync_id"], a["state"], a["error"]) for a in sync_alerts()] == [(3, "failing", "")]
    recover(peer)
    out = io.StringIO()
    call_command("sync_alerts", "--json", stdout=out)
    sent = json.loads(out.getvalue())
    assert [(a["sync_id"], a["previous"], a["state"]) for a in sent] == [(3, "failing", "ok")]
    fail(3)
    out = io.StringIO()
    call_command("sync_alerts", stdout=out)
    assert out.getvalue() == (
        "Sent 3 Island Clinic (store S003): ok -> failing to ops@example.org, lead@example.org\n"
    )
    call_command("sync_alerts", stdout=out)
    assert out.getvalue().endswith("No alert to send.\n")
    assert len(mailoutbox) == 3


@pytest.mark.skipif(connection.vendor != "postgresql", reason="needs concurrent PostgreSQL workers")
@pytest.mark.django_db(transaction=True)
def test_two_workers_at_once_send_one_mail(
    peer: SyncPeer, mailoutbox: list[mail.EmailMessage], monkeypatch: pytest.MonkeyPatch
) -> None:
    send_mail = alerts.send_mail

    def slow_send(*args: Any, **kwargs: Any) -> int:
        # The other worker has read the old state by now and waits on the row lock.
        time.sleep(1)
        return send_mail(*args, **kwargs)

    monkeypatch.setattr(alerts, "send_mail", slow_send)
    fail(3)
    results: list[list[alerts.Alert]] = []
    start = threading.Barrier(2)

    def worker(now: datetime) -> None:
        try:
            start.wait()
            results.append(alerts_send(now=now))
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(timezone.now(),)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(len(sent) for sent in results) == [0, 1]
    assert len(mailoutbox) == 1
