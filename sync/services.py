"""Write paths of the sync app: preferences, the Sync with list, unlocking and exchanges."""

import enum
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import DatabaseError, transaction
from django.db.models import Model
from django.utils import timezone
from django.utils.text import capfirst
from django.utils.translation import gettext_lazy as _
from django.utils.translation import gettext_noop

from msupply.acting_user import Actor, user_name

from . import keys
from .models import (
    MASTER_SYNC_ID,
    ExchangeResult,
    PeerState,
    SyncExchange,
    SyncLog,
    SyncPeer,
    SyncPreferences,
    SyncRequest,
    SyncResult,
    UnlockAttempt,
)
from .selectors import preferences_get

logger = logging.getLogger(__name__)

ROLE_CHANGE_REENTER_HINT = _(
    "A satellite enrols with the master with the shared sync password, and this server does not "
    "keep it: enter the password again."
)


# The user the History names for a command run without --user: LogEntry needs a user, and a
# provisioning script often runs before any account exists. Inactive, with no usable password,
# so nobody can log in as it.
COMMAND_USERNAME = "manage.py"


def command_user_get(*, username: str | None) -> AbstractBaseUser:
    """The user a command's changes are recorded for: `username`, or the `manage.py` user.

    Raises ObjectDoesNotExist when `username` names no user of this server.
    """
    users = get_user_model()._default_manager
    if username:
        return users.get(**{get_user_model().USERNAME_FIELD: username})
    user, created = users.get_or_create(
        **{get_user_model().USERNAME_FIELD: COMMAND_USERNAME}, defaults={"is_active": False}
    )
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


def _author(by: Actor) -> Actor:
    """Who a record's "Last changed by" names: the manage.py user is no one in particular."""
    return None if user_name(by) == COMMAND_USERNAME else by


def history_log(
    *, user: Actor, obj: Model, action: int, fields: Sequence[str] = ()
) -> LogEntry | None:
    """Write `obj`'s admin History entry as `user` did it, in the admin's own message shape
    (the changed fields' labels, never their values); nothing without a user."""
    if user is None or not user.is_authenticated:
        return None
    message: list[dict[str, object]] = []
    if action == ADDITION:
        message = [{"added": {}}]
    elif action == CHANGE and fields:
        message = [{"changed": {"fields": list(fields)}}]
    entries = LogEntry.objects.log_actions(
        user_id=user.pk,
        queryset=[obj],
        action_flag=action,
        change_message=message or "",
        single_object=True,
    )
    return entries if isinstance(entries, LogEntry) else None


def _label(model: type[Model], field: str) -> str:
    return str(capfirst(getattr(model._meta.get_field(field), "verbose_name", field)))


def satellite_needs_password(*, preferences: SyncPreferences, sync_id: int) -> bool:
    """Whether saving `sync_id` needs the password entered again, to enrol with the master.

    A satellite enrols each Sync ID with the shared password, then holds the master's key for
    it and forgets the password (sync.keys). Becoming a satellite, or another one, starts over.
    """
    if sync_id == MASTER_SYNC_ID or preferences.password:
        return False
    if preferences.sync_key and sync_id == preferences.sync_id:
        return False
    return bool(preferences.password_hash)


@transaction.atomic
def preferences_update(
    *,
    sync_id: int | None = None,
    username: str | None = None,
    password: str | None = None,
    sync_interval_minutes: int | None = None,
    unlock_code: str | None = None,
    key: str | None = None,
    by: Actor = None,
) -> SyncPreferences:
    """Set the given preferences after the same validation the admin applies.

    `key` is a satellite's key issued by hand on the master (`sync_key issue`). The change goes
    into the admin History as done by `by` (nothing is written without a user).
    """
    preferences = SyncPreferences.objects.select_for_update().get(pk=preferences_get().pk)
    plain = ["sync_id", "username", "sync_interval_minutes"]
    before = {name: getattr(preferences, name) for name in plain}
    needs_password = satellite_needs_password(
        preferences=preferences, sync_id=preferences.sync_id if sync_id is None else sync_id
    )
    if sync_id is not None and sync_id != preferences.sync_id:
        # The key identifies the old Sync ID only.
        preferences.sync_key = ""
    if sync_id is not None:
        preferences.sync_id = sync_id
    if username is not None:
        preferences.username = username
    if sync_interval_minutes is not None:
        preferences.sync_interval_minutes = sync_interval_minutes
    preferences.full_clean()
    if password is not None:
        preferences.set_password(password)
    elif preferences.is_master:
        preferences.password = ""
    elif needs_password and key is None:
        raise ValidationError({"password": ROLE_CHANGE_REENTER_HINT})
    if unlock_code is not None:
        preferences.set_unlock_code(unlock_code)
    if key is not None:
        if preferences.is_master or not keys.KEY_PATTERN.fullmatch(key):
            raise ValidationError(
                {
                    "key": _(
                        "A key is installed on a satellite only, exactly as the master printed it."
                    )
                }
            )
        preferences.sync_key = key
    preferences.save()
    # Secrets are named, never shown; the History translates these labels where it shows them.
    secrets = {
        gettext_noop("Password"): password,
        gettext_noop("Authorisation code"): unlock_code,
        gettext_noop("Key"): key,
    }
    history_log(
        user=by,
        obj=preferences,
        action=CHANGE,
        fields=[
            *(_label(SyncPreferences, n) for n in plain if getattr(preferences, n) != before[n]),
            *(label for label, value in secrets.items() if value is not None),
        ],
    )
    if username is not None or password is not None or key is not None:
        # A run token the master issued for the old credentials must not outlive them: the next
        # run logs in with the credentials just set, so a wrong password shows at once.
        PeerState.objects.update(auth_token="")
    sync_schedule_update(preferences=preferences)
    return preferences


SYNC_SCHEDULE_NAME = "Sync with the master"
PRUNE_SCHEDULE_NAME = "Prune sync history"
ALERTS_SCHEDULE_NAME = "Send sync alerts"
# Often enough that a failing satellite is reported within minutes; a run with nothing to send
# is one query.
ALERTS_EVERY_SECONDS = 5 * 60


def sync_schedule_update(*, preferences: SyncPreferences) -> None:
    """Keep Celery beat's periodic sync in step with the Sync time interval preference.

    django-celery-beat's database scheduler notices the change by itself, so nothing restarts.
    A satellite with an interval syncs every that many minutes; 0 pauses; the master never pulls.
    Every site also gets the daily prune (sync.prune); the master, alerts (sync.alerts).
    """
    from .tasks import ALERTS_TASK, PRUNE_TASK, SYNC_TASK

    enabled = not preferences.is_master and preferences.sync_interval_minutes > 0
    seconds = max(preferences.sync_interval_minutes, 1) * settings.SYNC_INTERVAL_UNIT_SECONDS
    _periodic_task_keep(
        name=SYNC_SCHEDULE_NAME, task_name=SYNC_TASK, seconds=seconds, enabled=enabled
    )
    # Every site prunes daily, master and satellites alike (sync.prune).
    _periodic_task_keep(
        name=PRUNE_SCHEDULE_NAME, task_name=PRUNE_TASK, seconds=24 * 60 * 60, enabled=True
    )
    _periodic_task_keep(
        name=ALERTS_SCHEDULE_NAME,
        task_name=ALERTS_TASK,
        seconds=ALERTS_EVERY_SECONDS,
        enabled=preferences.is_master,
    )


def _periodic_task_keep(*, name: str, task_name: str, seconds: int, enabled: bool) -> None:
    """Create or correct the beat entry `name`, saving only when something changed."""
    from django_celery_beat.models import IntervalSchedule, PeriodicTask

    interval = IntervalSchedule.objects.get_or_create(
        every=seconds, period=IntervalSchedule.SECONDS
    )[0]
    task = PeriodicTask.objects.filter(name=name).first()
    if task is None:
        if not enabled:
            return
        task = PeriodicTask(name=name, task=task_name)
    if (task.interval_id, task.enabled) != (interval.pk, enabled):
        task.interval = interval
        task.enabled = enabled
        task.save()


@transaction.atomic
def peer_save(*, peer: SyncPeer, by: Actor = None) -> SyncPeer:
    """Add or change a server in the Sync with list after checking it against this site's role;
    `by` is the user who does it, named in the admin History (None: no user, no History)."""
    peer.full_clean()
    adding = peer._state.adding
    before = None if adding else SyncPeer.objects.filter(pk=peer.pk).first()
    peer.changed(by=_author(by))
    peer.save()
    changed = [
        str(capfirst(field.verbose_name))
        for field in SyncPeer._meta.concrete_fields
        if field.editable
        and before is not None
        and getattr(before, field.attname) != getattr(peer, field.attname)
    ]
    history_log(user=by, obj=peer, action=ADDITION if adding else CHANGE, fields=changed)
    return peer


@transaction.atomic
def peer_delete(*, sync_id: int, by: Actor = None) -> None:
    """Remove a server from the Sync with list, in the History as done by `by`; raises
    SyncPeer.DoesNotExist if it is not there."""
    peer = SyncPeer.objects.get(sync_id=sync_id)
    history_log(user=by, obj=peer, action=DELETION)
    peer.delete()


class UnlockOutcome(enum.Enum):
    UNLOCKED = "unlocked"
    WRONG_CODE = "wrong code"
    LOCKED_OUT = "locked out"


@dataclass(frozen=True)
class UnlockResult:
    outcome: UnlockOutcome
    failures: int
    locked_until: datetime | None = None


def unlock_locked_until(*, user: "User") -> datetime | None:
    """Return when a locked-out user may try the authorisation code again, or None."""
    window_start = timezone.now() - timedelta(seconds=settings.SYNC_UNLOCK_LOCKOUT_SECONDS)
    failures = _recent_failures(user=user, since=window_start)
    if len(failures) < settings.SYNC_UNLOCK_MAX_FAILURES:
        return None
    return failures[0] + timedelta(seconds=settings.SYNC_UNLOCK_LOCKOUT_SECONDS)


def _recent_failures(*, user: "User", since: datetime) -> list[datetime]:
    """Failed attempts since `since` and since the user's last success, newest first."""
    attempts = UnlockAttempt.objects.filter(user=user, attempted_at__gte=since)
    last_success = attempts.filter(succeeded=True).values_list("attempted_at", flat=True).first()
    failures = attempts.filter(succeeded=False)
    if last_success is not None:
        failures = failures.filter(attempted_at__gt=last_success)
    return list(failures.values_list("attempted_at", flat=True))


@transaction.atomic
def preferences_unlock_attempt(*, user: "User", code: str) -> UnlockResult:
    """Check an authorisation code, counting failures and refusing users who are locked out."""
    locked_until = unlock_locked_until(user=user)
    if locked_until is not None:
        return UnlockResult(
            UnlockOutcome.LOCKED_OUT, settings.SYNC_UNLOCK_MAX_FAILURES, locked_until
        )
    succeeded = preferences_get().check_unlock_code(code)
    UnlockAttempt.objects.create(user=user, succeeded=succeeded)
    if succeeded:
        return UnlockResult(UnlockOutcome.UNLOCKED, 0)
    window_start = timezone.now() - timedelta(seconds=settings.SYNC_UNLOCK_LOCKOUT_SECONDS)
    failures = len(_recent_failures(user=user, since=window_start))
    return UnlockResult(UnlockOutcome.WRONG_CODE, failures, unlock_locked_until(user=user))


@dataclass(frozen=True)
class Exchange:
    """What one request to the sync API was and how it ended, as the master saw it."""

    sync_id: int | None
    peer: SyncPeer | None
    endpoint: str
    started_at: datetime
    duration_ms: int
    address: str | None
    bytes_in: int
    # Unknown when the view raised instead of answering.
    bytes_out: int = 0
    records: int = 0
    error_code: str = ""
    message: str = ""
    # A request answered with a warning (a push whose records were partly set aside) carries a
    # code and succeeded all the same.
    succeeded: bool | None = None


def exchange_record(*, exchange: Exchange) -> None:
    """Keep one exchange: one INSERT in its own transaction, after the request's own work.

    Called outside the request's transactions, so a push that was rolled back keeps its record.
    A database that refuses the row costs the record only, never the satellite's answer.
    """
    try:
        with transaction.atomic():
            _exchange_insert(exchange)
    except DatabaseError:
        logger.warning("Could not record a sync exchange from %s.", exchange.sync_id, exc_info=True)


def _exchange_insert(exchange: Exchange) -> None:
    SyncExchange.objects.create(
        sync_id=exchange.sync_id,
        peer=exchange.peer,
        endpoint=exchange.endpoint,
        result=ExchangeResult.SUCCESS
        if (not exchange.error_code if exchange.succeeded is None else exchange.succeeded)
        else ExchangeResult.FAILURE,
        error_code=exchange.error_code[:40],
        message=exchange.message,
        records=max(exchange.records, 0),
        bytes_in=exchange.bytes_in,
        bytes_out=exchange.bytes_out,
        duration_ms=exchange.duration_ms,
        address=exchange.address,
        started_at=exchange.started_at,
    )


def sync_request_queue(*, request_id: str) -> SyncRequest:
    """Note a Sync now press before its run is queued, so its page can tell if none starts."""
    return SyncRequest.objects.create(request_id=request_id, queued_at=timezone.now())


def sync_request_join(*, request_id: str) -> None:
    """Answer a Sync now press with the run already going, which the press did not start."""
    running = SyncLog.objects.filter(result=SyncResult.RUNNING).order_by("-started_at").first()
    joined = running or SyncLog.objects.order_by("-started_at").first()
    SyncRequest.objects.update_or_create(
        request_id=request_id,
        defaults={"joined": joined},
        create_defaults={"joined": joined, "queued_at": timezone.now()},
    )
