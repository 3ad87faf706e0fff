"""Master and satellites as real server processes syncing over HTTP on 127.0.0.1."""

import signal
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

from sync.errors import SyncError
from sync.protocol import PROTOCOL_MIN_VERSION, PROTOCOL_VERSION
from sync.registry import STORE_TABLE_NAMES, TABLES_BY_NAME
from tests.proxy import TO_CLIENT, TO_SERVER
from tests.servers import Cluster, Site
from tests.sync.realsites import (
    MASTER_MODELS,
    POSTGRES,
    ProxiedCluster,
    Rows,
    assert_in_step,
    client,
    dump_all,
    enrolling_client,
    hex_id,
    key_reset,
    line_row,
    master_part,
    next_batch,
    row,
    shell,
    sql,
    store_part,
    sync_fails,
    sync_ok,
    transaction_row,
    wire,
)

# sql() takes no parameters: queries embed only ids and codes these tests made themselves.
# ruff: noqa: S608

pytestmark = pytest.mark.servers

# Lockout window of the auth cluster's master: long enough for five failed logins and a sixth
# try on a busy machine, short enough to wait out.
LOCKOUT_SECONDS = 12
# Batch size of the link cluster's satellite: a few hundred transactions make many batches.
LINK_BATCH_SIZE = 300


# --- helpers -------------------------------------------------------------------------------


def count(rows: Rows, model: str) -> int:
    return sum(1 for row in rows if row["model"] == model)


def rebuild_satellite(cluster: Cluster, sync_id: int, url: str) -> Site:
    """Replace satellite `sync_id` by an empty server with the same configuration, as the
    README says: reset its key on the master, then set the new server up as that Sync ID."""
    key_reset(cluster.master, sync_id)
    index = sync_id - 2
    old = cluster.satellites[index]
    old.destroy()
    for suffix in ("", "-wal", "-shm"):
        (old.workdir / f"{old.name}.sqlite3{suffix}").unlink(missing_ok=True)
    new = Site(old.name, old.workdir, old.extra_env)
    cluster.satellites[index] = new
    new.manage("migrate", "--verbosity", "0")
    Cluster.configure(new, sync_id)
    new.manage(
        "sync_peer", "add", "--sync-id", "1", "--name", "master", "--store", "S001", "--url", url
    )
    return new


def table_counts(site: Site, *scalars: str) -> tuple[Any, ...]:
    """Row counts of every synced table and of the change log, then the values of `scalars`."""
    counts = [f"SELECT count(*) FROM {name}" for name in [*TABLES_BY_NAME, "sync_changelog"]]
    return sql(site, "SELECT " + ", ".join(f"({query})" for query in [*counts, *scalars]))[0]


def expected_push_records(satellite: Site, batch_size: int) -> int:
    """Records the satellite's pending changes make when pushed in batches of `batch_size`."""
    ((txid, seq),) = sql(satellite, "SELECT push_txid, push_seq FROM sync_peerstate")
    names = ", ".join(f"'{name}'" for name in STORE_TABLE_NAMES)
    changes = [
        (table_name, hex_id(record_id))
        for change_txid, change_seq, table_name, record_id in sql(
            satellite,
            "SELECT txid, seq, table_name, record_id FROM sync_changelog "
            f"WHERE source_site IS NULL AND table_name IN ({names}) ORDER BY txid, seq",
        )
        if (change_txid, change_seq) > (txid, seq)
    ]
    return sum(
        len(set(changes[start : start + batch_size]))
        for start in range(0, len(changes), batch_size)
    )


def transactions_of(site: Site, code: str) -> int:
    ((number,),) = sql(
        site,
        "SELECT count(*) FROM stores_transaction t JOIN stores_store s ON s.id = t.store_id "
        f"WHERE s.code = '{code}'",
    )
    return int(number)


# --- clusters ------------------------------------------------------------------------------


def auth_cluster(workdir: Path) -> Cluster:
    """A master that locks out for LOCKOUT_SECONDS; satellites 2 and 3 retry nothing in a run."""
    cluster = Cluster(
        workdir, satellites=2, master_env={"SYNC_AUTH_LOCKOUT_SECONDS": str(LOCKOUT_SECONDS)}
    )
    for satellite in cluster.satellites:
        satellite.extra_env["SYNC_RETRIES"] = "0"
    return cluster


def link_cluster(workdir: Path) -> ProxiedCluster:
    """A master and satellite 2, which reaches the master only through the cluster's proxy.

    The satellite retries nothing within a run, so a cut ends the run and the next run resumes,
    and it pushes and pulls batches of LINK_BATCH_SIZE.
    """
    return ProxiedCluster(
        workdir,
        satellites=1,
        satellite_env={"SYNC_BATCH_SIZE": str(LINK_BATCH_SIZE), "SYNC_RETRIES": "0"},
    )


def ready(cluster: Cluster) -> Cluster:
    """Provision `cluster` and run each satellite's first sync."""
    cluster.provision()
    for satellite in cluster.satellites:
        sync_ok(satellite)
    return cluster


@pytest.fixture(scope="module", autouse=True)
def provisioning(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Future[Cluster]]]:
    """Provision the auth and link clusters, if selected tests use them, on a second core.

    Provisioning costs some 15 s a cluster; the main cluster's tests run meanwhile.
    """
    builders: dict[str, Callable[[Path], Cluster]] = {"auth": auth_cluster, "link": link_cluster}
    wanted = {
        name
        for item in request.session.items
        if item.path == request.path
        for name in builders
        if name in getattr(item, "fixturenames", ())
    }
    clusters: dict[str, Cluster] = {}
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="provision")
    try:
        for name in sorted(wanted):
            clusters[name] = builders[name](tmp_path_factory.mktemp(name))
        yield {name: executor.submit(ready, cluster) for name, cluster in clusters.items()}
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        for cluster in clusters.values():
            cluster.destroy()


# --- the main cluster: a master and satellites 2 and 3 ----------------------------------------


@pytest.fixture(scope="module")
def main(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Master (hosting S001) and satellites 2 (S002) and 3 (S003), provisioned, not yet synced."""
    cluster = Cluster(tmp_path_factory.mktemp("main"), satellites=2)
    try:
        cluster.provision()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="module")
def first_runs(main: Cluster) -> list[dict[str, Any]]:
    """The report of each satellite's first sync_now."""
    return [sync_ok(satellite) for satellite in main.satellites]


@pytest.fixture(scope="module")
def initialised(main: Cluster, first_runs: list[dict[str, Any]]) -> Cluster:
    return main


@pytest.fixture(scope="module")
def with_store_data(initialised: Cluster) -> Cluster:
    """Finalised transactions in every store, each entered on its host, all synced."""
    master, (satellite2, satellite3) = initialised.master, initialised.satellites
    seeds = [(master, "8"), (satellite2, "20"), (satellite3, "10")]
    with ThreadPoolExecutor() as pool:  # three databases: seed them side by side
        running = [pool.submit(site.manage, "seed_demo", "--transactions", n) for site, n in seeds]
    for seeding in running:
        seeding.result()
    for satellite in (satellite2, satellite3):
        sync_ok(satellite)
    return initialised


def test_first_sync_gives_each_satellite_exactly_the_master_data(
    main: Cluster, first_runs: list[dict[str, Any]]
) -> None:
    on_master = master_part(main.master.dump(*MASTER_MODELS))
    # 3 stores, 50 items, 20 names and the name each store trades under.
    assert (count(on_master, "stores.store"), len(on_master)) == (3, 3 + 50 + 20 + 3)
    for satellite, report in zip(main.satellites, first_runs, strict=True):
        assert report["records_pulled"] == len(on_master)
        assert report["records_pushed"] == 0
        assert satellite.dump(*MASTER_MODELS) == on_master


EDIT_MASTER_DATA = """
from stores import services
from stores.models import Item, Name
services.master_record_save(record=Item.objects.get(code="I00001"), name="Amoxicillin 250 mg B")
services.master_record_save(record=Item.objects.get(code="I00002"), active=False)
services.master_record_save(record=Name.objects.get(code="N00001"), name="Balu Clinic renamed")
services.master_record_save(record=Name.objects.get(code="N00002"), active=False)
services.item_create(code="T00001", name="Chlorhexidine 7.1%", unit="tube")
services.name_create(code="TN0001", name="Lumo Medical Supplies", kind="supplier")
"""


def test_master_edits_additions_and_deactivations_reach_every_satellite(
    initialised: Cluster,
) -> None:
    master = initialised.master
    shell(master, EDIT_MASTER_DATA)
    on_master = master.dump(*MASTER_MODELS)
    by_code = {row["fields"]["code"]: row["fields"] for row in on_master}
    assert by_code["I00001"]["name"] == "Amoxicillin 250 mg B"
    assert by_code["I00002"]["active"] is False
    assert by_code["N00002"]["active"] is False
    assert {"T00001", "TN0001"} <= set(by_code)
    for satellite in initialised.satellites:
        assert sync_ok(satellite)["records_pulled"] == 6
        assert satellite.dump(*MASTER_MODELS) == on_master


def test_satellite_transactions_reach_the_master(with_store_data: Cluster) -> None:
    on_master = dump_all(with_store_data.master)
    for code, satellite in zip(("S002", "S003"), with_store_data.satellites, strict=True):
        on_satellite = dump_all(satellite)
        theirs = store_part(on_satellite, code)
        assert count(theirs, "stores.transaction") >= 10
        assert count(theirs, "stores.transactionline") > count(theirs, "stores.transaction")
        assert count(theirs, "stores.stockline") > 0
        assert store_part(on_master, code) == theirs


def test_each_satellite_holds_only_its_own_store_data(with_store_data: Cluster) -> None:
    stores_of = (
        "SELECT DISTINCT 'transaction', s.code FROM stores_transaction t "
        "JOIN stores_store s ON s.id = t.store_id "
        "UNION SELECT DISTINCT 'line', s.code FROM stores_transactionline l "
        "JOIN stores_transaction t ON t.id = l.transaction_id "
        "JOIN stores_store s ON s.id = t.store_id "
        "UNION SELECT DISTINCT 'stock', s.code FROM stores_stockline k "
        "JOIN stores_store s ON s.id = k.store_id"
    )

    def held(codes: list[str]) -> set[tuple[str, str]]:
        return {(kind, code) for kind in ("transaction", "line", "stock") for code in codes}

    assert set(sql(with_store_data.master, stores_of)) == held(["S001", "S002", "S003"])
    for code, satellite in zip(("S002", "S003"), with_store_data.satellites, strict=True):
        assert set(sql(satellite, stores_of)) == held([code])


def draft_script(*, lines: int, edits: int) -> str:
    """Python that creates a draft in the hosted store, edits it `edits` times, prints its id."""
    return f"""
import datetime
from django.db.models import F
from stores import services
from stores.models import Item, Name, Store, Transaction, TransactionLine
from sync.selectors import hosted_store_id
record = services.transaction_create(
    store=Store.objects.get(pk=hosted_store_id()),
    kind="supplier_invoice",
    date=datetime.date(2024, 1, 2),
    name=Name.objects.filter(kind="supplier", active=True).first(),
    lines=[
        services.LineInput(
            item=item, batch=f"DRAFT-{{n}}", expiry=datetime.date(2030, 1, 1), quantity=n + 1
        )
        for n, item in enumerate(Item.objects.filter(active=True)[:{lines}])
    ],
)
for day in range({edits}):
    TransactionLine.objects.filter(transaction=record).update(quantity=F("quantity") + 1)
    Transaction.objects.filter(pk=record.pk).update(date=datetime.date(2024, 2, day + 1))
print(record.pk.hex)
"""


def test_a_draft_deleted_on_a_satellite_disappears_from_the_master(initialised: Cluster) -> None:
    master, satellite = initialised.master, initialised.satellites[0]
    draft = shell(satellite, draft_script(lines=3, edits=0))
    lines = f"SELECT count(*) FROM stores_transactionline WHERE transaction_id = '{draft}'"
    header = f"SELECT count(*) FROM stores_transaction WHERE id = '{draft}'"
    assert sync_ok(satellite)["records_pushed"] == 4
    assert (sql(master, header), sql(master, lines)) == ([(1,)], [(3,)])
    shell(
        satellite,
        f"from stores.models import Transaction; Transaction.objects.get(pk='{draft}').delete()",
    )
    assert sync_ok(satellite)["records_pushed"] == 4
    assert (sql(master, header), sql(master, lines)) == ([(0,)], [(0,)])


def test_an_item_deleted_on_the_master_is_deactivated_once_satellites_may_hold_it(
    initialised: Cluster,
) -> None:
    master = initialised.master
    item = "SELECT code, active FROM stores_item WHERE code LIKE 'D0000%'"
    create = "from stores import services; services.item_create(code='{}', name='PVP', unit='ml')"
    delete = (
        "from stores import services; from stores.models import Item; "
        "services.master_record_delete(record=Item.objects.get(code='{}'))"
    )
    shell(master, create.format("D00001"))
    for satellite in initialised.satellites:
        sync_ok(satellite)
        assert sql(satellite, item) == [("D00001", True)]
    # D00001 has been served, D00002 never: only the second can be deleted outright.
    shell(master, create.format("D00002") + "; " + delete.format("D00002"))
    ((served_id,),) = sql(master, "SELECT id FROM stores_item WHERE code = 'D00001'")
    shell(master, delete.format("D00001"))
    # Kept and inactive; its code retired so that a new item may take it.
    retired = [(f"D00001~{hex_id(served_id)[:6]}", False)]
    assert sql(master, item) == retired
    for satellite in initialised.satellites:
        sync_ok(satellite)
        assert sql(satellite, item) == retired


@pytest.fixture(scope="module")
def master_ids(with_store_data: Cluster) -> dict[str, str]:
    """Hex ids on the master: stores S002 and S003, an item, a supplier, an S003 transaction."""
    master = with_store_data.master
    ids = {code: hex_id(pk) for code, pk in sql(master, "SELECT code, id FROM stores_store")}
    ((ids["item"],),) = sql(master, "SELECT id FROM stores_item WHERE code = 'I00003'")
    ((ids["name"],),) = sql(
        master, "SELECT id FROM stores_name WHERE kind = 'supplier' ORDER BY code LIMIT 1"
    )
    ((ids["S003 transaction"],),) = sql(
        master,
        "SELECT t.id FROM stores_transaction t JOIN stores_store s ON s.id = t.store_id "
        "WHERE s.code = 'S003' ORDER BY t.number LIMIT 1",
    )
    return {key: hex_id(value) for key, value in ids.items()}


@dataclass
class Forgery:
    """What a push may not carry, and the record id the refusal must name."""

    offending: str
    upserts: dict[str, list[list[Any]]] = field(default_factory=dict)
    deletes: dict[str, list[str]] = field(default_factory=dict)


def forged_item(ids: dict[str, str]) -> Forgery:
    item = uuid.uuid4().hex
    rows = [row("stores_item", id=item, code="F00001", name="Forged", unit="tablet", active=True)]
    return Forgery(item, upserts={"stores_item": rows})


def forged_other_store_transaction(ids: dict[str, str]) -> Forgery:
    other = uuid.uuid4().hex
    rows = [transaction_row(store=ids["S003"], name=ids["name"], number=990001, record_id=other)]
    return Forgery(other, upserts={"stores_transaction": rows})


def forged_overwrite_of_other_store_transaction(ids: dict[str, str]) -> Forgery:
    # Claims store S002, but the id is an S003 transaction the master holds.
    target = ids["S003 transaction"]
    rows = [transaction_row(store=ids["S002"], name=ids["name"], number=990002, record_id=target)]
    return Forgery(target, upserts={"stores_transaction": rows})


def forged_line_on_other_store_transaction(ids: dict[str, str]) -> Forgery:
    target = ids["S003 transaction"]
    rows = [line_row(transaction=target, item=ids["item"])]
    return Forgery(target, upserts={"stores_transactionline": rows})


def forged_delete_of_other_store_transaction(ids: dict[str, str]) -> Forgery:
    target = ids["S003 transaction"]
    return Forgery(target, deletes={"stores_transaction": [target]})


FORGERIES = [
    pytest.param(forged_item, id="item"),
    pytest.param(forged_other_store_transaction, id="other-store-transaction"),
    pytest.param(forged_overwrite_of_other_store_transaction, id="overwrite-other-store-row"),
    pytest.param(forged_line_on_other_store_transaction, id="line-on-other-store-transaction"),
    pytest.param(forged_delete_of_other_store_transaction, id="delete-other-store-row"),
]


@pytest.mark.parametrize("forge", FORGERIES)
def test_a_push_of_records_the_satellite_does_not_own_is_refused_whole(
    with_store_data: Cluster,
    master_ids: dict[str, str],
    forge: Callable[[dict[str, str]], Forgery],
) -> None:
    master = with_store_data.master
    forgery = forge(master_ids)
    # The forgery rides along with a transaction satellite 2 may push: neither may be applied.
    own = uuid.uuid4().hex
    upserts: dict[str, list[list[Any]]] = {
        "stores_transaction": [
            transaction_row(
                store=master_ids["S002"], name=master_ids["name"], number=990003, record_id=own
            )
        ],
        "stores_transactionline": [line_row(transaction=own, item=master_ids["item"])],
    }
    for table, rows in forgery.upserts.items():
        upserts.setdefault(table, []).extend(rows)
    changes = wire(upserts, forgery.deletes)
    target = master_ids["S003 transaction"]
    probes = (
        "SELECT s.code FROM stores_transaction t JOIN stores_store s ON s.id = t.store_id "
        f"WHERE t.id = '{target}'",
        f"SELECT number FROM stores_transaction WHERE id = '{target}'",
        f"SELECT count(*) FROM stores_transaction WHERE id = '{own}'",
    )
    before = table_counts(master, *probes)
    assert (before[-3], before[-1]) == ("S003", 0)
    sender = client(with_store_data)
    try:
        with pytest.raises(SyncError) as refused:
            sender.push(batch_id=uuid.uuid4().hex, changes=changes, **next_batch(sender))
    finally:
        sender.close()
    assert (refused.value.status, refused.value.code) == (403, "forbidden_record")
    assert forgery.offending in refused.value.message.replace("-", "")
    # Nothing applied: no row, no change-log entry, the S003 transaction as it was.
    assert table_counts(master, *probes) == before


def test_an_orphan_line_pushed_by_one_satellite_never_joins_another_stores_transaction(
    with_store_data: Cluster,
) -> None:
    master, (satellite2, satellite3) = with_store_data.master, with_store_data.satellites
    ((item,),) = sql(master, "SELECT id FROM stores_item WHERE code = 'I00004'")
    awaited = uuid.uuid4().hex
    orphan = line_row(transaction=awaited, item=hex_id(item), quantity=666)
    before = table_counts(master, "SELECT count(*) FROM sync_bufferedrecord")
    changes = wire({"stores_transactionline": [orphan]})
    sender = client(with_store_data)
    try:
        position = next_batch(sender)
        with pytest.raises(SyncError) as refused:
            sender.push(batch_id=uuid.uuid4().hex, changes=changes, **position)
    finally:
        sender.close()
    assert (refused.value.status, refused.value.code) == (409, "missing_parent")
    assert orphan[0] in refused.value.message.replace("-", "")
    # Nothing applied and nothing kept for later: no line, no change, no buffered record.
    assert table_counts(master, "SELECT count(*) FROM sync_bufferedrecord") == before
    assert before[-1] == 0

    # Satellite 3 then makes a transaction with that very id (its own line and all) and syncs.
    shell(
        satellite3,
        f"""
import datetime, uuid
from unittest import mock
from stores import services
from stores.models import Item, Name, Store, Transaction
from sync.selectors import hosted_store_id
with mock.patch.object(Transaction._meta.pk, "default", lambda: uuid.UUID("{awaited}")):
    services.transaction_create(
        store=Store.objects.get(pk=hosted_store_id()),
        kind="supplier_invoice",
        date=datetime.date(2024, 3, 1),
        name=Name.objects.filter(kind="supplier", active=True).first(),
        lines=[services.LineInput(item=Item.objects.get(code="I00004"), batch="OWN",
                                  expiry=datetime.date(2031, 1, 1), quantity=7)],
    )
""",
    )
    sync_ok(satellite3)
    sync_ok(satellite2)

    of_store = (
        "SELECT s.code FROM stores_transaction t JOIN stores_store s ON s.id = t.store_id "
        f"WHERE t.id = '{awaited}'"
    )
    lines = f"SELECT batch, quantity FROM stores_transactionline WHERE transaction_id = '{awaited}'"
    assert sql(master, of_store) == sql(satellite3, of_store) == [("S003",)]
    assert sql(master, lines) == sql(satellite3, lines) == [("OWN", 7)]
    orphan_count = f"SELECT count(*) FROM stores_transactionline WHERE id = '{orphan[0]}'"
    for site in (master, satellite2, satellite3):
        assert sql(site, orphan_count) == sql(site, "SELECT count(*) FROM sync_bufferedrecord")
        assert sql(site, orphan_count) == [(0,)]


def test_a_protocol_version_the_master_does_not_speak_is_refused_with_409(
    initialised: Cluster,
) -> None:
    satellite = client(initialised, protocol_version=99)
    try:
        with pytest.raises(SyncError) as refused:
            satellite.handshake()
    finally:
        satellite.close()
    assert (refused.value.status, refused.value.code) == (409, "version_mismatch")
    assert f"versions {PROTOCOL_MIN_VERSION}-{PROTOCOL_VERSION}" in refused.value.message
    assert "version 99" in refused.value.message


def parse_time(value: str | None) -> datetime:
    assert value, "never"
    return datetime.fromisoformat(value)


def test_sync_status_shows_each_peers_last_contact_and_success_and_nothing_pending(
    with_store_data: Cluster,
) -> None:
    started = datetime.now(UTC)
    for satellite in with_store_data.satellites:
        sync_ok(satellite)
    status = with_store_data.master.manage_json("sync_status")
    assert status["role"] == "master"
    peers = {peer["sync_id"]: peer for peer in status["peers"]}
    assert set(peers) == {2, 3}
    for peer in peers.values():
        assert parse_time(peer["last_contact_at"]) >= started
        assert parse_time(peer["last_success_at"]) >= started
        assert peer["last_error"] == ""
    for satellite in with_store_data.satellites:
        status = satellite.manage_json("sync_status")
        assert (status["role"], status["pending_changes"], status["buffered_records"]) == (
            "satellite",
            0,
            0,
        )
        (peer,) = status["peers"]
        assert (peer["sync_id"], peer["initialised"]) == (1, True)
        assert parse_time(peer["last_success_at"]) >= started
        assert peer["push_cursor"] != "0.0"
        assert peer["pull_cursor"] != "0.0"
        assert status["recent_runs"][0]["result"] == "success"


# --- the auth cluster: short lockout, satellite 2 and satellite 3 ---------------------------


@pytest.fixture(scope="module")
def auth(provisioning: dict[str, Future[Cluster]]) -> Cluster:
    """The auth cluster (see auth_cluster), provisioned and synced once."""
    return provisioning["auth"].result()


def test_a_rebuilt_satellite_pushes_its_new_changes_though_its_change_log_restarted(
    auth: Cluster,
) -> None:
    # Satellite 3 pushes 30 changes (one draft, edited twice) in batches of 10, then is rebuilt
    # from empty. Its new change log reuses the same positions: after the initial pull (76 master
    # records and the 10 of the draft) its next 20 changes, two new drafts, travel in batches
    # that start and end where the old second and third batches did.
    master, satellite = auth.master, auth.satellites[1]
    satellite.extra_env["SYNC_BATCH_SIZE"] = "10"
    shell(satellite, draft_script(lines=9, edits=2))
    assert sync_ok(satellite)["records_pushed"] == 30
    satellite = rebuild_satellite(auth, 3, master.url)
    satellite.extra_env["SYNC_BATCH_SIZE"] = "5000"
    assert sync_ok(satellite)["records_pulled"] == 76 + 10
    satellite.extra_env["SYNC_BATCH_SIZE"] = "10"
    shell(satellite, draft_script(lines=9, edits=0) + draft_script(lines=9, edits=0))
    assert sync_ok(satellite)["records_pushed"] == 20
    assert transactions_of(master, "S003") == 3
    assert_in_step(master, satellite, "S003")


# --- the link cluster: satellite 2 talks to the master through a proxy that cuts the link ----


@pytest.fixture(scope="module")
def link(provisioning: dict[str, Future[Cluster]]) -> ProxiedCluster:
    """The link cluster (see link_cluster), provisioned and synced once through its proxy."""
    cluster = provisioning["link"].result()
    assert isinstance(cluster, ProxiedCluster)
    return cluster


CUTS = [
    pytest.param(TO_SERVER, 150, False, id="to-master-in-handshake"),
    pytest.param(TO_SERVER, 5_000, False, id="to-master-in-first-push-batch"),
    pytest.param(TO_SERVER, 15_000, True, id="to-master-in-later-push-batch"),
    pytest.param(TO_CLIENT, 40, False, id="to-satellite-in-answer-headers"),
    pytest.param(TO_CLIENT, 300, False, id="to-satellite-in-handshake"),
    pytest.param(TO_CLIENT, 11_500, True, id="to-satellite-in-second-pull-batch"),
]


def test_a_resent_push_batch_changes_nothing(link: ProxiedCluster) -> None:
    # Pushed as satellite 3, which this cluster's master lists but which never syncs itself: a
    # batch the master applies advances its record of that satellite's pushes, and a real
    # satellite would then see a push history it lacks.
    master = link.master
    master.manage(
        "sync_peer", "add", "--sync-id", "3", "--name", "silent", "--store", "S003",
        "--url", "http://127.0.0.1:9/",
    )  # fmt: skip
    ((store,),) = sql(master, "SELECT id FROM stores_store WHERE code = 'S003'")
    ((item,),) = sql(master, "SELECT id FROM stores_item WHERE code = 'I00004'")
    ((name,),) = sql(master, "SELECT id FROM stores_name WHERE kind = 'supplier' LIMIT 1")
    record = uuid.uuid4().hex
    header = transaction_row(store=hex_id(store), name=hex_id(name), number=1, record_id=record)
    lines = [line_row(transaction=record, item=hex_id(item), quantity=q) for q in (3, 4)]
    batch = wire({"stores_transaction": [header], "stores_transactionline": lines})
    altered_line = list(lines[0])
    altered_line[TABLES_BY_NAME["stores_transactionline"].field_names.index("quantity")] = 99
    changed = wire({"stores_transaction": [header], "stores_transactionline": [altered_line]})
    batch_id = uuid.uuid4().hex
    before = table_counts(master)
    sender = enrolling_client(master, 3)
    try:
        position = next_batch(sender)
        first = sender.push(batch_id=batch_id, changes=batch, **position)
        after_first = table_counts(master)
        again = sender.push(batch_id=batch_id, changes=batch, **position)
        with pytest.raises(SyncError) as reused:
            sender.push(batch_id=batch_id, changes=changed, **position)
    finally:
        sender.close()

    def outcome(answer: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(answer[key] for key in ("batch_id", "applied", "buffered", "duplicate"))

    assert outcome(first) == (batch_id, 3, 0, False)
    assert outcome(again) == (batch_id, 0, 0, True)
    # The same id with other changes is refused, never taken for the batch already applied.
    assert (reused.value.status, reused.value.code) == (409, "batch_id_reused")
    # One transaction, two lines and their three change-log entries; the re-sends added nothing.
    assert [b - a for a, b in zip(before, after_first, strict=True)] == [0, 0, 0, 1, 2, 0, 3]
    assert table_counts(master) == after_first
    quantities = (
        "SELECT quantity FROM stores_transactionline "
        f"WHERE transaction_id = '{record}' ORDER BY quantity"
    )
    assert sql(master, quantities) == [(3,), (4,)]


@pytest.mark.parametrize(("direction", "cut_after", "progress"), CUTS)
def test_a_run_cut_mid_transfer_fails_plainly_and_the_next_run_resumes(
    link: ProxiedCluster, direction: str, cut_after: int, progress: bool
) -> None:
    master, satellite, proxy = link.master, link.satellites[0], link.proxy
    if direction == TO_SERVER:
        wanted = transactions_of(satellite, "S002") + 40
        satellite.manage("seed_demo", "--transactions", str(wanted))
        expected, moved = expected_push_records(satellite, LINK_BATCH_SIZE), "records_pushed"
    else:
        ((items,),) = sql(master, "SELECT count(*) FROM stores_item")
        master.manage("seed_demo", "--items", str(items + 400))
        expected, moved = 400, "records_pulled"
    cuts = proxy.cuts
    proxy.cut_after(direction, cut_after)
    try:
        failed = sync_fails(satellite)
    finally:
        proxy.pass_through()
    assert proxy.cuts == cuts + 1
    assert failed["error_code"] == "unreachable"
    assert "could not be reached" in failed["message"]
    # A cut past the first batch keeps what was acknowledged; the next run sends only the rest.
    assert (failed[moved] > 0) is progress
    completed = sync_ok(satellite)
    assert failed[moved] + completed[moved] == expected
    assert_in_step(master, satellite, "S002")


# Another session holds a write lock on transaction lines: an integration is half-way through.
PG_WRITING_LINES = """
    SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
    WHERE l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND c.relname = 'stores_transactionline' AND l.mode = 'RowExclusiveLock'
      AND l.pid <> pg_backend_pid()
"""


def kill_when_integrating(site: Site, killed: threading.Event, done: threading.Event) -> None:
    """SIGKILL `site`'s server as soon as a write transaction is seen half-way in its database.

    Gives up when `done` is set.
    """
    if POSTGRES:
        with psycopg.connect(site.database_url, autocommit=True) as connection:
            while not done.is_set():
                if connection.execute(PG_WRITING_LINES).fetchone() != (0,):
                    break
                time.sleep(0.002)
            else:
                return
    else:
        # SQLite has one writer at a time: if ours cannot start, the server's is under way. A
        # writer seen twice 20 ms apart is the integration, not a one-row bookkeeping update.
        path = site.database_url.removeprefix("sqlite:///")
        seen_since = None
        while not done.is_set():
            writer = sqlite3.connect(path, timeout=0, isolation_level=None)
            try:
                writer.execute("BEGIN IMMEDIATE")
                writer.execute("ROLLBACK")
                seen_since = None
            except sqlite3.OperationalError:
                seen_since = seen_since or time.monotonic()
            finally:
                writer.close()
            if seen_since is not None and time.monotonic() - seen_since >= 0.02:
                break
            time.sleep(0.002)
        else:
            return
    site.stop(signal.SIGKILL)
    killed.set()


def test_a_master_killed_mid_integration_gets_every_record_exactly_once(
    link: ProxiedCluster,
) -> None:
    master, satellite, proxy = link.master, link.satellites[0], link.proxy
    satellite.manage("seed_demo", "--transactions", str(transactions_of(satellite, "S002") + 60))
    satellite.extra_env["SYNC_BATCH_SIZE"] = "5000"  # one big batch
    killed, done = threading.Event(), threading.Event()
    try:
        expected = expected_push_records(satellite, 5000)
        on_master = transactions_of(master, "S002")
        proxy.on_request_sent("/push/", lambda: kill_when_integrating(master, killed, done))
        try:
            failed = sync_fails(satellite)
        finally:
            proxy.pass_through()
            done.set()
        assert killed.wait(10), "the master was not seen integrating"
        assert (failed["error_code"], failed["records_pushed"]) == ("unreachable", 0)
        # The batch died with the master: nothing of it was committed.
        assert transactions_of(master, "S002") == on_master
        master.start()
        assert sync_ok(satellite)["records_pushed"] == expected
    finally:
        satellite.extra_env["SYNC_BATCH_SIZE"] = str(LINK_BATCH_SIZE)
        done.set()
        killed.wait(1)  # a kill under way ends before the master is looked at
        if master.process is None:
            master.start()
    assert transactions_of(master, "S002") == on_master + 60
    assert_in_step(master, satellite, "S002")


def test_a_satellite_rebuilt_from_empty_gets_its_store_data_back(
    link: ProxiedCluster,
) -> None:
    master, old = link.master, link.satellites[0]
    if transactions_of(old, "S002") < 30:
        old.manage("seed_demo", "--transactions", "30")
    sync_ok(old)
    hosted = transactions_of(master, "S002")
    satellite = rebuild_satellite(link, 2, link.proxy.url)
    first = sync_ok(satellite)
    assert first["records_pushed"] == 0
    on_master, on_satellite = assert_in_step(master, satellite, "S002")
    assert transactions_of(satellite, "S002") == hosted
    assert first["records_pulled"] >= len(on_satellite)
    # It is a working satellite again: what it enters now reaches the master.
    satellite.manage("seed_demo", "--transactions", str(hosted + 5))
    assert sync_ok(satellite)["records_pushed"] > 0
    assert transactions_of(master, "S002") == hosted + 5
