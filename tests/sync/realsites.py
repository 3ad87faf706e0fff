"""Helpers for tests that run a master and satellites as real server processes (tests.servers)."""

import json
import os
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from sync.changes import Cursor
from sync.client import MasterClient
from sync.registry import TABLES_BY_NAME
from tests.proxy import LinkProxy
from tests.servers import SYNC_PASSWORD, SYNC_USERNAME, Cluster, Site

POSTGRES = os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://"))
MASTER_MODELS = ("stores.store", "stores.item", "stores.name")
STORE_MODELS = ("stores.transaction", "stores.transactionline", "stores.stockline")
Rows = list[dict[str, Any]]


def sync_ok(site: Site) -> dict[str, Any]:
    """Run sync_now on `site`; it must succeed. Returns its JSON report."""
    report = site.manage_json("sync_now")
    assert report["result"] == "success", report
    return report


def sync_fails(site: Site) -> dict[str, Any]:
    """Run sync_now on `site`; it must exit non-zero with a plain message and no traceback."""
    result = site.manage("sync_now", "--json", check=False)
    assert result.returncode != 0, result.stdout
    report = dict(json.loads(result.stdout.strip().splitlines()[-1]))
    assert report["result"] == "failure", report
    assert report["message"]
    assert report["message"] in result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return report


def shell(site: Site, code: str) -> str:
    """Run Python in `manage.py shell` on `site`; returns what it printed."""
    return site.manage("shell", "--no-imports", "-c", code).stdout.strip()


def sql(site: Site, query: str) -> list[tuple[Any, ...]]:
    """Like Site.sql, but read `site`'s database from this process: no Django start-up."""
    if POSTGRES:
        with psycopg.connect(site.database_url, autocommit=True) as connection:
            return [tuple(row) for row in connection.execute(query).fetchall()]
    path = site.database_url.removeprefix("sqlite:///")
    with closing(sqlite3.connect(path, timeout=20)) as connection:
        return [tuple(row) for row in connection.execute(query).fetchall()]


def dump_all(site: Site) -> Rows:
    return site.dump(*MASTER_MODELS, *STORE_MODELS)


def master_part(rows: Rows) -> Rows:
    return [row for row in rows if row["model"] in MASTER_MODELS]


def store_pk(rows: Rows, code: str) -> str:
    return next(
        row["pk"]
        for row in rows
        if row["model"] == "stores.store" and row["fields"]["code"] == code
    )


def store_part(rows: Rows, code: str) -> Rows:
    """Transactions, their lines and stock lines of store `code`."""
    pk = store_pk(rows, code)
    transactions = {
        row["pk"]
        for row in rows
        if row["model"] == "stores.transaction" and row["fields"]["store"] == pk
    }
    return [
        row
        for row in rows
        if (
            row["model"] in ("stores.transaction", "stores.stockline")
            and row["fields"]["store"] == pk
        )
        or (
            row["model"] == "stores.transactionline"
            and row["fields"]["transaction"] in transactions
        )
    ]


def assert_in_step(
    master: Site, satellite: Site, code: str, on_master: Rows | None = None
) -> tuple[Rows, Rows]:
    """Master data equal record by record, store `code`'s data equal, and nothing else there.

    `on_master` is the master's dump_all when the caller has it already.
    """
    on_master, on_satellite = on_master or dump_all(master), dump_all(satellite)
    assert master_part(on_satellite) == master_part(on_master)
    assert store_part(on_satellite, code) == store_part(on_master, code)
    store_rows = [row for row in on_satellite if row["model"] in STORE_MODELS]
    assert store_rows == store_part(on_satellite, code), "another store's data on the satellite"
    return on_master, on_satellite


def point_at(satellite: Site, url: str) -> None:
    """Make `url` the master's address in the satellite's Sync with list."""
    satellite.manage("sync_peer", "remove", "--sync-id", "1")
    satellite.manage(
        "sync_peer", "add", "--sync-id", "1", "--name", "master", "--store", "S001", "--url", url
    )


def satellite_key(satellite: Site) -> str:
    """The key that `satellite` enrolled with (it holds it once it has synced)."""
    ((key,),) = sql(satellite, "SELECT sync_key FROM sync_syncpreferences")
    assert key, f"{satellite.name} has not enrolled"
    return str(key)


def client(cluster: Cluster, sync_id: int = 2, **options: Any) -> MasterClient:
    """A client to the master that speaks as satellite `sync_id`, with that satellite's key."""
    return MasterClient(
        url=cluster.master.url,
        sync_id=sync_id,
        username=SYNC_USERNAME,
        password="",
        key=satellite_key(cluster.satellites[sync_id - 2]),
        **options,
    )


def key_reset(master: Site, sync_id: int) -> None:
    """Reset satellite `sync_id`'s key on the master, as its administrator (made if need be)."""
    made = master.manage(
        "createsuperuser", "--noinput", "--username", "keyadmin", "--email", "k@example.org",
        check=False,
    )  # fmt: skip
    assert made.returncode == 0 or "already taken" in made.stderr, made.stderr
    master.manage("sync_key", "reset", "--sync-id", str(sync_id), "--user", "keyadmin")


def enrolling_client(master: Site, sync_id: int, **options: Any) -> MasterClient:
    """A client to the master for a Sync ID that no server has enrolled: the password enrols it."""
    return MasterClient(
        url=master.url, sync_id=sync_id, username=SYNC_USERNAME, password=SYNC_PASSWORD, **options
    )


def hex_id(value: object) -> str:
    return uuid.UUID(str(value)).hex


# --- raw pushes: batches made by hand, as no satellite's run sends them ---------------------


def row(table: str, **values: Any) -> list[Any]:
    """One wire row of `table`: every field, in the order the registry gives."""
    return [values[name] for name in TABLES_BY_NAME[table].field_names]


def transaction_row(
    *, store: str, name: str, number: int, record_id: str | None = None
) -> list[Any]:
    return row(
        "stores_transaction",
        id=record_id or uuid.uuid4().hex,
        store_id=store,
        kind="supplier_invoice",
        number=number,
        name_id=name,
        date="2024-01-02",
        status="draft",
        transfer_of_id=None,
        received_on=None,
    )


def line_row(*, transaction: str, item: str, quantity: int = 5) -> list[Any]:
    return row(
        "stores_transactionline",
        id=uuid.uuid4().hex,
        transaction_id=transaction,
        item_id=item,
        batch="B-1",
        expiry="2030-01-01",
        quantity=quantity,
        cost_price="1.50",
        sell_price="0.00",
    )


def wire(
    upserts: dict[str, list[list[Any]]], deletes: dict[str, list[str]] | None = None
) -> dict[str, Any]:
    """A changeset as a push carries it: rows to upsert and ids to delete, by table."""
    return {
        "upserts": [
            {"table": name, "fields": TABLES_BY_NAME[name].field_names, "rows": rows}
            for name, rows in upserts.items()
        ],
        "deletes": [{"table": name, "ids": ids} for name, ids in (deletes or {}).items()],
    }


def next_batch(sender: MasterClient) -> dict[str, Any]:
    """Where a raw push as `sender` must sit: right after the master's record of its pushes
    (generation 1 opens the history of a satellite that never pushed).

    Pass the result to push() with the batch id and changes.
    """
    record = sender.handshake()["push"]
    start = Cursor.parse(str(record["end"]))
    return {
        "generation": max(1, record["generation"]),
        "start": str(start),
        "end": str(Cursor(start.txid, start.seq + 3)),
        "digest": uuid.uuid4().hex,
    }


class ProxiedCluster(Cluster):
    """A master and satellites; satellite 2 reaches the master only through `proxy`.

    `satellite_env` is every satellite's extra environment (batch size, retries, timeouts).
    """

    def __init__(
        self, workdir: Path, *, satellites: int, satellite_env: dict[str, str] | None = None
    ) -> None:
        super().__init__(workdir, satellites=satellites)
        for satellite in self.satellites:
            satellite.extra_env.update(satellite_env or {})
        self.proxy = LinkProxy(self.master.port, lifetime=1800)

    def provision(self, **options: Any) -> None:
        super().provision(**options)
        point_at(self.satellites[0], self.proxy.url)

    def destroy(self) -> None:
        self.proxy.close()
        super().destroy()


def _postgres_admin(site: Site) -> tuple[str, str]:
    """The maintenance database's URL on `site`'s PostgreSQL server, and `site`'s database name."""
    parts = urlsplit(site.database_url)
    return urlunsplit(parts._replace(path="/postgres")), parts.path.lstrip("/")


@contextmanager
def database_backup(site: Site) -> Iterator[Callable[[], None]]:
    """Copy `site`'s database as an operator's backup would; yields what puts the copy back.

    No process of `site` may run meanwhile: PostgreSQL copies only a database nobody uses. The
    copy is dropped on leaving.
    """
    if POSTGRES:
        admin, name = _postgres_admin(site)
        copy = f"{name}_backup"

        def restore_postgresql() -> None:
            with psycopg.connect(admin, autocommit=True) as connection:
                connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
                connection.execute(f'CREATE DATABASE "{name}" TEMPLATE "{copy}"')

        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{copy}" TEMPLATE "{name}"')
        try:
            yield restore_postgresql
        finally:
            with psycopg.connect(admin, autocommit=True) as connection:
                connection.execute(f'DROP DATABASE IF EXISTS "{copy}" WITH (FORCE)')
        return
    path = Path(site.database_url.removeprefix("sqlite:///"))
    copy_path = path.with_name(f"{path.name}.backup")

    def sqlite_copy(source: Path, target: Path) -> None:
        # The backup API copies what the write-ahead log holds too, and writes through it.
        with closing(sqlite3.connect(source)) as reader, closing(sqlite3.connect(target)) as writer:
            reader.backup(writer)

    sqlite_copy(path, copy_path)
    try:
        yield lambda: sqlite_copy(copy_path, path)
    finally:
        copy_path.unlink()
