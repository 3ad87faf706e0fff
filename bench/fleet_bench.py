"""Fleet benchmark: K satellites sync at once with one gunicorn master, on PostgreSQL.

For each K: provision a master and K satellites with the operators' commands, then three storms,
each all K satellites running `sync_now --json` at the same moment: the initialisation storm (each
satellite's first sync), the push storm (each satellite first gets new finalised transactions,
untimed) and the no-op storm (nothing new anywhere). One JSON line per storm.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sync_bench import BULK_TRANSACTIONS_SCRIPT, load_average, run_script  # noqa: E402

from tests.servers import Cluster, Site  # noqa: E402

MASTER_WORKERS = 4
# Provisioning commands run this many at a time: each is a Django process, and migrations of
# dozens of databases at once would only queue on the machine's cores.
PROVISION_PARALLEL = 4
FULL_SCALE = {"items": 2_000, "names": 500, "transactions": 100}
QUICK_SCALE = {"items": 200, "names": 50, "transactions": 10}
SYNC_TIMEOUT_SECONDS = 1800.0
MEMORY_SAMPLE_SECONDS = 0.1
# Before each storm the idle master is metered this long: what it burns doing nothing.
IDLE_BASELINE_SECONDS = 2.0
# The master counts as settled (its workers booted) once it burns less than this in a second.
SETTLED_CPU_SECONDS = 0.05
SETTLE_TIMEOUT_SECONDS = 120.0
GOAL_ZERO_ERRORS_AT_K = 63
GOAL_NOOP_CPU_SECONDS = 0.010
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

TABLES_SCRIPT = """
import json
from sync.registry import SYNCED_TABLES
print(json.dumps({"tables": [[t.name, t.store_via] for t in SYNCED_TABLES]}))
"""

T = TypeVar("T")


def in_parallel(work: Callable[[T], Any], items: Iterable[T]) -> list[Any]:
    with ThreadPoolExecutor(PROVISION_PARALLEL) as pool:
        return list(pool.map(work, items))


def provision(cluster: Cluster, items: int, names: int) -> None:
    """Cluster.provision's commands, run a few at a time: migrate, sync_config, seed_demo and
    sync_peer add on both sides; then the master starts under gunicorn."""
    master = cluster.master
    in_parallel(
        lambda site: site.manage("migrate", "--verbosity", "0", timeout=1800), cluster.sites
    )
    Cluster.configure(master, 1)
    stores = len(cluster.satellites) + 1
    master.manage(
        "seed_demo", "--stores", str(stores), "--items", str(items), "--names", str(names)
    )  # fmt: skip

    def peer(numbered: tuple[int, Site]) -> None:
        sync_id, satellite = numbered
        master.manage(
            "sync_peer", "add", "--sync-id", str(sync_id), "--name", satellite.name,
            "--store", f"S{sync_id:03d}", "--url", satellite.url,
        )  # fmt: skip
        Cluster.configure(satellite, sync_id)
        satellite.manage(
            "sync_peer", "add", "--sync-id", "1", "--name", "master", "--store", "S001",
            "--url", master.url,
        )  # fmt: skip

    in_parallel(peer, enumerate(cluster.satellites, start=2))
    master.start(server="gunicorn", workers=MASTER_WORKERS)


class Tables:
    """Row counts of the synced tables (sync/registry.py), read straight from each database."""

    def __init__(self, master: Site) -> None:
        self.tables = [tuple(pair) for pair in run_script(master, TABLES_SCRIPT, {})["tables"]]

    def total(self, site: Site) -> int:
        """Rows in all synced tables of `site`."""
        with psycopg.connect(site.database_url) as connection:
            return sum(
                connection.execute(f"SELECT count(*) FROM {name}").fetchone()[0]  # noqa: S608
                for name, _ in self.tables
            )

    def of_store(self, site: Site, code: str) -> dict[str, int]:
        """Rows per synced table on `site`: all master data, and the store data of store `code`."""
        counts = {}
        with psycopg.connect(site.database_url) as connection:
            found = connection.execute("SELECT id FROM stores_store WHERE code = %s", [code])
            store = found.fetchone()
            for name, store_via in self.tables:
                if store_via == "none":
                    query, params = f"SELECT count(*) FROM {name}", []  # noqa: S608
                elif store is None:
                    counts[name] = 0
                    continue
                elif store_via == "store_id":
                    query, params = f"SELECT count(*) FROM {name} WHERE store_id = %s", [store[0]]  # noqa: S608
                else:
                    # As capture.py finds a line's store: through its transaction.
                    query = (
                        f"SELECT count(*) FROM {name} x JOIN stores_transaction t"  # noqa: S608
                        " ON t.id = x.transaction_id WHERE t.store_id = %s"
                    )
                    params = [store[0]]
                counts[name] = int(connection.execute(query, params).fetchone()[0])
        return counts


def proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat from the state on (field 3), or None if it has gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def group_pids(pgid: int) -> list[int]:
    """Processes whose process group is `pgid`: the gunicorn arbiter and its workers."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = proc_stat(int(entry.name))
            if fields is not None and int(fields[2]) == pgid:
                pids.append(int(entry.name))
    return pids


def cpu_seconds(pids: Iterable[int], leader: int | None = None) -> float:
    """utime + stime of `pids`, and of the leader's reaped children (workers that exited)."""
    ticks = 0
    for pid in pids:
        fields = proc_stat(pid)
        if fields is not None:
            ticks += int(fields[11]) + int(fields[12])
            if pid == leader:
                ticks += int(fields[13]) + int(fields[14])
    return ticks / CLOCK_TICKS


def database_backends(site: Site) -> list[int]:
    """PostgreSQL backend processes connected to `site`'s database now."""
    with psycopg.connect(site.database_url) as connection:
        rows = connection.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()"
        ).fetchall()
    return [int(row[0]) for row in rows]


class MasterMeter:
    """CPU-seconds of the master's gunicorn processes over a phase, and their peak memory."""

    def __init__(self, master: Site) -> None:
        assert master.process is not None
        self.master = master
        self.leader = master.process.pid
        self.peak_total = 0
        self.peak_process = 0
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)

    def _rss(self) -> list[int]:
        sizes = []
        for pid in group_pids(self.leader):
            fields = proc_stat(pid)
            if fields is not None:
                sizes.append(int(fields[21]) * PAGE_SIZE)
        return sizes

    def _sample(self) -> None:
        while not self._stop.wait(MEMORY_SAMPLE_SECONDS):
            sizes = self._rss()
            self.peak_total = max(self.peak_total, sum(sizes))
            self.peak_process = max([self.peak_process, *sizes])

    def __enter__(self) -> "MasterMeter":
        self.cpu_before = cpu_seconds(group_pids(self.leader), self.leader)
        self.backends_before = {pid: cpu_seconds([pid]) for pid in database_backends(self.master)}
        self._sampler.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._sampler.join()
        self.cpu = cpu_seconds(group_pids(self.leader), self.leader) - self.cpu_before
        # Backends that closed during the phase are lost; new ones count from their start.
        after = {pid: cpu_seconds([pid]) for pid in database_backends(self.master)}
        self.database_cpu = sum(
            seconds - self.backends_before.get(pid, 0.0) for pid, seconds in after.items()
        )


def master_settle(master: Site) -> None:
    """Wait until the master's workers have booted and it idles: gunicorn listens before its
    workers have imported Django, and that boot is no satellite's doing."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        with MasterMeter(master) as meter:
            time.sleep(1.0)
        if len(group_pids(meter.leader)) > MASTER_WORKERS and meter.cpu < SETTLED_CPU_SECONDS:
            return
    print("warning: the master never settled; its CPU figures include its boot.", file=sys.stderr)


def sync_now(satellite: Site, started: float, workdir: Path, phase: str) -> dict[str, Any]:
    """Run the satellite's `sync_now --json`; its report, exit status and finishing time."""
    out = workdir / f"{satellite.name}-{phase}.out"
    with out.open("w") as stdout, (workdir / f"{satellite.name}-{phase}.err").open("w") as err:
        process = subprocess.run(
            [sys.executable, "manage.py", "sync_now", "--json"],
            cwd=ROOT,
            env=satellite.env(),
            stdout=stdout,
            stderr=err,
            timeout=SYNC_TIMEOUT_SECONDS,
            check=False,
        )
    finished = time.perf_counter() - started
    lines = out.read_text().strip().splitlines()
    try:
        report = dict(json.loads(lines[-1]))
    except (IndexError, ValueError):
        report = {"result": "no_report"}
    return {"report": report, "returncode": process.returncode, "seconds": finished}


def storm(satellites: list[Site], workdir: Path, phase: str) -> tuple[float, list[dict[str, Any]]]:
    """All satellites start `sync_now` at the same moment; the wall time until the last ends."""
    started = time.perf_counter()
    with ThreadPoolExecutor(len(satellites)) as pool:
        runs = list(pool.map(lambda s: sync_now(s, started, workdir, phase), satellites))
    return time.perf_counter() - started, runs


def error_code(run: dict[str, Any]) -> str | None:
    report = run["report"]
    if report.get("result") == "success" and run["returncode"] == 0:
        return None
    return str(report.get("error_code") or report.get("result") or f"exit_{run['returncode']}")


def stores_reached_master(tables: Tables, cluster: Cluster) -> dict[str, Any]:
    """Each satellite's store rows (and the master data) equal on the satellite and the master."""
    master_data = {name for name, store_via in tables.tables if store_via == "none"}
    stores_differ, master_data_differ = [], []
    for sync_id, satellite in enumerate(cluster.satellites, start=2):
        code = f"S{sync_id:03d}"
        on_master = tables.of_store(cluster.master, code)
        here = tables.of_store(satellite, code)
        if any(on_master[name] != here[name] for name in on_master if name not in master_data):
            stores_differ.append({"store": code, "master": on_master, "satellite": here})
        if any(on_master[name] != here[name] for name in master_data):
            master_data_differ.append(code)
    return {
        "every_store_on_master": not stores_differ,
        "stores_differing": stores_differ[:5],
        "satellites_missing_master_data": master_data_differ,
    }


def phase(
    name: str,
    k: int,
    cluster: Cluster,
    tables: Tables,
    workdir: Path,
    max_connections: int,
) -> dict[str, Any]:
    """One storm, measured: one JSON line."""
    with MasterMeter(cluster.master) as idle:
        time.sleep(IDLE_BASELINE_SECONDS)
    load_before = load_average()
    before = sum(tables.total(site) for site in cluster.sites)
    with MasterMeter(cluster.master) as meter:
        wall, runs = storm(cluster.satellites, workdir, name)
    distinct = sum(tables.total(site) for site in cluster.sites) - before
    errors = Counter(code for code in map(error_code, runs) if code is not None)
    seconds = sorted(run["seconds"] for run in runs)
    goals = [
        {
            "goal": f"zero errors at K={GOAL_ZERO_ERRORS_AT_K}",
            "met": not errors,
            "applies": k == GOAL_ZERO_ERRORS_AT_K,
        }
    ]
    if name == "noop":
        goals.append(
            {
                "goal": f"master CPU per no-op sync < {GOAL_NOOP_CPU_SECONDS * 1000:.0f} ms",
                "met": meter.cpu / k < GOAL_NOOP_CPU_SECONDS,
                "applies": True,
            }
        )
    line = {
        "phase": name,
        "k": k,
        "wall_seconds": round(wall, 3),
        "satellite_seconds_median": round(seconds[len(seconds) // 2], 3),
        "satellite_seconds_max": round(seconds[-1], 3),
        "successes": len(runs) - sum(errors.values()),
        "errors_by_code": dict(errors),
        # Distinct records: rows the receiving sides gained in the synced tables (every record
        # a storm moves is new there), not the sync logs' counts.
        "distinct_records": distinct,
        "records_per_second": round(distinct / wall),
        "sync_log_records": sum(
            int(run["report"].get("records_pushed", 0))
            + int(run["report"].get("records_pulled", 0))
            for run in runs
        ),
        "inner_seconds_median": sorted(
            float(run["report"].get("duration_seconds", 0.0)) for run in runs
        )[len(runs) // 2],
        "master_cpu_seconds": round(meter.cpu, 2),
        "master_idle_cpu_ms_per_second": round(idle.cpu / IDLE_BASELINE_SECONDS * 1000, 1),
        "master_cpu_ms_per_sync": round(meter.cpu / k * 1000, 1),
        "master_database_cpu_ms_per_sync": round(meter.database_cpu / k * 1000, 1),
        "master_peak_rss_mb": round(meter.peak_total / 2**20, 1),
        "master_peak_process_rss_mb": round(meter.peak_process / 2**20, 1),
        **stores_reached_master(tables, cluster),
        "postgresql_max_connections": max_connections,
        "goals": goals,
        "all_goals_met": all(g["met"] for g in goals if g["applies"]),
        "load_average_before": load_before,
        "load_average_after": load_average(),
    }
    first_error = next((run for run in runs if error_code(run) is not None), None)
    if first_error is not None:
        line["first_error"] = first_error["report"]
        line["master_log_errors"] = master_log_errors(cluster.master)
    return line


def master_log_errors(master: Site, wanted: int = 5) -> list[str]:
    """The master log's last lines that name an error: an HTTP 500's cause is only there."""
    lines = master.log_path.read_text(errors="replace").splitlines()
    found = [line for line in lines if "Error" in line or "FATAL" in line or "Exception" in line]
    return found[-wanted:]


def transactions_create(satellite: Site, wanted: int) -> str | None:
    """Give the satellite's store `wanted` finalised transactions, untimed; None or the error
    (a satellite whose first sync failed has no store to write them in)."""
    try:
        run_script(satellite, BULK_TRANSACTIONS_SCRIPT, {"wanted": wanted, "seed": 1})
    except AssertionError as error:
        return f"{satellite.name}: {str(error).strip().splitlines()[-1]}"
    return None


def connections_check(master: Site, k: int) -> int:
    """PostgreSQL's max_connections, with a warning when a storm of K may need more."""
    with psycopg.connect(master.database_url) as connection:
        max_connections = int(connection.execute("SHOW max_connections").fetchone()[0])
        in_use = int(connection.execute("SELECT count(*) FROM pg_stat_activity").fetchone()[0])
    # Each satellite's run holds a connection to its database, and each master thread one to
    # the master's while it serves (CONN_MAX_AGE keeps it open).
    wanted = k + MASTER_WORKERS * int(os.environ.get("GUNICORN_THREADS", "8")) + in_use
    if wanted > max_connections:
        print(
            f"warning: up to {wanted} PostgreSQL connections at once (K={k}, master threads,"
            f" {in_use} open now) but max_connections is {max_connections}: expect"
            " 'too many clients' errors.",
            file=sys.stderr,
            flush=True,
        )
    return max_connections


def fleet(k: int, scale: dict[str, int], workdir: Path) -> None:
    cluster = Cluster(workdir, satellites=k)
    try:
        started = time.perf_counter()
        provision(cluster, scale["items"], scale["names"])
        tables = Tables(cluster.master)
        max_connections = connections_check(cluster.master, k)
        master_settle(cluster.master)
        print(
            json.dumps(
                {"k": k, "provisioned_seconds_not_counted": round(time.perf_counter() - started)}
            ),
            file=sys.stderr,
            flush=True,
        )

        def emit(name: str) -> None:
            line = phase(name, k, cluster, tables, workdir, max_connections)
            print(json.dumps(line), flush=True)

        emit("initialisation")
        failures = in_parallel(
            lambda s: transactions_create(s, scale["transactions"]), cluster.satellites
        )
        failures = [failure for failure in failures if failure is not None]
        if failures:
            print(json.dumps({"k": k, "push_setup_failures": failures}), file=sys.stderr)
        emit("push")
        emit("noop")
    finally:
        cluster.destroy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--k",
        default="8,32,63",
        help="Comma-separated satellite counts, 1-63 each (default 8,32,63).",
    )
    parser.add_argument("--quick", action="store_true", help="Data scaled down 10x.")
    options = parser.parse_args()
    if not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
        parser.error("Set DATABASE_URL to a PostgreSQL server: the fleet runs on PostgreSQL.")
    counts = [int(part) for part in options.k.split(",")]
    if any(not 1 <= k <= 63 for k in counts):
        parser.error("Each K must be 1-63: Sync IDs 2-64 are the satellites'.")
    scale = QUICK_SCALE if options.quick else FULL_SCALE
    for k in counts:
        with tempfile.TemporaryDirectory(prefix="fleet_bench_") as workdir:
            fleet(k, scale, Path(workdir))


if __name__ == "__main__":
    main()
