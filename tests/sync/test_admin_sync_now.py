"""Sync now in the Sync with admin: who may press it, and a clear answer on every path."""

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from sync.locks import lock_acquire, lock_release
from sync.models import SyncLog, SyncPeer, SyncRequest
from sync.run import RUN_LOCK, SyncAlreadyRunning
from sync.selectors import SYNC_NOW_PICKUP
from sync.tasks import sync_with_master
from tests.factories import SyncLogFactory, SyncPeerFactory, UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def master_peer(satellite: int) -> SyncPeer:
    """The one server a satellite syncs with: the master."""
    return SyncPeerFactory(sync_id=1, name="master")


@pytest.fixture
def queued(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The keyword arguments of every sync run the admin queues, instead of queueing them."""
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(
        "sync.admin.sync_with_master.apply_async",
        lambda kwargs, **options: calls.append(kwargs),
    )
    return calls


def test_view_only_user_sees_no_sync_now_button_and_is_refused_it(
    client: Client, master_peer: SyncPeer, queued: list[dict[str, Any]]
) -> None:
    client.force_login(UserFactory(permissions=["sync.view_syncpeer"]))

    page = client.get(reverse("admin:sync_syncpeer_changelist")).content.decode()
    response = client.post(reverse("admin:sync_syncpeer_sync_now", args=[master_peer.pk]))

    assert "Test connection</button>" in page
    assert "Sync now</button>" not in page
    assert reverse("admin:sync_syncpeer_sync_now", args=[master_peer.pk]) not in page
    assert response.status_code == 403
    assert queued == []
    assert not LogEntry.objects.exists()


def test_user_who_may_change_servers_sees_sync_now_and_queues_a_run(
    client: Client, master_peer: SyncPeer, queued: list[dict[str, Any]]
) -> None:
    client.force_login(UserFactory(permissions=["sync.change_syncpeer"]))

    page = client.get(reverse("admin:sync_syncpeer_changelist")).content.decode()
    response = client.post(reverse("admin:sync_syncpeer_sync_now", args=[master_peer.pk]))

    assert "Sync now</button>" in page
    assert reverse("admin:sync_syncpeer_sync_now", args=[master_peer.pk]) in page
    assert response.status_code == 302
    assert len(queued) == 1
    assert queued[0]["trigger"] == "button"
    assert response["Location"] == reverse(
        "admin:sync_syncpeer_sync_result", args=[master_peer.pk, queued[0]["request_id"]]
    )


def result_page(client: Client, peer: SyncPeer, request_id: str) -> tuple[str, str]:
    """The Sync now result page's state and text."""
    page = client.get(reverse("admin:sync_syncpeer_sync_result", args=[peer.pk, request_id]))
    assert page.status_code == 200
    return page.context["status"].state, page.content.decode()


def press(client: Client, peer: SyncPeer, queued: list[dict[str, Any]]) -> str:
    """Press Sync now; returns the request id of the run it queued."""
    client.post(reverse("admin:sync_syncpeer_sync_now", args=[peer.pk]))
    return str(queued[-1]["request_id"])


@pytest.fixture
def syncer(client: Client) -> Client:
    client.force_login(UserFactory(permissions=["sync.change_syncpeer"]))
    return client


def test_sync_now_during_a_run_shows_that_runs_progress_then_its_result(
    syncer: Client, master_peer: SyncPeer, queued: list[dict[str, Any]]
) -> None:
    assert lock_acquire(name=RUN_LOCK, holder="scheduled run", ttl_seconds=60)
    running = SyncLogFactory(result="running", trigger="schedule", step="pull", error_code="")
    request_id = press(syncer, master_peer, queued)
    assert sync_with_master(**queued[-1]) == str(SyncAlreadyRunning())

    state, text = result_page(syncer, master_peer, request_id)
    assert state == "running"
    assert "A sync was already running when you pressed Sync now" in text
    assert "Syncing with master: pull" in text
    assert 'http-equiv="refresh"' in text

    SyncLog.objects.filter(pk=running.pk).update(
        result="success", ended_at=timezone.now(), records_pulled=12
    )
    lock_release(name=RUN_LOCK, holder="scheduled run")
    state, text = result_page(syncer, master_peer, request_id)
    assert state == "success"
    assert "12 records pulled" in text
    assert 'http-equiv="refresh"' not in text


def test_sync_now_that_no_worker_starts_says_so_after_a_while(
    syncer: Client, master_peer: SyncPeer, queued: list[dict[str, Any]]
) -> None:
    request_id = press(syncer, master_peer, queued)
    assert result_page(syncer, master_peer, request_id)[0] == "queued"
    SyncRequest.objects.update(queued_at=timezone.now() - SYNC_NOW_PICKUP - timedelta(seconds=1))
    state, text = result_page(syncer, master_peer, request_id)
    assert state == "no_worker"
    assert "the Celery worker is not running" in text
    assert 'http-equiv="refresh"' not in text


def test_sync_now_whose_worker_died_mid_run_says_it_stopped(
    syncer: Client, master_peer: SyncPeer, queued: list[dict[str, Any]]
) -> None:
    request_id = press(syncer, master_peer, queued)
    # The run started, then its worker was killed: nobody renews its lease any more.
    SyncLogFactory(result="running", trigger="button", step="push", request_id=request_id)
    state, text = result_page(syncer, master_peer, request_id)
    assert state == "interrupted"
    assert "stopped before it ended, at its push step" in text


def test_sync_now_with_the_broker_down_says_so_at_once(
    syncer: Client, master_peer: SyncPeer, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(**options: Any) -> None:
        raise ConnectionRefusedError("Connection refused")

    monkeypatch.setattr("sync.admin.sync_with_master.apply_async", refuse)
    answer = syncer.post(
        reverse("admin:sync_syncpeer_sync_now", args=[master_peer.pk]), follow=True
    )
    assert (
        "The sync could not be queued: the task queue is not answering" in answer.content.decode()
    )
