"""Sync now in the Sync with admin needs the permission to change the server, not only to view."""

from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.test import Client
from django.urls import reverse

from sync.models import SyncPeer
from tests.factories import SyncPeerFactory, UserFactory

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
