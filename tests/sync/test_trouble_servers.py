"""Between real servers: a satellite's trouble shows on the master and on the satellite."""

import json
import uuid
from collections.abc import Iterator

import pytest

from msupply.sites import Site
from sync.errors import SyncError
from tests.servers import Cluster
from tests.sync.realsites import (
    client,
    hex_id,
    key_reset,
    next_batch,
    sql,
    sync_fails,
    sync_ok,
    transaction_row,
    wire,
)

pytestmark = pytest.mark.servers


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A master and one satellite that has not enrolled yet."""
    cluster = Cluster(tmp_path_factory.mktemp("trouble"), satellites=1)
    cluster.satellites[0].extra_env["SYNC_RETRIES"] = "0"
    try:
        cluster.provision(items=4, names=2)
        yield cluster
    finally:
        cluster.destroy()


def test_a_wrong_password_shows_on_the_master_and_the_satellite_as_the_same_error(
    cluster: Cluster,
) -> None:
    satellite = cluster.satellites[0]
    satellite.manage("sync_config", "--password-stdin", stdin="not-the-password\n")
    report = sync_fails(satellite)
    assert report["error_code"] == "wrong_credentials", report

    master_view = {
        peer["sync_id"]: peer for peer in cluster.master.manage_json("sync_status")["peers"]
    }[2]
    assert (master_view["last_error_code"], master_view["failure_streak"]) == (
        "wrong_credentials",
        1,
    )
    assert "refused the password" in master_view["last_error"]
    assert master_view["last_failed_at"]

    (own_view,) = satellite.manage_json("sync_status")["peers"]
    assert (own_view["last_error_code"], own_view["failure_streak"]) == ("wrong_credentials", 1)


# A rule of the master's own (a recalled batch may not be received), which the satellite does
# not know: its line is refused there while the rest of its batch goes in.
RECALL = """
from django.db import connection
with connection.cursor() as cursor:
    if connection.vendor == "sqlite":
        cursor.execute(
            "CREATE TRIGGER recalled BEFORE INSERT ON stores_transactionline "
            "WHEN NEW.batch = 'RECALLED' "
            "BEGIN SELECT RAISE(ABORT, 'batch RECALLED is recalled'); END"
        )
    else:
        cursor.execute(
            "CREATE FUNCTION recalled() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.batch = 'RECALLED' THEN RAISE EXCEPTION 'batch RECALLED is recalled'; END IF; "
            "RETURN NEW; END $$"
        )
        cursor.execute(
            "CREATE TRIGGER recalled BEFORE INSERT ON stores_transactionline "
            "FOR EACH ROW EXECUTE FUNCTION recalled()"
        )
"""
TWO_DRAFTS = """
import datetime
from stores import services
from stores.models import Item, Store
from sync.selectors import hosted_store_id
store = Store.objects.get(pk=hosted_store_id())
item = Item.objects.order_by("code").first()
for batch in ("RECALLED", "B-OK"):
    services.transaction_create(
        store=store, kind="supplier_invoice", date=datetime.date(2024, 1, 2),
        lines=[services.LineInput(
            item=item, batch=batch, expiry=datetime.date(2030, 1, 1), quantity=3
        )],
    )
"""
MAX_FAILURES = 5  # SYNC_AUTH_MAX_FAILURES
STAGES = ("to_push", "acknowledged", "integrated", "waiting", "rejected")


def stages(site: Site) -> dict[str, int]:
    """What `site` shows of satellite 2's records by stage."""
    peer = next(
        p for p in site.manage_json("sync_status", "--json")["peers"] if p["sync_id"] in (1, 2)
    )
    return {stage: peer["stages"][stage] for stage in STAGES}


def last_push(master: Site) -> tuple[object, ...]:
    """The master's record of the latest push: satellite, result, code and message."""
    (found,) = sql(
        master,
        "SELECT sync_id, result, error_code, message FROM sync_syncexchange "
        "WHERE endpoint = 'push' ORDER BY id DESC LIMIT 1",
    )
    return tuple(found)


def test_a_conflicting_record_shows_on_both_sides_without_stopping_its_batch(
    cluster: Cluster,
) -> None:
    master, satellite = cluster.master, cluster.satellites[0]
    Cluster.configure(satellite, 2)
    sync_ok(satellite)  # enrols
    master.manage("shell", "--no-imports", "-c", RECALL)
    satellite.manage("shell", "--no-imports", "-c", TWO_DRAFTS)

    run = sync_ok(satellite)
    assert run["error_code"] == "rejected_record"
    assert "batch RECALLED is recalled" in run["message"]
    assert "Rejected records" in run["message"]  # what to do
    assert run["records_pushed"] == 4
    # On the master: the exchange, the rejected line (satellite, table, reason), and the rest.
    sync_id, result, code, message = last_push(master)
    assert (sync_id, result, code) == (2, "success", "rejected_record")
    assert "batch RECALLED is recalled" in str(message)
    (aside,) = json.loads(master.manage("sync_rejected", "list", "--json").stdout)
    assert (aside["sync_id"], aside["table"], aside["status"]) == (
        2, "stores_transactionline", "rejected"
    )  # fmt: skip
    assert aside["fields"]["batch"] == "RECALLED"
    assert sql(master, "SELECT COUNT(*) FROM stores_transaction WHERE store_id IN "
               "(SELECT id FROM stores_store WHERE code = 'S002')") == [(2,)]  # fmt: skip
    figures = stages(master)
    assert figures == stages(satellite)
    assert (figures["rejected"], figures["integrated"]) == (1, figures["acknowledged"] - 1)

    # Still refused at the next contact; then discarded with a note, in the master's history.
    sync_ok(satellite)
    assert stages(master)["rejected"] == 1
    master.manage(
        "createsuperuser", "--noinput", "--username", "resolver", "--email", "r@example.org"
    )
    refused = master.manage(
        "sync_rejected", "discard", "--id", aside["id"], "--user", "resolver", check=False
    )
    assert refused.returncode != 0
    assert "note" in refused.stderr
    master.manage(
        "sync_rejected", "discard", "--id", aside["id"], "--user", "resolver",
        "--note", "Recalled batch: returned to the supplier",
    )  # fmt: skip
    # Only the resolver's entries: provisioning (sync_config, sync_peer) is in the History too.
    resolver_entries = (
        "SELECT change_message FROM django_admin_log JOIN auth_user ON auth_user.id = user_id "
        "WHERE username = 'resolver'"
    )
    assert sql(master, resolver_entries) == [
        (f"Discarded 1 rejected records (stores_transactionline {aside['id']}): "
         "Recalled batch: returned to the supplier",)
    ]  # fmt: skip
    sync_ok(satellite)
    assert stages(master) == stages(satellite)
    assert stages(satellite)["rejected"] == 0


def test_a_forged_push_is_refused_and_shows_on_the_master_under_the_satellite(
    cluster: Cluster,
) -> None:
    master, satellite = cluster.master, cluster.satellites[0]
    if sql(satellite, "SELECT sync_key FROM sync_syncpreferences") == [("",)]:
        Cluster.configure(satellite, 2)  # run on its own: enrol first
        sync_ok(satellite)
    ((other_store,),) = sql(master, "SELECT id FROM stores_store WHERE code <> 'S002' LIMIT 1")
    ((name,),) = sql(master, "SELECT id FROM stores_name LIMIT 1")
    forged = transaction_row(store=hex_id(other_store), name=hex_id(name), number=990001)
    sender = client(cluster, 2)
    try:
        with pytest.raises(SyncError) as refused:
            sender.push(
                batch_id=uuid.uuid4().hex,
                changes=wire({"stores_transaction": [forged]}),
                **next_batch(sender),
            )
    finally:
        sender.close()
    assert (refused.value.status, refused.value.code) == (403, "forbidden_record")
    assert last_push(master) == (
        2,
        "failure",
        "forbidden_record",
        refused.value.message,
    )


def test_a_lockout_shows_on_the_master_and_the_satellite(cluster: Cluster) -> None:
    master, satellite = cluster.master, cluster.satellites[0]
    key_reset(master, 2)
    satellite.manage("sync_config", "--password-stdin", stdin="not-the-password\n")
    codes = [sync_fails(satellite)["error_code"]]
    while codes[-1] != "locked_out" and len(codes) <= MAX_FAILURES:
        codes.append(sync_fails(satellite)["error_code"])
    # The first test's wrong password counts too: five in all from this address.
    assert codes[-1] == "locked_out", codes
    assert set(codes[:-1]) == {"wrong_credentials"}
    master_view = {p["sync_id"]: p for p in master.manage_json("sync_status")["peers"]}[2]
    assert master_view["last_error_code"] == "locked_out"
    assert "Too many failed sync logins" in master_view["last_error"]
    (own_view,) = satellite.manage_json("sync_status")["peers"]
    assert own_view["last_error_code"] == "locked_out"
