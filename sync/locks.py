"""Lease locks in the database: one sync run per site, released even when a worker dies."""

from datetime import datetime, timedelta

from django.db.models import Q
from django.utils import timezone

from .models import RunLock


def lock_acquire(*, name: str, holder: str, ttl_seconds: float) -> bool:
    """Take the lease `name` for `holder` unless someone else holds an unexpired one."""
    now = timezone.now()
    RunLock.objects.get_or_create(name=name)
    # One UPDATE decides: both databases re-check the condition on the locked row.
    taken = (
        RunLock.objects.filter(name=name)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__lt=now))
        .update(holder=holder, expires_at=now + timedelta(seconds=ttl_seconds))
    )
    return taken == 1


def lock_renew(*, name: str, holder: str, ttl_seconds: float) -> None:
    """Extend the lease while work goes on, so only a dead holder's lease runs out."""
    RunLock.objects.filter(name=name, holder=holder).update(
        expires_at=timezone.now() + timedelta(seconds=ttl_seconds)
    )


def lock_release(*, name: str, holder: str) -> None:
    RunLock.objects.filter(name=name, holder=holder).update(holder="", expires_at=None)


def lock_held(*, name: str, now: datetime | None = None) -> bool:
    """Whether someone holds an unexpired lease `name`: a run that stopped renewing has died."""
    return (
        RunLock.objects.filter(name=name, expires_at__gt=now or timezone.now())
        .exclude(holder="")
        .exists()
    )
