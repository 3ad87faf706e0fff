"""Who is acting: the user the change-capture triggers (sync.capture) record for each change.

Below both apps, so the stores services and the sync services name their user the same way.
PostgreSQL triggers read a per-transaction setting; SQLite triggers call a per-connection
function that reads this thread's context variable.
"""

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db import connection, transaction

# Whoever a change is made for: a user, an anonymous visitor or nobody (a command, the system).
Actor = AbstractBaseUser | AnonymousUser | None

_acting_user: contextvars.ContextVar[str] = contextvars.ContextVar(
    "msupply_acting_user", default=""
)

POSTGRESQL_SETTING = "msupply.changed_by"


def acting_user_name() -> str:
    """The user name that changes_by() set for the current block; empty outside one."""
    return _acting_user.get()


def user_name(user: Actor) -> str:
    """The name a change records for `user`: empty for None or an anonymous user."""
    return user.get_username() if user is not None and user.is_authenticated else ""


@contextmanager
def changes_by(user: Actor) -> Iterator[None]:
    """Record `user` as the author of every change written inside this block, in one transaction.

    None (or an anonymous user) keeps whoever acts already, so a service called without a user
    from one that has a user still records that user.
    """
    name = user_name(user)
    if not name:
        yield
        return
    previous = _acting_user.get()
    token = _acting_user.set(name)
    try:
        with transaction.atomic():
            _set_postgresql_setting(name)
            yield
            # Only on success: after an error the savepoint is rolled back, setting and all.
            _set_postgresql_setting(previous)
    finally:
        _acting_user.reset(token)


def _set_postgresql_setting(value: str) -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT set_config(%s, %s, true)", [POSTGRESQL_SETTING, value])
