"""Random sequences of everyday actions, syncs and faults on a real master and two satellites.

`ConvergenceCluster` provisions a master (hosting S001) and satellites 2 (S002) and 3 (S003),
each satellite reaching the master through its own `LinkProxy`, runs every satellite's first
sync and keeps a snapshot of the three databases, so each sequence starts from the same state.
`Sequence(cluster, seed).run(steps)` draws `steps` actions from a seeded `random.Random`:

- everyday actions on the store each site hosts (create, edit a line quantity or the date,
  finalise, delete a draft) and master-data actions on the master (add, re-code, swap codes,
  deactivate, delete items and names), run by a long-lived agent per site
  (tests/convergence_agent.py);
- `sync_now` on a random satellite, a real subprocess;
- faults: a run SIGKILLed as it sends a request, the master SIGKILLed mid-sync and restarted, a
  link cut after a random number of bytes or as a push completes (the master never gets it), a
  push captured by the proxy and sent to the master again later, a satellite restored from a
  backup taken earlier in the sequence.

Then it heals (syncs every satellite until a round moves nothing, bounded) and checks that the
sites converged. Every action is logged in concrete terms (codes, handles, byte counts), so
`Sequence(cluster).replay(actions)` repeats a failing sequence exactly.
"""

import datetime
import gzip
import http.client
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import psycopg

from tests.proxy import TO_CLIENT, TO_SERVER, LinkProxy
from tests.servers import ROOT, Cluster, Site

# Queries embed only table names and sync IDs this module chose.
# ruff: noqa: S608

Action = dict[str, Any]
Row = tuple[Any, ...]
Table = dict[str, Row]

MASTER_TABLES = ("stores_store", "stores_item", "stores_name")
STORE_TABLES = ("stores_transaction", "stores_transactionline", "stores_stockline")
# Satellites give up at once on a cut link, lease a run for a few seconds only (a killed run's
# lease must run out before the next run may start) and move a few dozen records a batch, so
# short sequences still span several batches.
SATELLITE_ENV = {"SYNC_RETRIES": "0", "SYNC_LOCK_TTL_SECONDS": "4", "SYNC_BATCH_SIZE": "20"}
LEASE_SECONDS = 4.5
HEAL_ROUNDS = 6
SYNC_TIMEOUT = 120.0
# How each finalised kind moves stock (stores.services.STOCK_DIRECTION, restated on purpose:
# the check must not trust the code it checks).
DIRECTION = {"supplier_invoice": 1, "inventory_adjustment": 1, "customer_invoice": -1}
KINDS = ("supplier_invoice", "supplier_invoice", "customer_invoice", "inventory_adjustment")
BATCHES = ("A", "B")
EXPIRIES = ("2030-01-31", "2031-06-30")
FAULTS = ("kill_run", "kill_master", "cut", "lose_push", "replay", "restore_backup")
REQUESTS = ("/handshake/", "/push/", "/pull/")
# Bytes a run sends each way: an idle run some 800 up and 1,000 down, a push of a few drafts
# some 2,000 up. Cuts drawn below these land in most runs, in any request.
CUT_RANGE = {TO_SERVER: 2000, TO_CLIENT: 1600}


# --- reading a site's database from this process -------------------------------------------


def is_postgres(site: Site) -> bool:
    return site.database_url.startswith(("postgres://", "postgresql://"))


def query(site: Site, sql: str) -> tuple[list[str], list[Row]]:
    """Column names and rows of one read-only query on `site`'s database."""
    if is_postgres(site):
        with psycopg.connect(site.database_url, autocommit=True) as connection:
            found = connection.execute(sql)
            return [c.name for c in found.description or []], [tuple(r) for r in found]
    path = site.database_url.removeprefix("sqlite:///")
    with closing(sqlite3.connect(path, timeout=20)) as sqlite:
        cursor = sqlite.execute(sql)
        return [c[0] for c in cursor.description], [tuple(r) for r in cursor]


def _plain(column: str, value: Any) -> Any:
    """One value as both databases agree on it: hex UUIDs, ISO dates, two-decimal prices."""
    if isinstance(value, uuid.UUID):
        return value.hex
    if isinstance(value, datetime.date):
        return value.isoformat()
    if column in ("cost_price", "sell_price") and value is not None:
        return str(Decimal(str(value)).quantize(Decimal("0.01")))
    if column == "active":
        return bool(value)
    return value


def read_tables(site: Site) -> dict[str, Table]:
    """Every synced table of `site`: id -> the other columns, plain (see _plain)."""
    tables = {}
    for name in (*MASTER_TABLES, *STORE_TABLES):
        columns, rows = query(site, f"SELECT * FROM {name}")
        key = columns.index("id")
        tables[name] = {
            _plain("id", row[key]): tuple(
                (column, _plain(column, value))
                for column, value in zip(columns, row, strict=True)
                if column != "id"
            )
            for row in rows
        }
    return tables


def store_part(tables: dict[str, Table], store_id: str) -> dict[str, Table]:
    """Transactions, their lines and the stock lines of one store."""
    transactions = {
        pk: row
        for pk, row in tables["stores_transaction"].items()
        if dict(row)["store_id"] == store_id
    }
    return {
        "stores_transaction": transactions,
        "stores_transactionline": {
            pk: row
            for pk, row in tables["stores_transactionline"].items()
            if dict(row)["transaction_id"] in transactions
        },
        "stores_stockline": {
            pk: row
            for pk, row in tables["stores_stockline"].items()
            if dict(row)["store_id"] == store_id
        },
    }


def table_differences(label: str, expected: Table, actual: Table, limit: int = 4) -> list[str]:
    """Plain-language differences between two tables, the first `limit` records of them."""
    keys = sorted(set(expected) | set(actual))
    found = [key for key in keys if expected.get(key) != actual.get(key)]
    lines = [
        f"{label} {key}: expected {_shown(expected.get(key))}, found {_shown(actual.get(key))}"
        for key in found[:limit]
    ]
    if len(found) > limit:
        lines.append(f"{label}: {len(found) - limit} more records differ")
    return lines


def _shown(row: Row | None) -> str:
    return "no record" if row is None else ", ".join(f"{k}={v}" for k, v in row)


# --- copies of a site's database ---------------------------------------------------------------


def _copy_name(site: Site, suffix: str) -> str:
    if is_postgres(site):
        return f"{site._pg_name}_{suffix}"
    return f"{site.database_url.removeprefix('sqlite:///')}.{suffix}"


def database_save(site: Site, suffix: str) -> str:
    """Copy `site`'s database as it is now (nothing may be writing); returns the copy's name."""
    copy = _copy_name(site, suffix)
    if is_postgres(site):
        with psycopg.connect(site._pg_admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{copy}"')
            connection.execute(f'CREATE DATABASE "{copy}" TEMPLATE "{site._pg_name}"')
        return copy
    Path(copy).unlink(missing_ok=True)
    path = site.database_url.removeprefix("sqlite:///")
    with closing(sqlite3.connect(path)) as source, closing(sqlite3.connect(copy)) as target:
        source.backup(target)
    return copy


def database_load(site: Site, copy: str) -> None:
    """Replace `site`'s database by a copy database_save made; nothing may be connected."""
    if is_postgres(site):
        with psycopg.connect(site._pg_admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{site._pg_name}" WITH (FORCE)')
            connection.execute(f'CREATE DATABASE "{site._pg_name}" TEMPLATE "{copy}"')
        return
    path = site.database_url.removeprefix("sqlite:///")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    with closing(sqlite3.connect(copy)) as source, closing(sqlite3.connect(path)) as target:
        source.backup(target)


def database_drop(site: Site, suffix: str) -> None:
    if is_postgres(site):
        with psycopg.connect(site._pg_admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{_copy_name(site, suffix)}" WITH (FORCE)')
    else:
        Path(_copy_name(site, suffix)).unlink(missing_ok=True)


# --- the cluster -----------------------------------------------------------------------------


class ConvergenceCluster(Cluster):
    """A master and satellites 2 and 3, each satellite behind its own proxy; see the module."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir, satellites=2, env=None)
        for satellite in self.satellites:
            satellite.extra_env.update(SATELLITE_ENV)
        self.proxies = {
            satellite.name: LinkProxy(self.master.port, lifetime=24 * 3600)
            for satellite in self.satellites
        }
        self._snapshots: dict[str, str] = {}

    def provision(self, **options: Any) -> None:
        super().provision(stores=3, items=12, names=10, **options)
        for satellite in self.satellites:
            url = self.proxies[satellite.name].url
            satellite.manage("sync_peer", "remove", "--sync-id", "1")
            satellite.manage(
                "sync_peer", "add", "--sync-id", "1", "--name", "master", "--store", "S001",
                "--url", url,
            )  # fmt: skip
            report = sync_now(satellite)
            assert report["result"] == "success", report
        # Each sequence starts the master itself, on a database restored from these.
        self.master.stop()
        for site in self.sites:
            self._snapshots[site.name] = database_save(site, "snap")

    def restore(self) -> None:
        """Put every database back as provisioning left it; the master must be stopped."""
        for site in self.sites:
            database_load(site, self._snapshots[site.name])
        for proxy in self.proxies.values():
            proxy.pass_through()
            proxy.capture(None)
            proxy.captured.clear()

    def destroy(self) -> None:
        for proxy in self.proxies.values():
            proxy.close()
        super().destroy()
        for site in self.sites:
            for suffix in ("snap", "backup"):
                database_drop(site, suffix)


def sync_now_start(site: Site) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "manage.py", "sync_now", "--json"],
        cwd=ROOT,
        env=site.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def sync_now_report(process: subprocess.Popen[str]) -> dict[str, Any]:
    """Wait for a sync_now process; its JSON report, or what is known of a run that died."""
    try:
        stdout, stderr = process.communicate(timeout=SYNC_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        return {"result": "hung", "message": f"sync_now ran past {SYNC_TIMEOUT} s"}
    if process.returncode == -signal.SIGKILL:
        return {"result": "killed"}
    lines = stdout.strip().splitlines()
    try:
        return dict(json.loads(lines[-1]))
    except (IndexError, ValueError):
        return {"result": "crashed", "message": f"exit {process.returncode}: {stderr[-2000:]}"}


def sync_now(site: Site) -> dict[str, Any]:
    return sync_now_report(sync_now_start(site))


# --- the agents ------------------------------------------------------------------------------


class Agent:
    """A site's long-lived everyday user (tests/convergence_agent.py)."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.convergence_agent"],
            cwd=ROOT,
            env=site.env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=site.log_path.open("ab"),
            text=True,
            start_new_session=True,
        )
        self._ready = False

    def ask(self, action: Action) -> dict[str, Any]:
        stdin, stdout = self._pipes()
        if not self._ready:
            self._ready = json.loads(stdout.readline()).get("ready", False)
        stdin.write(json.dumps(action) + "\n")
        stdin.flush()
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"The agent of {self.site.name} died: see {self.site.log_path}")
        return dict(json.loads(line))

    def _pipes(self) -> tuple[IO[str], IO[str]]:
        assert self.process.stdin
        assert self.process.stdout
        return self.process.stdin, self.process.stdout

    def close(self) -> None:
        with suppress(OSError):
            self._pipes()[0].close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)


# --- one sequence ----------------------------------------------------------------------------


@dataclass
class Tracked:
    """A transaction an action entered: where, its id, and its status (draft, finalised, deleted,
    or unknown once its satellite was restored from a backup)."""

    site: str
    id: str
    kind: str
    status: str = "draft"


@dataclass
class Outcome:
    """What one sequence did and found."""

    seed: int | None
    actions: list[Action] = field(default_factory=list)
    figures: Counter[str] = field(default_factory=Counter)
    discrepancies: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def report(self) -> str:
        """The seed, the discrepancies and the action list: enough to replay the sequence."""
        actions = "\n".join(json.dumps(action) for action in self.actions)
        return (
            f"Sequence with seed {self.seed}: {len(self.discrepancies)} discrepancies\n"
            + "\n".join(f"  - {d}" for d in self.discrepancies)
            + f"\nActions ({len(self.actions)}; replay them with bench/convergence.py --replay):\n"
            + actions
        )


class Sequence:
    """One random sequence (or a replayed one) on a restored cluster, healed and checked."""

    def __init__(self, cluster: ConvergenceCluster, seed: int | None = None) -> None:
        self.cluster = cluster
        # Not for secrets: a seeded generator, so that a seed replays its sequence.
        self.random = random.Random(seed)  # noqa: S311
        self.outcome = Outcome(seed)
        self.sites = {site.name: site for site in cluster.sites}
        self.master = cluster.master
        self.agents: dict[str, Agent] = {}
        self.tracked: dict[str, Tracked] = {}
        # Per satellite: each captured push and the master's last change from that satellite
        # when the run that carried it had ended.
        self.captures: dict[str, list[tuple[bytes, int]]] = defaultdict(list)
        self.codes = 0
        self.backups: dict[str, str] = {}
        self.freed: dict[str, list[str]] = {"item": [], "name": []}

    # --- the whole sequence

    def run(self, steps: int) -> Outcome:
        return self._perform(lambda: (self.draw() for _ in range(steps)))

    def replay(self, actions: list[Action]) -> Outcome:
        return self._perform(lambda: iter(actions))

    def _perform(self, actions: Callable[[], Iterator[Action]]) -> Outcome:
        started = time.monotonic()
        self.cluster.restore()
        self.master.start()
        for proxy in self.cluster.proxies.values():
            proxy.capture("/push/")
        self.agents = {name: Agent(site) for name, site in self.sites.items()}
        try:
            for action in actions():
                self.outcome.actions.append(action)
                self.perform(action)
            self.heal()
            self.check()
        finally:
            for agent in self.agents.values():
                agent.close()
            self.master.stop()
            self.outcome.seconds = time.monotonic() - started
        return self.outcome

    def count(self, figure: str) -> None:
        self.outcome.figures[figure] += 1

    def discrepancy(self, message: str) -> None:
        self.outcome.discrepancies.append(message)

    # --- drawing actions (only here is the generator used)

    def draw(self) -> Action:
        roll = self.random.random()
        if roll < 0.45:
            return self._draw_store_action(self.random.choice(list(self.sites)))
        if roll < 0.60:
            return self._draw_master_action()
        satellite = self.random.choice([s.name for s in self.cluster.satellites])
        if roll < 0.78:
            return {"op": "sync", "site": satellite}
        fault = self.random.choice(FAULTS)
        if fault == "restore_backup":
            # The operator takes a backup first; a later draw restores one.
            if self.backups:
                return {"op": fault, "site": self.random.choice(sorted(self.backups))}
            return {"op": "backup", "site": satellite}
        if fault == "lose_push":
            return {"op": fault, "site": satellite}
        if fault == "replay" and self.captures[satellite]:
            return {
                "op": "replay",
                "site": satellite,
                "capture": self.random.randrange(len(self.captures[satellite])),
            }
        if fault in ("kill_run", "kill_master"):
            return {
                "op": fault,
                "site": satellite,
                "on": self.random.choice(REQUESTS),
                "delay": round(self.random.uniform(0, 0.03), 3),
            }
        direction = self.random.choice((TO_SERVER, TO_CLIENT))
        return {
            "op": "cut",
            "site": satellite,
            "direction": direction,
            "after": self.random.randrange(CUT_RANGE[direction]),
        }

    def _open(self, site: str, *statuses: str) -> list[str]:
        return [h for h, t in self.tracked.items() if t.site == site and t.status in statuses]

    def _draw_store_action(self, site: str) -> Action:
        drafts = self._open(site, "draft")
        roll = self.random.random()
        if drafts and roll < 0.6:
            handle = self.random.choice(drafts)
            if roll < 0.22:
                return {"op": "finalise", "site": site, "tx": handle}
            if roll < 0.32:
                return {"op": "delete", "site": site, "tx": handle}
            if roll < 0.46:
                return {
                    "op": "edit_date",
                    "site": site,
                    "tx": handle,
                    "date": self._date(),
                }
            return {
                "op": "edit_quantity",
                "site": site,
                "tx": handle,
                "line": self.random.randrange(3),
                "quantity": self.random.randint(1, 9),
            }
        return self._draw_create(site)

    def _date(self) -> str:
        return (
            datetime.date(2024, 1, 1) + datetime.timedelta(self.random.randrange(60))
        ).isoformat()

    def _draw_create(self, site: str) -> Action:
        seen = self.agents[site].ask({"op": "state"})
        items = [code for code, active in seen["items"] if active]
        kind = self.random.choice(KINDS)
        wanted = {"supplier_invoice": "supplier", "customer_invoice": "customer"}.get(kind)
        names = [
            code for code, name_kind, active in seen["names"] if active and name_kind == wanted
        ]
        lines = []
        for _ in range(self.random.randint(1, 3)):
            stock = [line for line in seen["stock"] if line[0] in items]
            if kind != "supplier_invoice" and stock and self.random.random() < 0.7:
                item, batch, expiry, on_hand = self.random.choice(stock)
                quantity = self.random.randint(1, on_hand)
                if kind == "inventory_adjustment":
                    quantity = -quantity
            elif items:
                item, batch = self.random.choice(items), self.random.choice(BATCHES)
                expiry, quantity = self.random.choice(EXPIRIES), self.random.randint(1, 20)
            else:
                continue
            lines.append({"item": item, "batch": batch, "expiry": expiry, "quantity": quantity})
        return {
            "op": "create",
            "site": site,
            "tx": f"T{len(self.tracked) + 1}",
            "kind": kind,
            "date": self._date(),
            "name": self.random.choice(names) if names else None,
            "lines": lines,
        }

    def _fresh_code(self, model: str) -> str:
        if self.freed[model] and self.random.random() < 0.5:
            return self.freed[model].pop(self.random.randrange(len(self.freed[model])))
        self.codes += 1
        return f"{model[0].upper()}X{self.codes:03d}"

    def _draw_master_action(self) -> Action:
        seen = self.agents["master"].ask({"op": "state"})
        model = self.random.choice(("item", "name"))
        codes = [row[0] for row in seen[f"{model}s"]]
        operation = self.random.choice(
            ("add", "add", "recode", "recode", "swap", "deactivate", "delete_master")
        )
        if operation == "add" or len(codes) < 2:
            code = self._fresh_code(model)
            if model == "item":
                return {"op": "item_add", "site": "master", "code": code, "label": f"Item {code}"}
            kind = self.random.choice(("customer", "supplier"))
            return {"op": "name_add", "site": "master", "code": code, "label": code, "kind": kind}
        first, second = self.random.sample(codes, 2)
        if operation == "recode":
            new = self._fresh_code(model)
            self.freed[model].append(first)
            return {"op": "recode", "site": "master", "model": model, "code": first, "new": new}
        if operation == "swap":
            return {"op": "swap", "site": "master", "model": model, "a": first, "b": second}
        if operation == "delete_master":
            self.freed[model].append(first)
        return {"op": operation, "site": "master", "model": model, "code": first}

    # --- performing actions (the same for drawn and replayed sequences)

    def perform(self, action: Action) -> None:
        operation = action["op"]
        if operation in ("sync", *FAULTS):
            self.count("faults" if operation in FAULTS else "syncs")
            self.count(operation)
            satellite = self.sites[action["site"]]
            getattr(self, f"_{operation}")(satellite, action)
            return
        if operation == "backup":
            self.count("backups")
            self.backups[action["site"]] = database_save(self.sites[action["site"]], "backup")
            return
        self.count("actions")
        answer = self.agents[action["site"]].ask(action)
        action_is = "done" if answer["ok"] else ("refused" if "refused" in answer else "error")
        action_is += f" ({answer['result']})" if answer.get("result") else ""
        self.count(f"{operation} {action_is}")
        if "error" in answer:
            self.discrepancy(
                f"{action['site']}: everyday action {operation} failed: {answer['error']}"
            )
        if not answer["ok"]:
            return
        if operation == "create":
            self.tracked[action["tx"]] = Tracked(action["site"], answer["id"], action["kind"])
        elif operation in ("finalise", "delete"):
            self.tracked[action["tx"]].status = f"{operation}d"

    def _sync(self, satellite: Site, action: Action) -> None:
        self._note(satellite, sync_now(satellite), "sync")

    def _note(self, satellite: Site, report: dict[str, Any], during: str) -> None:
        """Count a run's result by what was done to it, and date the pushes it carried."""
        result = report.get("result", "")
        self.count(f"runs {during} {result} {report.get('error_code', '')}".strip())
        if result in ("crashed", "hung"):
            self.discrepancy(f"{satellite.name}: sync_now {result}: {report.get('message')}")
        captured = self.cluster.proxies[satellite.name].captured
        position = self._master_position(satellite)
        known = self.captures[satellite.name]
        known.extend((request, position) for request in captured[len(known) :])

    def _master_position(self, satellite: Site) -> int:
        sync_id = self._sync_id(satellite)
        _, rows = query(
            self.master, f"SELECT max(seq) FROM sync_changelog WHERE source_site = {sync_id}"
        )
        return int(rows[0][0] or 0)

    def _sync_id(self, satellite: Site) -> int:
        return self.cluster.satellites.index(satellite) + 2

    def _watched_run(
        self, satellite: Site, action: Action, fault: Callable[[subprocess.Popen[str]], None]
    ) -> bool:
        """Run sync_now and call `fault` `delay` s after the run sends a request naming `on`."""
        proxy = self.cluster.proxies[satellite.name]
        fired, done = threading.Event(), threading.Event()
        process: list[subprocess.Popen[str]] = []

        def strike() -> None:
            fired.set()
            time.sleep(action["delay"])
            try:
                fault(process[0])
            finally:
                done.set()

        proxy.on_request_sent(action["on"], strike)
        try:
            process.append(sync_now_start(satellite))
            report = sync_now_report(process[0])
        finally:
            proxy.pass_through()
        if fired.is_set():
            done.wait(30)
        self._note(satellite, report, action["op"])
        return fired.is_set()

    def _kill_run(self, satellite: Site, action: Action) -> None:
        def kill(process: subprocess.Popen[str]) -> None:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)

        if not self._watched_run(satellite, action, kill):
            self.count("kill_run missed")

    def _kill_master(self, satellite: Site, action: Action) -> None:
        if not self._watched_run(satellite, action, lambda _: self.master.stop(signal.SIGKILL)):
            self.count("kill_master missed")
            self.master.stop(signal.SIGKILL)
        self.master.start()

    def _cut(self, satellite: Site, action: Action) -> None:
        proxy = self.cluster.proxies[satellite.name]
        cuts = proxy.cuts
        proxy.cut_after(action["direction"], action["after"])
        try:
            report = sync_now(satellite)
        finally:
            proxy.pass_through()
        if proxy.cuts == cuts:
            self.count("cut missed")
        self._note(satellite, report, f"cut {action['direction']}")

    def _lose_push(self, satellite: Site, action: Action) -> None:
        """Run sync_now with the link dropped as its first push completes: the master never
        gets that push, the proxy keeps it, and a later replay delivers it late."""
        proxy = self.cluster.proxies[satellite.name]
        cuts = proxy.cuts
        proxy.drop_request("/push/")
        try:
            report = sync_now(satellite)
        finally:
            proxy.pass_through()
        if proxy.cuts == cuts:
            self.count("lose_push missed")
        self._note(satellite, report, "lose_push")

    def _replay(self, satellite: Site, action: Action) -> None:
        """Send a captured push to the master again; it must never bring back an older state.

        Once the master has applied a later push from that satellite, which carries the current
        state of every record the captured one held, the captured push must change nothing.
        """
        captures = self.captures[satellite.name]
        if not captures:
            self.count("replay missed")
            return
        request, position = captures[action["capture"] % len(captures)]
        later = self._master_position(satellite) > position
        store = self._store_id(self._hosted_code(satellite))
        before = store_part(read_tables(self.master), store)
        status, answer = send_raw(self.master.port, request)
        after = store_part(read_tables(self.master), store)
        code = answer.get("code") or ("duplicate" if answer.get("duplicate") else "applied")
        self.count(f"replay {status} {code}")
        if status >= 500 or not answer:
            self.discrepancy(f"{satellite.name}: a replayed push got HTTP {status}: {answer}")
        changed = [
            line
            for table in STORE_TABLES
            for line in table_differences(table, before[table], after[table])
        ]
        if later and changed:
            self.discrepancy(
                f"{satellite.name}: a push replayed after a later one was applied (HTTP "
                f"{status}, {code}) brought back an older state: " + "; ".join(changed)
            )

    def _restore_backup(self, satellite: Site, action: Action) -> None:
        """Put a satellite back as its last backup left it: what it entered since and had not
        pushed is lost, what it pushed must come back from the master, and it must push on."""
        if satellite.name not in self.backups:
            self.count("restore_backup missed")
            return
        database_load(satellite, self.backups[satellite.name])
        for tracked in self.tracked.values():
            if tracked.site == satellite.name:
                # Pushed or not, kept or lost: the checks compare it with the master's copy.
                tracked.status = "unknown"

    def _hosted_code(self, satellite: Site) -> str:
        return f"S{self._sync_id(satellite):03d}"

    def _store_id(self, code: str) -> str:
        stores = read_tables(self.master)["stores_store"]
        return next(pk for pk, row in stores.items() if dict(row)["code"] == code)

    # --- healing and checking

    def heal(self) -> None:
        """Sync every satellite until a round moves nothing; a run that keeps failing is stuck."""
        failures: dict[str, dict[str, Any]] = {}
        for round_number in range(1, HEAL_ROUNDS + 1):
            moved, before, failures = False, failures, {}
            for satellite in self.cluster.satellites:
                report = sync_now(satellite)
                if report.get("result") == "already_running":
                    time.sleep(LEASE_SECONDS)  # a killed run's lease runs out
                    report = sync_now(satellite)
                self._note(satellite, report, "heal")
                if report.get("result") != "success":
                    failures[satellite.name] = report
                elif report["records_pushed"] or report["records_pulled"]:
                    moved = True
            if not failures and not moved:
                self.outcome.figures["heal rounds"] += round_number
                return
            if failures and not moved and _same_failures(before, failures):
                break  # the same runs failed the same way twice: more rounds will not help
        for name, report in failures.items():
            self.discrepancy(
                f"{name}: sync stuck, healing rounds fail: "
                f"{report.get('result')} {report.get('error_code', '')}: {report.get('message')}"
            )
        if not failures:
            self.discrepancy(f"still moving records after {HEAL_ROUNDS} healing rounds")

    def check(self) -> None:
        """Everything the sites must agree on once healed."""
        tables = {name: read_tables(site) for name, site in self.sites.items()}
        on_master = tables["master"]
        for satellite in self.cluster.satellites:
            theirs = tables[satellite.name]
            for table in MASTER_TABLES:
                for line in table_differences(table, on_master[table], theirs[table]):
                    self.discrepancy(f"{satellite.name}: master data differ: {line}")
            store = self._store_id(self._hosted_code(satellite))
            own = store_part(theirs, store)
            copy = store_part(on_master, store)
            for table in STORE_TABLES:
                for line in table_differences(table, copy[table], own[table]):
                    self.discrepancy(
                        f"{satellite.name}: its store differs from the master's copy: {line}"
                    )
                foreign = set(theirs[table]) - set(own[table])
                if foreign:
                    self.discrepancy(
                        f"{satellite.name}: {len(foreign)} {table} rows of other stores, e.g. "
                        f"{sorted(foreign)[0]}"
                    )
        self._check_tracked(tables)
        for name, site_tables in tables.items():
            self._check_stock(name, site_tables)
            _, rows = query(self.sites[name], "SELECT count(*) FROM sync_bufferedrecord")
            if rows[0][0]:
                self.discrepancy(f"{name}: {rows[0][0]} buffered records left after healing")

    def _check_tracked(self, tables: dict[str, dict[str, Table]]) -> None:
        on_master = tables["master"]["stores_transaction"]
        for handle, tracked in self.tracked.items():
            if tracked.status == "unknown":
                continue
            for where in {"master", tracked.site}:
                row = tables[where]["stores_transaction"].get(tracked.id)
                if tracked.status == "deleted" and row is not None:
                    self.discrepancy(
                        f"{where}: {handle} of {tracked.site} was deleted but is there"
                    )
                elif tracked.status != "deleted" and row is None:
                    self.discrepancy(f"{where}: {handle} entered on {tracked.site} is missing")
                elif row is not None and dict(row)["status"] != tracked.status:
                    self.discrepancy(
                        f"{where}: {handle} of {tracked.site} is {dict(row)['status']}, "
                        f"not {tracked.status}"
                    )
        untracked = set(on_master) - {t.id for t in self.tracked.values()}
        if untracked:
            self.discrepancy(
                f"master: {len(untracked)} transactions no action entered, e.g. {min(untracked)}"
            )

    def _check_stock(self, name: str, tables: dict[str, Table]) -> None:
        """Stock lines equal the sum of the finalised movements, per store, item, batch, expiry."""
        moved: Counter[tuple[Any, ...]] = Counter()
        transactions = {pk: dict(row) for pk, row in tables["stores_transaction"].items()}
        for row in tables["stores_transactionline"].values():
            line = dict(row)
            header = transactions[line["transaction_id"]]
            if header["status"] == "finalised":
                key = (header["store_id"], line["item_id"], line["batch"], line["expiry"])
                moved[key] += DIRECTION[header["kind"]] * line["quantity"]
        held: Counter[tuple[Any, ...]] = Counter()
        for row in tables["stores_stockline"].values():
            line = dict(row)
            held[(line["store_id"], line["item_id"], line["batch"], line["expiry"])] += line[
                "quantity"
            ]
        for key in sorted(set(moved) | set(held)):
            if moved[key] != held[key]:
                self.discrepancy(
                    f"{name}: stock of item {key[1]} batch {key[2]} expiry {key[3]} in store "
                    f"{key[0]} is {held[key]}, its finalised movements add up to {moved[key]}"
                )


def _same_failures(first: dict[str, dict[str, Any]], second: dict[str, dict[str, Any]]) -> bool:
    def seen(failures: dict[str, dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
        return {name: (r.get("error_code"), r.get("message")) for name, r in failures.items()}

    return seen(first) == seen(second)


def send_raw(port: int, request: bytes) -> tuple[int, dict[str, Any]]:
    """Send a captured HTTP request as it was to 127.0.0.1:port; its status and JSON answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(request)
        response = http.client.HTTPResponse(sock, method="POST")
        response.begin()
        raw = response.read()
    if response.getheader("Content-Encoding", "") == "gzip":
        raw = gzip.decompress(raw)
    try:
        answer = json.loads(raw)
    except ValueError:
        return response.status, {}
    return response.status, answer if isinstance(answer, dict) else {}


@contextmanager
def convergence_cluster(workdir: Path) -> Iterator[ConvergenceCluster]:
    """A provisioned ConvergenceCluster, destroyed afterwards."""
    cluster = ConvergenceCluster(workdir)
    try:
        cluster.provision()
        yield cluster
    finally:
        cluster.destroy()
