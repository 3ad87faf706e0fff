"""Real msupply-sync sites on one machine, for the demo, the tests and the benchmarks.

A `Site` runs `manage.py` commands against its own database (SQLite file, or a PostgreSQL
database of its own when DATABASE_URL points at PostgreSQL), serves HTTP on 127.0.0.1 with a
real server process, and can run its own Celery worker and beat. `Cluster` provisions a master
and satellites the way an operator would, with the provisioning commands.
"""

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from contextlib import closing, suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import environ
import psycopg

ROOT = Path(__file__).resolve().parent.parent
SYNC_USERNAME = "sync"
SYNC_PASSWORD = "sync-password-1"
UNLOCK_CODE = "unlock-code-1"


def free_port() -> int:
    with closing(socket.socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with closing(socket.socket()) as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"Nothing listens on 127.0.0.1:{port} after {timeout} s.")


def _postgres_base() -> str | None:
    url = os.environ.get("DATABASE_URL", "")
    return url if url.startswith(("postgres://", "postgresql://")) else None


class Site:
    """One msupply-sync server: a database of its own, commands, and an optional HTTP process."""

    def __init__(
        self,
        name: str,
        workdir: Path,
        extra_env: dict[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.name = name
        self.workdir = workdir
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.celery: list[subprocess.Popen[bytes]] = []
        self.extra_env = dict(extra_env or {})
        base = _postgres_base()
        if base:
            self._pg_name = f"msit_{name}_{uuid.uuid4().hex[:8]}"
            parts = urlsplit(base)
            self._pg_admin = urlunsplit(parts._replace(path="/postgres"))
            self.database_url = urlunsplit(parts._replace(path=f"/{self._pg_name}"))
            with psycopg.connect(self._pg_admin, autocommit=True) as connection:
                connection.execute(f'CREATE DATABASE "{self._pg_name}"')
        else:
            self._pg_name = ""
            self.database_url = f"sqlite:///{workdir / f'{name}.sqlite3'}"
        self.log_path = workdir / f"{name}.log"
        # Every process of one site signs with the same key; no site shares it.
        self.secret_key = secrets.token_urlsafe(50)

    def cookie_names(self) -> dict[str, str]:
        """Session and CSRF cookies named for this site: every site here is on 127.0.0.1, and a
        browser would otherwise give each the others' cookies."""
        return {
            "SESSION_COOKIE_NAME": f"msupply_{self.name}_sessionid",
            "CSRF_COOKIE_NAME": f"msupply_{self.name}_csrftoken",
        }

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def env(self) -> dict[str, str]:
        """The environment of this site's processes: development mode unless DEBUG says not.

        Sites serve plain HTTP on 127.0.0.1, so HTTPS redirects and secure-only cookies are off
        even with DEBUG=false (the benchmarks, the production-mode tests).
        """
        env = {"DEBUG": "true"}
        env.update(
            (key, value)
            for key, value in os.environ.items()
            if not key.startswith(("PYTEST", "DJANGO_SETTINGS_MODULE"))
        )
        env.update(
            DATABASE_URL=self.database_url,
            DJANGO_SETTINGS_MODULE="msupply.settings",
            PYTHONUNBUFFERED="1",
            SECRET_KEY=self.secret_key,
            **self.cookie_names(),
            SECURE_SSL_REDIRECT="false",
            SESSION_COOKIE_SECURE="false",
            CSRF_COOKIE_SECURE="false",
            STATIC_ROOT=str(self.workdir / f"{self.name}-static"),
            **self.extra_env,
        )
        return env

    def manage(
        self,
        *args: str,
        stdin: str = "",
        check: bool = True,
        timeout: float = 600,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `manage.py args` against this site's database."""
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env={**self.env(), **(env or {})},
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{self.name}: manage.py {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    def manage_json(self, *args: str, check: bool = True) -> dict[str, Any]:
        """Run a command given --json and return the JSON object it printed last."""
        result = self.manage(*args, "--json", check=check)
        return dict(json.loads(result.stdout.strip().splitlines()[-1]))

    def dump(self, *models: str) -> list[dict[str, Any]]:
        """`dumpdata` of the given models (default: all of stores), sorted by model and pk."""
        result = self.manage("dumpdata", *(models or ("stores",)), "--indent", "0")
        return sorted(json.loads(result.stdout), key=lambda row: (row["model"], row["pk"]))

    def sql(self, query: str) -> list[tuple[Any, ...]]:
        """Run one read-only SQL query on this site's database and return its rows."""
        script = (
            "import json, sys, django; django.setup()\n"
            "from django.db import connection\n"
            "with connection.cursor() as cursor:\n"
            "    cursor.execute(sys.argv[1])\n"
            "    print(json.dumps(cursor.fetchall(), default=str))"
        )
        result = subprocess.run(
            [sys.executable, "-c", script, query],
            cwd=ROOT,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return [tuple(row) for row in json.loads(result.stdout)]

    def _spawn(self, *args: str) -> subprocess.Popen[bytes]:
        # Each process leads its own group, so stopping it also stops whatever it forked.
        return subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            env=self.env(),
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start(self, *, server: str = "runserver", workers: int = 2) -> None:
        """Serve HTTP on 127.0.0.1:port with a real server process.

        runserver also serves the admin's static files; gunicorn is the production server
        (gunicorn.conf.py), with `workers` workers that keep their database connections between
        requests and serve the static files that collectstatic gathers first when DEBUG is off.
        """
        address = f"127.0.0.1:{self.port}"
        if server == "gunicorn":
            if self.env()["DEBUG"].strip().lower() not in environ.Env.BOOLEAN_TRUE_STRINGS:
                self.manage("collectstatic", "--noinput", "--verbosity", "0")
            self.process = self._spawn(
                "-m", "gunicorn", "--config", str(ROOT / "gunicorn.conf.py"), "msupply.wsgi",
                "--bind", address, "--workers", str(workers), "--access-logfile", "-",
            )  # fmt: skip
        else:
            self.process = self._spawn("manage.py", "runserver", address, "--noreload")
        wait_for_port(self.port)

    def use_broker(self, url: str = "filesystem://") -> None:
        """Give this site's Celery its own broker: a Redis URL, or the embedded filesystem one."""
        folder = self.workdir / f"{self.name}-broker"
        self.extra_env.update(CELERY_BROKER_URL=url, CELERY_BROKER_FOLDER=str(folder))

    def start_celery(self, *, beat: bool = True) -> None:
        """Start this site's Celery worker (and beat, with the database scheduler)."""
        self.celery.append(
            self._spawn(
                "-m",
                "celery",
                "-A",
                "msupply",
                "worker",
                "--pool",
                "threads",
                "--concurrency",
                "2",
                "--loglevel",
                "INFO",
                "--hostname",
                f"{self.name}@%h",
            )
        )
        if beat:
            self.celery.append(
                self._spawn(
                    "-m",
                    "celery",
                    "-A",
                    "msupply",
                    "beat",
                    "--loglevel",
                    "INFO",
                    "--schedule",
                    str(self.workdir / f"{self.name}-beat"),
                )
            )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the HTTP process (SIGKILL to simulate a crash)."""
        if self.process is not None:
            _stop([self.process], sig)
        self.process = None

    def stop_celery(self, sig: int = signal.SIGTERM) -> None:
        _stop(self.celery, sig)
        self.celery = []

    def destroy(self) -> None:
        self.stop()
        self.stop_celery()
        if self._pg_name:
            with psycopg.connect(self._pg_admin, autocommit=True) as connection:
                connection.execute(f'DROP DATABASE IF EXISTS "{self._pg_name}" WITH (FORCE)')


def _stop(processes: list[subprocess.Popen[bytes]], sig: int) -> None:
    """Signal process groups together, then wait; SIGKILL whatever lingers."""
    for process in processes:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=20)
        # The group may still hold children whose leader has exited.
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


class Cluster:
    """A master and satellites provisioned with the operators' commands."""

    def __init__(
        self,
        workdir: Path,
        satellites: int = 2,
        master_env: dict[str, str] | None = None,
        env: dict[str, str] | None = None,
        first_port: int | None = None,
    ) -> None:
        self.workdir = workdir

        def site(name: str, number: int, extra: dict[str, str] | None = None) -> Site:
            port = first_port + number - 1 if first_port else None
            return Site(name, workdir, {**(env or {}), **(extra or {})}, port)

        self.master = site("master", 1, master_env)
        self.satellites = [site(f"satellite{n}", n) for n in range(2, 2 + satellites)]

    @property
    def sites(self) -> list[Site]:
        return [self.master, *self.satellites]

    def provision(
        self, *, stores: int = 3, items: int = 50, names: int = 20, server: str = "runserver"
    ) -> None:
        """Migrate every site, seed master data, fill both Sync with lists, start the master."""
        for site in self.sites:
            site.manage("migrate", "--verbosity", "0")
        self.configure(self.master, 1)
        stores = max(stores, len(self.satellites) + 1)
        self.master.manage(
            "seed_demo", "--stores", str(stores), "--items", str(items), "--names", str(names)
        )
        for sync_id, satellite in enumerate(self.satellites, start=2):
            self.master.manage(
                "sync_peer", "add", "--sync-id", str(sync_id), "--name", satellite.name,
                "--store", f"S{sync_id:03d}", "--url", satellite.url,
            )  # fmt: skip
            self.configure(satellite, sync_id)
            satellite.manage(
                "sync_peer", "add", "--sync-id", "1", "--name", "master", "--store", "S001",
                "--url", self.master.url,
            )  # fmt: skip
        self.master.start(server=server)

    @staticmethod
    def configure(site: Site, sync_id: int, *extra: str) -> None:
        """Set a site's Sync ID and the shared sync credentials with sync_config."""
        site.manage(
            "sync_config", "--sync-id", str(sync_id), "--username", SYNC_USERNAME,
            "--password-stdin", "--unlock-code-stdin", *extra,
            stdin=f"{SYNC_PASSWORD}\n{UNLOCK_CODE}\n",
        )  # fmt: skip

    def destroy(self) -> None:
        # Satellites first, all at once: a satellite run in flight against a stopped master
        # would retry with backoff and hold its worker's warm shutdown for seconds.
        _stop(
            [p for site in self.satellites for p in (site.process, *site.celery) if p],
            signal.SIGTERM,
        )
        for site in [*self.satellites, self.master]:
            site.destroy()
