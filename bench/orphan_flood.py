"""Orphan benchmark: one satellite's push during another's flood of orphan lines, and a pulled
page applied beside a buffer of records whose parents never come."""

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import django

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# The raw pushes use the sync client and registry, which load the models: no database is used.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "msupply.settings")
django.setup()

from bench.sync_bench import database_vendor, run_script  # noqa: E402
from sync.errors import SyncError  # noqa: E402
from tests.servers import Cluster, Site  # noqa: E402
from tests.sync.realsites import client, line_row, next_batch, sql, wire  # noqa: E402

REPEATS = 5
ORPHAN_LINES = 5_000
ORPHAN_BATCH = 500
BUFFERED = 20_000
PAGE = 100

# Three draft receipts of five lines each on the satellite's store: the small batch it pushes.
ENTER_SCRIPT = """
import datetime, json
from stores import services
from stores.models import Item, Name, Store
from sync.selectors import hosted_store_id
store = Store.objects.get(pk=hosted_store_id())
items = list(Item.objects.filter(active=True)[:5])
supplier = Name.objects.filter(kind="supplier", active=True).first()
for _ in range(3):
    services.transaction_create(
        store=store, kind="supplier_invoice", date=datetime.date(2024, 3, 1), name=supplier,
        lines=[services.LineInput(item=item, batch="FLOOD", expiry=datetime.date(2031, 1, 1),
                                  quantity=5) for item in items],
    )
print(json.dumps({"transactions": 3, "lines": 15}))
"""

# A pulled page of PAGE new items applied beside BUFFERED lines that wait for transactions
# that never come, timed; then the same page followed by the whole-buffer retry that
# sync/integration.py ran before its buffer named the awaited parent (rolled back).
PULL_SCRIPT = """
import json, statistics, time, uuid
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from stores.models import Item, Store
from sync.changes import ChangeSet
from sync.integration import _apply_once, changeset_apply
from sync.models import BufferedRecord
from sync.registry import TABLES_BY_NAME
params = json.loads(PARAMS)
lines, items = TABLES_BY_NAME["stores_transactionline"], TABLES_BY_NAME["stores_item"]
item = Item.objects.first().pk.hex

def line():
    values = {"id": uuid.uuid4().hex, "transaction_id": uuid.uuid4().hex, "item_id": item,
              "batch": "NEVER", "expiry": "2031-01-01", "quantity": 1, "cost_price": "1.00",
              "sell_price": "0.00"}
    return [values[name] for name in lines.field_names]

def page():
    rows = []
    for _ in range(params["page"]):
        key = uuid.uuid4()
        values = {"id": key.hex, "code": "P" + key.hex[:10], "name": "Page item", "unit": "tab",
                  "active": True}
        rows.append([values[name] for name in items.field_names])
    return ChangeSet(upserts={items.name: rows})

def whole_buffer_retry():
    buffered = list(BufferedRecord.objects.all())
    changeset = ChangeSet()
    for record in buffered:
        changeset.upserts.setdefault(record.table_name, []).append(record.row)
    _, _, waiting = _apply_once(changeset, 0)
    still = {(r.table_name, r.record_id): r.error for r in waiting}
    for record in buffered:
        record.error = still.get((record.table_name, record.record_id), "")
    BufferedRecord.objects.bulk_update(buffered, ["error"])
    return len(buffered)

start = time.perf_counter()
for offset in range(0, params["buffered"], 5000):
    rows = [line() for _ in range(min(5000, params["buffered"] - offset))]
    changeset_apply(changeset=ChangeSet(upserts={lines.name: rows}), source_site=1)
setup = time.perf_counter() - start
after, reads, queries, before, before_reads = [], [], [], [], []
for _ in range(params["repeats"]):
    start = time.perf_counter()
    with CaptureQueriesContext(connection) as captured:
        result = changeset_apply(changeset=page(), source_site=1)
    after.append(time.perf_counter() - start)
    reads.append(result.buffer_read)
    queries.append(len(captured))
for _ in range(params["repeats"]):
    with transaction.atomic():
        start = time.perf_counter()
        changeset_apply(changeset=page(), source_site=1)
        before_reads.append(whole_buffer_retry())
        before.append(time.perf_counter() - start)
        transaction.set_rollback(True)
start = time.perf_counter()
buffered = BufferedRecord.objects.count()
count_seconds = time.perf_counter() - start
print(json.dumps({"buffered": buffered, "setup_seconds": setup, "count_seconds": count_seconds,
                  "after": after, "after_buffer_read": reads, "after_queries": queries,
                  "before": before, "before_buffer_read": before_reads}))
"""


def spread(seconds: list[float]) -> dict[str, float]:
    """Median and range of `seconds`, in milliseconds."""
    return {
        "median_ms": round(statistics.median(seconds) * 1000, 1),
        "min_ms": round(min(seconds) * 1000, 1),
        "max_ms": round(max(seconds) * 1000, 1),
    }


def emit(line: dict[str, Any]) -> None:
    # Other work on the machine skews the timings; the load average tells the reader.
    line["database"] = database_vendor()
    line["load_average"] = [round(load, 2) for load in os.getloadavg()]
    print(json.dumps(line), flush=True)


def push_runs(
    satellite: Site, repeats: int, flood: Callable[[], "Flood"] | None = None
) -> tuple[list[float], list[float]]:
    """`repeats` runs of `sync_now` on `satellite`, each pushing a fresh small batch, each
    beside a flood that `flood` starts: the command's wall time (what a user waits for) and the
    run's own duration."""
    walls, durations = [], []
    for _ in range(repeats):
        run_script(satellite, ENTER_SCRIPT, {})
        beside = flood() if flood else None
        start = time.perf_counter()
        report = satellite.manage_json("sync_now")
        walls.append(time.perf_counter() - start)
        if beside is not None:
            beside.finish()
        if report["result"] != "success" or int(report["records_pushed"]) < 18:
            raise RuntimeError(f"satellite run failed or pushed too little: {report}")
        durations.append(float(report["duration_seconds"]))
    return walls, durations


class Flood(threading.Thread):
    """Satellite 2 pushing `lines` orphan lines in batches of ORPHAN_BATCH, started at once;
    every batch must be refused with 409 missing_parent."""

    def __init__(self, cluster: Cluster, item: str, lines: int) -> None:
        super().__init__(daemon=True)
        self.cluster, self.item, self.lines = cluster, item, lines
        self.sent = 0
        self.seconds: list[float] = []
        self.error: BaseException | None = None
        self.start()

    def finish(self) -> None:
        """Wait for the flood to end; raise what stopped it, if anything did."""
        self.join()
        if self.error is not None:
            raise self.error

    def run(self) -> None:
        sender = client(self.cluster, sync_id=2)
        try:
            position = next_batch(sender)
            while self.sent < self.lines:
                rows = [
                    line_row(transaction=uuid.uuid4().hex, item=self.item)
                    for _ in range(ORPHAN_BATCH)
                ]
                start = time.perf_counter()
                try:
                    sender.push(batch_id=uuid.uuid4().hex, changes=wire({
                        "stores_transactionline": rows
                    }), **position)  # fmt: skip
                except SyncError as refused:
                    if (refused.status, refused.code) != (409, "missing_parent"):
                        raise
                else:
                    raise RuntimeError("the master applied a batch of orphan lines")
                self.seconds.append(time.perf_counter() - start)
                self.sent += ORPHAN_BATCH
        except BaseException as error:  # reported by the main thread, which re-raises it
            self.error = error
        finally:
            sender.close()


def bench(workdir: Path, repeats: int, orphans: int, buffered: int) -> None:
    cluster = Cluster(workdir, satellites=2)
    try:
        cluster.provision(items=20, names=10, server="gunicorn")
        master, (satellite2, satellite3) = cluster.master, cluster.satellites
        for satellite in (satellite2, satellite3):
            satellite.manage_json("sync_now")
        ((item,),) = sql(master, "SELECT id FROM stores_item ORDER BY code LIMIT 1")

        floods: list[Flood] = []

        def flood() -> Flood:
            floods.append(Flood(cluster, uuid.UUID(str(item)).hex, orphans))
            return floods[-1]

        quiet = push_runs(satellite3, repeats)
        flooded = push_runs(satellite3, repeats, flood)
        after = push_runs(satellite3, repeats)
        ((left,),) = sql(master, "SELECT count(*) FROM sync_bufferedrecord")
        for label, (walls, durations) in (
            ("a_no_flood", quiet),
            ("b_during_flood", flooded),
            ("b_after_flood", after),
        ):
            emit(
                {
                    "workload": f"push_{label}",
                    "sync_now_wall": spread(walls),
                    "run_duration": spread(durations),
                    "ratio_to_no_flood": round(
                        statistics.median(walls) / statistics.median(quiet[0]), 2
                    ),
                }
            )
        emit(
            {
                "workload": "orphan_flood",
                "orphan_lines_sent_per_run": orphans,
                "orphan_lines_sent": sum(f.sent for f in floods),
                "refused_pushes": sum(len(f.seconds) for f in floods),
                "refusal": spread([seconds for f in floods for seconds in f.seconds]),
                "flood_seconds_per_run": spread([sum(f.seconds) for f in floods]),
                "master_buffered_records_after": left,
            }
        )

        pull = run_script(
            satellite3, PULL_SCRIPT, {"buffered": buffered, "page": PAGE, "repeats": repeats}
        )
        emit(
            {
                "workload": f"pull_page_of_{PAGE}_beside_{pull['buffered']}_buffered",
                "after_apply": spread(pull["after"]),
                "after_buffer_read": pull["after_buffer_read"],
                "after_queries": pull["after_queries"],
                # ApplyResult.buffered counts the buffer: the one statement that grows with it.
                "buffer_count_ms": round(pull["count_seconds"] * 1000, 2),
                "before_apply_with_whole_buffer_retry": spread(pull["before"]),
                "before_buffer_read": pull["before_buffer_read"],
                "speedup": round(
                    statistics.median(pull["before"]) / statistics.median(pull["after"]), 1
                ),
                "buffer_setup_seconds_not_counted": round(pull["setup_seconds"], 1),
            }
        )
    finally:
        cluster.destroy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--orphans", type=int, default=ORPHAN_LINES, help="Orphan lines sent.")
    parser.add_argument("--buffered", type=int, default=BUFFERED, help="Records left waiting.")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="orphan_flood_") as workdir:
        bench(Path(workdir), options.repeats, options.orphans, options.buffered)


if __name__ == "__main__":
    main()
