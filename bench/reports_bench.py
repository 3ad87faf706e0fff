"""Reports benchmark: 63 stores x 20,000 transaction lines, each report timed.

Makes a scratch database of its own (msupply.sites.Site: PostgreSQL when DATABASE_URL names a
PostgreSQL server, else an SQLite file), migrates it, bulk-inserts finalised transactions with
stock lines consistent with them and some sold out (stock-outs), then requests every report
through Django's whole request handler (middleware, view, template, the full body read, a
streamed CSV to its last byte) as a superuser: the HTML page and its CSV. Every report must
answer in under 1 s (the goal), expiring stock over 365 days and its CSV included; heavier
variants (one item, a search, a year by day) are timed too and flagged, not failed. Prints one
JSON line per report and variant with the median seconds of the timed runs, the queries it ran,
met or missed and the load average, then a summary; exits non-zero when a report misses.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/msupply .venv/bin/python bench/reports_bench.py
    .venv/bin/python bench/reports_bench.py   # SQLite
"""

import argparse
import datetime
import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from msupply.sites import Site  # noqa: E402

GOAL_SECONDS = 1.0
LINES_PER_TRANSACTION = 10
# Batches a store holds of one item at a time: receipts of an item rotate through them.
BATCHES_PER_ITEM = 4
DAYS_OF_HISTORY = 365
# Share of issues that take a batch's whole quantity.
SELL_OUT = 0.2


def seed(*, stores: int, lines: int, items: int, seed: int) -> dict[str, int]:
    """Bulk-insert master data, `lines` finalised transaction lines per store and its stock."""
    from django.contrib.auth import get_user_model
    from django.db import connection, transaction
    from django.utils import timezone

    from stores.models import Item, Name, Store
    from sync.capture import triggers_remove_sqlite
    from sync.models import PeerState, SyncPeer

    rng = random.Random(seed)
    today = timezone.localdate()
    # The change-log triggers would add a row per record; reports never read the change log,
    # so the set-up skips them (session_replication_role needs a superuser, as postgres is; a
    # scratch SQLite file simply loses them).
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET session_replication_role = replica")
    else:
        triggers_remove_sqlite(sender=None)
    store_records = [
        Store(code=f"S{number:03d}", name=f"Health Centre {number}")
        for number in range(1, stores + 1)
    ]
    item_records = [
        Item(code=f"I{n:05d}", name=f"Medicine {n} 250 mg", unit=rng.choice(["tablet", "vial"]))
        for n in range(1, items + 1)
    ]
    suppliers = [Name(code=f"SUP{n:03d}", name=f"Supplier {n}", kind="supplier") for n in range(20)]
    customers = [Name(code=f"CUS{n:03d}", name=f"Clinic {n}", kind="customer") for n in range(80)]
    with transaction.atomic():
        Store.objects.bulk_create(store_records)
        Item.objects.bulk_create(item_records, batch_size=1000)
        Name.objects.bulk_create([*suppliers, *customers])
        peers = SyncPeer.objects.bulk_create(
            SyncPeer(
                sync_id=record_number,
                name=f"satellite{record_number}",
                store_code=f"S{record_number:03d}",
                url=f"http://10.0.0.{record_number}/",
            )
            for record_number in range(2, stores + 1)
        )
        now = timezone.now()
        PeerState.objects.bulk_create(
            PeerState(
                peer=peer,
                last_contact_at=now - datetime.timedelta(hours=rng.randint(0, 100)),
                last_success_at=now - datetime.timedelta(hours=rng.randint(0, 120)),
                records_received=rng.randint(1000, 100_000),
                last_error="" if rng.random() < 0.8 else "The master could not be reached.",
            )
            for peer in peers
        )
        get_user_model().objects.create_superuser("bench", "bench@example.org", "bench")
    counts = {"transactions": 0, "lines": 0, "stock_lines": 0}
    for store in store_records:
        created = _store_history(store, item_records, suppliers, customers, lines, rng, today)
        for key, value in created.items():
            counts[key] += value
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET session_replication_role = DEFAULT")
    return counts


def key_name(item: Any, turn: int) -> bytes:
    return f"{item.code}-{turn}".encode()


def _store_history(
    store: Any,
    items: list[Any],
    suppliers: list[Any],
    customers: list[Any],
    lines: int,
    rng: random.Random,
    today: datetime.date,
) -> dict[str, int]:
    """One store's finalised receipts and issues over a year, and the stock they leave."""
    from django.db import transaction

    from stores.models import StockLine, Transaction, TransactionLine

    count = lines // LINES_PER_TRANSACTION
    stock: dict[tuple[Any, str, datetime.date], int] = {}
    transactions, transaction_lines = [], []
    for number in range(1, count + 1):
        date = today - datetime.timedelta(days=DAYS_OF_HISTORY * (count - number) // count)
        issue = number % 3 == 0 and len(stock) >= LINES_PER_TRANSACTION
        record = Transaction(
            store=store,
            kind="customer_invoice" if issue else "supplier_invoice",
            number=number,
            name=rng.choice(customers if issue else suppliers),
            date=date,
            status="finalised",
        )
        transactions.append(record)
        if issue:
            on_hand = [key for key, quantity in stock.items() if quantity > 1]
            for key in rng.sample(on_hand, min(len(on_hand), LINES_PER_TRANSACTION)):
                # Now and then a batch sells out, so some items run out: stock-outs to report.
                quantity = (
                    stock[key] if rng.random() < SELL_OUT else rng.randint(1, stock[key] // 2)
                )
                stock[key] -= quantity
                transaction_lines.append(
                    TransactionLine(
                        transaction=record, item=key[0], batch=key[1], expiry=key[2],
                        quantity=quantity, sell_price=Decimal(rng.randint(10, 900)) / 100,
                    )
                )  # fmt: skip
        else:
            for item in rng.sample(items, LINES_PER_TRANSACTION):
                turn = rng.randrange(BATCHES_PER_ITEM)
                # A batch keeps its expiry; some expired already, most within three years.
                expiry = today + datetime.timedelta(
                    days=zlib.crc32(key_name(item, turn)) % 1100 - 60
                )
                key = (item, f"{item.code}-{turn}", expiry)
                quantity = rng.randint(10, 1000)
                stock[key] = stock.get(key, 0) + quantity
                transaction_lines.append(
                    TransactionLine(
                        transaction=record, item=item, batch=key[1], expiry=expiry,
                        quantity=quantity, cost_price=Decimal(rng.randint(5, 500)) / 100,
                    )
                )  # fmt: skip
    with transaction.atomic():
        Transaction.objects.bulk_create(transactions, batch_size=2000)
        TransactionLine.objects.bulk_create(transaction_lines, batch_size=5000)
        StockLine.objects.bulk_create(
            (
                StockLine(store=store, item=key[0], batch=key[1], expiry=key[2], quantity=quantity)
                for key, quantity in stock.items()
            ),
            batch_size=5000,
        )
    return {
        "transactions": len(transactions),
        "lines": len(transaction_lines),
        "stock_lines": len(stock),
    }


def vacuum_analyze() -> None:
    """Fresh statistics and visibility maps, as autovacuum would leave a live database."""
    from django.db import connection

    connection.ensure_connection()
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")
        return
    raw = connection.connection
    previous = raw.autocommit
    raw.autocommit = True
    with raw.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    raw.autocommit = previous


def _load() -> list[float]:
    return [round(load, 2) for load in os.getloadavg()]


def time_reports(*, repeats: int, only: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Request each report (HTML and CSV) `repeats` times after a warm-up; one result each."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.utils import timezone

    from stores.models import StockLine

    client = Client(HTTP_HOST="127.0.0.1")
    client.force_login(get_user_model().objects.get(username="bench"))
    busiest = StockLine.objects.values_list("item__code", flat=True).order_by("item__code").first()
    today = timezone.localdate()
    year_ago = today - datetime.timedelta(days=DAYS_OF_HISTORY - 1)
    # (name, URL, held to the goal): every report a manager opens, then heavier variants.
    reports = [
        ("stock_on_hand", "/reports/stock-on-hand/", True),
        ("stock_on_hand_only_stock_outs", "/reports/stock-on-hand/?stock_outs=on", True),
        ("expiring_stock", "/reports/expiring-stock/", True),
        ("expiring_stock_365_days", "/reports/expiring-stock/?days=365", True),
        ("transactions_with_chart", "/reports/transactions/", True),
        (
            "transactions_year_by_month",
            f"/reports/transactions/?date_from={year_ago}&date_to={today}&period=month",
            False,
        ),
        ("goods_in_transit", "/reports/goods-in-transit/", True),
        ("sync_status", "/reports/sync-status/", True),
        ("stock_on_hand_one_item", f"/reports/stock-on-hand/?item={busiest}", False),
        ("stock_on_hand_search", "/reports/stock-on-hand/?q=medicine+1", False),
        (
            "transactions_120_days_by_day",
            f"/reports/transactions/?date_from={today - datetime.timedelta(days=119)}"
            f"&date_to={today}&period=day",
            False,
        ),
    ]
    results = []
    for name, url, goal in reports:
        if only and name not in only:
            continue
        for variant in ("html", "csv"):
            target = url if variant == "html" else f"{url}{'&' if '?' in url else '?'}format=csv"
            runs = []
            for run in range(repeats + 1):
                with CaptureQueriesContext(connection) as queries:
                    start = time.perf_counter()
                    # secure: production answers over HTTPS and redirects plain HTTP.
                    response = client.get(target, secure=True)
                    content = response.getvalue()  # a streamed CSV to its last byte
                    elapsed = time.perf_counter() - start
                assert response.status_code == 200, (target, response.status_code)
                if run:  # the first run warms caches and is not counted
                    runs.append(elapsed)
            seconds = statistics.median(runs)
            result = {
                "report": name,
                "variant": variant,
                "held_to_goal": goal,
                "url": target,
                "seconds": round(seconds, 3),
                "max_seconds": round(max(runs), 3),
                "runs": len(runs),
                "queries": len(queries),
                "bytes": len(content),
                "goal_seconds": GOAL_SECONDS,
                "goal": "met" if seconds < GOAL_SECONDS else "missed",
                "ok": seconds < GOAL_SECONDS,
                # Other work on the machine slows every figure; this says how busy it was.
                "load_average": _load(),
                "database": connection.vendor,
            }
            print(json.dumps(result), flush=True)
            results.append(result)
    return results


def bench(*, database_url: str, options: argparse.Namespace, fresh: bool) -> list[str]:
    """Seed a fresh database (or reuse a seeded one), time the reports; returns the slow ones."""
    os.environ.update(DATABASE_URL=database_url, DJANGO_SETTINGS_MODULE="msupply.settings")
    # DEBUG keeps every query in memory; production runs without it.
    os.environ["DEBUG"] = "false"
    import django

    django.setup()
    if fresh:
        start = time.perf_counter()
        counts = seed(
            stores=options.stores, lines=options.lines, items=options.items, seed=options.seed
        )
        vacuum_analyze()
        seconds = round(time.perf_counter() - start, 1)
        print(json.dumps({"setup": "seeded", **counts, "seconds": seconds}), flush=True)
    results = time_reports(repeats=options.repeats, only=options.only)
    slow = [
        f"{result['report']} ({result['variant']}): {result['seconds']} s"
        for result in results
        if result["held_to_goal"] and not result["ok"]
    ]
    heavy = [
        f"{result['report']} ({result['variant']}): {result['seconds']} s"
        for result in results
        if not result["held_to_goal"] and not result["ok"]
    ]
    print(
        json.dumps(
            {
                "summary": "goal met: every report under 1 s" if not slow else "goal missed",
                "database": results[0]["database"] if results else "",
                "slow": slow,
                "heavier_filters_over_the_goal": heavy,
                "goal_seconds": GOAL_SECONDS,
                "load_average": _load(),
                "cpus": os.cpu_count(),
            }
        )
    )
    return slow


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stores", type=int, default=63)
    parser.add_argument("--lines", type=int, default=20_000, help="Lines per store.")
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="REPORT",
        help="Time only this report (its JSON name, e.g. expiring_stock_365_days); repeatable.",
    )
    parser.add_argument(
        "--keep", action="store_true", help="Keep the scratch database and print its URL."
    )
    parser.add_argument(
        "--reuse", metavar="DATABASE_URL", help="Time a database that --keep kept (migrated first)."
    )
    options = parser.parse_args()
    # This run's processes run as in production (DEBUG off), which needs a key: a throwaway one.
    os.environ.setdefault("SECRET_KEY", secrets.token_urlsafe(50))
    with tempfile.TemporaryDirectory(prefix="reports_bench_") as workdir:
        site = Site("reportsbench", Path(workdir)) if not options.reuse else None
        database_url = options.reuse or (site.database_url if site else "")
        try:
            subprocess.run(
                [sys.executable, "manage.py", "migrate", "--verbosity", "0"],
                cwd=ROOT,
                env={**os.environ, "DATABASE_URL": database_url},
                check=True,
            )
            if site and options.keep:
                print(json.dumps({"kept_database": database_url}), flush=True)
            slow = bench(database_url=database_url, options=options, fresh=site is not None)
        finally:
            if "django.db" in sys.modules:
                from django.db import connections

                connections.close_all()
            if site and not options.keep:
                site.destroy()
    if slow:
        sys.exit(1)


if __name__ == "__main__":
    main()
