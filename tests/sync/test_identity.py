"""Satellite identity between real servers: keys, impersonation, resets, disabling and lockouts.

One master (which trusts a reverse proxy at PROXY_SOURCE) and satellites 2 and 3, all real
processes with their own databases; satellite 3 reaches the master through that proxy. Raw
requests come from other loopback addresses, as other machines would.
"""

import base64
import gzip
import http.client
import json
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest

from sync.protocol import API_PREFIX, PROTOCOL_VERSION
from tests.proxy import ForwardingProxy
from tests.servers import SYNC_PASSWORD, SYNC_USERNAME, Cluster, Site
from tests.sync.realsites import (
    dump_all,
    point_at,
    satellite_key,
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

PROXY_SOURCE = "127.0.0.3"
BASIC = "Basic " + base64.b64encode(f"{SYNC_USERNAME}:{SYNC_PASSWORD}".encode()).decode()
GUESS = "Basic " + base64.b64encode(f"{SYNC_USERNAME}:a-guess".encode()).decode()


class Fleet(Cluster):
    """The module's cluster, with the proxy in front of the master for satellite 3."""

    proxy: ForwardingProxy


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    workdir = tmp_path_factory.mktemp("identity")
    cluster = Fleet(workdir, satellites=2, master_env={"TRUSTED_PROXIES": PROXY_SOURCE})
    for satellite in cluster.satellites:
        satellite.extra_env["SYNC_RETRIES"] = "0"
    try:
        cluster.provision(items=6, names=4)
        cluster.proxy = ForwardingProxy(cluster.master.port, source_address=PROXY_SOURCE)
        point_at(cluster.satellites[1], cluster.proxy.url)
        cluster.master.manage(
            "createsuperuser", "--noinput", "--username", "admin", "--email", "a@example.org"
        )
        for satellite in cluster.satellites:
            sync_ok(satellite)
            satellite.manage("seed_demo", "--transactions", "4")
            sync_ok(satellite)
        yield cluster
    finally:
        if hasattr(cluster, "proxy"):
            cluster.proxy.close()
        cluster.destroy()


def ask(
    port: int,
    endpoint: str,
    *,
    sync_id: int,
    authorization: str,
    source: str,
    body: dict[str, Any] | None = None,
    query: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    """One raw request to the sync API on `port`, sent from the address `source`."""
    connection = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=60, source_address=(source, 0)
    )
    headers = {
        "X-Sync-Id": str(sync_id),
        "X-Sync-Protocol": str(PROTOCOL_VERSION),
        "Authorization": authorization,
    }
    payload = None
    if body is not None:
        payload = gzip.compress(json.dumps(body).encode())
        headers.update({"Content-Type": "application/json", "Content-Encoding": "gzip"})
    path = API_PREFIX + endpoint + (f"?{urlencode(query)}" if query else "")
    try:
        connection.request("POST" if body is not None else "GET", path, payload, headers)
        answer = connection.getresponse()
        return answer.status, json.loads(answer.read() or b"{}")
    finally:
        connection.close()


def handshake_body(sync_id: int) -> dict[str, Any]:
    return {"sync_id": sync_id, "protocol_version": PROTOCOL_VERSION}


def peer_state(master: Site, sync_id: int) -> list[tuple[Any, ...]]:
    return sql(
        master,
        "SELECT s.last_success_at, s.pull_txid, s.pull_seq, s.push_generation, s.push_txid, "
        "s.push_seq FROM sync_peerstate s JOIN sync_syncpeer p ON p.id = s.peer_id "
        f"WHERE p.sync_id = {sync_id}",
    )


def ids_of(master: Site, query: str) -> list[str]:
    return [uuid.UUID(str(value)).hex for (value,) in sql(master, query)]


def test_satellite_2s_password_key_or_token_as_sync_id_3_change_nothing(fleet: Fleet) -> None:
    master, satellite_2 = fleet.master, fleet.satellites[0]
    ((token,),) = sql(satellite_2, "SELECT auth_token FROM sync_peerstate")
    store_3 = ids_of(master, "SELECT id FROM stores_store WHERE code = 'S003'")[0]
    name = ids_of(master, "SELECT id FROM stores_name LIMIT 1")[0]
    existing = ids_of(
        master,
        f"SELECT t.id FROM stores_transaction t WHERE t.store_id = '{store_3}' LIMIT 1",
    )
    new = transaction_row(store=store_3, name=name, number=424242)
    changes = wire({"stores_transaction": [new]}, {"stores_transaction": existing})
    push = {
        "batch_id": uuid.uuid4().hex,
        "generation": 9,
        "start": "0.0",
        "end": "0.3",
        "digest": "",
        "changes": changes,
    }
    before = (dump_all(master), peer_state(master, 3))
    refusals = set()
    # One address per credential: its three tries stay short of a lockout.
    for source, authorization, code in [
        ("127.0.0.6", BASIC, "identity_mismatch"),
        ("127.0.0.7", f"Key {satellite_key(satellite_2)}", "key_invalid"),
        ("127.0.0.8", f"Bearer {token}", "token_invalid"),
    ]:
        for endpoint, body, query in [
            ("handshake/", handshake_body(3), None),
            ("push/", push, None),
            ("pull/", None, {"cursor": "999999999.999999999", "limit": "10"}),
        ]:
            status, answer = ask(
                master.port,
                endpoint,
                sync_id=3,
                authorization=authorization,
                source=source,
                body=body,
                query=query,
            )
            assert answer["code"] == code, (endpoint, answer)
            assert answer["message"]
            refusals.add((endpoint, status, code))
    assert {(status, code) for _, status, code in refusals} == {
        (409, "identity_mismatch"),
        (401, "key_invalid"),
        (401, "token_invalid"),
    }
    # Nothing changed on the master: no row, and satellite 3's sync status as it was.
    assert (dump_all(master), peer_state(master, 3)) == before
    sync_ok(fleet.satellites[1])
    assert peer_state(master, 3)[0][0] != before[1][0][0]


def test_five_failed_logins_from_elsewhere_leave_both_satellites_syncing(fleet: Fleet) -> None:
    master = fleet.master
    for sync_id in (2, 3, 2, 3, 2, 3):
        status, answer = ask(
            master.port,
            "handshake/",
            sync_id=sync_id,
            authorization=GUESS,
            source="127.0.0.2",
            body=handshake_body(sync_id),
        )
        assert (status, answer["code"]) in {(401, "wrong_credentials"), (429, "locked_out")}
    assert (status, answer["code"]) == (429, "locked_out")
    for satellite in fleet.satellites:
        sync_ok(satellite)
    # Even the satellites' own address, locked out, lets their keys in.
    try:
        for _ in range(5):
            ask(
                master.port,
                "handshake/",
                sync_id=2,
                authorization="Key guess",
                source="127.0.0.1",
                body=handshake_body(2),
            )
        status, answer = ask(
            master.port,
            "handshake/",
            sync_id=5,
            authorization=BASIC,
            source="127.0.0.1",
            body=handshake_body(5),
        )
        assert (status, answer["code"]) == (429, "locked_out")
        for satellite in fleet.satellites:
            sync_ok(satellite)
    finally:
        # As if the lockout had run out, for the tests after this one.
        lockouts_lift(master)


def lockouts_lift(master: Site) -> None:
    shell(master, "from sync.models import AuthFailure\nAuthFailure.objects.all().delete()")


def test_behind_the_trusted_proxy_a_wrong_password_locks_out_only_its_own_address(
    fleet: Fleet,
) -> None:
    master, proxy = fleet.master, fleet.proxy
    # A misconfigured satellite at 127.0.0.4 behind the proxy, enrolling with a wrong password.
    for _ in range(5):
        status, answer = ask(
            proxy.port,
            "handshake/",
            sync_id=4,
            authorization=GUESS,
            source="127.0.0.4",
            body=handshake_body(4),
        )
        assert (status, answer["code"]) == (401, "wrong_credentials")
    status, answer = ask(
        proxy.port,
        "handshake/",
        sync_id=4,
        authorization=BASIC,
        source="127.0.0.4",
        body=handshake_body(4),
    )
    assert (status, answer["code"]) == (429, "locked_out")
    addresses = {str(a) for (a,) in sql(master, "SELECT address FROM sync_authfailure")}
    assert "127.0.0.4" in addresses
    assert PROXY_SOURCE not in addresses
    # Satellite 3 behind the same proxy syncs on; so would a password from another address.
    sync_ok(fleet.satellites[1])
    status, answer = ask(
        proxy.port,
        "handshake/",
        sync_id=4,
        authorization=BASIC,
        source="127.0.0.5",
        body=handshake_body(4),
    )
    assert (status, answer["code"]) == (401, "unknown_sync_id")
    lockouts_lift(master)


def test_a_disabled_satellite_is_refused_plainly_until_enabled(fleet: Fleet) -> None:
    master, satellite = fleet.master, fleet.satellites[0]
    master.manage("sync_key", "disable", "--sync-id", "2", "--user", "admin")
    try:
        report = sync_fails(satellite)
        assert report["error_code"] == "satellite_disabled"
        assert "has disabled satellite 2" in report["message"]
    finally:
        master.manage("sync_key", "enable", "--sync-id", "2", "--user", "admin")
    sync_ok(satellite)


def test_a_second_machine_is_refused_until_a_reset_then_it_replaces_the_satellite(
    fleet: Fleet, tmp_path_factory: pytest.TempPathFactory
) -> None:
    master, old = fleet.master, fleet.satellites[1]
    new = Site("replacement3", tmp_path_factory.mktemp("replacement"))
    try:
        new.manage("migrate", "--verbosity", "0")
        Cluster.configure(new, 3)
        new.manage(
            "sync_peer", "add", "--sync-id", "1", "--name", "master", "--store", "S001",
            "--url", master.url,
        )  # fmt: skip
        report = sync_fails(new)
        assert report["error_code"] == "identity_mismatch"
        assert "already held by another server" in report["message"]
        assert "sync_key reset --sync-id 3" in report["message"]
        sync_ok(old)
        old_key = satellite_key(old)

        master.manage("sync_key", "reset", "--sync-id", "3", "--user", "admin")
        report = sync_fails(old)
        assert report["error_code"] == "not_enrolled"
        # The replacement enrols and gets store S003's data back from the master.
        sync_ok(new)
        assert satellite_key(new) != old_key
        assert sql(new, "SELECT password FROM sync_syncpreferences") == [("",)]
        master_rows = dump_all(master)
        assert store_part(dump_all(new), "S003") == store_part(master_rows, "S003")
        assert store_part(master_rows, "S003")
        report = sync_fails(old)
        assert report["error_code"] == "key_invalid"
        history = master.manage("sync_key", "list").stdout
        assert "3\tsatellite3\tenrolled" in history
    finally:
        new.destroy()
