"""Read paths of the sync app; `site_is_master` is the public answer to "may I edit master data"."""

from django.db.models import QuerySet

from .models import MASTER_SYNC_ID, SyncPeer, SyncPreferences


def preferences_get() -> SyncPreferences:
    """Return this site's preferences, creating the defaults (a master) on first use."""
    return SyncPreferences.objects.get_or_create(pk=SyncPreferences.SINGLETON_ID)[0]


def site_sync_id() -> int:
    """Return this site's sync ID: 1 on the master, 2-64 on a satellite."""
    sync_id = (
        SyncPreferences.objects.filter(pk=SyncPreferences.SINGLETON_ID)
        .values_list("sync_id", flat=True)
        .first()
    )
    return MASTER_SYNC_ID if sync_id is None else sync_id


def site_is_master() -> bool:
    """Tell whether this site is the master, the only site where master data may be written."""
    return site_sync_id() == MASTER_SYNC_ID


def peers_list() -> QuerySet[SyncPeer]:
    """Return the Sync with list in sync ID order."""
    return SyncPeer.objects.order_by("sync_id")
