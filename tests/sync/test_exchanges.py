"""The master's record of every satellite exchange, and each satellite's trouble derived from it."""

import io
import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from pytest_django import DjangoAssertNumQueries
from rest_framework.test import APIClient

from stores.models import Store, Transaction
from sync.models import ExchangeResult, SyncExchange, SyncPeer
from sync.selectors import peers_with_exchanges, satellite_health_counts, sync_status
from sync.services import peer_save, preferences_update
from tests.factories import (
    ItemFactory,
    PeerStateFactory,
    StoreFactory,
    SyncExchangeFactory,
    SyncPeerFactory,
    TransactionFactory,
    TransactionLineFactory,
    UserFactory,
    changeset_of,
)
from tests.sync.test_auth import GUESSER, caller, shake
from tests.sync.test_protocol import PASSWORD, PULL, assert_error, credentials, enrol, push

pytestmark = pytest.mark.django_db


@pytest.fixture
def store() -> Store:
    """This site as the master of satellite 2, which hosts store S002 and holds no key yet."""
    preferences_update(sync_id=1, username="sync", password=PASSWORD)
    store = StoreFactory(code="S002")
    peer_save(peer=SyncPeer(sync_id=2, name="A", store_code="S002", url="http://127.0.0.1:9/"))
    return store


@pytest.fixture
def api(store: Store) -> APIClient:
    """Satellite 2 enrolled and signed in with its key; the enrolment's exchanges forgotten."""
    client = APIClient()
    client.credentials(**credentials(key=enrol()))
    SyncExchange.objects.all().delete()
    return client


def only_exchange() -> SyncExchange:
    exchanges = list(SyncExchange.objects.all())
    assert len(exchanges) == 1, exchanges
    return exchanges[0]


def test_a_successful_pull_is_recorded_with_its_records_bytes_and_peer(api: APIClient) -> None:
    ItemFactory.create_batch(3)
    # On PostgreSQL the test's own transaction is still open, so its changes are not served yet.
    response = api.get(PULL)
    assert response.status_code == 200
    exchange = only_exchange()
    assert (exchange.sync_id, exchange.peer, exchange.endpoint, exchange.result) == (
        2,
        SyncPeer.objects.get(sync_id=2),
        "pull",
        ExchangeResult.SUCCESS,
    )
    assert exchange.records == response.json()["count"]
    assert exchange.bytes_out == len(response.content)
    assert (exchange.error_code, exchange.address) == ("", "127.0.0.1")


def test_a_wrong_password_is_recorded_under_the_claimed_sync_id(store: Store) -> None:
    answer = assert_error(
        shake(caller(GUESSER, password="guess", sync_id=3), 3), 401, "wrong_credentials"
    )
    exchange = only_exchange()
    assert (exchange.sync_id, exchange.peer, exchange.endpoint, exchange.address) == (
        3,
        None,
        "handshake",
        GUESSER,
    )
    assert (exchange.result, exchange.error_code, exchange.message) == (
        ExchangeResult.FAILURE,
        "wrong_credentials",
        answer["message"],
    )
    assert exchange.bytes_in > 0


def test_a_locked_out_login_is_recorded(store: Store) -> None:
    for _ in range(6):
        shake(caller(GUESSER, password="guess"))
    assert_error(shake(caller(GUESSER, password="guess")), 429, "locked_out")
    codes = list(
        SyncExchange.objects.order_by("started_at", "pk").values_list("error_code", flat=True)
    )
    assert codes[:5] == ["wrong_credentials"] * 5
    assert codes[-1] == "locked_out"
    assert len(codes) == 7


def test_a_forged_push_refused_with_403_is_recorded(api: APIClient, store: Store) -> None:
    other = TransactionFactory.build(store=StoreFactory(code="S009"), name=None)
    body = assert_error(push(api, changeset_of(other)), 403, "forbidden_record")
    exchange = only_exchange()
    assert (exchange.endpoint, exchange.error_code, exchange.message, exchange.records) == (
        "push",
        "forbidden_record",
        body["message"],
        0,
    )
    assert exchange.peer == SyncPeer.objects.get(sync_id=2)


@pytest.mark.django_db(transaction=True)
def test_a_push_rolled_back_with_missing_parent_keeps_its_exchange(
    api: APIClient, store: Store
) -> None:
    invoice = TransactionFactory.build(store=store, name=None)
    line = TransactionLineFactory.build(transaction=invoice, item=ItemFactory.build())
    assert_error(push(api, changeset_of(invoice, line)), 409, "missing_parent")
    assert not Transaction.objects.exists()
    exchange = only_exchange()
    assert (exchange.endpoint, exchange.result, exchange.error_code) == (
        "push",
        ExchangeResult.FAILURE,
        "missing_parent",
    )


def test_a_successful_push_counts_the_records_it_applied(api: APIClient, store: Store) -> None:
    invoice = TransactionFactory.build(store=store, name=None)
    line = TransactionLineFactory.build(transaction=invoice, item=ItemFactory())
    assert push(api, changeset_of(invoice, line)).status_code == 200
    assert only_exchange().records == 2


@pytest.fixture
def satellites() -> list[SyncPeer]:
    """Satellites 2 (OK), 3 (failing twice since it last succeeded), 4 (stale), 5 (never)."""
    now = timezone.now()
    peers = [SyncPeerFactory(sync_id=sync_id) for sync_id in (2, 3, 4, 5)]
    PeerStateFactory(peer=peers[0], last_success_at=now)
    PeerStateFactory(peer=peers[1], last_success_at=now - timedelta(hours=2))
    PeerStateFactory(peer=peers[2], last_success_at=now - timedelta(days=2))
    SyncExchangeFactory(sync_id=2, result="success", error_code="", message="")
    SyncExchangeFactory(sync_id=3, started_at=now - timedelta(hours=3), error_code="timeout")
    SyncExchangeFactory(
        sync_id=3, result="success", error_code="", started_at=now - timedelta(hours=2)
    )
    SyncExchangeFactory(sync_id=3, started_at=now - timedelta(hours=1), error_code="stale_batch")
    SyncExchangeFactory(sync_id=3, started_at=now, message="The master refused the password.")
    return peers


def test_figures_give_each_satellites_streak_last_error_and_last_failure(
    satellites: list[SyncPeer], django_assert_max_num_queries: DjangoAssertNumQueries
) -> None:
    with django_assert_max_num_queries(1):
        figures = {peer.sync_id: peer for peer in peers_with_exchanges()}
    failing = figures[3]
    assert (failing.failure_streak, failing.last_error_code, failing.last_result) == (  # type: ignore[attr-defined]
        2,
        "wrong_credentials",
        "failure",
    )
    assert (
        failing.last_failed_at
        == SyncExchange.objects.filter(sync_id=3).latest("started_at").started_at
    )  # type: ignore[attr-defined]
    assert failing.exchange_success_at < failing.last_failed_at  # type: ignore[attr-defined]
    assert (figures[2].failure_streak, figures[2].last_failed_at) == (0, None)  # type: ignore[attr-defined]
    assert figures[5].failure_streak == 0  # type: ignore[attr-defined]


def test_sync_status_shows_the_masters_view_of_each_satellites_trouble_in_constant_queries(
    satellites: list[SyncPeer],
) -> None:
    sync_status()  # creates the preferences
    with CaptureQueriesContext(connection) as four:
        peers = {peer["sync_id"]: peer for peer in sync_status()["peers"]}
    for sync_id in (6, 7, 8):
        PeerStateFactory(peer=SyncPeerFactory(sync_id=sync_id))
        SyncExchangeFactory(sync_id=sync_id)
    with CaptureQueriesContext(connection) as seven:
        sync_status()
    assert len(seven) == len(four)
    assert (peers[3]["last_error_code"], peers[3]["failure_streak"]) == ("wrong_credentials", 2)
    assert peers[3]["last_error"] == "The master refused the password."
    assert (peers[2]["last_error_code"], peers[2]["failure_streak"]) == ("", 0)
    out = io.StringIO()
    call_command("sync_status", "--json", stdout=out)
    assert json.loads(out.getvalue())["peers"][1]["last_error_code"] == "wrong_credentials"
    out = io.StringIO()
    call_command("sync_status", stdout=out)
    assert "last error wrong_credentials (2 failed in a row)" in out.getvalue()


def test_health_counts_each_satellite_once(satellites: list[SyncPeer]) -> None:
    assert satellite_health_counts() == {"ok": 1, "stale": 1, "failing": 1, "never": 1}


def test_admin_index_card_counts_and_links_to_the_filtered_sync_with_list(
    satellites: list[SyncPeer], client: Client
) -> None:
    client.force_login(UserFactory(is_staff=True, permissions=["sync.view_syncpeer"]))
    page = client.get(reverse("admin:index")).content.decode()
    changelist = reverse("admin:sync_syncpeer_changelist")
    for health, sync_id in [("ok", 2), ("failing", 3), ("stale", 4), ("never", 5)]:
        assert f'href="{changelist}?health={health}"' in page
        listed = client.get(changelist, {"health": health})
        assert listed.status_code == 200
        assert [peer.sync_id for peer in listed.context["cl"].result_list] == [sync_id]
    failing = client.get(changelist, {"health": "failing"}).content.decode()
    assert "wrong_credentials" in failing
    assert "The master refused the password." in failing


def test_admin_index_has_no_card_on_a_satellite(satellite: int, client: Client) -> None:
    client.force_login(UserFactory(is_staff=True, permissions=["sync.view_syncpeer"]))
    assert 'id="sync-health"' not in client.get(reverse("admin:index")).content.decode()


def test_exchange_and_auth_failure_admins_are_read_only_lists(admin_client: Client) -> None:
    SyncExchangeFactory()
    for name in ["syncexchange", "authfailure"]:
        assert admin_client.get(reverse(f"admin:sync_{name}_changelist")).status_code == 200
        assert admin_client.get(reverse(f"admin:sync_{name}_add")).status_code == 403
    page = admin_client.get(reverse("admin:sync_syncexchange_changelist"), {"q": "refused"})
    assert "sync-badge sync-error" in page.content.decode()
