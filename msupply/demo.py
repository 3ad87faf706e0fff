"""The one-command demo: a master and two satellites on SQLite, syncing by Celery beat.

Run with `bin/demo` (or `python -m msupply.demo`). Each site has its own SQLite database and
HTTP port on 127.0.0.1; each satellite has a Celery worker and beat using an embedded
filesystem broker, so nothing needs installing. Ctrl-C stops every process.
"""

import argparse
import os
import shutil
import signal
import time
from pathlib import Path
from types import FrameType

from .sites import ROOT, UNLOCK_CODE, Cluster

ADMIN_USER = "admin"
ADMIN_PASSWORD = "admin"


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dir",
        type=Path,
        default=ROOT / "var" / "demo",
        help="Folder for the databases, broker queues and logs (wiped first).",
    )
    parser.add_argument(
        "--port", type=int, default=8001, help="Master's port; satellites take the next ones."
    )
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--names", type=int, default=100)
    parser.add_argument(
        "--transactions",
        type=int,
        default=300,
        help="Finalised transactions created on each satellite.",
    )
    return parser.parse_args()


def main() -> None:
    """Set up the three sites, start them, and keep them running until interrupted."""
    arguments = _arguments()
    workdir: Path = arguments.dir.resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    # No PostgreSQL for the demo: every site gets a SQLite file in the demo folder.
    os.environ.pop("DATABASE_URL", None)
    cluster = Cluster(
        workdir,
        satellites=2,
        first_port=arguments.port,
        env={"DEMO_DIR": str(workdir), "LOG_LEVEL": "INFO"},
    )
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        print(f"Setting up a master and two satellites in {workdir} ...", flush=True)
        cluster.provision(stores=3, items=arguments.items, names=arguments.names)
        for site in cluster.sites:
            site.manage(
                "createsuperuser",
                "--noinput",
                "--username",
                ADMIN_USER,
                "--email",
                "admin@example.org",
                env={"DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD},
            )
        for satellite in cluster.satellites:
            satellite.use_broker()
            Cluster.configure(satellite, cluster.satellites.index(satellite) + 2, "--interval", "1")
            satellite.manage("sync_now")
            satellite.manage("seed_demo", "--transactions", str(arguments.transactions))
            satellite.start()
            satellite.start_celery()
        print()
        print("msupply-sync demo is running. Scheduled syncs run every minute.")
        for site in cluster.sites:
            print(f"  {site.name:<11} {site.url}admin/")
        print(
            f"Log in as {ADMIN_USER} / {ADMIN_PASSWORD}. Authorisation code for Click to "
            f"Un-lock: {UNLOCK_CODE}"
        )
        print(f"Logs: {workdir}/*.log. Press Ctrl-C to stop.", flush=True)
        while not stopping:
            time.sleep(0.5)
    finally:
        print("\nStopping ...", flush=True)
        cluster.destroy()
        print("Stopped.", flush=True)


if __name__ == "__main__":
    main()
