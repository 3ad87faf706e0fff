"""Sync now through a real Celery worker: its own run, or the run already going, to a result."""

import json
from collections.abc import Iterator

import pytest

from msupply.sites import Cluster, Site
from tests.sync.realsites import shell
from tests.sync.test_celery import broker_url, wait_until

pytestmark = pytest.mark.servers

STATUS = """
import json
from sync.selectors import sync_now_status
status = sync_now_status(request_id={request_id!r})
print(json.dumps({{"state": status.state, "joined": status.joined,
    "step": status.log.step if status.log else ""}}))
"""
PRESS = """
from sync.services import sync_request_queue
from sync.tasks import sync_with_master
sync_request_queue(request_id={request_id!r})
sync_with_master.apply_async(kwargs={{"trigger": "button", "request_id": {request_id!r}}})
"""


@pytest.fixture(scope="module")
def satellite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A satellite that has synced once, with a Celery worker (no beat)."""
    cluster = Cluster(tmp_path_factory.mktemp("sync-now"), satellites=1)
    try:
        cluster.provision(items=4, names=2)
        site = cluster.satellites[0]
        site.use_broker(broker_url())
        site.manage("sync_now")
        site.start_celery(beat=False)
        yield site
    finally:
        cluster.destroy()


def status_of(site: Site, request_id: str) -> dict[str, object]:
    return dict(json.loads(shell(site, STATUS.format(request_id=request_id)).splitlines()[-1]))


def test_a_press_runs_a_sync_and_ends_with_its_result(satellite: Site) -> None:
    shell(satellite, PRESS.format(request_id="own-run"))
    wait_until(
        lambda: status_of(satellite, "own-run")["state"] == "success", 60, "the run succeeded"
    )
    assert status_of(satellite, "own-run")["joined"] is False


def test_a_press_during_a_run_follows_that_run_to_its_result(satellite: Site) -> None:
    shell(
        satellite,
        "from django.utils import timezone\n"
        "from sync.locks import lock_acquire\n"
        "from sync.models import SyncLog\n"
        "from sync.run import RUN_LOCK\n"
        "assert lock_acquire(name=RUN_LOCK, holder='other run', ttl_seconds=600)\n"
        "SyncLog.objects.create(peer_sync_id=1, started_at=timezone.now(), trigger='schedule',"
        " step='pull')",
    )
    shell(satellite, PRESS.format(request_id="during-a-run"))
    wait_until(
        lambda: status_of(satellite, "during-a-run")["joined"] is True, 60, "the worker answered"
    )
    assert status_of(satellite, "during-a-run") == {
        "state": "running",
        "joined": True,
        "step": "pull",
    }
    shell(
        satellite,
        "from django.utils import timezone\n"
        "from sync.locks import lock_release\n"
        "from sync.models import SyncLog\n"
        "from sync.run import RUN_LOCK\n"
        "SyncLog.objects.filter(result='running').update(result='success',"
        " ended_at=timezone.now())\n"
        "lock_release(name=RUN_LOCK, holder='other run')",
    )
    assert status_of(satellite, "during-a-run")["state"] == "success"
