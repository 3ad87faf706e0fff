"""Transfers between stores on different sites, between real servers talking HTTP.

Satellites 2, 3 and 4 host S002, S003 and S004; the master hosts S001 and S005.
"""

import textwrap
from collections.abc import Iterator

import pytest

from msupply.sites import Site
from tests.proxy import TO_CLIENT, LinkProxy
from tests.servers import Cluster
from tests.sync.realsites import point_at, sql, sync_fails, sync_ok
from tests.sync.test_servers import rebuild_satellite

pytestmark = pytest.mark.servers

# Queries embed only store and item codes and record ids this module made.
# ruff: noqa: S608

# Runs on a site: receive `quantity` of an item into store `src`, then send it all to `dst`'s
# name on a finalised customer invoice; prints the outbound's id.
SEND = """
import datetime
from decimal import Decimal
from stores import services
from stores.models import Item, Store
src, dst = Store.objects.get(code="{src}"), Store.objects.get(code="{dst}")
item = Item.objects.get(code="{item}")
def line(**extra):
    return services.LineInput(
        item=item, batch="T-{item}", expiry=datetime.date(2030, 1, 1), quantity={quantity},
        **extra,
    )
receipt = services.transaction_create(
    store=src, kind="supplier_invoice", date=datetime.date(2026, 11, 1), lines=[line()]
)
services.transaction_finalise(record=receipt)
outbound = services.transaction_create(
    store=src, kind="customer_invoice", name=dst.trading_name, date=datetime.date(2026, 11, 20),
    lines=[line(sell_price=Decimal("2.50"))],
)
services.transaction_finalise(record=outbound)
print(outbound.pk.hex)
"""
# Runs on the receiving site: receive the inbound of outbound `outbound`, `short` fewer.
RECEIVE = """
import dataclasses
from stores import services
from stores.models import Transaction
inbound = Transaction.objects.get(transfer_of_id="{outbound}")
lines = [
    dataclasses.replace(services.LineInput.of(line), quantity=line.quantity - {short})
    for line in inbound.lines.select_related("item")
]
services.transaction_save(record=inbound, lines=lines)
services.transaction_finalise(record=inbound)
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("transfers"), satellites=3)
    for satellite in cluster.satellites:
        satellite.extra_env["SYNC_RETRIES"] = "0"
    try:
        cluster.provision(stores=5, items=12, names=4)
        for satellite in cluster.satellites:
            sync_ok(satellite)  # enrols, learns its store
        yield cluster
    finally:
        cluster.destroy()


def send(site: Site, src: str, dst: str, item: str, quantity: int) -> str:
    code = SEND.format(src=src, dst=dst, item=item, quantity=quantity)
    out = site.manage("shell", "--no-imports", "-c", textwrap.dedent(code)).stdout
    return out.strip().splitlines()[-1]


def receive(site: Site, outbound: str, short: int = 0) -> None:
    code = RECEIVE.format(outbound=outbound, short=short)
    site.manage("shell", "--no-imports", "-c", textwrap.dedent(code))


def inbounds(site: Site, outbound: str) -> list[tuple[object, ...]]:
    """The inbound transfers of `outbound` on `site`: store code, status, received quantity."""
    return sql(
        site,
        "SELECT s.code, t.status, (SELECT SUM(quantity) FROM stores_transactionline "
        "WHERE transaction_id = t.id) FROM stores_transaction t JOIN stores_store s "
        f"ON s.id = t.store_id WHERE t.transfer_of_id = '{outbound}'",
    )


def holds(site: Site, record: str) -> bool:
    return sql(site, f"SELECT COUNT(*) FROM stores_transaction WHERE id = '{record}'") == [(1,)]


def stock(site: Site, store: str, item: str) -> int:
    ((quantity,),) = sql(
        site,
        "SELECT COALESCE(SUM(l.quantity), 0) FROM stores_stockline l JOIN stores_store s ON "
        "s.id = l.store_id JOIN stores_item i ON i.id = l.item_id "
        f"WHERE s.code = '{store}' AND i.code = '{item}'",
    )
    return int(quantity)


def test_satellite_to_satellite_arrives_once_is_received_short_and_reported_back(
    cluster: Cluster,
) -> None:
    master, (two, three, four) = cluster.master, cluster.satellites
    outbound = send(two, "S002", "S003", "I00001", 20)
    assert stock(two, "S002", "I00001") == 0
    sync_ok(two)
    assert not inbounds(master, outbound)  # S003 is received on its own site
    run = sync_ok(three)
    assert "1 inbound transfer(s) arrived" in run["message"]
    assert inbounds(three, outbound) == [("S003", "draft", 20)]
    for _ in range(3):
        sync_ok(three)
    assert inbounds(three, outbound) == [("S003", "draft", 20)]
    receive(three, outbound, short=3)
    assert stock(three, "S003", "I00001") == 17
    sync_ok(three)
    sync_ok(two)
    # A learns that B received it, 3 short; the master holds both halves; no one else does.
    assert inbounds(two, outbound) == [("S003", "finalised", 17)]
    assert inbounds(master, outbound) == [("S003", "finalised", 17)]
    sync_ok(four)
    assert not holds(four, outbound)
    assert not inbounds(four, outbound)
    ((received_on,),) = sql(
        two, f"SELECT received_on FROM stores_transaction WHERE transfer_of_id = '{outbound}'"
    )
    assert received_on


def test_master_store_to_satellite_and_satellite_to_master_store(cluster: Cluster) -> None:
    master, (two, three, _) = cluster.master, cluster.satellites
    down = send(master, "S001", "S003", "I00002", 8)
    sync_ok(three)
    assert inbounds(three, down) == [("S003", "draft", 8)]
    receive(three, down)
    sync_ok(three)
    assert inbounds(master, down) == [("S003", "finalised", 8)]

    up = send(two, "S002", "S001", "I00003", 5)
    sync_ok(two)
    # The master hosts S001: it made the inbound as it integrated the push.
    assert inbounds(master, up) == [("S001", "draft", 5)]
    receive(master, up, short=1)
    assert stock(master, "S001", "I00003") == 4
    sync_ok(two)
    assert inbounds(two, up) == [("S001", "finalised", 4)]


def test_a_transfer_between_two_stores_of_one_site_needs_no_sync(cluster: Cluster) -> None:
    master = cluster.master
    outbound = send(master, "S001", "S005", "I00004", 6)
    assert inbounds(master, outbound) == [("S005", "draft", 6)]


def test_a_satellite_pushing_a_foreign_outbound_it_holds_is_refused(cluster: Cluster) -> None:
    master, (two, three, _) = cluster.master, cluster.satellites
    outbound = send(two, "S002", "S003", "I00005", 2)
    sync_ok(two)
    sync_ok(three)
    assert holds(three, outbound)
    # Someone edits the foreign outbound by hand: the change is logged as this site's own, so
    # the next push carries it.
    three.manage(
        "shell", "--no-imports", "-c",
        "from django.db import connection; "
        "connection.cursor().execute("
        f"\"UPDATE stores_transaction SET date = '2026-11-21' WHERE id = '{outbound}'\")",
    )  # fmt: skip
    failed = sync_fails(three)
    assert failed["error_code"] == "forbidden_record"
    assert "S002" in failed["message"] or "store" in failed["message"]
    ((status,),) = sql(master, f"SELECT status FROM stores_transaction WHERE id = '{outbound}'")
    assert status == "finalised"
    # Put right: the hand-made change leaves the log, and the satellite syncs again.
    three.manage(
        "shell", "--no-imports", "-c",
        "from sync.models import ChangeLog; "
        f"ChangeLog.objects.filter(record_id='{outbound}', source_site=None).delete()",
    )  # fmt: skip
    sync_ok(three)


# Refuses every inbound line on the receiving site, as a crash half-way through making it would.
BREAK_INBOUND_LINES = """
from django.db import connection
with connection.cursor() as cursor:
    if connection.vendor == "sqlite":
        cursor.execute(
            "CREATE TRIGGER no_lines BEFORE INSERT ON stores_transactionline "
            "BEGIN SELECT RAISE(ABORT, 'killed mid-way'); END"
        )
    else:
        cursor.execute(
            "CREATE FUNCTION no_lines() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'killed mid-way'; END $$"
        )
        cursor.execute(
            "CREATE TRIGGER no_lines BEFORE INSERT ON stores_transactionline "
            "FOR EACH ROW EXECUTE FUNCTION no_lines()"
        )
"""
MEND_INBOUND_LINES = """
from django.db import connection
with connection.cursor() as cursor:
    cursor.execute("DROP TRIGGER no_lines" + ("" if connection.vendor == "sqlite" else
                   " ON stores_transactionline"))
"""


def test_exactly_one_inbound_through_a_cut_pull_a_crash_and_a_rebuild(cluster: Cluster) -> None:
    master, (two, three, _) = cluster.master, cluster.satellites
    outbound = send(two, "S002", "S003", "I00006", 9)
    sync_ok(two)

    # The link drops as the pull's answer comes back.
    with LinkProxy(master.port, lifetime=600) as proxy:
        point_at(three, proxy.url)
        proxy.on_request_sent("/pull/", lambda: proxy.cut_after(TO_CLIENT, 300))
        assert sync_fails(three)["error_code"] == "unreachable"
        point_at(three, master.url)
    assert len(inbounds(three, outbound)) <= 1

    # Making the inbound fails half-way: nothing of it stays.
    three.manage("shell", "--no-imports", "-c", BREAK_INBOUND_LINES)
    try:
        failed = three.manage_json("sync_now", check=False)
        assert (failed["result"], failed["error_code"]) == ("failure", "internal_error")
        assert "killed mid-way" in failed["message"]
        assert not inbounds(three, outbound)
    finally:
        three.manage("shell", "--no-imports", "-c", MEND_INBOUND_LINES)
    sync_ok(three)
    assert inbounds(three, outbound) == [("S003", "draft", 9)]
    receive(three, outbound, short=2)
    sync_ok(three)

    # Rebuilt from empty: its re-initialisation brings back the one inbound, received.
    rebuilt = rebuild_satellite(cluster, 3, master.url)
    sync_ok(rebuilt)
    sync_ok(rebuilt)
    assert inbounds(rebuilt, outbound) == [("S003", "finalised", 7)]
    assert inbounds(master, outbound) == [("S003", "finalised", 7)]
    assert stock(rebuilt, "S003", "I00006") == 7


def test_the_masters_stock_is_every_stores_finalised_movements_and_transit_is_sent_less_received(
    cluster: Cluster,
) -> None:
    master, (two, _, four) = cluster.master, cluster.satellites
    on_its_way = send(two, "S002", "S004", "I00007", 3)
    for satellite in cluster.satellites:
        sync_ok(satellite)
    assert inbounds(four, on_its_way) == [("S004", "draft", 3)]
    movements = dict(
        sql(
            master,
            "SELECT t.store_id || ':' || l.item_id || ':' || l.batch, SUM(CASE t.kind "
            "WHEN 'customer_invoice' THEN -l.quantity ELSE l.quantity END) "
            "FROM stores_transactionline l JOIN stores_transaction t ON t.id = l.transaction_id "
            "WHERE t.status = 'finalised' GROUP BY 1",
        )
    )
    on_hand = dict(
        sql(
            master,
            "SELECT store_id || ':' || item_id || ':' || batch, SUM(quantity) "
            "FROM stores_stockline GROUP BY 1",
        )
    )
    assert {k: v for k, v in movements.items() if v} == {k: v for k, v in on_hand.items() if v}
    ((sent, received, unreceived),) = sql(
        master,
        "SELECT (SELECT COALESCE(SUM(l.quantity), 0) FROM stores_transactionline l "
        "  JOIN stores_transaction o ON o.id = l.transaction_id JOIN stores_name n "
        "  ON n.id = o.name_id WHERE o.status = 'finalised' AND n.store_id IS NOT NULL), "
        "(SELECT COALESCE(SUM(l.quantity), 0) FROM stores_transactionline l JOIN "
        "  stores_transaction i ON i.id = l.transaction_id WHERE i.transfer_of_id IS NOT NULL "
        "  AND i.status = 'finalised'), "
        "(SELECT COALESCE(SUM(l.quantity), 0) FROM stores_transactionline l "
        "  JOIN stores_transaction o ON o.id = l.transaction_id JOIN stores_name n "
        "  ON n.id = o.name_id WHERE o.status = 'finalised' AND n.store_id IS NOT NULL AND NOT "
        "  EXISTS (SELECT 1 FROM stores_transaction i WHERE i.transfer_of_id = o.id "
        "  AND i.status = 'finalised'))",
    )
    # Goods in transit are what was sent and not yet received, plus what receivers found short.
    ((short,),) = sql(
        master,
        "SELECT COALESCE(SUM(o_l.quantity), 0) - COALESCE((SELECT SUM(l.quantity) FROM "
        "stores_transactionline l JOIN stores_transaction i ON i.id = l.transaction_id "
        "WHERE i.transfer_of_id IS NOT NULL AND i.status = 'finalised'), 0) "
        "FROM stores_transactionline o_l JOIN stores_transaction o ON o.id = o_l.transaction_id "
        "WHERE EXISTS (SELECT 1 FROM stores_transaction i WHERE i.transfer_of_id = o.id "
        "AND i.status = 'finalised')",
    )
    assert int(sent) == int(received) + int(short) + int(unreceived)
    assert int(unreceived) >= 3
