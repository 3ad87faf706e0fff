"""Initialisation benchmark: a satellite's first sync_now against a master whose rows changed
once, then against one whose same rows changed ten times (a change log ten times longer).

An initialisation reads a snapshot of the current rows (sync.snapshot), so its cost should follow
the rows, not the history: the goal is the long-history case within 1.5x of the short one.
Prints one JSON line per case and a summary line with the ratio and the load average.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers import Cluster, Site  # noqa: E402

FULL_SCALE = {"items": 20_000, "names": 5_000, "transactions": 5_000, "lines": 4}
GOAL_RATIO = 1.5

# Run with `manage.py shell -c` on the master; PARAMS is replaced by a JSON literal. Store S002's
# data is written straight into the master's tables (triggers log it as any write), then every
# row is changed `history - 1` more times, one statement per table and round.
FILL_SCRIPT = """
import datetime, json, uuid
from decimal import Decimal
from django.db import transaction
from stores.models import Item, Name, StockLine, Store, Transaction, TransactionLine
from sync.models import ChangeLog
params = json.loads(PARAMS)
store = Store.objects.get(code="S002")
items = list(Item.objects.order_by("pk")[: params["transactions"]])
with transaction.atomic():
    records = [
        Transaction(id=uuid.uuid4(), store=store, kind="supplier_invoice", number=n + 1,
                    date=datetime.date(2026, 1, 1))
        for n in range(params["transactions"])
    ]
    Transaction.objects.bulk_create(records, batch_size=2000)
    TransactionLine.objects.bulk_create([
        TransactionLine(id=uuid.uuid4(), transaction=record, item=items[n % len(items)],
                        batch=f"B{n}-{k}", expiry=datetime.date(2028, 1, 1), quantity=10,
                        cost_price=Decimal("1.00"), sell_price=Decimal("2.00"))
        for n, record in enumerate(records) for k in range(params["lines"])
    ], batch_size=2000)
    StockLine.objects.bulk_create([
        StockLine(id=uuid.uuid4(), store=store, item=item, batch="B", quantity=10,
                  expiry=datetime.date(2028, 1, 1))
        for item in items
    ], batch_size=2000)
for n in range(1, params["history"]):
    with transaction.atomic():
        Item.objects.update(name=f"Item, version {n}")
        Name.objects.update(name=f"Name, version {n}")
        Transaction.objects.filter(store=store).update(date=datetime.date(2026, 1, 1 + n))
        TransactionLine.objects.filter(transaction__store=store).update(sell_price=n)
        StockLine.objects.filter(store=store).update(quantity=10 + n)
rows = sum(m.objects.count() for m in (Store, Item, Name)) + sum(
    m.objects.filter(**f).count() for m, f in (
        (Transaction, {"store": store}), (TransactionLine, {"transaction__store": store}),
        (StockLine, {"store": store})))
print(json.dumps({"rows": rows, "change_log": ChangeLog.objects.count()}))
"""


def database_vendor() -> str:
    url = os.environ.get("DATABASE_URL", "")
    return "postgresql" if url.startswith(("postgres://", "postgresql://")) else "sqlite"


def run_script(site: Site, script: str, params: dict[str, Any]) -> dict[str, Any]:
    code = script.replace("PARAMS", repr(json.dumps(params)))
    result = site.manage("shell", "-c", code, timeout=3600)
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def initialise(workdir: Path, scale: dict[str, int], history: int) -> dict[str, Any]:
    """Provision a master, fill and age its data, time satellite 2's first sync_now."""
    workdir.mkdir(parents=True)
    cluster = Cluster(workdir, satellites=1)
    try:
        cluster.provision(items=scale["items"], names=scale["names"])
        filled = run_script(cluster.master, FILL_SCRIPT, {**scale, "history": history})
        start = time.perf_counter()
        report = cluster.satellites[0].manage_json("sync_now")
        seconds = time.perf_counter() - start
        if report.get("result") != "success":
            raise RuntimeError(f"sync_now failed: {report}")
        return {
            "case": f"history x{history}",
            "database": database_vendor(),
            "rows": filled["rows"],
            "change_log": filled["change_log"],
            "records": report["records_pulled"],
            "seconds": round(seconds, 2),
            "records_per_second": round(report["records_pulled"] / seconds),
        }
    finally:
        cluster.destroy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="Data scaled down 10x.")
    options = parser.parse_args()
    scale = dict(FULL_SCALE)
    if options.quick:
        scale = {key: value // 10 if key != "lines" else value for key, value in scale.items()}
    with tempfile.TemporaryDirectory(prefix="init-bench-") as workdir:
        short = initialise(Path(workdir) / "short", scale, history=1)
        print(json.dumps(short), flush=True)
        long = initialise(Path(workdir) / "long", scale, history=10)
        print(json.dumps(long), flush=True)
    ratio = long["seconds"] / short["seconds"]
    print(
        json.dumps(
            {
                "ratio": round(ratio, 2),
                "change_log_ratio": round(long["change_log"] / short["change_log"], 1),
                "goal": f"long history within {GOAL_RATIO}x of short",
                "met": ratio <= GOAL_RATIO,
                "load_average": [round(load, 2) for load in os.getloadavg()],
            }
        )
    )


if __name__ == "__main__":
    main()
