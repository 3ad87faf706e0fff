"""sync_prune: change-log compaction behind every consumer, retention, silent satellites."""

import json
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone
from django_celery_beat.models import PeriodicTask
from pytest_django.fixtures import Settings
from rest_framework.test import APIClient

from msupply.progress import progress_quiet
from stores.models import Item, Transaction
from sync.changes import Cursor, changes_last
from sync.client import PulledPage
from sync.errors import SyncError
from sync.integration import changeset_apply
from sync.models import (
    AppliedBatch,
    AuthFailure,
    ChangeAction,
    ChangeLog,
    PeerState,
    SyncExchange,
    SyncLog,
    SyncPeer,
)
from sync.prune import sync_prune
from sync.run import Run
from sync.run import _pull as run_pull
from sync.selectors import master_record_may_be_held, sync_status
from sync.services import PRUNE_SCHEDULE_NAME, peer_save, preferences_update
from sync.snapshot import SnapshotPage, SnapshotPosition
from tests.factories import (
    ItemFactory,
    StoreFactory,
    SyncExchangeFactory,
    TransactionFactory,
    changeset_of,
)
from tests.sync.test_protocol import PASSWORD, PULL, assert_error, credentials, enrol

# Each statement commits on its own, so on PostgreSQL every change is below the read horizon.
pytestmark = pytest.mark.django_db(transaction=True)


def rows_of(record: object) -> list[tuple[Cursor, str]]:
    changes = ChangeLog.objects.filter(record_id=record.pk).order_by("txid", "seq")  # type: ignore[attr-defined]
    return [
        (Cursor(txid, seq), action)
        for txid, seq, action in changes.values_list("txid", "seq", "action")
    ]


def edit(item: Item, times: int) -> None:
    for n in range(times):
        Item.objects.filter(pk=item.pk).update(name=f"{item.code} edit {n}")


def satellite_at(sync_id: int, cursor: Cursor, *, silent_days: int = 0) -> PeerState:
    """Satellite `sync_id` in the master's Sync with list, last heard `silent_days` ago."""
    store = StoreFactory(code=f"S{sync_id:03d}")
    peer = peer_save(
        peer=SyncPeer(
            sync_id=sync_id, name=f"S{sync_id}", store_code=store.code, url="http://127.0.0.1:9/"
        )
    )
    return PeerState.objects.create(
        peer=peer,
        pull_txid=cursor.txid,
        pull_seq=cursor.seq,
        last_contact_at=timezone.now() - timedelta(days=silent_days),
    )


@pytest.fixture(autouse=True)
def _empty_logs() -> None:
    """Rows that earlier tests committed from other connections stay until a flush: start clean."""
    for model in (ChangeLog, SyncLog, AuthFailure, AppliedBatch):
        model.objects.all().delete()


@pytest.fixture
def master() -> None:
    preferences_update(sync_id=1, username="sync", password=PASSWORD)


@pytest.mark.usefixtures("master")
def test_compaction_keeps_the_newest_change_per_record_and_all_above_the_lowest_cursor() -> None:
    passed, ahead = ItemFactory(), ItemFactory()
    edit(passed, 4)
    edit(ahead, 2)
    lowest = changes_last()
    edit(ahead, 3)
    satellite_at(2, lowest)
    satellite_at(3, changes_last())
    kept_ahead = [row for row in rows_of(ahead) if row[0] >= lowest]

    report = sync_prune()

    assert len(rows_of(passed)) == 1
    assert rows_of(ahead) == kept_ahead
    assert report.changes == 4 + 2  # passed's 4 older rows, ahead's 2 below the lowest cursor
    assert report.expired_satellites == []


@pytest.mark.usefixtures("master")
def test_delete_markers_stay_until_every_consumer_has_passed_them() -> None:
    item = ItemFactory()
    Item.objects.filter(pk=item.pk).delete()
    state = satellite_at(2, Cursor())
    satellite_at(3, changes_last())

    sync_prune()
    assert [action for _, action in rows_of(item)] == [ChangeAction.UPSERT, ChangeAction.DELETE]

    state.pull_txid, state.pull_seq = changes_last()
    state.save()
    sync_prune()
    assert rows_of(item) == []


@pytest.mark.usefixtures("master")
def test_a_fresh_initialisation_after_pruning_still_gets_every_current_record() -> None:
    items = ItemFactory.create_batch(3)
    for item in items:
        edit(item, 5)
    satellite_at(2, changes_last())

    sync_prune(batch_size=2)

    assert [len(rows_of(item)) for item in items] == [1, 1, 1]
    assert ChangeLog.objects.count() == len(set(ChangeLog.objects.values_list("record_id")))


@pytest.mark.usefixtures("master")
def test_a_satellite_silent_past_retention_is_ignored_and_told_to_reinitialise(
    settings: Settings,
) -> None:
    settings.SYNC_PEER_RETENTION_DAYS = 30
    store = StoreFactory(code="S002")
    peer_save(peer=SyncPeer(sync_id=2, name="A", store_code=store.code, url="http://127.0.0.1:9/"))
    api = APIClient()
    api.credentials(**credentials(key=enrol()))
    assert api.get(PULL, {"initial": "true"}).status_code == 200
    cursor = api.get(PULL).json()["next_cursor"]
    item = ItemFactory()
    edit(item, 3)
    PeerState.objects.filter(peer__sync_id=2).update(
        pull_txid=0, pull_seq=0, last_contact_at=timezone.now() - timedelta(days=31)
    )

    report = sync_prune()

    assert report.expired_satellites == [2]
    assert len(rows_of(item)) == 1
    assert sync_status()["peers"][0]["log_expired_at"] is not None
    body = assert_error(api.get(PULL, {"cursor": cursor}), 409, "reinitialise_required")
    assert "silent for more than 30 days" in body["message"]
    assert "initialise again" in body["message"]
    assert api.get(PULL, {"cursor": "0.0", "initial": "true"}).status_code == 200
    assert PeerState.objects.get(peer__sync_id=2).log_expired_at is None
    assert api.get(PULL, {"cursor": cursor}).status_code == 200


@pytest.mark.usefixtures("master")
def test_a_satellite_heard_within_retention_holds_the_log_however_far_behind() -> None:
    item = ItemFactory()
    edit(item, 3)
    satellite_at(2, Cursor(), silent_days=29)

    report = sync_prune()

    assert report.changes == 0
    assert len(rows_of(item)) == 4


def test_a_satellite_compacts_what_it_pushed_and_everything_it_received(satellite: int) -> None:
    master = SyncPeer.objects.create(
        sync_id=1, name="master", store_code="S001", url="http://127.0.0.1:9/"
    )
    store = StoreFactory(code="S002")
    PeerState.objects.create(peer=master, hosted_store_id=store.pk)
    received = ItemFactory.build()
    for n in range(3):
        received.name = f"received {n}"
        changeset_apply(changeset=changeset_of(received), source_site=1)
    pushed = TransactionFactory(store=store)
    Transaction.objects.filter(pk=pushed.pk).update(date="2024-01-02")
    push_cursor = changes_last()
    PeerState.objects.filter(peer=master).update(
        push_txid=push_cursor.txid, push_seq=push_cursor.seq
    )
    unpushed = TransactionFactory(store=store)
    Transaction.objects.filter(pk=unpushed.pk).update(date="2024-01-03")

    sync_prune()

    assert len(rows_of(received)) == 1
    assert len(rows_of(pushed)) == 1
    assert len(rows_of(unpushed)) == 2


@pytest.mark.usefixtures("master")
def test_old_sync_logs_and_failed_logins_go_after_their_retention(
    settings: Settings,
) -> None:
    settings.SYNC_LOG_RETENTION_DAYS = 90
    settings.SYNC_AUTH_FAILURE_RETENTION_DAYS = 30
    now = timezone.now()
    old_log = SyncLog.objects.create(peer_sync_id=2, started_at=now - timedelta(days=91))
    new_log = SyncLog.objects.create(peer_sync_id=2, started_at=now - timedelta(days=89))
    old, new = AuthFailure.objects.create(code="old"), AuthFailure.objects.create(code="new")
    AuthFailure.objects.filter(pk=old.pk).update(failed_at=now - timedelta(days=31))
    AuthFailure.objects.filter(pk=new.pk).update(failed_at=now - timedelta(days=29))

    report = sync_prune(batch_size=1)

    assert (report.sync_logs, report.auth_failures) == (1, 1)
    assert list(SyncLog.objects.values_list("pk", flat=True)) == [new_log.pk]
    assert not SyncLog.objects.filter(pk=old_log.pk).exists()
    assert list(AuthFailure.objects.values_list("code", flat=True)) == ["new"]


@pytest.mark.usefixtures("master")
def test_old_exchange_records_go_after_their_retention(settings: Settings) -> None:
    settings.SYNC_EXCHANGE_RETENTION_DAYS = 90
    now = timezone.now()
    old = SyncExchangeFactory(started_at=now - timedelta(days=91))
    new = SyncExchangeFactory(started_at=now - timedelta(days=89))

    assert sync_prune().exchanges == 1
    assert list(SyncExchange.objects.values_list("pk", flat=True)) == [new.pk]
    assert not SyncExchange.objects.filter(pk=old.pk).exists()


@pytest.mark.usefixtures("master")
def test_failed_logins_stay_for_the_lockout_window_whatever_the_retention(
    settings: Settings,
) -> None:
    settings.SYNC_AUTH_FAILURE_RETENTION_DAYS = 0
    settings.SYNC_AUTH_LOCKOUT_SECONDS = 3600
    recent, old = AuthFailure.objects.create(code="recent"), AuthFailure.objects.create(code="old")
    AuthFailure.objects.filter(pk=recent.pk).update(failed_at=timezone.now() - timedelta(minutes=5))
    AuthFailure.objects.filter(pk=old.pk).update(failed_at=timezone.now() - timedelta(hours=2))

    assert sync_prune().auth_failures == 1
    assert list(AuthFailure.objects.values_list("code", flat=True)) == ["recent"]


@pytest.mark.usefixtures("master")
def test_old_applied_batches_go_but_the_newest_per_satellite_stays(
    settings: Settings,
) -> None:
    settings.SYNC_APPLIED_BATCH_RETENTION_DAYS = 30
    batches = {
        (sync_id, n): AppliedBatch.objects.create(
            sync_id=sync_id, batch_id=f"{sync_id}-{n}", records=1
        )
        for sync_id in (2, 3)
        for n in range(3)
    }
    AppliedBatch.objects.filter(sync_id=2).update(applied_at=timezone.now() - timedelta(days=40))
    AppliedBatch.objects.filter(pk=batches[3, 0].pk).update(
        applied_at=timezone.now() - timedelta(days=40)
    )

    assert sync_prune().applied_batches == 3
    assert set(AppliedBatch.objects.values_list("batch_id", flat=True)) == {"2-2", "3-1", "3-2"}


@pytest.mark.usefixtures("master")
def test_sync_prune_command_reports_the_counts_per_kind_as_json(
    capsys: pytest.CaptureFixture[str],
) -> None:
    item = ItemFactory()
    edit(item, 2)
    SyncLog.objects.create(peer_sync_id=2, started_at=timezone.now() - timedelta(days=400))

    call_command("sync_prune", "--json")

    report = json.loads(capsys.readouterr().out)
    assert report == {
        "changes": 2,
        "sync_logs": 1,
        "exchanges": 0,
        "sync_requests": 0,
        "auth_failures": 0,
        "applied_batches": 0,
        "expired_satellites": [],
    }
    call_command("sync_prune")
    assert "Removed 0 change-log rows, 0 sync logs" in capsys.readouterr().out


@pytest.mark.usefixtures("master")
def test_every_site_gets_the_daily_prune_in_celery_beat() -> None:
    task = PeriodicTask.objects.get(name=PRUNE_SCHEDULE_NAME)
    assert (task.task, task.enabled, task.interval.every) == ("sync.prune", True, 86400)
    preferences_update(sync_interval_minutes=5)
    assert PeriodicTask.objects.filter(name=PRUNE_SCHEDULE_NAME).count() == 1


@pytest.mark.usefixtures("master")
def test_a_master_record_whose_first_changes_were_compacted_is_still_known_to_be_held() -> None:
    item = ItemFactory()
    # Satellite 2 has pulled everything so far, the item's creation included.
    state = satellite_at(2, Cursor())
    served = changes_last()
    PeerState.objects.filter(pk=state.pk).update(
        served_txid=served.txid, served_seq=served.seq, pull_txid=served.txid, pull_seq=served.seq
    )
    edit(item, 1)

    sync_prune()

    assert rows_of(item)[0][0] > served
    with transaction.atomic():
        assert master_record_may_be_held(table_name="stores_item", record_id=item.pk)


class ExpiredMaster:
    """A master client whose first pull answers reinitialise_required, then serves an empty
    snapshot at 0.5 and empty pages."""

    def __init__(self) -> None:
        self.pulls: list[tuple[Cursor, bool] | str] = []

    def pull(self, *, cursor: Cursor, limit: int, initial: bool) -> PulledPage:
        self.pulls.append((cursor, initial))
        if len(self.pulls) == 1:
            raise SyncError("reinitialise_required", "Satellite 2 was silent too long.")
        return PulledPage(changeset_of(), cursor, 0)

    def snapshot(
        self, *, start: Cursor | None, position: SnapshotPosition, limit: int
    ) -> SnapshotPage:
        self.pulls.append("snapshot/")
        return SnapshotPage(changeset_of(), Cursor(0, 5), None, 0)


def test_a_satellite_told_to_reinitialise_pulls_again_from_the_start(satellite: int) -> None:
    master = SyncPeer.objects.create(sync_id=1, name="master", store_code="S001", url="http://a/")
    state = PeerState.objects.create(peer=master, pull_txid=0, pull_seq=7, initialised=True)
    run = Run(
        log=SyncLog.objects.create(peer_sync_id=1, started_at=timezone.now()),
        progress=progress_quiet,
    )
    client = ExpiredMaster()

    run_pull(run, client, state)  # type: ignore[arg-type]

    assert client.pulls == [(Cursor(0, 7), False), "snapshot/", (Cursor(0, 5), False)]
    assert PeerState.objects.get(pk=state.pk).initialised
    assert "initialised again" in " ".join(run.notes)


def test_a_satellite_with_unpushed_changes_does_not_reinitialise_over_them(satellite: int) -> None:
    master = SyncPeer.objects.create(sync_id=1, name="master", store_code="S001", url="http://a/")
    state = PeerState.objects.create(peer=master, pull_txid=0, pull_seq=7, initialised=True)
    TransactionFactory()
    run = Run(
        log=SyncLog.objects.create(peer_sync_id=1, started_at=timezone.now()),
        progress=progress_quiet,
    )
    client = ExpiredMaster()

    with pytest.raises(SyncError, match="must push first"):
        run_pull(run, client, state)  # type: ignore[arg-type]

    assert len(client.pulls) == 1
    assert PeerState.objects.get(pk=state.pk).pull_seq == 7
