"""The one-command demo starts three sites, syncs them on its schedule and stops cleanly."""

import os
import queue
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import closing, suppress
from pathlib import Path
from typing import Any

import pytest

from tests.servers import ROOT, Cluster, free_port

pytestmark = pytest.mark.servers

ITEMS = 100
NAMES = 30
TRANSACTIONS = 40
SATELLITE_STORES = {"satellite2": "S002", "satellite3": "S003"}
READY_LINE = "demo is running"
START_TIMEOUT = 180
SYNC_TIMEOUT = 60
STOP_TIMEOUT = 30
ADMIN_URL = re.compile(r"^\s+(master|satellite\d)\s+(http://127\.0\.0\.1:\d+/admin/)$")


def free_port_base() -> int:
    """A port whose two successors are free too: the demo's master takes it, satellites those."""
    for _ in range(50):
        port = free_port()
        if port + 2 > 65535:
            continue
        if all(port_is_free(candidate) for candidate in (port + 1, port + 2)):
            return port
    raise RuntimeError("No three consecutive free ports found.")


def port_is_free(port: int) -> bool:
    with closing(socket.socket()) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class Demo:
    """`python -m msupply.demo` as a child process, with its stdout read line by line."""

    def __init__(self, workdir: Path, port: int) -> None:
        self.workdir = workdir
        env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
        # The demo's one-minute Sync time interval then runs every 5 s.
        env.update(SYNC_INTERVAL_UNIT_SECONDS="5", PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "msupply.demo", "--dir", str(workdir), "--port", str(port),
                "--items", str(ITEMS), "--names", str(NAMES),
                "--transactions", str(TRANSACTIONS),
            ],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )  # fmt: skip
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for_line(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                raise AssertionError(
                    f"The demo exited ({self.process.wait()}) before printing {text!r}:\n"
                    + "\n".join(self.lines)
                )
            self.lines.append(line)
            if text in line:
                return
        raise AssertionError(
            f"The demo printed no {text!r} in {timeout} s:\n" + "\n".join(self.lines)
        )

    def stop(self) -> int:
        """Press Ctrl-C and wait for the demo to exit; returns its exit code."""
        self.process.send_signal(signal.SIGINT)
        return self.process.wait(timeout=STOP_TIMEOUT)

    def kill(self) -> None:
        """Last resort after a failure: stop the demo and everything it started."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=STOP_TIMEOUT)
        for pid in processes_of(self.workdir):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    demo = Demo(tmp_path / "demo", free_port_base())
    try:
        yield demo
    finally:
        demo.kill()


def processes_of(workdir: Path) -> list[int]:
    """Pids whose environment has the demo's DEMO_DIR: every process the demo started."""
    marker = f"DEMO_DIR={workdir}".encode()
    pids = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            variables = environ.read_bytes().split(b"\0")
        except OSError:  # gone, or not ours
            continue
        if marker in variables:
            pids.append(int(environ.parent.name))
    return pids


def query(database: Path, sql: str) -> list[tuple[object, ...]]:
    with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=10)) as db:
        return db.execute(sql).fetchall()


def master_transactions_by_store(workdir: Path) -> dict[str, int]:
    rows = query(
        workdir / "master.sqlite3",
        "SELECT s.code, COUNT(*) FROM stores_transaction t "
        "JOIN stores_store s ON s.id = t.store_id GROUP BY s.code",
    )
    return {str(code): int(count) for code, count in rows}


def login_page(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - our own http URL
        assert response.status == 200
        assert response.url.startswith(url + "login/"), response.url
        return response.read().decode()


def test_demo_syncs_both_satellites_on_schedule_and_stops_every_process_on_ctrl_c(
    demo: Demo,
) -> None:
    workdir = demo.workdir
    demo.wait_for_line(READY_LINE, START_TIMEOUT)
    demo.wait_for_line("Press Ctrl-C to stop", 10)

    urls = dict(match.groups() for line in demo.lines if (match := ADMIN_URL.match(line)))
    assert set(urls) == {"master", *SATELLITE_STORES}
    for url in urls.values():
        page = login_page(url)
        assert 'id="id_username"' in page
        assert 'id="id_password"' in page
    assert any(line.startswith("Log in as admin / admin.") for line in demo.lines), demo.lines

    wanted = dict.fromkeys(SATELLITE_STORES.values(), TRANSACTIONS)
    deadline = time.monotonic() + SYNC_TIMEOUT
    received = master_transactions_by_store(workdir)
    while received != wanted and time.monotonic() < deadline:
        time.sleep(1)
        received = master_transactions_by_store(workdir)
    assert received == wanted
    for satellite in SATELLITE_STORES:
        # The run that pushed the last transactions may still be pulling: its success is
        # recorded when it ends.
        def scheduled_successes(satellite: str = satellite) -> int:
            return int(
                query(
                    workdir / f"{satellite}.sqlite3",
                    "SELECT COUNT(*) FROM sync_synclog "
                    "WHERE trigger = 'schedule' AND result = 'success'",
                )[0][0]
            )

        while scheduled_successes() == 0 and time.monotonic() < deadline + SYNC_TIMEOUT:
            time.sleep(1)
        assert scheduled_successes() >= 1, satellite
    assert processes_of(workdir)

    started = time.monotonic()
    code = demo.stop()

    assert code in (0, -signal.SIGINT)
    assert time.monotonic() - started < STOP_TIMEOUT
    # Killed processes may take a moment to leave the process table.
    deadline = time.monotonic() + 5
    while processes_of(workdir) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_of(workdir) == []
    demo.wait_for_line("Stopped.", 5)


@pytest.mark.browser
def test_two_sites_on_one_host_keep_their_own_cookies_in_one_browser(
    browser: Any, tmp_path: Path
) -> None:
    """Logging into a satellite in another tab leaves the master's session and CSRF intact."""
    from playwright.sync_api import expect

    cluster = Cluster(tmp_path, satellites=1)
    try:
        cluster.provision(items=5, names=5)
        satellite = cluster.satellites[0]
        satellite.start()
        for site in cluster.sites:
            site.manage(
                "createsuperuser", "--noinput", "--username", "admin", "--email", "a@example.org",
                env={"DJANGO_SUPERUSER_PASSWORD": "admin"},
            )  # fmt: skip
        context = browser.new_context()
        context.set_default_timeout(15_000)
        master_tab, satellite_tab = context.new_page(), context.new_page()
        preferences = f"{cluster.master.url}admin/sync/syncpreferences/"
        for tab, site, landing in (
            (master_tab, cluster.master, preferences),
            (satellite_tab, satellite, f"{satellite.url}admin/"),
        ):
            tab.goto(f"{site.url}admin/login/?next={landing.removeprefix(site.url[:-1])}")
            tab.fill("#id_username", "admin")
            tab.fill("#id_password", "admin")
            tab.click("input[type=submit]")
            expect(tab).to_have_url(landing)
        # The master's form was loaded before the satellite's login set its cookies.
        master_tab.fill("#id_sync_interval_minutes", "7")
        master_tab.click("input[name=_save]")
        expect(master_tab.locator(".messagelist")).to_contain_text(
            "The synchronisation preferences were saved."
        )
        names = {cookie["name"] for cookie in context.cookies()}
        assert {
            "msupply_master_sessionid",
            "msupply_master_csrftoken",
            "msupply_satellite2_sessionid",
            "msupply_satellite2_csrftoken",
        } <= names
        assert not {"sessionid", "csrftoken"} & names
        shown = " ".join(cluster.master.manage("sync_config").stdout.split())
        assert "Sync time interval: 7 minutes" in shown
        context.close()
    finally:
        cluster.destroy()
