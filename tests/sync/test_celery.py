"""Scheduled and triggered syncs through a real Celery worker and beat, between real servers."""

import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest
import redis

from msupply.sites import ROOT, Cluster, Site

pytestmark = pytest.mark.servers

# One "minute" of the Sync time interval lasts this many seconds here, so beat can be watched.
UNIT_SECONDS = 3
REDIS_URL = "redis://127.0.0.1:6379/13"


def broker_url() -> str:
    """The real Redis where it answers (CI, production); else the embedded filesystem broker."""
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
        client.flushdb()
    except redis.RedisError:
        return "filesystem://"
    return REDIS_URL


def wait_until(condition: Callable[[], bool], timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"Timed out after {timeout} s waiting until {message}.")


def scheduled_runs(site: Site) -> int:
    return site.sql("SELECT COUNT(*) FROM sync_synclog WHERE trigger = 'schedule'")[0][0]


def master_transactions(cluster: Cluster) -> int:
    return cluster.master.sql("SELECT COUNT(*) FROM stores_transaction")[0][0]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(
        tmp_path_factory.mktemp("celery"),
        satellites=1,
        env={
            "SYNC_INTERVAL_UNIT_SECONDS": str(UNIT_SECONDS),
            "SYNC_LOCK_TTL_SECONDS": "5",
            "SYNC_BATCH_SIZE": "50",
        },
    )
    try:
        cluster.provision()
        satellite = cluster.satellites[0]
        satellite.use_broker(broker_url())
        satellite.manage("sync_now")
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def satellite(cluster: Cluster) -> Iterator[Site]:
    site = cluster.satellites[0]
    yield site
    site.stop_celery()
    site.manage("sync_config", "--interval", "0")


def set_interval(site: Site, minutes: int) -> None:
    site.manage("sync_config", "--interval", str(minutes))


def test_scheduled_run_lands_data_on_the_master(cluster: Cluster, satellite: Site) -> None:
    satellite.manage("seed_demo", "--transactions", "10")
    set_interval(satellite, 1)
    before = master_transactions(cluster)
    satellite.start_celery(beat=True)
    wait_until(
        lambda: master_transactions(cluster) >= before + 10,
        60,
        "the master holds the satellite's new transactions",
    )
    assert (
        satellite.sql(
            "SELECT COUNT(*) FROM sync_synclog WHERE trigger = 'schedule' AND result = 'success'"
        )[0][0]
        >= 1
    )


def test_interval_change_reschedules_and_zero_pauses(satellite: Site) -> None:
    schedule = (
        "SELECT t.enabled, i.every, i.period FROM django_celery_beat_periodictask t "
        "JOIN django_celery_beat_intervalschedule i ON i.id = t.interval_id "
        "WHERE t.name = 'Sync with the master'"  # sync.services.SYNC_SCHEDULE_NAME
    )
    set_interval(satellite, 1)
    satellite.start_celery(beat=True)
    wait_until(lambda: scheduled_runs(satellite) >= 2, 40, "beat has run the sync twice")

    set_interval(satellite, 2)
    assert [tuple(row) for row in satellite.sql(schedule)] == [(True, 2 * UNIT_SECONDS, "seconds")]

    set_interval(satellite, 0)
    assert [row[0] for row in satellite.sql(schedule)] == [False]
    # Beat reads the change within 5 s; a run it had already sent may still land, later on a
    # loaded machine (seen at load 4: more than 8 s after).
    time.sleep(15)
    paused_at = scheduled_runs(satellite)
    time.sleep(4 * UNIT_SECONDS)
    assert scheduled_runs(satellite) == paused_at

    set_interval(satellite, 1)
    wait_until(lambda: scheduled_runs(satellite) > paused_at, 30, "beat resumes without a restart")


def test_two_simultaneous_triggers_give_one_run(cluster: Cluster, satellite: Site) -> None:
    satellite.manage("seed_demo", "--transactions", "150")
    runs_before = satellite.sql("SELECT COUNT(*) FROM sync_synclog")[0][0]
    commands = [
        subprocess.Popen(
            [sys.executable, "manage.py", "sync_now", "--json"],
            cwd=ROOT,
            env=satellite.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [command.communicate(timeout=120) for command in commands]
    codes = sorted(command.returncode for command in commands)
    assert codes[0] == 0
    assert codes[1] != 0
    refused = next(out for (out, _), c in zip(outputs, commands, strict=True) if c.returncode)
    assert '"already_running"' in refused
    assert satellite.sql("SELECT COUNT(*) FROM sync_synclog")[0][0] == runs_before + 1


def test_worker_killed_mid_run_leaves_a_state_the_next_run_completes(
    cluster: Cluster, satellite: Site
) -> None:
    satellite.manage("seed_demo", "--transactions", "300")
    satellite.start_celery(beat=False)
    satellite.manage(
        "shell",
        "-c",
        "from sync.tasks import sync_with_master; sync_with_master.delay(trigger='button')",
    )
    running = "SELECT COUNT(*) FROM sync_synclog WHERE result = 'running' AND records_pushed > 0"
    wait_until(lambda: satellite.sql(running)[0][0] == 1, 60, "the worker is pushing")
    satellite.stop_celery(sig=9)

    refused = satellite.manage("sync_now", check=False)
    assert refused.returncode != 0
    assert "already running" in refused.stderr
    time.sleep(5)  # the dead worker's lease expires (SYNC_LOCK_TTL_SECONDS)
    result = satellite.manage_json("sync_now")
    assert result["result"] == "success"
    assert (
        satellite.sql("SELECT COUNT(*) FROM sync_synclog WHERE error_code = 'interrupted'")[0][0]
        == 1
    )
    store_rows = (
        "SELECT t.id, t.number, COUNT(l.id) FROM stores_transaction t "
        "LEFT JOIN stores_transactionline l ON l.transaction_id = t.id "
        "GROUP BY t.id, t.number ORDER BY t.id"
    )
    satellite_rows = satellite.sql(store_rows)
    master_rows = [row for row in cluster.master.sql(store_rows) if row in satellite_rows]
    assert master_rows == satellite_rows
    assert satellite.sql("SELECT COUNT(*) FROM stores_transactionline")[0][0] == sum(
        row[2] for row in satellite_rows
    )
