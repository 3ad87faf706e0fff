"""Celery tasks: the scheduled and on-demand sync runs, the daily prune and alerts, front doors."""

from celery import shared_task

from .alerts import alerts_send
from .models import SyncTrigger
from .prune import sync_prune
from .run import SyncAlreadyRunning, sync_run
from .services import sync_request_join

SYNC_TASK = "sync.sync_with_master"
PRUNE_TASK = "sync.prune"
ALERTS_TASK = "sync.alerts"


# A run interrupted by a dead worker must not be replayed later by the broker: the lease and the
# cursors already make the next scheduled run pick up where it stopped.
@shared_task(name=SYNC_TASK, acks_late=False, ignore_result=True)
def sync_with_master(trigger: str = SyncTrigger.SCHEDULE, request_id: str = "") -> str:
    """Run one sync with the master; a run already going on answers a Sync now press instead."""
    try:
        return str(sync_run(trigger=trigger, request_id=request_id).result)
    except SyncAlreadyRunning as error:
        if request_id:
            sync_request_join(request_id=request_id)
        return str(error)


@shared_task(name=PRUNE_TASK, ignore_result=True)
def prune() -> dict[str, object]:
    """Remove what this site no longer needs (sync_prune); returns the counts per kind."""
    return sync_prune().to_dict()


@shared_task(name=ALERTS_TASK, ignore_result=True)
def sync_alerts() -> list[dict[str, object]]:
    """On the master, mail each satellite's change of alert state (alerts_send); returns them."""
    return [alert.to_dict() for alert in alerts_send()]
