"""Satellite keys: the shared sync password enrols a Sync ID once, its key identifies it after.

The master keeps only a key's sha256 on the satellite's Sync with entry: a key is 256 random
bits, so a fast hash is as safe as a slow one, and it costs microseconds per request.
"""

import hashlib
import re
import secrets

from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import AbstractUser
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext

from .models import SyncPeer, SyncPreferences

KEY_BYTES = 32
# What secrets.token_urlsafe(KEY_BYTES) makes: 43 characters of URL-safe base64.
KEY_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")
KEY_PERMISSION = "sync.manage_peer_keys"


def key_hash(key: str) -> str:
    """The form in which the master keeps a key."""
    return hashlib.sha256(key.encode()).hexdigest()


def peer_key_issue(*, peer: SyncPeer) -> str:
    """Issue a new key for an unenrolled `peer`, kept pending until its first use; returns it.

    Pending, because the answer carrying the key may be lost on the way: until the satellite
    uses it, enrolling again with the shared password issues another one instead of refusing.
    """
    key = secrets.token_urlsafe(KEY_BYTES)
    peer.pending_key_hash = key_hash(key)
    peer.key_issued_at = timezone.now()
    peer.save(update_fields=["pending_key_hash", "key_issued_at"])
    return key


def peer_key_confirm(*, peer: SyncPeer) -> bool:
    """Make `peer`'s pending key its key, once the satellite has used it; True if it did."""
    confirmed = SyncPeer.objects.filter(pk=peer.pk, pending_key_hash=peer.pending_key_hash).update(
        key_hash=peer.pending_key_hash, pending_key_hash=""
    )
    peer.key_hash, peer.pending_key_hash = peer.pending_key_hash, ""
    return bool(confirmed)


User = AbstractUser


def _peer_for_change(sync_id: int, user: User) -> SyncPeer:
    if not user.has_perm(KEY_PERMISSION):
        raise PermissionDenied(
            gettext(
                "Only a user with the permission %(permission)r may change a satellite's key or "
                "whether it is enabled."
            )
            % {"permission": KEY_PERMISSION}
        )
    return SyncPeer.objects.select_for_update().get(sync_id=sync_id)


def peer_history(user: User, peer: SyncPeer, message: str) -> None:
    """Write `message` into `peer`'s admin History, as done by `user`."""
    LogEntry.objects.log_actions(
        user_id=user.pk,
        queryset=[peer],
        action_flag=CHANGE,
        change_message=message,
        single_object=True,
    )


@transaction.atomic
def peer_key_reset(*, sync_id: int, user: User) -> SyncPeer:
    """Revoke satellite `sync_id`'s key, so the next server with the shared password enrols."""
    peer = _peer_for_change(sync_id, user)
    peer.key_hash = peer.pending_key_hash = ""
    peer.key_issued_at = None
    noted = peer.changed(by=user)
    peer.save(update_fields=["key_hash", "pending_key_hash", "key_issued_at", *noted])
    peer_history(
        user, peer, "Reset the sync key: the next server to enrol as this Sync ID gets it."
    )
    return peer


@transaction.atomic
def peer_key_preissue(*, sync_id: int, user: User) -> str:
    """Issue a key for satellite `sync_id` to install by hand (`sync_config --key-stdin`)."""
    peer = _peer_for_change(sync_id, user)
    if peer.key_hash:
        raise PermissionDenied(
            f"Satellite {sync_id} is enrolled already: reset its key first (sync_key reset)."
        )
    peer_history(user, peer, "Issued a sync key to install on the satellite by hand.")
    peer.save(update_fields=peer.changed(by=user))
    return peer_key_issue(peer=peer)


@transaction.atomic
def peer_enabled_set(*, sync_id: int, enabled: bool, user: User) -> SyncPeer:
    """Disable satellite `sync_id` (the master refuses it) or enable it again."""
    peer = _peer_for_change(sync_id, user)
    peer.enabled = enabled
    peer.save(update_fields=["enabled", *peer.changed(by=user)])
    peer_history(user, peer, "Enabled synchronisation." if enabled else "Disabled synchronisation.")
    return peer


def satellite_key_keep(key: str) -> None:
    """On a satellite, keep the key the master issued it at enrolment."""
    SyncPreferences.objects.filter(pk=SyncPreferences.SINGLETON_ID).update(sync_key=key)


def satellite_password_forget() -> None:
    """On a satellite that holds its key, stop keeping the shared password in clear."""
    SyncPreferences.objects.filter(pk=SyncPreferences.SINGLETON_ID).exclude(sync_key="").exclude(
        password=""
    ).update(password="")
