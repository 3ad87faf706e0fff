"""A run that meets an unexpected error records it plainly, and the next run completes."""

import contextlib
import json
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from msupply.sites import ROOT, Cluster, Site
from sync.protocol import PROTOCOL_VERSION
from tests.sync.realsites import satellite_key

pytestmark = pytest.mark.servers

CREATE_ITEM = (
    "from stores.services import item_create; "
    "item_create(code='ORS-1L', name='Oral rehydration salts 1 L', unit='sachet')"
)

# Someone changed the satellite's database by hand: a trigger that refuses every new item.
ROGUE_TRIGGER = """
from django.db import connection
with connection.cursor() as cursor:
    if connection.vendor == "sqlite":
        cursor.execute(
            "CREATE TRIGGER rogue BEFORE INSERT ON stores_item "
            "BEGIN SELECT RAISE(ABORT, 'hand-made trigger'); END"
        )
    else:
        cursor.execute(
            "CREATE FUNCTION rogue() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'hand-made trigger'; END $$"
        )
        cursor.execute(
            "CREATE TRIGGER rogue BEFORE INSERT ON stores_item "
            "FOR EACH ROW EXECUTE FUNCTION rogue()"
        )
"""
DROP_ROGUE_TRIGGER = """
from django.db import connection
with connection.cursor() as cursor:
    on_table = "" if connection.vendor == "sqlite" else " ON stores_item"
    cursor.execute("DROP TRIGGER rogue" + on_table)
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("run-failures"), satellites=1)
    try:
        # gunicorn, as in production: how it reports a cut upload is what operators see.
        cluster.provision(items=5, names=5, server="gunicorn")
        cluster.satellites[0].manage("sync_now")
        yield cluster
    finally:
        cluster.destroy()


def test_an_unexpected_database_error_fails_the_run_plainly_and_the_next_run_recovers(
    cluster: Cluster,
) -> None:
    satellite = cluster.satellites[0]
    satellite.manage("shell", "--no-imports", "-c", ROGUE_TRIGGER)
    cluster.master.manage("shell", "--no-imports", "-c", CREATE_ITEM)

    failed = satellite.manage_json("sync_now", check=False)
    assert failed["result"] == "failure"
    assert failed["error_code"] == "internal_error"
    assert "unexpected error" in failed["message"]
    assert "hand-made trigger" in failed["message"]
    assert "resumes" not in failed["message"]
    assert satellite.sql("SELECT COUNT(*) FROM sync_synclog WHERE result = 'running'") == [(0,)]
    assert satellite.sql("SELECT COUNT(*) FROM stores_item WHERE code = 'ORS-1L'") == [(0,)]

    satellite.manage("shell", "--no-imports", "-c", DROP_ROGUE_TRIGGER)
    assert satellite.manage_json("sync_now")["result"] == "success"
    assert satellite.sql("SELECT name FROM stores_item WHERE code = 'ORS-1L'") == [
        ("Oral rehydration salts 1 L",)
    ]


REFUSE_TRANSACTIONS = ROGUE_TRIGGER.replace("stores_item", "stores_transaction")
DROP_REFUSAL = DROP_ROGUE_TRIGGER.replace("stores_item", "stores_transaction")
NEW_DRAFT = """
import datetime
from stores import services
from stores.models import Item, Store
from sync.selectors import hosted_store_id
services.transaction_create(
    store=Store.objects.get(pk=hosted_store_id()),
    kind="supplier_invoice",
    date=datetime.date(2024, 1, 2),
    lines=[services.LineInput(
        item=Item.objects.first(), batch="B1", expiry=datetime.date(2030, 1, 1), quantity=3
    )],
)
"""


def stages(site: Site, sync_id: int) -> dict[str, int]:
    """The site's figures of satellite `sync_id`'s records by stage (sync_status --json): on
    the master its entry for the satellite, on the satellite its entry for the master."""
    status = site.manage_json("sync_status", "--json")
    wanted = sync_id if status["role"] == "master" else 1
    peer = next(p for p in status["peers"] if p["sync_id"] == wanted)
    return {stage: peer["stages"][stage] for stage in STAGES}


STAGES = ("to_push", "acknowledged", "integrated", "waiting", "rejected")


def test_a_transaction_the_master_refuses_is_set_aside_and_goes_in_once_allowed(
    cluster: Cluster,
) -> None:
    master, satellite = cluster.master, cluster.satellites[0]
    master.manage("shell", "--no-imports", "-c", REFUSE_TRANSACTIONS)
    try:
        satellite.manage("shell", "--no-imports", "-c", NEW_DRAFT)
        satellite.manage("shell", "--no-imports", "-c", NEW_DRAFT.replace("B1", "B2"))
        master.manage("shell", "--no-imports", "-c", CREATE_ITEM.replace("ORS-1L", "ORS-2L"))
        run = satellite.manage_json("sync_now", check=False)
        # Both drafts were pushed and acknowledged; the master set them aside, their lines
        # wait with them, and the satellite's log says so and what to do.
        assert (run["result"], run["error_code"]) == ("success", "rejected_record")
        assert "set aside 2 record(s)" in run["message"]
        assert "hand-made trigger" in run["message"]
        assert "Rejected records" in run["message"]
        assert run["records_pushed"] == 4
        assert satellite.sql("SELECT COUNT(*) FROM stores_item WHERE code = 'ORS-2L'") == [(1,)]
        aside = master.sql("SELECT status, COUNT(*) FROM sync_rejectedrecord GROUP BY status")
        assert sorted(aside) == [("rejected", 2), ("waiting", 2)]
        sync_id = satellite_sync_id(satellite)
        assert stages(master, sync_id) == stages(satellite, sync_id)
        assert stages(master, sync_id)["rejected"] == 2
        assert master.manage_json("sync_status", "--json")["peers"][0]["last_error_code"] == ""
    finally:
        master.manage("shell", "--no-imports", "-c", DROP_REFUSAL)
    # The next contact retries them: nothing to push, yet they go in.
    assert satellite.manage_json("sync_now")["records_pushed"] == 0
    assert master.sql("SELECT COUNT(*) FROM sync_rejectedrecord") == [(0,)]
    assert master.sql("SELECT COUNT(*) FROM stores_transaction") == satellite.sql(
        "SELECT COUNT(*) FROM stores_transaction"
    )
    figures = stages(master, sync_id)
    assert figures == stages(satellite, sync_id)
    assert (figures["waiting"], figures["rejected"], figures["to_push"]) == (0, 0, 0)
    assert figures["integrated"] == figures["acknowledged"]


def satellite_sync_id(satellite: Site) -> int:
    return int(satellite.manage_json("sync_status", "--json")["sync_id"])


@pytest.fixture
def silent_master() -> Iterator[int]:
    """A port that accepts connections and reads requests but never answers: a stalled link."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join()
        for connection in held:
            connection.close()
        listener.close()


def test_the_run_lease_outlives_a_request_that_waits_longer_than_the_lease(
    cluster: Cluster, silent_master: int
) -> None:
    satellite = cluster.satellites[0]
    waits = {"SYNC_LOCK_TTL_SECONDS": "2", "SYNC_READ_TIMEOUT": "8", "SYNC_RETRIES": "0"}
    satellite.manage(
        "sync_peer", "update", "--sync-id", "1", "--url", f"http://127.0.0.1:{silent_master}/"
    )
    try:
        waiting = subprocess.Popen(
            [sys.executable, "manage.py", "sync_now", "--json"],
            cwd=ROOT,
            env={**satellite.env(), **waits},
            stdout=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 30
        while satellite.sql(
            "SELECT COUNT(*) FROM sync_synclog WHERE step = 'handshake' AND result = 'running'"
        ) != [(1,)]:
            assert time.monotonic() < deadline, "the first run never started its handshake"
            time.sleep(0.1)
        time.sleep(4)  # twice the lease: without renewal it would have expired
        second = satellite.manage("sync_now", "--json", check=False, env=waits)
        assert json.loads(second.stdout.splitlines()[-1])["result"] == "already_running"
        out, _ = waiting.communicate(timeout=60)
        first = json.loads(out.splitlines()[-1])
        assert (first["result"], first["error_code"]) == ("failure", "timeout")
    finally:
        satellite.manage("sync_peer", "update", "--sync-id", "1", "--url", cluster.master.url)
    assert satellite.manage_json("sync_now")["result"] == "success"


def cut_push(key: str) -> bytes:
    """The first bytes of satellite 2's push, which promise 100,000 bytes of body."""
    return (
        b"POST /api/sync/v1/push/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Sync-Id: 2\r\n"
        + f"X-Sync-Protocol: {PROTOCOL_VERSION}\r\nAuthorization: Key {key}\r\n".encode()
        + b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
        b'{"batch_id": "b1", "changes": {"upserts": ['
    )


def test_an_upload_cut_mid_push_gets_a_typed_400_and_no_traceback(cluster: Cluster) -> None:
    master = cluster.master
    push = cut_push(satellite_key(cluster.satellites[0]))
    logged = len(master.log_path.read_text())
    # The satellite's side of the link closes mid-body: the master still answers.
    with socket.create_connection(("127.0.0.1", master.port)) as upload:
        upload.sendall(push)
        upload.shutdown(socket.SHUT_WR)
        answer = upload.makefile("rb").read().decode()
    assert answer.startswith("HTTP/1.1 400"), answer
    assert '"code":"upload_incomplete"' in answer.replace(" ", "")
    # The link is reset mid-body: nobody is left to answer.
    with socket.create_connection(("127.0.0.1", master.port)) as upload:
        upload.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        upload.sendall(push)
    deadline = time.monotonic() + 10
    while master.log_path.read_text()[logged:].count("cut before its end") < 2:
        assert time.monotonic() < deadline, master.log_path.read_text()[logged:]
        time.sleep(0.1)
    time.sleep(0.5)  # anything else the server would log about these requests
    new = master.log_path.read_text()[logged:]
    assert "Traceback" not in new
    assert " 500 " not in new
    assert new.count("cut before its end") == 2
