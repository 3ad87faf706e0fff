"""Everyday actions never stop synchronisation (issue 8), on real servers syncing over HTTP.

A master and satellites 2 (through a proxy) and 3 share each module cluster; every case runs
once with the satellites paging all its changes together and once with a page per change.
"""

import gzip
import json
import uuid
from collections.abc import Iterable, Iterator

import pytest

from tests.servers import Site
from tests.sync.realsites import (
    ProxiedCluster,
    assert_in_step,
    database_backup,
    dump_all,
    hex_id,
    shell,
    sql,
    sync_fails,
    sync_ok,
)

# sql() takes no parameters: queries embed only ids and codes these tests made themselves.
# ruff: noqa: S608

pytestmark = pytest.mark.servers

# The satellites' SYNC_BATCH_SIZE: a case's changes in one page, or each in a page of its own.
PAGE_SIZES = [pytest.param(5000, id="one-page"), pytest.param(1, id="page-per-change")]
# How long satellite 2 waits for the master's answer in the late-push case before it gives up.
LATE_PUSH_TIMEOUT = 6
MASTER = "from stores import services\nfrom stores.models import Item, Name\n"

# Stock each finalised transaction moved, per store, item, batch and expiry; zeros left out.
MOVED = """
SELECT t.store_id, l.item_id, l.batch, l.expiry, SUM(CASE t.kind
    WHEN 'supplier_invoice' THEN l.quantity
    WHEN 'inventory_adjustment' THEN l.quantity
    WHEN 'customer_invoice' THEN -l.quantity END)
FROM stores_transactionline l JOIN stores_transaction t ON t.id = l.transaction_id
WHERE t.status = 'finalised'
GROUP BY t.store_id, l.item_id, l.batch, l.expiry
HAVING SUM(CASE t.kind
    WHEN 'supplier_invoice' THEN l.quantity
    WHEN 'inventory_adjustment' THEN l.quantity
    WHEN 'customer_invoice' THEN -l.quantity END) <> 0
"""
ON_HAND = (
    "SELECT store_id, item_id, batch, expiry, quantity FROM stores_stockline WHERE quantity <> 0"
)


@pytest.fixture(scope="module", params=PAGE_SIZES)
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxiedCluster]:
    """Master (S001), satellite 2 (S002, through the proxy), satellite 3 (S003), synced once."""
    sites = ProxiedCluster(
        tmp_path_factory.mktemp(f"everyday-{request.param}"),
        satellites=2,
        satellite_env={"SYNC_BATCH_SIZE": str(request.param)},
    )
    try:
        sites.provision(items=8, names=6)
        sync_all(sites)
        yield sites
    finally:
        sites.destroy()


def sync_all(cluster: ProxiedCluster) -> None:
    for satellite in cluster.satellites:
        sync_ok(satellite)


def enter(satellite: Site, lines: list[tuple[str, int]], *, finalise: bool) -> str:
    """Receive `lines` (item code, quantity) from a supplier in the satellite's store.

    Leaves the transaction a draft unless `finalise`; returns its id.
    """
    return shell(
        satellite,
        f"""
import datetime
from stores import services
from stores.models import Item, Name, Store
from sync.selectors import hosted_store_id
record = services.transaction_create(
    store=Store.objects.get(pk=hosted_store_id()),
    kind="supplier_invoice",
    date=datetime.date(2024, 3, 1),
    name=Name.objects.filter(kind="supplier", active=True).first(),
    lines=[
        services.LineInput(
            item=Item.objects.get(code=code),
            batch="EVERYDAY",
            expiry=datetime.date(2031, 1, 1),
            quantity=quantity,
        )
        for code, quantity in {lines!r}
    ],
)
if {finalise!r}:
    services.transaction_finalise(record=record)
print(record.pk.hex)
""",
    )


def transaction_ids(site: Site) -> set[str]:
    return {hex_id(record_id) for (record_id,) in sql(site, "SELECT id FROM stores_transaction")}


def numbers(site: Site) -> dict[str, int]:
    """Each transaction's number, by id."""
    rows = sql(site, "SELECT id, number FROM stores_transaction")
    return {hex_id(record_id): number for record_id, number in rows}


def items_coded(site: Site, code: str) -> list[tuple[str, bool]]:
    """(id, active) of the items with `code`."""
    rows = sql(site, f"SELECT id, active FROM stores_item WHERE code = '{code}'")
    return [(hex_id(record_id), bool(active)) for record_id, active in rows]


def line_quantities(site: Site, transaction: str) -> list[int]:
    query = f"SELECT quantity FROM stores_transactionline WHERE transaction_id = '{transaction}'"
    return [quantity for (quantity,) in sql(site, query)]


def assert_sync_goes_on(cluster: ProxiedCluster, *, entered: Iterable[str] = ()) -> None:
    """What every case ends with: master data still flows to every satellite, which syncs; each
    satellite is in step with the master; every transaction in `entered` is on the master; and
    every site's stock is what its finalised transactions moved.
    """
    master = cluster.master
    code = f"FLOW-{uuid.uuid4().hex[:8]}"
    shell(master, MASTER + f"services.item_create(code='{code}', name='Zinc 20 mg', unit='tablet')")
    for satellite in cluster.satellites:
        sync_ok(satellite)
        assert [active for _, active in items_coded(satellite, code)] == [True], satellite.name
    on_master = dump_all(master)
    for sync_id, satellite in enumerate(cluster.satellites, start=2):
        assert_in_step(master, satellite, f"S{sync_id:03d}", on_master)
    held = {hex_id(row["pk"]) for row in on_master if row["model"] == "stores.transaction"}
    assert set(entered) - held == set(), "transactions entered but not on the master"
    for site in cluster.sites:
        assert set(sql(site, ON_HAND)) == set(sql(site, MOVED)), f"stock on {site.name}"


def test_an_item_and_a_name_deleted_then_created_again_with_the_same_code(
    cluster: ProxiedCluster,
) -> None:
    master = cluster.master
    shell(
        master,
        MASTER + "services.item_create(code='AGAIN', name='Paracetamol 500 mg', unit='tablet')\n"
        "services.name_create(code='AGAIN', name='Kapa Health Centre', kind='customer')",
    )
    sync_all(cluster)
    (old_item,) = items_coded(master, "AGAIN")
    ((old_name,),) = sql(master, "SELECT id FROM stores_name WHERE code = 'AGAIN'")
    shell(
        master,
        MASTER + "services.master_record_delete(record=Item.objects.get(code='AGAIN'))\n"
        "services.master_record_delete(record=Name.objects.get(code='AGAIN'))\n"
        "services.item_create(code='AGAIN', name='Paracetamol 500 mg tablets', unit='tablet')\n"
        "services.name_create(code='AGAIN', name='Kapa Health Centre', kind='supplier')",
    )
    (new_item,) = items_coded(master, "AGAIN")
    assert new_item[0] != old_item[0]
    ((new_name, kind),) = sql(master, "SELECT id, kind FROM stores_name WHERE code = 'AGAIN'")
    assert (hex_id(new_name) != hex_id(old_name), kind) == (True, "supplier")
    # Whatever is left of the old records (deactivated, as the satellites held them) is inactive.
    leftovers = (
        f"SELECT active FROM stores_item WHERE id = '{old_item[0]}' "
        f"UNION ALL SELECT active FROM stores_name WHERE id = '{hex_id(old_name)}'"
    )
    assert not any(active for (active,) in sql(master, leftovers))
    assert_sync_goes_on(cluster)


def test_two_item_codes_swapped_through_a_temporary_code(cluster: ProxiedCluster) -> None:
    master = cluster.master
    shell(
        master,
        MASTER + "services.item_create(code='SWAP-A', name='Ibuprofen 200 mg', unit='tablet')\n"
        "services.item_create(code='SWAP-B', name='Ibuprofen 400 mg', unit='tablet')",
    )
    sync_all(cluster)
    ((a, _),), ((b, _),) = items_coded(master, "SWAP-A"), items_coded(master, "SWAP-B")
    shell(
        master,
        MASTER + f"a, b = Item.objects.get(pk='{a}'), Item.objects.get(pk='{b}')\n"
        "services.master_record_save(record=a, code='SWAP-T')\n"
        "services.master_record_save(record=b, code='SWAP-A')\n"
        "services.master_record_save(record=a, code='SWAP-B')",
    )
    assert (items_coded(master, "SWAP-A"), items_coded(master, "SWAP-B")) == (
        [(b, True)],
        [(a, True)],
    )
    assert_sync_goes_on(cluster)


def test_an_item_recoded_and_its_old_code_given_to_a_new_item(cluster: ProxiedCluster) -> None:
    master = cluster.master
    shell(master, MASTER + "services.item_create(code='RECODE', name='ORS sachet', unit='sachet')")
    sync_all(cluster)
    ((old, _),) = items_coded(master, "RECODE")
    shell(
        master,
        MASTER + "services.master_record_save(record=Item.objects.get(code='RECODE'), "
        "code='RECODED')\n"
        "services.item_create(code='RECODE', name='ORS sachet 20.5 g', unit='sachet')",
    )
    ((new, _),) = items_coded(master, "RECODE")
    assert (items_coded(master, "RECODED"), new != old) == ([(old, True)], True)
    assert_sync_goes_on(cluster)


def test_a_satellites_newest_draft_deleted_then_a_new_transaction(
    cluster: ProxiedCluster,
) -> None:
    master, satellite = cluster.master, cluster.satellites[1]
    kept = enter(satellite, [("I00001", 5)], finalise=True)
    newest = enter(satellite, [("I00002", 7)], finalise=False)
    sync_ok(satellite)
    assert {kept, newest} <= transaction_ids(master)
    gap = numbers(satellite)[newest]
    shell(
        satellite,
        f"from stores.models import Transaction; Transaction.objects.get(pk='{newest}').delete()",
    )
    entered = enter(satellite, [("I00003", 9)], finalise=True)
    # The store's counter never goes back: the deleted draft's number stays a gap.
    assert numbers(satellite)[entered] > gap
    assert_sync_goes_on(cluster, entered={kept, entered})
    assert newest not in transaction_ids(master)


def test_an_item_the_master_deletes_while_a_satellite_drafts_with_it_is_deactivated(
    cluster: ProxiedCluster,
) -> None:
    master, satellite = cluster.master, cluster.satellites[0]
    shell(master, MASTER + "services.item_create(code='HELD', name='Amoxicillin', unit='capsule')")
    sync_all(cluster)
    draft = enter(satellite, [("HELD", 4)], finalise=False)
    ((item, _),) = items_coded(master, "HELD")
    shell(master, MASTER + "services.master_record_delete(record=Item.objects.get(code='HELD'))")
    # Kept, inactive, its code retired so that a new item may take it.
    retired = f"HELD~{item[:6]}"
    assert items_coded(master, retired) == [(item, False)]
    assert_sync_goes_on(cluster, entered={draft})
    assert line_quantities(master, draft) == [4]
    for site in cluster.satellites:
        assert items_coded(site, retired) == [(item, False)]


def test_a_late_push_that_arrives_after_a_newer_one_is_refused(cluster: ProxiedCluster) -> None:
    master, satellite, proxy = cluster.master, cluster.satellites[0], cluster.proxy
    draft = enter(satellite, [("I00004", 10)], finalise=False)
    sync_ok(satellite)
    quantity = "from stores.models import TransactionLine; TransactionLine.objects.filter("
    shell(satellite, quantity + f"transaction_id='{draft}').update(quantity=20)")
    # The push carrying 20 reaches the proxy, which keeps it; the satellite gives up waiting.
    proxy.hold("/push/")
    satellite.extra_env.update(SYNC_READ_TIMEOUT=str(LATE_PUSH_TIMEOUT), SYNC_RETRIES="0")
    try:
        assert sync_fails(satellite)["error_code"] == "timeout"
    finally:
        proxy.pass_through()
        for name in ("SYNC_READ_TIMEOUT", "SYNC_RETRIES"):
            del satellite.extra_env[name]
    shell(satellite, quantity + f"transaction_id='{draft}').update(quantity=30)")
    sync_ok(satellite)
    assert line_quantities(master, draft) == [30]
    status, headers, body = proxy.deliver_held()
    if headers.get("content-encoding") == "gzip":
        body = gzip.decompress(body)
    assert (status, json.loads(body)["code"]) == (409, "stale_batch")
    assert line_quantities(master, draft) == [30]
    assert_sync_goes_on(cluster, entered={draft})


def test_a_satellite_restored_from_a_backup_taken_before_its_last_sync(
    cluster: ProxiedCluster,
) -> None:
    master, satellite = cluster.master, cluster.satellites[1]
    before = transaction_ids(satellite)
    with database_backup(satellite) as restore:
        satellite.manage("seed_demo", "--transactions", str(len(before) + 3))
        taken = transaction_ids(satellite) - before
        sync_ok(satellite)
        assert taken <= transaction_ids(master)
        restore()
    assert transaction_ids(satellite) == before
    # New work on the restored copy: its numbers are the ones the master holds for `taken`.
    satellite.manage("seed_demo", "--transactions", str(len(before) + 2))
    new_work = transaction_ids(satellite) - before
    assert len(new_work) == 2
    healed = sync_ok(satellite)
    assert "restored" in healed["message"], healed
    assert taken | new_work <= transaction_ids(satellite)
    on_satellite = numbers(satellite)
    assert min(on_satellite[i] for i in new_work) > max(on_satellite[i] for i in taken)
    assert_sync_goes_on(cluster, entered=taken | new_work)
