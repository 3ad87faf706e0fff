"""Who this site is: its sync ID, whether it is the master, the stores it hosts; below both apps.

The answers live in the sync app's tables (preferences, Sync with, change log), yet stores must
not import sync. So this module imports neither app: it names the questions (`SiteIdentity`),
and sync registers its read paths, `sync.selectors`, as the answerer when its app is ready
(`provider_set` in `SyncConfig.ready`). Every import points downward: stores and sync import
this module, sync imports stores, and nothing here imports either.

Why a registered answerer rather than `apps.get_model("sync", ...)` here: the rules (which
peer hosts which store, when a pruned change log may still have carried a record) stay in one
place, sync, instead of being copied below it; and a test that patches `sync.selectors` still
changes what stores sees, because the module is looked up at each call.
"""

import uuid
from typing import Any, Protocol

from django.core.exceptions import ImproperlyConfigured
from django.db.models import QuerySet


class SiteIdentity(Protocol):
    """What the app that syncs this site answers about it; `sync.selectors` is the one answerer."""

    def site_sync_id(self) -> int: ...

    def site_is_master(self) -> bool: ...

    def hosted_store_id(self) -> uuid.UUID | None: ...

    def hosted_store_ids(self) -> frozenset[uuid.UUID]: ...

    def store_is_hosted_here(self, store_id: uuid.UUID) -> bool: ...

    def store_hosting_peer(self, *, code: str) -> object | None: ...

    def master_record_may_be_held(self, *, table_name: str, record_id: uuid.UUID) -> bool: ...

    def records_with_last_change(self, records: QuerySet[Any]) -> QuerySet[Any]: ...


_answerer: list[SiteIdentity] = []


def provider_set(provider: SiteIdentity) -> None:
    """Make `provider` the one answerer of this module's questions (the sync app, when ready)."""
    _answerer[:] = [provider]


def _provider() -> SiteIdentity:
    if not _answerer:
        raise ImproperlyConfigured(
            "Nothing answers who this site is: add the sync app to INSTALLED_APPS, whose "
            "AppConfig.ready() registers it with msupply.identity.provider_set()."
        )
    return _answerer[0]


def site_sync_id() -> int:
    """This site's sync ID: 1 on the master, 2-64 on a satellite."""
    return _provider().site_sync_id()


def site_is_master() -> bool:
    """Whether this site is the master, the only site where master data may be written."""
    return _provider().site_is_master()


def hosted_store_id() -> uuid.UUID | None:
    """On a satellite, the store the master's handshake named; None before the first sync."""
    return _provider().hosted_store_id()


def hosted_store_ids() -> frozenset[uuid.UUID]:
    """The stores whose transactions and stock this site writes: on a satellite the one the
    master named (none before the first sync), on the master every store no satellite hosts."""
    return _provider().hosted_store_ids()


def store_is_hosted_here(store_id: uuid.UUID) -> bool:
    """Whether this site writes `store_id`'s transactions and stock (see hosted_store_ids)."""
    return _provider().store_is_hosted_here(store_id)


def store_hosting_peer(*, code: str) -> object | None:
    """The satellite in Sync with that hosts the store with `code` (it prints as its sync ID
    and name), if any."""
    return _provider().store_hosting_peer(code=code)


def master_record_may_be_held(*, table_name: str, record_id: uuid.UUID) -> bool:
    """Whether any satellite may hold this master record; run inside the deleting transaction."""
    return _provider().master_record_may_be_held(table_name=table_name, record_id=record_id)


def records_with_last_change(records: QuerySet[Any]) -> QuerySet[Any]:
    """`records` of a synced table annotated with their newest change: `last_changed_by`,
    `last_changed_at` and `last_change_source` (the site it came from by sync, or None)."""
    return _provider().records_with_last_change(records)
