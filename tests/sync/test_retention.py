"""Bounded growth on real servers (issue 10): sync_prune after many edits keeps sync working."""

from collections.abc import Iterator
from typing import Any

import pytest

from tests.servers import Cluster, Site
from tests.sync.realsites import assert_in_step, dump_all, hex_id, shell, sql, sync_ok
from tests.sync.test_everyday import MASTER, enter

pytestmark = pytest.mark.servers

EDITS = 50
ITEMS = 10
# Printed at the end of the module for the closing note: change-log rows before and after.
FIGURES: list[str] = []


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Master; satellites 2 and 3 synced once; satellite 4 configured but never synced."""
    sites = Cluster(tmp_path_factory.mktemp("retention"), satellites=3)
    try:
        sites.provision(items=ITEMS, names=5)
        for satellite in sites.satellites[:2]:
            sync_ok(satellite)
        yield sites
    finally:
        sites.destroy()
        print("\n".join(FIGURES))


def log_rows(site: Site) -> int:
    ((count,),) = sql(site, "SELECT COUNT(*) FROM sync_changelog")
    return int(count)


def logged_records(site: Site) -> int:
    ((count,),) = sql(
        site, "SELECT COUNT(*) FROM (SELECT DISTINCT table_name, record_id FROM sync_changelog) r"
    )
    return int(count)


def prune(site: Site) -> dict[str, Any]:
    before = log_rows(site)
    report = site.manage_json("sync_prune", "--json")
    FIGURES.append(f"{site.name}: change log {before} rows -> {log_rows(site)} ({report})")
    return report


def edit_items(master: Site, times: int) -> None:
    shell(
        master,
        f"""
from stores.models import Item
for n in range({times}):
    for item in Item.objects.all():
        item.name = f"{{item.code}} edit {{n}}"
        item.save()
""",
    )


def test_pruning_after_many_edits_bounds_the_log_and_every_cursor_still_works(
    cluster: Cluster,
) -> None:
    master, two, three, four = cluster.master, *cluster.satellites
    edit_items(master, EDITS)
    for _ in range(5):
        draft = enter(two, [("I00001", 5), ("I00002", 7)], finalise=False)
        shell(
            two,
            f"""
from stores import services
from stores.models import Transaction
services.transaction_finalise(record=Transaction.objects.get(pk="{draft}"))
""",
        )
    # Twice: the master keeps the cursor a satellite asked with, one page behind the last.
    for _ in range(2):
        sync_ok(two)
        sync_ok(three)
    grown = log_rows(master)
    assert grown > ITEMS * EDITS

    reports = {site.name: prune(site) for site in (master, two, three)}

    assert reports["master"]["changes"] >= ITEMS * (EDITS - 1)
    assert reports["master"]["expired_satellites"] == []
    # One row per record: everything was passed by both satellites.
    assert log_rows(master) == logged_records(master)
    for satellite in (two, three):
        assert log_rows(satellite) == logged_records(satellite), satellite.name
    # A further edit each way still syncs.
    shell(master, MASTER + "Item.objects.filter(code='I00003').update(name='After pruning')")
    enter(two, [("I00003", 2)], finalise=True)
    sync_ok(two)
    sync_ok(three)
    on_master = dump_all(master)
    assert_in_step(master, two, "S002", on_master)
    assert_in_step(master, three, "S003", on_master)
    # A satellite that initialises after the pruning gets exactly the master's data.
    sync_ok(four)
    assert_in_step(master, four, "S004", on_master)


def test_a_satellite_silent_past_retention_initialises_again_with_nothing_lost(
    cluster: Cluster,
) -> None:
    master, two, three, four = cluster.master, *cluster.satellites
    local = enter(three, [("I00004", 3)], finalise=True)
    shell(
        master,
        """
import datetime
from django.utils import timezone
from sync.models import PeerState
PeerState.objects.filter(peer__sync_id=3).update(
    last_contact_at=timezone.now() - datetime.timedelta(days=40)
)
""",
    )
    edit_items(master, 3)
    for _ in range(2):
        sync_ok(two)
        sync_ok(four)

    assert prune(master)["expired_satellites"] == [3]

    report = sync_ok(three)
    assert "initialised again" in report["message"]
    on_master = dump_all(master)
    assert local in {hex_id(row["pk"]) for row in on_master}
    assert_in_step(master, three, "S003", on_master)
    # Back in step: the next run is an ordinary one.
    assert "initialised again" not in sync_ok(three)["message"]
