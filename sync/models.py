"""Local synchronisation state of a site: preferences, peers, unlock attempts."""

from typing import Any

from django.conf import settings
from django.contrib.auth.hashers import check_password, make_password
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, URLValidator
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from msupply.acting_user import Actor, user_name

from .display import local_time_text
from .errors import ErrorCode, error_text
from .registry import LOCAL_STORE_DATA_SCOPE, MASTER_DATA_SCOPE

MASTER_SYNC_ID = 1
MAX_SYNC_ID = 64

sync_id_validators = [MinValueValidator(MASTER_SYNC_ID), MaxValueValidator(MAX_SYNC_ID)]


class SyncPreferences(models.Model):
    """This site's synchronisation preferences: a singleton, locked behind an authorisation code."""

    SINGLETON_ID = 1

    id = models.PositiveSmallIntegerField(primary_key=True, default=SINGLETON_ID, editable=False)
    sync_id = models.PositiveSmallIntegerField(
        _("Sync ID"),
        default=MASTER_SYNC_ID,
        validators=sync_id_validators,
        help_text=_("1 for the master server; 2-64, unique, for each satellite."),
    )
    username = models.CharField(_("User name"), max_length=150, blank=True)
    # The master only verifies, so it keeps the hash; a satellite must send the password to the
    # master, so it also keeps the password itself.
    password_hash = models.CharField(max_length=256, blank=True, editable=False)
    password = models.CharField(max_length=256, blank=True, editable=False)
    # On a satellite: its own key, which the master issued at enrolment (sync.keys). Once it is
    # held, the shared password above is no longer kept.
    sync_key = models.CharField(max_length=64, blank=True, editable=False)
    sync_interval_minutes = models.PositiveIntegerField(
        _("Sync time interval"),
        default=10,
        help_text=_(
            "Minutes between a satellite's requests for new information. 0 pauses syncing."
        ),
    )
    unlock_code_hash = models.CharField(max_length=256, blank=True, editable=False)

    class Meta:
        verbose_name = _("synchronisation preferences")
        verbose_name_plural = _("synchronisation preferences")
        permissions = [("unlock_sync_preferences", _("Can unlock the synchronisation preferences"))]
        constraints = [
            models.CheckConstraint(condition=Q(id=1), name="sync_preferences_singleton"),
            models.CheckConstraint(
                condition=Q(sync_id__gte=MASTER_SYNC_ID, sync_id__lte=MAX_SYNC_ID),
                name="sync_preferences_sync_id_range",
            ),
        ]

    def __str__(self) -> str:
        return str(_("Synchronisation preferences"))

    @property
    def is_master(self) -> bool:
        return self.sync_id == MASTER_SYNC_ID

    def set_password(self, raw_password: str) -> None:
        self.password_hash = make_password(raw_password)
        self.password = "" if self.is_master else raw_password

    def check_password(self, raw_password: str) -> bool:
        return bool(self.password_hash) and check_password(raw_password, self.password_hash)

    def set_unlock_code(self, raw_code: str) -> None:
        self.unlock_code_hash = make_password(raw_code)

    def check_unlock_code(self, raw_code: str) -> bool:
        return bool(self.unlock_code_hash) and check_password(raw_code, self.unlock_code_hash)

    def clean(self) -> None:
        peers = SyncPeer.objects.all()
        if peers.filter(sync_id=self.sync_id).exists():
            raise ValidationError(
                {
                    "sync_id": _("Sync ID %(sync_id)s is already used by a server in Sync with.")
                    % {"sync_id": self.sync_id}
                }
            )
        if self.is_master and peers.filter(sync_id=MASTER_SYNC_ID).exists():
            raise ValidationError(
                {
                    "sync_id": _(
                        "This site lists the master in Sync with: remove it before making "
                        "this site the master."
                    )
                }
            )
        if not self.is_master and peers.exclude(sync_id=MASTER_SYNC_ID).exists():
            raise ValidationError(
                {
                    "sync_id": _(
                        "This site lists satellites in Sync with: remove them before making "
                        "this site a satellite."
                    )
                }
            )


class SyncPeer(models.Model):
    """A server in the Sync with list: every satellite on the master, the master elsewhere."""

    sync_id = models.PositiveSmallIntegerField(
        _("Sync ID"), unique=True, validators=sync_id_validators
    )
    name = models.CharField(max_length=100)
    store_code = models.CharField(
        _("Store"), max_length=20, help_text=_("Code of the store that this server hosts.")
    )
    url = models.CharField(
        _("URL"),
        max_length=300,
        validators=[
            URLValidator(
                schemes=["http", "https"],
                message=_(
                    "Enter the full http:// or https:// address of the server, for example "
                    "https://clinic.example.org/"
                ),
            )
        ],
        help_text=_("Full URL of the server, for example https://clinic.example.org/"),
    )
    # On the master, this satellite's identity (sync.keys): the sha256 of the key it enrolled
    # with, and of a key issued but not yet used, which the first use confirms. Neither is set
    # until the satellite's first handshake (or an operator's `sync_key issue`).
    key_hash = models.CharField(max_length=64, blank=True, editable=False)
    pending_key_hash = models.CharField(max_length=64, blank=True, editable=False)
    key_issued_at = models.DateTimeField(null=True, blank=True, editable=False)
    enabled = models.BooleanField(
        default=True, editable=False, help_text=_("A disabled satellite is refused by the master.")
    )
    # The handshake does not carry a satellite's interval, so the master is told it here.
    sync_interval_minutes = models.PositiveIntegerField(
        _("Sync time interval"),
        null=True,
        blank=True,
        help_text=_(
            "On the master: the satellite's own Sync time interval in minutes, which "
            "alerts use to tell when it is late. Empty: this server's own Sync time interval."
        ),
    )
    # Not synced, so not in the change log: its services note their user here.
    changed_by = models.CharField(max_length=150, blank=True, editable=False)
    changed_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["sync_id"]
        verbose_name = _("sync with server")
        verbose_name_plural = _("sync with")
        permissions = [
            ("manage_peer_keys", _("Can reset a satellite's sync key, or disable or enable it")),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(sync_id__gte=MASTER_SYNC_ID, sync_id__lte=MAX_SYNC_ID),
                name="sync_peer_sync_id_range",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.sync_id} {self.name}"

    def changed(self, *, by: Actor) -> list[str]:
        """Note that `by` (None: no user, as for a command) changes this entry now; returns the
        fields noted, for update_fields."""
        self.changed_by, self.changed_at = user_name(by), timezone.now()
        return ["changed_by", "changed_at"]

    def clean(self) -> None:
        from stores.models import Store

        preferences = SyncPreferences.objects.get_or_create()[0]
        others = SyncPeer.objects.exclude(pk=self.pk)
        if preferences.is_master and self.sync_id == MASTER_SYNC_ID:
            raise ValidationError(
                {"sync_id": _("This server is the master: list satellites only (Sync ID 2-64).")}
            )
        if self.sync_id == preferences.sync_id:
            raise ValidationError(
                {
                    "sync_id": _("Sync ID %(sync_id)s is this server's own Sync ID.")
                    % {"sync_id": self.sync_id}
                }
            )
        if not preferences.is_master:
            if self.sync_id != MASTER_SYNC_ID:
                raise ValidationError(
                    {"sync_id": _("A satellite synchronises with the master only: use Sync ID 1.")}
                )
            if others.exists():
                raise ValidationError(_("A satellite lists exactly one server: the master."))
            return
        if self.store_code and not Store.objects.filter(code=self.store_code).exists():
            raise ValidationError(
                {
                    "store_code": _("No store with code %(code)r exists on this master.")
                    % {"code": self.store_code}
                }
            )
        if others.filter(store_code=self.store_code).exists():
            raise ValidationError(
                {
                    "store_code": _("Store %(code)s is already hosted by another satellite.")
                    % {"code": self.store_code}
                }
            )


class UnlockAttempt(models.Model):
    """One try at the authorisation code, kept to count failures and lock a user out."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    attempted_at = models.DateTimeField(auto_now_add=True, db_index=True)
    succeeded = models.BooleanField()

    class Meta:
        ordering = ["-attempted_at"]
        indexes = [models.Index(fields=["user", "attempted_at"])]

    def __str__(self) -> str:
        return f"{self.user} {'unlocked' if self.succeeded else 'failed'} at {self.attempted_at}"


class ChangeAction(models.TextChoices):
    UPSERT = "upsert", _("Upsert")
    DELETE = "delete", _("Delete")


class ChangeLog(models.Model):
    """One change to a synced record, appended by a database trigger in the writer's transaction.

    Readers order by (txid, seq): on PostgreSQL a transaction that started earlier can commit
    later with a lower seq, so readers only read transactions older than every one still running
    here (see changes.changes_since) and the pair never goes backwards. SQLite has one writer at a
    time, so txid is 0 and seq alone is commit order.
    """

    seq = models.BigAutoField(primary_key=True)
    txid = models.BigIntegerField(default=0)
    table_name = models.CharField(max_length=63)
    record_id = models.UUIDField()
    action = models.CharField(max_length=6, choices=ChangeAction.choices)
    store_id = models.UUIDField(null=True, blank=True)
    source_site = models.PositiveSmallIntegerField(null=True, blank=True)
    # A user name, not a key: the record of who changed what outlives the user's account.
    changed_by = models.CharField(max_length=150, blank=True, db_default="")
    changed_at = models.DateTimeField(null=True, blank=True, db_default=Now())

    class Meta:
        ordering = ["txid", "seq"]
        indexes = [
            models.Index(fields=["txid", "seq"], name="changelog_cursor"),
            models.Index(
                fields=["txid", "seq"], name="changelog_master_data", condition=MASTER_DATA_SCOPE
            ),
            models.Index(
                fields=["txid", "seq"],
                name="changelog_local_store_data",
                condition=LOCAL_STORE_DATA_SCOPE,
            ),
            models.Index(fields=["store_id", "txid", "seq"], name="changelog_store"),
            # Whether a master record was ever served to a satellite (master data is rare).
            models.Index(
                fields=["record_id"], name="changelog_master_record", condition=MASTER_DATA_SCOPE
            ),
            # Whether a record has a newer change: what pruning compacts (sync.prune).
            models.Index(fields=["record_id", "txid", "seq"], name="changelog_record"),
        ]

    def __str__(self) -> str:
        return f"{self.seq} {self.action} {self.table_name} {self.record_id}"


class PeerState(models.Model):
    """What this site knows of a peer: cursors on a satellite, last contact on the master."""

    peer = models.OneToOneField(
        SyncPeer, on_delete=models.CASCADE, primary_key=True, related_name="state"
    )
    # Push history. On a satellite: its push cursor and the generation of its push history. On
    # the master: the last batch it applied from the satellite (start, end, digest of its change
    # positions) and that batch's generation, so a late or replayed push is never applied and a
    # satellite restored from a backup is recognised (see sync.ordering).
    push_txid = models.BigIntegerField(default=0)
    push_seq = models.BigIntegerField(default=0)
    push_generation = models.PositiveIntegerField(default=0)
    push_start_txid = models.BigIntegerField(default=0)
    push_start_seq = models.BigIntegerField(default=0)
    push_digest = models.CharField(max_length=64, blank=True)
    pull_txid = models.BigIntegerField(default=0)
    pull_seq = models.BigIntegerField(default=0)
    # On the master: the change-log position the satellite may have read up to, set before each
    # pull page is read, so master data it may hold is deactivated rather than deleted.
    served_txid = models.BigIntegerField(default=0)
    served_seq = models.BigIntegerField(default=0)
    initialised = models.BooleanField(default=False)
    # On a satellite, while it initialises from a snapshot (sync.snapshot): the snapshot's
    # change-log position, where the next page starts (blank table: no snapshot under way), and
    # the rows done and in scope, for progress. A dropped link resumes the snapshot from here.
    snapshot_txid = models.BigIntegerField(default=0)
    snapshot_seq = models.BigIntegerField(default=0)
    snapshot_table = models.CharField(max_length=63, blank=True)
    snapshot_after = models.UUIDField(null=True, blank=True)
    snapshot_done = models.BigIntegerField(default=0)
    snapshot_total = models.BigIntegerField(default=0)
    # On the master: when pruning passed this satellite's pull cursor because it was silent
    # longer than SYNC_PEER_RETENTION_DAYS; its next pull must initialise again (sync.prune).
    log_expired_at = models.DateTimeField(null=True, blank=True)
    # On a satellite: the store this site hosts, as the master's handshake named it.
    hosted_store_id = models.UUIDField(null=True, blank=True)
    auth_token = models.TextField(blank=True)
    last_contact_at = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    records_received = models.BigIntegerField(default=0)
    # The stages of a satellite's records (sync.rejects.stage_counts). On the master: records
    # it integrated from the satellite, and the satellite's last report of what it still has to
    # push. On a satellite: the master's last report of its figures.
    records_integrated = models.BigIntegerField(default=0)
    records_to_push = models.BigIntegerField(default=0)
    reported_acknowledged = models.BigIntegerField(default=0)
    reported_integrated = models.BigIntegerField(default=0)
    reported_waiting = models.BigIntegerField(default=0)
    reported_rejected = models.BigIntegerField(default=0)
    reported_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"State of {self.peer}"


class SyncResult(models.TextChoices):
    RUNNING = "running", _("Running")
    SUCCESS = "success", _("Success")
    FAILURE = "failure", _("Failure")


class SyncTrigger(models.TextChoices):
    SCHEDULE = "schedule", _("Schedule")
    BUTTON = "button", _("Sync now button")
    COMMAND = "command", _("sync_now command")
    # On the master: an event of a satellite's exchange, such as a new push history.
    SATELLITE = "satellite", _("Satellite request")


class SyncStep(models.TextChoices):
    HANDSHAKE = "handshake", _("Handshake")
    RESTORE = "restore", _("Restore check")
    PUSH = "push", _("Push")
    PULL = "pull", _("Pull")


class SyncLog(models.Model):
    """One sync run of this site: what moved each way and how it ended."""

    peer_sync_id = models.PositiveSmallIntegerField(_("Peer sync ID"))
    trigger = models.CharField(
        max_length=10, choices=SyncTrigger.choices, default=SyncTrigger.COMMAND
    )
    # Lets the admin page that queued a run find its result.
    request_id = models.CharField(max_length=36, blank=True, db_index=True)
    started_at = models.DateTimeField(db_index=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    step = models.CharField(max_length=20, blank=True, choices=SyncStep.choices)
    result = models.CharField(max_length=10, choices=SyncResult.choices, default=SyncResult.RUNNING)
    records_pushed = models.PositiveIntegerField(default=0)
    records_pulled = models.PositiveIntegerField(default=0)
    bytes_sent = models.PositiveBigIntegerField(default=0)
    bytes_received = models.PositiveBigIntegerField(default=0)
    error_code = models.CharField(max_length=40, blank=True, choices=ErrorCode.choices)
    message = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        when = local_time_text(self.started_at)
        return str(_("Sync with %(sync_id)s at %(when)s: %(result)s")) % {
            "sync_id": self.peer_sync_id,
            "when": when,
            "result": self.get_result_display(),
        }

    @property
    def message_text(self) -> str:
        """The run's error in the viewer's language (the code's words), with its stored detail."""
        return error_text(self.error_code, self.message)


class AppliedBatch(models.Model):
    """A push batch the master has applied, so a re-sent batch changes nothing."""

    sync_id = models.PositiveSmallIntegerField()
    batch_id = models.CharField(max_length=64)
    applied_at = models.DateTimeField(auto_now_add=True)
    records = models.PositiveIntegerField()
    # sha256 of the batch's changes as sent; blank for batches applied before it was kept.
    digest = models.CharField(max_length=64, blank=True, default="")

    class Meta:
        indexes = [models.Index(fields=["applied_at"], name="applied_batch_age")]
        constraints = [
            models.UniqueConstraint(fields=["sync_id", "batch_id"], name="applied_batch_once"),
        ]

    def __str__(self) -> str:
        return f"Batch {self.batch_id} from {self.sync_id}"


class BufferedRecord(models.Model):
    """A received record whose parent has not arrived yet; retried after every batch."""

    table_name = models.CharField(max_length=63)
    record_id = models.UUIDField()
    row = models.JSONField()
    source_site = models.PositiveSmallIntegerField()
    error = models.TextField()
    # The parent it waits for: a batch retries only the records whose parent it brought.
    awaited_table = models.CharField(max_length=63, blank=True)
    awaited_id = models.UUIDField(null=True, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["awaited_table", "awaited_id"], name="buffer_awaited")]
        constraints = [
            models.UniqueConstraint(
                fields=["table_name", "record_id"], name="buffered_record_once"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.table_name} {self.record_id} waiting: {self.error}"


class HeldStatus(models.TextChoices):
    REJECTED = "rejected", _("Rejected")
    WAITING = "waiting", _("Waiting for a rejected record")


class RejectedRecord(models.Model):
    """On the master: a pushed record it could not integrate, set aside with the reason, or one
    that waits for such a record (a line of a rejected transaction). Retried after every
    integration of its satellite; an administrator may retry it now or discard it with a note."""

    sync_id = models.PositiveSmallIntegerField(_("Sync ID"))
    table_name = models.CharField(_("Table"), max_length=63)
    record_id = models.UUIDField(_("Record"))
    row = models.JSONField()
    status = models.CharField(max_length=10, choices=HeldStatus.choices)
    reason = models.TextField()
    awaited_table = models.CharField(max_length=63, blank=True)
    awaited_id = models.UUIDField(null=True, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)
    retried_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=1)

    class Meta:
        ordering = ["sync_id", "received_at"]
        permissions = [("resolve_rejectedrecord", _("Can retry or discard rejected records"))]
        constraints = [
            models.UniqueConstraint(
                fields=["sync_id", "table_name", "record_id"], name="rejected_record_once"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.table_name} {self.record_id} from satellite {self.sync_id}"

    @property
    def fields(self) -> dict[str, Any]:
        """The record's values by field name, as the satellite sent them."""
        from .registry import TABLES_BY_NAME

        table = TABLES_BY_NAME.get(self.table_name)
        names = table.field_names if table else [str(i) for i in range(len(self.row))]
        return dict(zip(names, self.row, strict=False))


class AuthFailure(models.Model):
    """A failed sync authentication, counted to lock a caller out for a while."""

    # The Sync ID the caller claimed: shown to the master's administrator, never counted, so
    # nobody can lock a satellite out by naming it.
    sync_id = models.PositiveSmallIntegerField(null=True, blank=True)
    address = models.GenericIPAddressField(null=True, blank=True)
    code = models.CharField(max_length=40, blank=True, choices=ErrorCode.choices)
    failed_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        indexes = [
            models.Index(fields=["sync_id", "failed_at"]),
            models.Index(fields=["address", "failed_at"]),
        ]

    def __str__(self) -> str:
        return f"Failed sync login from {self.sync_id or self.address} at {self.failed_at}"


class PruneMark(models.Model):
    """How far this site's change log has been compacted: below (txid, seq) rows may be gone."""

    SINGLETON_ID = 1

    id = models.PositiveSmallIntegerField(primary_key=True, default=SINGLETON_ID, editable=False)
    txid = models.BigIntegerField(default=0)
    seq = models.BigIntegerField(default=0)
    pruned_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"Change log compacted below {self.txid}.{self.seq}"


class RunLock(models.Model):
    """A lease that lets one sync run at a time; a crashed holder's lease simply expires."""

    name = models.CharField(max_length=40, primary_key=True)
    holder = models.CharField(max_length=100, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} held by {self.holder or 'nobody'}"


class SyncEndpoint(models.TextChoices):
    HANDSHAKE = "handshake", _("Handshake")
    PUSH = "push", _("Push")
    PULL = "pull", _("Pull")
    SNAPSHOT = "snapshot", _("Snapshot")


class ExchangeResult(models.TextChoices):
    SUCCESS = "success", _("Success")
    FAILURE = "failure", _("Failure")


class SyncExchange(models.Model):
    """On the master: one request a satellite made to the sync API, refused or not."""

    # The Sync ID the caller claimed, kept for refused logins too; `peer` only once authenticated.
    sync_id = models.PositiveSmallIntegerField(_("Sync ID"), null=True, blank=True)
    peer = models.ForeignKey(
        SyncPeer, on_delete=models.SET_NULL, null=True, blank=True, related_name="exchanges"
    )
    endpoint = models.CharField(max_length=10, choices=SyncEndpoint.choices)
    result = models.CharField(max_length=10, choices=ExchangeResult.choices)
    error_code = models.CharField(max_length=40, blank=True, choices=ErrorCode.choices)
    message = models.TextField(blank=True)
    # Push: records applied; pull: records served.
    records = models.PositiveIntegerField(default=0)
    bytes_in = models.PositiveBigIntegerField(default=0)
    bytes_out = models.PositiveBigIntegerField(default=0)
    duration_ms = models.PositiveIntegerField(default=0)
    address = models.GenericIPAddressField(null=True, blank=True)
    started_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-started_at"]
        indexes = [models.Index(fields=["sync_id", "started_at"], name="exchange_satellite")]

    def __str__(self) -> str:
        endpoint, when = self.get_endpoint_display(), local_time_text(self.started_at)
        return str(_("%(endpoint)s from %(sync_id)s at %(when)s: %(result)s")) % {
            "endpoint": endpoint,
            "sync_id": self.sync_id,
            "when": when,
            "result": self.get_result_display(),
        }

    @property
    def message_text(self) -> str:
        """The exchange's error in the viewer's language (the code's words), with its detail."""
        return error_text(self.error_code, self.message)


class SyncRequest(models.Model):
    """A Sync now press: answered by the run it started, or by the run already going."""

    request_id = models.CharField(max_length=36, primary_key=True)
    queued_at = models.DateTimeField()
    # Set when the worker found a run already going: that run's log answers this request.
    joined = models.ForeignKey(SyncLog, on_delete=models.SET_NULL, null=True, blank=True)

    def __str__(self) -> str:
        return f"Sync now {self.request_id} queued at {self.queued_at}"


class AlertState(models.TextChoices):
    OK = "ok", _("OK")
    STALE = "stale", _("Stale")
    FAILING = "failing", _("Failing")


class SatelliteAlert(models.Model):
    """On the master: the state a satellite was last alerted in, so a state is mailed once."""

    peer = models.OneToOneField(
        SyncPeer, on_delete=models.CASCADE, primary_key=True, related_name="alert"
    )
    state = models.CharField(max_length=10, choices=AlertState.choices, default=AlertState.OK)
    sent_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.peer}: {self.get_state_display()}"
