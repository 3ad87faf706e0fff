"""Admin for the synchronisation preferences, locked behind an authorisation code."""

import uuid
from datetime import datetime, timedelta
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db.models import Model, QuerySet
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
)
from django.template.defaultfilters import filesizeformat
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator
from django.utils.translation import gettext, ngettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.debug import sensitive_post_parameters
from import_export.admin import ExportMixin

from stores.admin import last_change_text

from . import keys, rejects, selectors, services
from .display import duration_text, local_clock_text, local_time_text
from .errors import StrOrPromise, SyncError, error_text
from .models import (
    AuthFailure,
    BufferedRecord,
    HeldStatus,
    RejectedRecord,
    SyncExchange,
    SyncLog,
    SyncPeer,
    SyncPreferences,
    SyncResult,
    SyncTrigger,
)
from .run import connection_test
from .selectors import preferences_get
from .services import ROLE_CHANGE_REENTER_HINT
from .tasks import sync_with_master

UNLOCK_SESSION_KEY = "sync_preferences_unlocked_until"
UNLOCK_PERMISSION = "sync.unlock_sync_preferences"
# Fields that only an unlocked session may change; the interval stays editable, as in mSupply.
LOCKED_FIELDS = ["sync_id", "username", "password_set", "unlock_code_set"]


def preferences_unlocked_until(request: HttpRequest) -> datetime | None:
    """Return when this admin session's unlock expires, or None if it is locked."""
    value = request.session.get(UNLOCK_SESSION_KEY)
    if value is None:
        return None
    until = datetime.fromisoformat(value)
    return until if until > timezone.now() else None


class UnlockForm(forms.Form):
    code = forms.CharField(
        label=_("Authorisation code"), strip=False, widget=forms.PasswordInput(render_value=False)
    )


class UnlockedPreferencesForm(forms.ModelForm):
    new_password = forms.CharField(
        label=_("Password"),
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False),
        help_text=_("Leave blank to keep the current password. It must match on every server."),
    )
    new_unlock_code = forms.CharField(
        label=_("New authorisation code"),
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False),
        help_text=_("Leave blank to keep the current code."),
    )

    class Meta:
        model = SyncPreferences
        fields = ["sync_id", "username", "sync_interval_minutes"]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if (
            data.get("sync_id") is not None
            and not data.get("new_password")
            and services.satellite_needs_password(
                preferences=preferences_get(), sync_id=data["sync_id"]
            )
        ):
            self.add_error("new_password", ROLE_CHANGE_REENTER_HINT)
        return data


class HistoryFromServices(admin.ModelAdmin):
    """Saves go into the History from the service (sync.services), as the commands' do; the
    admin's own entry for a saved form would be a second one."""

    def log_addition(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        return None

    def log_change(self, request: HttpRequest, obj: Any, message: Any) -> Any:
        # A list is the saved form's message (construct_change_message); text is this admin's.
        if isinstance(message, list):
            return None
        return super().log_change(request, obj, message)


@admin.register(SyncPreferences)
class SyncPreferencesAdmin(HistoryFromServices):
    """One page for the singleton; locked fields need the authorisation code to change."""

    change_form_template = "admin/sync/syncpreferences/change_form.html"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> type[forms.ModelForm]:
        if preferences_unlocked_until(request):
            kwargs["form"] = UnlockedPreferencesForm
        return super().get_form(request, obj, change, **kwargs)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[Any]:
        if preferences_unlocked_until(request):
            fields = [
                "sync_id",
                "username",
                "new_password",
                "sync_interval_minutes",
                "new_unlock_code",
            ]
        else:
            fields = [
                "sync_id",
                "username",
                "password_set",
                "sync_interval_minutes",
                "unlock_code_set",
            ]
        return fields if preferences_get().is_master else [*fields, "key_held"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # Read-only fields are left out of the form, so a hand-made POST cannot set them.
        return ["key_held"] + ([] if preferences_unlocked_until(request) else LOCKED_FIELDS)

    @admin.display(description=_("Key"))
    def key_held(self, obj: SyncPreferences) -> str:
        if obj.sync_key:
            return gettext("held: this satellite enrolled with the master, and keeps no password")
        return gettext("not enrolled: the next sync enrols with the user name and password above")

    @admin.display(description=_("Password"))
    def password_set(self, obj: SyncPreferences) -> str:
        return gettext("set") if obj.password_hash else gettext("not set")

    @admin.display(description=_("Authorisation code"))
    def unlock_code_set(self, obj: SyncPreferences) -> str:
        return gettext("set") if obj.unlock_code_hash else gettext("not set")

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        data = form.cleaned_data
        services.preferences_update(
            sync_id=data.get("sync_id"),
            username=data.get("username"),
            password=data.get("new_password") or None,
            sync_interval_minutes=data.get("sync_interval_minutes"),
            unlock_code=data.get("new_unlock_code") or None,
            by=request.user,
        )

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        return self.change_view(request, str(preferences_get().pk), extra_context=extra_context)

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        context = {
            **(extra_context or {}),
            # A singleton: only Save, which returns to this same page.
            "show_save_and_continue": False,
            "show_save_and_add_another": False,
            "show_delete": False,
            "unlocked_until": preferences_unlocked_until(request),
            "can_unlock": request.user.has_perm(UNLOCK_PERMISSION),
            "unlock_url": reverse("admin:sync_syncpreferences_unlock"),
            "lock_url": reverse("admin:sync_syncpreferences_lock"),
        }
        return super().change_view(request, object_id, form_url, context)

    def response_change(self, request: HttpRequest, obj: Any) -> HttpResponse:
        messages.success(request, gettext("The synchronisation preferences were saved."))
        return HttpResponseRedirect(reverse("admin:sync_syncpreferences_changelist"))

    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                "unlock/",
                self.admin_site.admin_view(self.unlock_view),
                name="sync_syncpreferences_unlock",
            ),
            path(
                "lock/",
                self.admin_site.admin_view(self.lock_view),
                name="sync_syncpreferences_lock",
            ),
            *super().get_urls(),
        ]

    @method_decorator(sensitive_post_parameters("code"))
    def unlock_view(self, request: HttpRequest) -> HttpResponse:
        """Ask for the authorisation code; the right one unlocks this session for a while."""
        if not request.user.has_perm(UNLOCK_PERMISSION):
            raise PermissionDenied
        preferences = preferences_get()
        changelist_url = reverse("admin:sync_syncpreferences_changelist")
        form = UnlockForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            result = services.preferences_unlock_attempt(
                user=request.user,  # type: ignore[arg-type]
                code=form.cleaned_data["code"],
            )
            if result.outcome is services.UnlockOutcome.UNLOCKED:
                until = timezone.now() + timedelta(seconds=settings.SYNC_UNLOCK_SECONDS)
                request.session[UNLOCK_SESSION_KEY] = until.isoformat()
                self.log_change(request, preferences, "Unlocked the synchronisation preferences.")
                messages.success(
                    request,
                    gettext("The synchronisation preferences are unlocked until %(time)s.")
                    % {"time": local_clock_text(until)},
                )
                return HttpResponseRedirect(changelist_url)
            if result.outcome is services.UnlockOutcome.LOCKED_OUT:
                self.log_change(request, preferences, "Unlock refused: user is locked out.")
            else:
                self.log_change(
                    request,
                    preferences,
                    f"Wrong authorisation code ({result.failures} of "
                    f"{settings.SYNC_UNLOCK_MAX_FAILURES}).",
                )
            form.add_error("code", _unlock_refusal(result))
        context = {
            **self.admin_site.each_context(request),
            "title": gettext("Unlock the synchronisation preferences"),
            "form": form,
            "opts": self.opts,
            "original": preferences,
            "cancel_url": changelist_url,
            "locked_until": services.unlock_locked_until(user=request.user),  # type: ignore[arg-type]
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/sync/syncpreferences/unlock.html", context)

    def lock_view(self, request: HttpRequest) -> HttpResponse:
        """Lock the preferences again before the unlock expires."""
        if request.method == "POST":
            request.session.pop(UNLOCK_SESSION_KEY, None)
            self.log_change(request, preferences_get(), "Locked the synchronisation preferences.")
            messages.success(request, gettext("The synchronisation preferences are locked."))
        return HttpResponseRedirect(reverse("admin:sync_syncpreferences_changelist"))


def _unlock_refusal(result: services.UnlockResult) -> str:
    if result.locked_until is not None:
        return gettext("Too many wrong codes. You can try again at %(time)s.") % {
            "time": local_clock_text(result.locked_until)
        }
    left = settings.SYNC_UNLOCK_MAX_FAILURES - result.failures
    return ngettext(
        "That authorisation code is not right. %(left)d try left before a lockout.",
        "That authorisation code is not right. %(left)d tries left before a lockout.",
        left,
    ) % {"left": left}


class SatelliteHealthFilter(admin.SimpleListFilter):
    """On the master: satellites OK, stale, failing or never synced (the admin index's card)."""

    title = _("health")
    parameter_name = "health"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, StrOrPromise]]:
        return list(selectors.SATELLITE_HEALTH_LABELS.items())

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        health = self.value()
        if health not in selectors.SATELLITE_HEALTH_LABELS:
            return queryset
        return queryset.filter(selectors.satellite_health_q(health))


STALENESS_TITLES = {
    "warning": _("More than a day ago"),
    "error": _("More than three days ago"),
}


@admin.register(SyncPeer)
class SyncPeerAdmin(HistoryFromServices):
    """The Sync with list; servers are added or removed only while the preferences are unlocked.

    Each row shows how syncing with that server goes; on a satellite it also has Sync now and
    Test connection buttons (the master waits for satellites, so it has none).
    """

    list_display = [
        "sync_id",
        "name",
        "store_code",
        "url",
        "last_success",
        "last_error",
        "stages",
    ]
    readonly_fields = ["last_changed", "stages"]
    search_fields = ["name", "store_code", "url"]
    list_select_related = ["state"]

    class Media:
        css = {"all": ["sync/admin.css"]}

    def get_queryset(self, request: HttpRequest) -> QuerySet[SyncPeer]:
        queryset = selectors.peers_with_last_run_failure(super().get_queryset(request))
        if preferences_get().is_master:
            return rejects.with_held_counts(selectors.peers_with_exchanges(queryset))
        return queryset

    def get_list_filter(self, request: HttpRequest) -> list[Any]:
        return [SatelliteHealthFilter] if preferences_get().is_master else []

    def get_list_display(self, request: HttpRequest) -> list[Any]:
        # The buttons depend on who is looking, so they are made for each request.
        fields: list[Any] = [f for f in super().get_list_display(request) if f != "buttons"]
        if not preferences_get().is_master:
            return [*fields, self.satellite_buttons(request)]
        return [*fields, self.key_buttons(request)]

    def can_manage_keys(self, request: HttpRequest) -> bool:
        return bool(preferences_unlocked_until(request)) and request.user.has_perm(
            keys.KEY_PERMISSION
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return bool(preferences_unlocked_until(request)) and super().has_add_permission(request)

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return bool(preferences_unlocked_until(request)) and super().has_change_permission(
            request, obj
        )

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return bool(preferences_unlocked_until(request)) and super().has_delete_permission(
            request, obj
        )

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        services.peer_save(peer=obj, by=request.user)

    @admin.display(description=_("Last changed by"), ordering="changed_at")
    def last_changed(self, peer: SyncPeer) -> str:
        return last_change_text(peer.changed_by, peer.changed_at)

    @admin.display(description=_("Last successful sync"))
    def last_success(self, peer: SyncPeer) -> str:
        state = getattr(peer, "state", None)
        when = state.last_success_at if state else None
        staleness = selectors.sync_staleness(when)
        if when is None:
            return format_html('<span class="sync-badge sync-error">{}</span>', gettext("never"))
        text = local_time_text(when)
        if staleness == "ok":
            return text
        days = (timezone.now() - when).days
        return format_html(
            '<span class="sync-badge sync-{}" title="{}">{} ({})</span>',
            staleness,
            STALENESS_TITLES[staleness],
            text,
            ngettext("%(days)d day ago", "%(days)d days ago", days) % {"days": days},
        )

    @admin.display(description=_("Last error"))
    def last_error(self, peer: SyncPeer) -> str:
        # On the master, the satellite's exchanges since its last success tell its trouble.
        streak = getattr(peer, "failure_streak", 0)
        if streak:
            code = getattr(peer, "last_error_code", "") or ""
            message = error_text(code, getattr(peer, "last_error_message", "") or "")
            return format_html(
                '<span class="sync-badge sync-error">{}</span> <span title="{}">{}</span>'
                '<div class="sync-streak">{}</div>',
                code,
                message,
                Truncator(message).chars(ERROR_MESSAGE_CHARS),
                ngettext(
                    "%(count)d failure in a row, last %(when)s",
                    "%(count)d failures in a row, last %(when)s",
                    streak,
                )
                % {"count": streak, "when": self.last_failed(peer)},
            )
        return selectors.state_error_text(peer) or "-"

    @admin.display(description=_("Last failed"))
    def last_failed(self, peer: SyncPeer) -> str:
        when = getattr(peer, "last_failed_at", None)
        if when is None:
            return "-"
        return local_time_text(when)

    @admin.display(description=_("Records"))
    def stages(self, peer: SyncPeer) -> str:
        """The satellite's records: to push, acknowledged, integrated, waiting, rejected."""
        state = getattr(peer, "state", None) if peer.pk else None
        held: dict[int, dict[str, int]] | None = None
        if hasattr(peer, "held_rejected"):  # annotated by the list's query
            held = {
                peer.sync_id: {
                    HeldStatus.REJECTED: getattr(peer, "held_rejected", 0) or 0,
                    HeldStatus.WAITING: getattr(peer, "held_waiting", 0) or 0,
                }
            }
        figures = selectors.peer_stages(peer, state, preferences_get().is_master, held)
        rejected = figures["rejected"]
        link = (
            format_html(
                '<a href="{}?sync_id={}">{}</a>',
                reverse("admin:sync_rejectedrecord_changelist"),
                peer.sync_id,
                gettext("%(count)s rejected") % {"count": rejected},
            )
            if rejected and preferences_get().is_master
            else gettext("%(count)s rejected") % {"count": rejected}
        )
        return format_html(
            '<div class="sync-stages">{}<br>{}<br>{}<br>{}<br>{}</div>'
            '<div class="sync-pending">{}</div>',
            gettext("%(count)s to push") % {"count": figures["to_push"]},
            gettext("%(count)s acknowledged") % {"count": figures["acknowledged"]},
            gettext("%(count)s integrated") % {"count": figures["integrated"]},
            gettext("%(count)s waiting") % {"count": figures["waiting"]},
            link,
            gettext("%(count)s outgoing changes") % {"count": selectors.pending_changes_for(peer)},
        )

    def key_buttons(self, request: HttpRequest) -> Any:
        """On the master, the key buttons for an unlocked user who may manage keys."""
        allowed = self.can_manage_keys(request)

        @admin.display(description=_("Key"))
        def buttons(peer: SyncPeer) -> str:
            status = selectors.peer_key_status(peer)
            if not allowed:
                return status
            # The buttons submit the one CSRF-protected form in change_list.html.
            return format_html(
                '<div class="sync-key">{}</div>'
                '<button type="submit" form="sync-peer-actions" formaction="{}" class="button">'
                "{}</button> "
                '<button type="submit" form="sync-peer-actions" formaction="{}" class="button">'
                "{}</button>",
                status,
                reverse("admin:sync_syncpeer_reset_key", args=[peer.pk]),
                gettext("Reset key"),
                reverse("admin:sync_syncpeer_enabled", args=[peer.pk]),
                gettext("Disable") if peer.enabled else gettext("Enable"),
            )

        return buttons

    def may_sync_now(self, request: HttpRequest) -> bool:
        """Whether the user holds sync.change_syncpeer, which Sync now needs."""
        # Not self.has_change_permission: that also needs unlocked preferences, and syncing
        # is everyday work that must not need the authorisation code.
        return super().has_change_permission(request)

    def satellite_buttons(self, request: HttpRequest) -> Any:
        """On a satellite, Sync now (for users who may change the peer) and Test connection."""
        sync_now = self.may_sync_now(request)

        @admin.display(description="")
        def buttons(peer: SyncPeer) -> str:
            # The buttons submit the one CSRF-protected form in change_list.html.
            sync_button = format_html(
                '<button type="submit" form="sync-peer-actions" formaction="{}" class="button">'
                "{}</button> ",
                reverse("admin:sync_syncpeer_sync_now", args=[peer.pk]),
                gettext("Sync now"),
            )
            return format_html(
                '{}<button type="submit" form="sync-peer-actions" formaction="{}" class="button">'
                "{}</button>",
                sync_button if sync_now else "",
                reverse("admin:sync_syncpeer_test_connection", args=[peer.pk]),
                gettext("Test connection"),
            )

        return buttons

    def get_urls(self) -> list[URLPattern]:
        return [
            path(
                "<int:peer_id>/sync-now/",
                self.admin_site.admin_view(self.sync_now_view),
                name="sync_syncpeer_sync_now",
            ),
            path(
                "<int:peer_id>/sync-now/<str:request_id>/",
                self.admin_site.admin_view(self.sync_result_view),
                name="sync_syncpeer_sync_result",
            ),
            path(
                "<int:peer_id>/test-connection/",
                self.admin_site.admin_view(self.test_connection_view),
                name="sync_syncpeer_test_connection",
            ),
            path(
                "<int:peer_id>/reset-key/",
                self.admin_site.admin_view(self.reset_key_view),
                name="sync_syncpeer_reset_key",
            ),
            path(
                "<int:peer_id>/enabled/",
                self.admin_site.admin_view(self.enabled_view),
                name="sync_syncpeer_enabled",
            ),
            *super().get_urls(),
        ]

    def _peer_or_404(self, request: HttpRequest, peer_id: int) -> SyncPeer:
        if not self.has_view_permission(request):
            raise PermissionDenied
        peer = SyncPeer.objects.filter(pk=peer_id).first()
        if peer is None:
            raise Http404(gettext("No such server in Sync with."))
        return peer

    def sync_now_view(self, request: HttpRequest, peer_id: int) -> HttpResponse:
        """Queue a sync run in a worker, then show its result page."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not self.may_sync_now(request):
            raise PermissionDenied
        peer = self._peer_or_404(request, peer_id)
        request_id = uuid.uuid4().hex
        services.sync_request_queue(request_id=request_id)
        try:
            sync_with_master.apply_async(
                kwargs={"trigger": SyncTrigger.BUTTON, "request_id": request_id},
                retry=False,
            )
        except Exception as error:  # noqa: BLE001 - any broker failure reads the same to a user
            messages.error(
                request,
                gettext(
                    "The sync could not be queued: the task queue is not answering (%(error)s). "
                    "Check that Redis and the Celery worker are running."
                )
                % {"error": error},
            )
            return HttpResponseRedirect(reverse("admin:sync_syncpeer_changelist"))
        self.log_change(request, peer, "Asked for a sync now.")
        return HttpResponseRedirect(
            reverse("admin:sync_syncpeer_sync_result", args=[peer.pk, request_id])
        )

    def sync_result_view(self, request: HttpRequest, peer_id: int, request_id: str) -> HttpResponse:
        """Show a queued run's progress, or that of the run already going, until its result."""
        peer = self._peer_or_404(request, peer_id)
        status = selectors.sync_now_status(request_id=request_id)
        context = {
            **self.admin_site.each_context(request),
            "title": gettext("Sync with %(name)s") % {"name": peer.name},
            "opts": self.opts,
            "peer": peer,
            "status": status,
            "log": status.log,
            "finished": status.finished,
            "pickup_seconds": int(selectors.SYNC_NOW_PICKUP.total_seconds()),
            "changelist_url": reverse("admin:sync_syncpeer_changelist"),
        }
        request.current_app = self.admin_site.name
        return TemplateResponse(request, "admin/sync/syncpeer/sync_result.html", context)

    def test_connection_view(self, request: HttpRequest, peer_id: int) -> HttpResponse:
        """Handshake with the master only and say in plain words what is wrong, if anything."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        self._peer_or_404(request, peer_id)
        try:
            messages.success(request, connection_test())
        except SyncError as failure:
            messages.error(
                request,
                gettext("Test connection failed: %(error)s")
                % {"error": error_text(failure.code, failure.message)},
            )
        return HttpResponseRedirect(reverse("admin:sync_syncpeer_changelist"))

    def reset_key_view(self, request: HttpRequest, peer_id: int) -> HttpResponse:
        """Revoke one satellite's key: the next server to enrol as its Sync ID gets a new one."""
        peer = self._key_change_peer(request, peer_id)
        keys.peer_key_reset(sync_id=peer.sync_id, user=request.user)  # type: ignore[arg-type]
        messages.success(
            request,
            gettext(
                "The key of satellite %(sync_id)s %(name)s is reset; the other satellites are "
                "not affected. Enter the shared sync password on the server that is to be "
                "satellite %(sync_id)s: it enrols at its next sync (a new server: initialise it "
                "first, see Adding a satellite in the README)."
            )
            % {"sync_id": peer.sync_id, "name": peer.name},
        )
        return HttpResponseRedirect(reverse("admin:sync_syncpeer_changelist"))

    def enabled_view(self, request: HttpRequest, peer_id: int) -> HttpResponse:
        """Disable a satellite (the master refuses it) or enable it again."""
        peer = self._key_change_peer(request, peer_id)
        peer = keys.peer_enabled_set(
            sync_id=peer.sync_id,
            enabled=not peer.enabled,
            user=request.user,  # type: ignore[arg-type]
        )
        messages.success(
            request,
            (
                gettext("Satellite %(sync_id)s %(name)s is enabled.")
                if peer.enabled
                else gettext(
                    "Satellite %(sync_id)s %(name)s is disabled: the master refuses it until "
                    "enabled."
                )
            )
            % {"sync_id": peer.sync_id, "name": peer.name},
        )
        return HttpResponseRedirect(reverse("admin:sync_syncpeer_changelist"))

    def _key_change_peer(self, request: HttpRequest, peer_id: int) -> SyncPeer:
        if request.method != "POST":
            raise PermissionDenied(gettext("Use the buttons of the Sync with list."))
        if not self.can_manage_keys(request):
            raise PermissionDenied(
                gettext(
                    "Unlock the preferences first, as a user allowed to manage satellites' keys."
                )
            )
        return self._peer_or_404(request, peer_id)


class ReadOnlyAdmin(ExportMixin, admin.ModelAdmin):
    """Sync writes these rows itself; the admin only shows (and exports) them."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return False


# Keyed by value: sync logs (SyncResult) and exchanges (ExchangeResult) share them.
RESULT_COLOURS = {
    SyncResult.SUCCESS: "ok",
    SyncResult.FAILURE: "error",
    SyncResult.RUNNING: "running",
}
# Enough of a message for its gist in one or two lines on a 1366 px laptop; the whole message is
# the cell's tooltip and on the record's own page.
ERROR_MESSAGE_CHARS = 90


class SyncRecordAdmin(ReadOnlyAdmin):
    """A list of sync records (runs or exchanges): local times, coloured results, short errors."""

    search_fields = ["message", "error_code"]
    date_hierarchy = "started_at"

    class Media:
        css = {"all": ["reports/reports.css", "sync/admin.css"]}

    @admin.display(description=_("Started"), ordering="started_at")
    def started(self, record: SyncLog | SyncExchange) -> str:
        return local_time_text(record.started_at)

    @admin.display(description=_("Result"), ordering="result")
    def coloured_result(self, record: SyncLog | SyncExchange) -> str:
        return format_html(
            '<span class="sync-badge sync-{}">{}</span>',
            RESULT_COLOURS[SyncResult(record.result)],
            record.get_result_display(),
        )

    @admin.display(description=_("Error"))
    def error(self, record: SyncLog | SyncExchange) -> str:
        if not record.error_code and not record.message:
            return "-"
        # The code's label and remedy in the viewer's language, the stored detail after them.
        text = error_text(record.error_code, record.message)
        return format_html(
            '<span class="sync-error-code">{}</span> <span title="{}">{}</span>',
            record.error_code,
            text,
            Truncator(text).chars(ERROR_MESSAGE_CHARS),
        )

    @admin.display(description=_("Message"))
    def explained_message(self, record: SyncLog | SyncExchange) -> str:
        return (
            error_text(record.error_code, record.message) if record.error_code else record.message
        )


@admin.register(SyncLog)
class SyncLogAdmin(SyncRecordAdmin):
    """Every sync run of this site, filterable by peer, result, trigger and date."""

    list_display = [
        "started",
        "peer",
        "trigger",
        "coloured_result",
        "duration",
        "records",
        "error",
    ]
    list_filter = ["peer_sync_id", "result", "trigger", "started_at", "error_code"]
    fields = [
        "peer_sync_id",
        "trigger",
        "request_id",
        "started",
        "ended",
        "duration",
        "step",
        "coloured_result",
        "records_pushed",
        "records_pulled",
        "bytes_sent",
        "bytes_received",
        "error_code",
        "explained_message",
    ]
    readonly_fields = ["started", "ended", "duration", "coloured_result", "explained_message"]

    @admin.display(description=_("Peer"), ordering="peer_sync_id")
    def peer(self, log: SyncLog) -> int:
        return log.peer_sync_id

    @admin.display(description=_("Ended"))
    def ended(self, log: SyncLog) -> str:
        return local_time_text(log.ended_at) if log.ended_at else "-"

    @admin.display(description=_("Duration"))
    def duration(self, log: SyncLog) -> str:
        if log.ended_at is None:
            return gettext("running")
        return duration_text(log.ended_at - log.started_at)

    @admin.display(description=_("Records"))
    def records(self, log: SyncLog) -> str:
        return gettext("%(pushed)s pushed, %(pulled)s pulled") % {
            "pushed": log.records_pushed,
            "pulled": log.records_pulled,
        }


@admin.register(BufferedRecord)
class BufferedRecordAdmin(ReadOnlyAdmin):
    list_display = ["table_name", "record_id", "source_site", "error", "received_at"]
    list_filter = ["table_name", "source_site"]
    search_fields = ["record_id", "error"]


@admin.register(SyncExchange)
class SyncExchangeAdmin(SyncRecordAdmin):
    """On the master: every request a satellite made, refused or not."""

    list_display = [
        "started",
        "sync_id",
        "endpoint",
        "coloured_result",
        "duration",
        "traffic",
        "error",
    ]
    list_filter = ["sync_id", "endpoint", "result", "started_at", "error_code"]
    fields = [
        "sync_id",
        "peer",
        "endpoint",
        "started",
        "duration",
        "coloured_result",
        "records",
        "bytes_in",
        "bytes_out",
        "address",
        "error_code",
        "explained_message",
    ]
    readonly_fields = ["started", "duration", "coloured_result", "explained_message"]

    @admin.display(description=_("Duration"), ordering="duration_ms")
    def duration(self, exchange: SyncExchange) -> str:
        return duration_text(timedelta(milliseconds=exchange.duration_ms))

    @admin.display(description=_("Data"))
    def traffic(self, exchange: SyncExchange) -> str:
        return gettext("%(records)s records, %(bytes_in)s in, %(bytes_out)s out") % {
            "records": exchange.records,
            "bytes_in": filesizeformat(exchange.bytes_in),
            "bytes_out": filesizeformat(exchange.bytes_out),
        }


@admin.register(AuthFailure)
class AuthFailureAdmin(ReadOnlyAdmin):
    """On the master: failed sync logins, which lock their address out for a while."""

    list_display = ["failed_at", "sync_id", "address", "code"]
    list_filter = ["code", "sync_id"]
    search_fields = ["address"]
    date_hierarchy = "failed_at"


class DiscardForm(forms.Form):
    note = forms.CharField(
        label=_("Note"),
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text=_(
            "Why these records are discarded (for example: a duplicate entered after a restore)."
        ),
    )


@admin.register(RejectedRecord)
class RejectedRecordAdmin(ReadOnlyAdmin):
    """On the master: what satellites pushed that it could not integrate, with the reason.

    Retried by itself at every contact of the satellite; Retry now and Discard (with a note)
    are for users who may resolve them, and both go into the satellite's history.
    """

    list_display = ["record", "sync_id", "status", "short_reason", "received"]
    list_filter = ["sync_id", "status", "table_name"]
    search_fields = ["record_id", "reason"]
    fields = [
        "sync_id",
        "table_name",
        "record_id",
        "status",
        "reason",
        "values",
        "awaited_table",
        "awaited_id",
        "received",
        "retried",
        "attempts",
    ]
    readonly_fields = ["received", "retried", "values"]
    actions = ["retry_now", "discard"]

    class Media:
        css = {"all": ["reports/reports.css", "sync/admin.css"]}

    def has_resolve_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("sync.resolve_rejectedrecord")

    @admin.display(description=_("Record"), ordering="table_name")
    def record(self, record: RejectedRecord) -> str:
        return format_html("{}<br>{}", record.table_name, record.record_id)

    @admin.display(description=_("Received"), ordering="received_at")
    def received(self, record: RejectedRecord) -> str:
        return local_time_text(record.received_at)

    @admin.display(description=_("Last retried"), ordering="retried_at")
    def retried(self, record: RejectedRecord) -> str:
        return local_time_text(record.retried_at) if record.retried_at else "-"

    @admin.display(description=_("Reason"))
    def short_reason(self, record: RejectedRecord) -> str:
        return format_html(
            '<span title="{}">{}</span>',
            record.reason,
            Truncator(record.reason).chars(ERROR_MESSAGE_CHARS),
        )

    @admin.display(description=_("Fields"))
    def values(self, record: RejectedRecord) -> str:
        return format_html_join("\n", "<div><strong>{}</strong>: {}</div>", record.fields.items())

    @admin.action(description=_("Retry now"), permissions=["resolve"])
    def retry_now(self, request: HttpRequest, queryset: QuerySet[RejectedRecord]) -> None:
        sync_ids = set(queryset.values_list("sync_id", flat=True))
        try:
            outcomes = rejects.rejected_retry_by(sync_ids=sync_ids, user=request.user)  # type: ignore[arg-type]
        except SyncError as error:
            messages.error(
                request,
                gettext("Retry failed: %(error)s")
                % {"error": error_text(error.code, error.message)},
            )
            return
        applied = sum(outcome.applied for outcome in outcomes.values())
        still = sum(outcome.still_aside for outcome in outcomes.values())
        level = messages.SUCCESS if not still else messages.WARNING
        self.message_user(
            request,
            ngettext(
                "Retried the rejected records of %(count)d satellite: %(applied)d applied, "
                "%(still)d still set aside.",
                "Retried the rejected records of %(count)d satellites: %(applied)d applied, "
                "%(still)d still set aside.",
                len(outcomes),
            )
            % {"count": len(outcomes), "applied": applied, "still": still},
            level,
        )

    @admin.action(description=_("Discard, with a note"), permissions=["resolve"])
    def discard(
        self, request: HttpRequest, queryset: QuerySet[RejectedRecord]
    ) -> TemplateResponse | None:
        form = DiscardForm(request.POST if "confirm" in request.POST else None)
        if form.is_valid():
            count = rejects.rejected_discard(
                records=queryset,
                user=request.user,  # type: ignore[arg-type]
                note=form.cleaned_data["note"],
            )
            self.message_user(
                request,
                ngettext(
                    "Discarded %(count)d record, with your note.",
                    "Discarded %(count)d records, with your note.",
                    count,
                )
                % {"count": count},
            )
            return None
        return TemplateResponse(
            request,
            "admin/sync/rejectedrecord/discard.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "title": gettext("Discard rejected records"),
                "records": list(queryset),
                "form": form,
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            },
        )
