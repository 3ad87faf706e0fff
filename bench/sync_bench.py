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
# The ceiling is the best of this many bulk inserts (all but the last rolled back).
CEILING_REPEATS = 3
IDLE_RUNS = 3
GOAL_RECORDS_PER_SECOND = 20_000
GOAL_SHARE_OF_CEILING = 0.6
GOAL_BYTES_PER_RECORD = 60
GOAL_IDLE_SECONDS = 0.1

MASTER_MODELS = ["stores.Store", "stores.Item", "stores.Name"]
STORE_MODELS = ["stores.Transaction", "stores.TransactionLine", "stores.StockLine"]

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

INSERT_SCRIPT = """
import json, time
from django.apps import apps
from django.db import transaction
params = json.loads(PARAMS)
with open(params["path"]) as source:
    data = json.load(source)
batches = []
for label in params["models"]:
    model = apps.get_model(label)
    fields = {field.attname: field for field in model._meta.concrete_fields}
    batches.append((model, [
        model(**{k: None if v is None else fields[k].to_python(v) for k, v in row.items()})
        for row in data[label]
    ]))
runs = []
for run in range(params["repeats"]):
    for _, records in batches:
        for record in records:
            record._state.adding, record._state.db = True, None
    start = time.perf_counter()
    with transaction.atomic():
        for model, records in batches:
            model.objects.bulk_create(records, batch_size=params["batch_size"])
        # Every run but the last is rolled back, so the same rows go in again.
        transaction.set_rollback(run < params["repeats"] - 1)
    runs.append(time.perf_counter() - start)
records = sum(len(records) for _, records in batches)
print(json.dumps({"records": records, "seconds": min(runs), "runs": runs}))
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


def workload_line(
    workload: str,
    report: dict[str, Any],
    records: int,
    ceiling: dict[str, Any] | None,
    **extra: Any,
) -> dict[str, Any]:
    """One JSON line: throughput, wire bytes and the share of the bulk-insert ceiling."""
    database = database_vendor()
    seconds = float(report["duration_seconds"])
    wire_bytes = int(report["bytes_sent"]) + int(report["bytes_received"])
    rate = records / seconds if seconds else 0.0
    line: dict[str, Any] = {
        "workload": workload,
        "database": database,
        "records": records,
        "seconds": round(seconds, 3),
        "records_per_second": round(rate),
        "wire_bytes": wire_bytes,
        "bytes_per_record": round(wire_bytes / records, 1) if records else None,
        "ceiling_records_per_second": None,
        "share_of_ceiling": None,
    }
    if ceiling is not None:
        ceiling_rate = ceiling["records"] / ceiling["seconds"]
        line["ceiling_records_per_second"] = round(ceiling_rate)
        line["share_of_ceiling"] = round(rate / ceiling_rate, 3)
        on_postgres = database == "postgresql"
        line["goals"] = [
            goal(
                f"records_per_second >= {GOAL_RECORDS_PER_SECOND} on PostgreSQL",
                rate >= GOAL_RECORDS_PER_SECOND,
                on_postgres,
            ),
            goal(
                f"share_of_ceiling >= {GOAL_SHARE_OF_CEILING} on PostgreSQL",
                rate / ceiling_rate >= GOAL_SHARE_OF_CEILING,
                on_postgres,
            ),
            goal(
                f"bytes_per_record <= {GOAL_BYTES_PER_RECORD}",
                bool(records) and wire_bytes / records <= GOAL_BYTES_PER_RECORD,
            ),
        ]
    else:
        line["goals"] = [goal(f"seconds < {GOAL_IDLE_SECONDS}", seconds < GOAL_IDLE_SECONDS)]
    line["all_goals_met"] = all(g["met"] for g in line["goals"] if g["applies"])
    line.update(extra)
    # Other work on the machine skews the timings; the load average tells the reader.
    line["load_average_1m"] = round(os.getloadavg()[0], 2)
    return line


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
    """Bulk-insert the rows `source` holds of `models` straight into `scratch`, timed."""
    run_script(source, EXPORT_SCRIPT, {"models": models, "path": str(path)})
    params = {
        "models": models,
        "path": str(path),
        "batch_size": BULK_BATCH_SIZE,
        "repeats": CEILING_REPEATS,
    }
    return run_script(scratch, INSERT_SCRIPT, params)


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

        def measure(workload: str, source: Site, models: Any, counted: str, **extra: Any) -> None:
            """One satellite run, then the same rows bulk-inserted as its ceiling."""
            profiler.master_start(master, workload)
            report, wall = profiler.sync_now(satellite, workload)
            profiler.master_stop(master)
            ceiling = ceiling_measure(source, scratch, models, workdir / f"{workload}.json")
            emit(
                workload_line(
                    workload,
                    report,
                    int(report[counted]),
                    ceiling,
                    end_to_end_seconds=round(wall, 3),
                    ceiling_records=ceiling["records"],
                    ceiling_seconds=round(ceiling["seconds"], 3),
                    ceiling_runs_seconds=[round(run, 3) for run in ceiling["runs"]],
                    **extra,
                )
            )

        measure("W1", master, MASTER_MODELS, "records_pulled")
        setup = transactions_create(satellite, wanted, bulk)
        measure(
            "W2",
            satellite,
            STORE_MODELS,
            "records_pushed",
            setup_method=setup["method"],
            setup_seconds_not_counted=setup["seconds"],
        )

        profiler.master_start(master, "W3")
        idle = [profiler.sync_now(satellite, f"W3_{run}") for run in range(IDLE_RUNS)]
        profiler.master_stop(master)
        # The median of a few idle runs: one run of ~0.1 s is at the mercy of the scheduler.
        report, wall = sorted(idle, key=lambda pair: float(pair[0]["duration_seconds"]))[
            IDLE_RUNS // 2
        ]
        records = sum(int(r["records_pushed"]) + int(r["records_pulled"]) for r, _ in idle)
        emit(
            workload_line(
                "W3",
                report,
                records,
                None,
                end_to_end_seconds=round(wall, 3),
                runs_seconds=[float(r["duration_seconds"]) for r, _ in idle],
                runs_end_to_end_seconds=[round(w, 3) for _, w in idle],
            )
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
