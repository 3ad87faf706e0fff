"""Initialisation from a snapshot between real servers: under concurrent writes, after a cut
link, and for a satellite rebuilt from empty."""

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.proxy import TO_CLIENT
from tests.servers import ROOT, Cluster, Site
from tests.sync.realsites import (
    ProxiedCluster,
    assert_in_step,
    sql,
    sync_fails,
    sync_ok,
)
from tests.sync.test_servers import rebuild_satellite

pytestmark = pytest.mark.servers

MASTER_DATA = ("stores.store", "stores.item", "stores.name")

# Creates, renames, deactivates and deletes items and names on the master, each in its own
# transaction through the services, one line in `log` per write, until `stop` exists.
WRITER = """
import os, random, sys
from stores.models import Item, Name
from stores.services import item_create, master_record_delete, master_record_save, name_create
seed, stop, log = int(sys.argv[1]), sys.argv[2], open(sys.argv[3], "a", buffering=1)
rng, done = random.Random(seed), 0
while not os.path.exists(stop):
    items = Item.objects.order_by("?").values_list("pk", flat=True)[:1]
    names = Name.objects.filter(store__isnull=True).order_by("?").values_list("pk", flat=True)[:1]
    step = rng.randrange(7)
    try:
        if step == 0:
            item_create(code=f"W{seed}-{done}", name=f"Written {seed}-{done}", unit="tab")
        elif step == 1:
            name_create(code=f"W{seed}-{done}", name=f"Written {seed}-{done}", kind="customer")
        elif step == 2:
            master_record_save(record=Item.objects.get(pk=items[0]), name=f"Renamed {done}")
        elif step == 3:
            master_record_save(record=Name.objects.get(pk=names[0]), name=f"Renamed {done}")
        elif step == 4:
            master_record_save(record=Item.objects.get(pk=items[0]), active=False)
        elif step == 5:
            master_record_save(record=Name.objects.get(pk=names[0]), active=False)
        else:
            master_record_delete(record=Item.objects.get(pk=items[0]))
    except Exception:
        continue  # the other writer got there first, or SQLite's one writer was busy
    done += 1
    log.write(f"{step}\\n")
"""


def writers_start(master: Site, workdir: Path, count: int) -> list[subprocess.Popen[bytes]]:
    script = workdir / "writer.py"
    script.write_text("import django\ndjango.setup()\n" + WRITER)
    return [
        subprocess.Popen(
            [sys.executable, str(script), str(seed), str(workdir / "stop"), str(log_of(workdir))],
            cwd=ROOT,
            env=master.env(),
            stdout=subprocess.DEVNULL,
            stderr=(workdir / f"writer{seed}.err").open("ab"),
        )
        for seed in range(count)
    ]


def log_of(workdir: Path) -> Path:
    return workdir / "writes.log"


def writes(workdir: Path) -> list[str]:
    path = log_of(workdir)
    return path.read_text().split() if path.exists() else []


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A master with thousands of items and names; satellite 2 pulls pages of 100 records."""
    cluster = Cluster(tmp_path_factory.mktemp("snapshot"), satellites=1)
    cluster.satellites[0].extra_env["SYNC_BATCH_SIZE"] = "100"
    try:
        cluster.provision(items=2500, names=1000)
        yield cluster
    finally:
        cluster.destroy()


def snapshot_requests(master: Site) -> int:
    ((number,),) = sql(master, "SELECT count(*) FROM sync_syncexchange WHERE endpoint='snapshot'")
    return int(number)


def test_a_satellite_initialising_under_concurrent_writes_ends_equal_to_the_master(
    cluster: Cluster,
) -> None:
    master, satellite = cluster.master, cluster.satellites[0]
    workdir = cluster.workdir
    writers = writers_start(master, workdir, 2)
    try:
        before = len(writes(workdir))
        run = satellite.manage("sync_now")
        during = len(writes(workdir)) - before
    finally:
        (workdir / "stop").touch()
        for writer in writers:
            writer.wait(timeout=120)
    sync_ok(satellite)

    # The writers wrote throughout the snapshot, which came in many pages with progress shown.
    assert during > 0, [(workdir / f"writer{n}.err").read_text() for n in range(2)]
    assert snapshot_requests(master) > 30
    assert "Initialising:" in run.stdout
    assert "records/s" in run.stdout
    assert "left." in run.stdout
    assert set(writes(workdir)) >= {"0", "1", "2", "4"}
    on_master, on_satellite = master.dump(*MASTER_DATA), satellite.dump(*MASTER_DATA)
    assert len(on_satellite) == len(on_master) > 3500
    assert on_satellite == on_master
    assert sql(satellite, "SELECT count(*) FROM sync_bufferedrecord") == [(0,)]
    assert sql(
        satellite,
        "SELECT snapshot_table, initialised FROM sync_peerstate "
        "WHERE peer_id = (SELECT id FROM sync_syncpeer WHERE sync_id = 1)",
    ) in ([("", True)], [("", 1)])


def test_a_rebuilt_satellite_gets_its_store_data_back_from_the_snapshot(
    cluster: Cluster,
) -> None:
    master, old = cluster.master, cluster.satellites[0]
    old.manage("seed_demo", "--transactions", "25")
    sync_ok(old)
    requests = snapshot_requests(master)
    hosted = sql(
        master,
        "SELECT count(*) FROM stores_transaction t JOIN stores_store s ON s.id = t.store_id "
        "WHERE s.code = 'S002'",
    )

    satellite = rebuild_satellite(cluster, 2, master.url)
    first = sync_ok(satellite)

    assert first["records_pushed"] == 0
    assert snapshot_requests(master) > requests
    on_master, on_satellite = assert_in_step(master, satellite, "S002")
    assert (
        sql(
            satellite,
            "SELECT count(*) FROM stores_transaction t JOIN stores_store s ON s.id = t.store_id "
            "WHERE s.code = 'S002'",
        )
        == hosted
        != [(0,)]
    )
    assert first["records_pulled"] >= len(on_satellite)


@pytest.fixture(scope="module")
def link(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxiedCluster]:
    """A master with 600 items; satellite 2 reaches it through a proxy, pages of 50, no retry."""
    cluster = ProxiedCluster(
        tmp_path_factory.mktemp("snapshot-link"),
        satellites=1,
        satellite_env={"SYNC_BATCH_SIZE": "50", "SYNC_RETRIES": "0"},
    )
    try:
        cluster.provision(items=600)
        yield cluster
    finally:
        cluster.destroy()


def test_a_snapshot_cut_mid_way_resumes_where_it_stopped(link: ProxiedCluster) -> None:
    master, satellite, proxy = link.master, link.satellites[0], link.proxy
    ((rows,),) = sql(
        master,
        "SELECT (SELECT count(*) FROM stores_store) + (SELECT count(*) FROM stores_item) "
        "+ (SELECT count(*) FROM stores_name)",
    )
    proxy.cut_after(TO_CLIENT, 20_000)
    try:
        failed = sync_fails(satellite)
    finally:
        proxy.pass_through()
    ((table, done, total),) = sql(
        satellite,
        "SELECT snapshot_table, snapshot_done, snapshot_total FROM sync_peerstate "
        "WHERE peer_id = (SELECT id FROM sync_syncpeer WHERE sync_id = 1)",
    )

    completed = sync_ok(satellite)

    assert failed["error_code"] == "unreachable"
    assert table != ""
    assert 0 < done == failed["records_pulled"] < total == rows
    # Not one record twice: the second run went on after the last page the first applied.
    assert completed["records_pulled"] == rows - done
    assert_in_step(master, satellite, "S002")
