"""Sync benchmark: initial pull, bulk push and an idle run between a real master and satellite."""

import argparse
import json
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers import Cluster, Site, wait_for_port  # noqa: E402

FULL_SCALE = {"items": 20_000, "names": 5_000, "transactions": 2_000}
SEED_TIMEOUT_SECONDS = 180.0
BULK_BATCH_SIZE = 500
# Each ceiling method's figure is the best of this many runs.
CEILING_REPEATS = 3
IDLE_RUNS = 3
GOAL_RECORDS_PER_SECOND = 20_000
GOAL_SHARE_OF_CEILING = 0.6
GOAL_BYTES_PER_RECORD = 60
GOAL_IDLE_SECONDS = 0.1
# The whole `sync_now` command as the user waits for it: (records/s, database it applies to).
GOAL_WHOLE_W1 = [(15_000, "postgresql"), (12_000, "sqlite")]
GOAL_WHOLE_W2 = [(15_000, "postgresql")]

MASTER_MODELS = ["stores.Store", "stores.Item", "stores.Name"]
STORE_MODELS = ["stores.Transaction", "stores.TransactionLine", "stores.StockLine"]

# The admin's Test connection: the satellite's first handshake, which enrols it.
ENROL_SCRIPT = "from sync.run import connection_test; print(connection_test())"

# Run with `manage.py shell -c`; PARAMS is replaced by a JSON literal.
EXPORT_SCRIPT = """
import json
from django.apps import apps
params = json.loads(PARAMS)
data = {}
for label in params["models"]:
    model = apps.get_model(label)
    names = [field.attname for field in model._meta.concrete_fields]
    data[label] = list(model.objects.order_by().values(*names))
with open(params["path"], "w") as out:
    json.dump(data, out, default=str)
print(json.dumps({label: len(rows) for label, rows in data.items()}))
"""

# The same rows written into a migrated database, triggers enabled, parents before children, by
# each method in turn; every run but the very last (a COPY, or on SQLite an executemany upsert) is
# rolled back, so the next run writes the same rows into the same empty tables and the rows stay
# for the next workload's foreign keys. Values are converted to database values before the clock
# starts: this measures what the database takes, not Python's decoding.
CEILING_SCRIPT = """
import json, time
from django.apps import apps
from django.db import connection, transaction
params = json.loads(PARAMS)
with open(params["path"]) as source:
    data = json.load(source)
tables = []
for label in params["models"]:
    model = apps.get_model(label)
    fields = list(model._meta.concrete_fields)
    python = [[None if row[f.attname] is None else f.to_python(row[f.attname]) for f in fields]
              for row in data[label]]
    tables.append({
        "model": model,
        "name": model._meta.db_table,
        "fields": fields,
        "columns": ", ".join(connection.ops.quote_name(f.column) for f in fields),
        "update": ", ".join(f"{connection.ops.quote_name(f.column)} = EXCLUDED."
                            f"{connection.ops.quote_name(f.column)}"
                            for f in fields if not f.primary_key),
        "python": python,
        "db": [[f.get_db_prep_value(v, connection) for f, v in zip(fields, row)]
               for row in python],
    })

def copy_upsert(table):
    staging = f"bench_staging_{table['name']}"
    with connection.connection.cursor() as cursor:
        cursor.execute(f"CREATE TEMP TABLE {staging} (LIKE {table['name']}) ON COMMIT DROP")
        with cursor.copy(f"COPY {staging} ({table['columns']}) FROM STDIN") as copy:
            for row in table["db"]:
                copy.write_row(row)
        cursor.execute(f"INSERT INTO {table['name']} ({table['columns']}) "
                       f"SELECT {table['columns']} FROM {staging} "
                       f"ON CONFLICT (id) DO UPDATE SET {table['update']}")

def unnest_upsert(table):
    arrays = ", ".join(f"%s::{f.db_type(connection)}[]" for f in table["fields"])
    columns = [list(column) for column in zip(*table["db"])]
    with connection.cursor() as cursor:
        cursor.execute(f"INSERT INTO {table['name']} ({table['columns']}) "
                       f"SELECT * FROM unnest({arrays}) "
                       f"ON CONFLICT (id) DO UPDATE SET {table['update']}", columns)

def executemany_upsert(table):
    marks = ", ".join("?" for _ in table["fields"])
    connection.connection.executemany(
        f"INSERT INTO {table['name']} ({table['columns']}) VALUES ({marks}) "
        f"ON CONFLICT (id) DO UPDATE SET {table['update']}", table["db"])

def bulk_create(table):
    names = [f.attname for f in table["fields"]]
    records = [table["model"](**dict(zip(names, row))) for row in table["python"]]
    table["model"].objects.bulk_create(records, batch_size=params["batch_size"])

if connection.vendor == "postgresql":
    methods = {"bulk_create": bulk_create, "unnest_upsert": unnest_upsert,
               "copy_upsert": copy_upsert}
else:
    methods = {"bulk_create": bulk_create, "executemany_upsert": executemany_upsert}
connection.ensure_connection()
results = {}
for number, (method, write) in enumerate(methods.items()):
    runs = []
    for run in range(params["repeats"]):
        start = time.perf_counter()
        with transaction.atomic():
            for table in tables:
                write(table)
            last = number == len(methods) - 1 and run == params["repeats"] - 1
            transaction.set_rollback(not last)
        runs.append(time.perf_counter() - start)
    results[method] = runs
records = sum(len(table["db"]) for table in tables)
print(json.dumps({"records": records, "methods": results}))
"""

COUNT_SCRIPT = """
import json
from sync.registry import SYNCED_TABLES
print(json.dumps({t.name: t.model._base_manager.count() for t in SYNCED_TABLES}))
"""

# Fallback when the services are too slow: finalised transactions written with bulk_create, in
# the shape demo_transactions makes (two in three receive new batches, the rest issue stock).
BULK_TRANSACTIONS_SCRIPT = """
import datetime, json, random
from decimal import Decimal
from django.db import transaction
from django.db.models import Max
from django.utils import timezone
from stores.demo import LINES_PER_TRANSACTION as PER
from stores.models import Item, Name, StockLine, Store, Transaction, TransactionLine
from sync.selectors import hosted_store_id
params = json.loads(PARAMS)
store = Store.objects.get(pk=hosted_store_id())
items = list(Item.objects.filter(active=True).values_list("pk", flat=True))
suppliers = list(Name.objects.filter(active=True, kind="supplier").values_list("pk", flat=True))
customers = list(Name.objects.filter(active=True, kind="customer").values_list("pk", flat=True))
rng = random.Random(params["seed"])
number = store.transactions.aggregate(last=Max("number"))["last"] or 0
count = max(0, params["wanted"] - store.transactions.count())
today = timezone.localdate()
stock = {}
transactions, lines = [], []
for index in range(count):
    number += 1
    date = today - datetime.timedelta(days=count - index)
    keys = rng.sample(list(stock), min(len(stock), 3 * PER))
    keys = [key for key in keys if stock[key].quantity > 1]
    if index % 3 == 2 and keys:
        record = Transaction(store=store, kind="customer_invoice", number=number, date=date,
                             name_id=rng.choice(customers), status="finalised")
        for key in keys[:PER]:
            quantity = rng.randint(1, stock[key].quantity // 2)
            stock[key].quantity -= quantity
            lines.append(TransactionLine(transaction=record, item_id=key[0], batch=key[1],
                expiry=key[2], quantity=quantity, sell_price=Decimal(rng.randint(10, 500)) / 100))
    else:
        record = Transaction(store=store, kind="supplier_invoice", number=number, date=date,
                             name_id=rng.choice(suppliers), status="finalised")
        for line, item in enumerate(rng.sample(items, min(len(items), PER))):
            key = (item, f"{store.code}-B{number}-{line}",
                   today + datetime.timedelta(days=rng.randint(30, 1000)))
            quantity = rng.randint(10, 1000)
            stock[key] = StockLine(store=store, item_id=key[0], batch=key[1], expiry=key[2],
                                   quantity=quantity)
            lines.append(TransactionLine(transaction=record, item_id=key[0], batch=key[1],
                expiry=key[2], quantity=quantity, cost_price=Decimal(rng.randint(5, 300)) / 100))
    transactions.append(record)
with transaction.atomic():
    Transaction.objects.bulk_create(transactions, batch_size=500)
    TransactionLine.objects.bulk_create(lines, batch_size=500)
    StockLine.objects.bulk_create(stock.values(), batch_size=500)
print(json.dumps({"transactions": len(transactions), "lines": len(lines), "stock": len(stock)}))
"""


def database_vendor() -> str:
    url = os.environ.get("DATABASE_URL", "")
    return "postgresql" if url.startswith(("postgres://", "postgresql://")) else "sqlite"


def run_script(site: Site, script: str, params: dict[str, Any]) -> dict[str, Any]:
    """Run a `manage.py shell -c` script on `site` and return the JSON it printed last."""
    code = script.replace("PARAMS", repr(json.dumps(params)))
    result = site.manage("shell", "-c", code, timeout=1800)
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


class Profiler:
    """With --profile, runs the master and the satellite's sync_now under cProfile."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)

    def sync_now(self, satellite: Site, label: str) -> tuple[dict[str, Any], float]:
        """Run the satellite's `sync_now --json`; returns its report and the wall time."""
        start = time.perf_counter()
        if self.directory is None:
            report = satellite.manage_json("sync_now")
        else:
            output = self.directory / f"satellite_{label}.prof"
            result = subprocess.run(
                [sys.executable, "-m", "cProfile", "-o", str(output), "manage.py", "sync_now"]
                + ["--json"],
                cwd=ROOT,
                env=satellite.env(),
                capture_output=True,
                text=True,
                timeout=1800,
                check=True,
            )
            report = dict(json.loads(result.stdout.strip().splitlines()[-1]))
        wall = time.perf_counter() - start
        if report.get("result") != "success":
            raise RuntimeError(f"sync_now failed: {report}")
        return report, wall

    def master_start(self, master: Site, label: str) -> None:
        """(Re)start the master: under cProfile in one thread when profiling."""
        if self.directory is None:
            return
        master.stop()
        output = self.directory / f"master_{label}.prof"
        log = master.log_path.open("ab")
        master.process = subprocess.Popen(
            [sys.executable, "-m", "cProfile", "-o", str(output), "manage.py", "runserver"]
            + [f"127.0.0.1:{master.port}", "--noreload", "--nothreading"],
            cwd=ROOT,
            env=master.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for_port(master.port)

    def master_stop(self, master: Site) -> None:
        """Stop the profiled master with SIGINT so that cProfile writes its file."""
        if self.directory is None or master.process is None:
            return
        master.process.send_signal(signal.SIGINT)
        master.process.wait(timeout=60)
        master.process = None

    def report(self) -> None:
        """Print the top functions of every profile to stderr."""
        if self.directory is None:
            return
        for path in sorted(self.directory.glob("*.prof")):
            text = self.directory / f"{path.stem}.txt"
            with text.open("w") as out:
                for sort in ("cumulative", "tottime"):
                    stats = pstats.Stats(str(path), stream=out)
                    stats.strip_dirs().sort_stats(sort).print_stats(45)
            print(f"profile {path.stem}: {text}", file=sys.stderr)


def goal(text: str, met: bool, applies: bool = True) -> dict[str, Any]:
    return {"goal": text, "met": met, "applies": applies}


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages: other work on the machine skews every timing."""
    return [round(value, 2) for value in os.getloadavg()]


def rate(records: int, seconds: float) -> float:
    return records / seconds if seconds else 0.0


def row_counts(site: Site) -> dict[str, int]:
    """Rows per synced table on `site`."""
    return {table: int(count) for table, count in run_script(site, COUNT_SCRIPT, {}).items()}


def rows_added(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {table: after[table] - before[table] for table in after if after[table] != before[table]}


def transfer_line(
    workload: str,
    report: dict[str, Any],
    wall: float,
    added: dict[str, int],
    ceiling: dict[str, Any],
    whole_goals: list[tuple[int, str]],
    load_before: list[float],
) -> dict[str, Any]:
    """One JSON line for W1 or W2: whole-command and inner rates of distinct records, wire bytes
    per record and the share of the same-run COPY (SQLite: executemany) ceiling."""
    on_postgres = database_vendor() == "postgresql"
    records = sum(added.values())
    inner = float(report["duration_seconds"])
    wire_bytes = int(report["bytes_sent"]) + int(report["bytes_received"])
    methods = {
        method: {
            "seconds": round(min(runs), 3),
            "records_per_second": round(rate(ceiling["records"], min(runs))),
        }
        for method, runs in ceiling["methods"].items()
    }
    best = "copy_upsert" if on_postgres else "executemany_upsert"
    ceiling_rate = rate(ceiling["records"], min(ceiling["methods"][best]))
    inner_rate, whole_rate = rate(records, inner), rate(records, wall)
    bytes_per_record = wire_bytes / records if records else float("inf")
    goals = [
        goal(
            f"inner records_per_second >= {GOAL_RECORDS_PER_SECOND} on PostgreSQL",
            inner_rate >= GOAL_RECORDS_PER_SECOND,
            on_postgres,
        ),
        goal(
            f"inner share of the COPY ceiling >= {GOAL_SHARE_OF_CEILING} on PostgreSQL",
            inner_rate >= GOAL_SHARE_OF_CEILING * ceiling_rate,
            on_postgres,
        ),
        goal(
            f"bytes_per_record <= {GOAL_BYTES_PER_RECORD}",
            bytes_per_record <= GOAL_BYTES_PER_RECORD,
        ),
    ]
    for wanted, vendor in whole_goals:
        goals.append(
            goal(
                f"whole-command records_per_second >= {wanted} on {vendor} (quiet machine)",
                whole_rate >= wanted,
                database_vendor() == vendor,
            )
        )
    return {
        "workload": workload,
        "database": database_vendor(),
        # Distinct records: rows the receiving side gained in the synced tables (every record in
        # these workloads is new there), not the sync log's count, which includes re-sent rows.
        "distinct_records": records,
        "distinct_records_by_table": added,
        "sync_log_records": int(report["records_pushed"]) + int(report["records_pulled"]),
        "whole_command_seconds": round(wall, 3),
        "whole_command_records_per_second": round(whole_rate),
        "inner_seconds": round(inner, 3),
        "inner_records_per_second": round(inner_rate),
        "wire_bytes": wire_bytes,
        "bytes_per_record": round(bytes_per_record, 1),
        "ceiling_method": best,
        "ceiling_records": ceiling["records"],
        "ceiling_records_per_second": round(ceiling_rate),
        "inner_share_of_ceiling": round(inner_rate / ceiling_rate, 3),
        "whole_command_share_of_ceiling": round(whole_rate / ceiling_rate, 3),
        "ceiling_methods": methods,
        "goals": goals,
        "all_goals_met": all(g["met"] for g in goals if g["applies"]),
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }


def transactions_create(satellite: Site, wanted: int, bulk: bool) -> dict[str, Any]:
    """Give the satellite's store `wanted` finalised transactions; not part of any timing."""
    start = time.perf_counter()
    method = "bulk_create"
    if not bulk:
        method = "seed_demo"
        try:
            satellite.manage(
                "seed_demo", "--transactions", str(wanted), timeout=SEED_TIMEOUT_SECONDS
            )
        except subprocess.TimeoutExpired:
            # Finish what the services left undone (each transaction is atomic).
            method = "seed_demo+bulk_create"
            bulk = True
    if bulk:
        run_script(satellite, BULK_TRANSACTIONS_SCRIPT, {"wanted": wanted, "seed": 1})
    return {"method": method, "seconds": round(time.perf_counter() - start, 1)}


def ceiling_measure(source: Site, scratch: Site, models: list[str], path: Path) -> dict[str, Any]:
    """Write the rows `source` holds of `models` into `scratch` by each method, timed."""
    run_script(source, EXPORT_SCRIPT, {"models": models, "path": str(path)})
    params = {
        "models": models,
        "path": str(path),
        "batch_size": BULK_BATCH_SIZE,
        "repeats": CEILING_REPEATS,
    }
    return run_script(scratch, CEILING_SCRIPT, params)


def emit(line: dict[str, Any]) -> None:
    print(json.dumps(line), flush=True)


def bench(workdir: Path, scale: int, bulk: bool, profiler: Profiler) -> None:
    items = FULL_SCALE["items"] // scale
    names = FULL_SCALE["names"] // scale
    wanted = FULL_SCALE["transactions"] // scale
    cluster = Cluster(workdir, satellites=1)
    scratch: Site | None = None
    try:
        scratch = Site("scratch", workdir)
        scratch.manage("migrate", "--verbosity", "0")
        cluster.provision(stores=2, items=items, names=names, server="gunicorn")
        master, satellite = cluster.master, cluster.satellites[0]

        def measure(
            workload: str,
            receiver: Site,
            source: Site,
            models: list[str],
            whole_goals: list[tuple[int, str]],
        ) -> dict[str, Any]:
            """One satellite run, then the same rows written by each ceiling method."""
            before = row_counts(receiver)
            load_before = load_average()
            profiler.master_start(master, workload)
            report, wall = profiler.sync_now(satellite, workload)
            profiler.master_stop(master)
            added = rows_added(before, row_counts(receiver))
            ceiling = ceiling_measure(source, scratch, models, workdir / f"{workload}.json")
            return transfer_line(workload, report, wall, added, ceiling, whole_goals, load_before)

        # Enrolment (one slow password hash on the master, once in a satellite's life) is the
        # admin's Test connection, done first: W1 times the initial pull alone.
        start = time.perf_counter()
        satellite.manage("shell", "-c", ENROL_SCRIPT)
        enrolment = round(time.perf_counter() - start, 3)
        line = measure("W1", satellite, master, MASTER_MODELS, GOAL_WHOLE_W1)
        emit({**line, "enrolment_seconds_not_counted": enrolment})
        setup = transactions_create(satellite, wanted, bulk)
        line = measure("W2", master, satellite, STORE_MODELS, GOAL_WHOLE_W2)
        emit(
            {**line, "setup_method": setup["method"], "setup_seconds_not_counted": setup["seconds"]}
        )

        load_before = load_average()
        profiler.master_start(master, "W3")
        idle = [profiler.sync_now(satellite, f"W3_{run}") for run in range(IDLE_RUNS)]
        profiler.master_stop(master)
        # The median of a few idle runs: one run of ~0.1 s is at the mercy of the scheduler.
        inner = sorted(float(report["duration_seconds"]) for report, _ in idle)[IDLE_RUNS // 2]
        whole = sorted(wall for _, wall in idle)[IDLE_RUNS // 2]
        records = sum(int(r["records_pushed"]) + int(r["records_pulled"]) for r, _ in idle)
        goals = [goal(f"inner seconds < {GOAL_IDLE_SECONDS}", inner < GOAL_IDLE_SECONDS)]
        emit(
            {
                "workload": "W3",
                "database": database_vendor(),
                "sync_log_records": records,
                "inner_seconds_median": round(inner, 3),
                "whole_command_seconds_median": round(whole, 3),
                "inner_seconds_runs": [float(r["duration_seconds"]) for r, _ in idle],
                "whole_command_seconds_runs": [round(wall, 3) for _, wall in idle],
                "wire_bytes_median": sorted(
                    int(r["bytes_sent"]) + int(r["bytes_received"]) for r, _ in idle
                )[IDLE_RUNS // 2],
                "goals": goals,
                "all_goals_met": all(g["met"] for g in goals),
                "load_average_before": load_before,
                "load_average_after": load_average(),
            }
        )
    finally:
        cluster.destroy()
        if scratch is not None:
            scratch.destroy()
    profiler.report()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="Data scaled down 10x.")
    parser.add_argument(
        "--bulk-transactions",
        action="store_true",
        help="Create W2's transactions with bulk_create instead of seed_demo's services.",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="Run the master and sync_now under cProfile and keep the profiles in DIR.",
    )
    options = parser.parse_args()
    profiler = Profiler(options.profile.resolve() if options.profile else None)
    with tempfile.TemporaryDirectory(prefix="sync_bench_") as workdir:
        bench(Path(workdir), 10 if options.quick else 1, options.bulk_transactions, profiler)


if __name__ == "__main__":
    main()
