"""Admin for the synchronisation preferences, locked behind an authorisation code."""

from datetime import datetime, timedelta
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Model
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters

from . import services
from .models import SyncPeer, SyncPreferences
from .selectors import preferences_get

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
        label="Authorisation code", strip=False, widget=forms.PasswordInput(render_value=False)
    )


class UnlockedPreferencesForm(forms.ModelForm):
    new_password = forms.CharField(
        label="Password",
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Leave blank to keep the current password. It must match on every server.",
    )
    new_unlock_code = forms.CharField(
        label="New authorisation code",
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Leave blank to keep the current code.",
    )

    class Meta:
        model = SyncPreferences
        fields = ["sync_id", "username", "sync_interval_minutes"]


@admin.register(SyncPreferences)
class SyncPreferencesAdmin(admin.ModelAdmin):
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
            return [
                "sync_id",
                "username",
                "new_password",
                "sync_interval_minutes",
                "new_unlock_code",
            ]
        return ["sync_id", "username", "password_set", "sync_interval_minutes", "unlock_code_set"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # Read-only fields are left out of the form, so a hand-made POST cannot set them.
        return [] if preferences_unlocked_until(request) else LOCKED_FIELDS

    @admin.display(description="Password")
    def password_set(self, obj: SyncPreferences) -> str:
        return "set" if obj.password_hash else "not set"

    @admin.display(description="Authorisation code")
    def unlock_code_set(self, obj: SyncPreferences) -> str:
        return "set" if obj.unlock_code_hash else "not set"

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        data = form.cleaned_data
        services.preferences_update(
            sync_id=data.get("sync_id"),
            username=data.get("username"),
            password=data.get("new_password") or None,
            sync_interval_minutes=data.get("sync_interval_minutes"),
            unlock_code=data.get("new_unlock_code") or None,
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
            "unlocked_until": preferences_unlocked_until(request),
            "can_unlock": request.user.has_perm(UNLOCK_PERMISSION),
            "unlock_url": reverse("admin:sync_syncpreferences_unlock"),
            "lock_url": reverse("admin:sync_syncpreferences_lock"),
        }
        return super().change_view(request, object_id, form_url, context)

    def response_change(self, request: HttpRequest, obj: Any) -> HttpResponse:
        messages.success(request, "The synchronisation preferences were saved.")
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
                    f"The synchronisation preferences are unlocked until "
                    f"{timezone.localtime(until):%H:%M}.",
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
            "title": "Unlock the synchronisation preferences",
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
            messages.success(request, "The synchronisation preferences are locked.")
        return HttpResponseRedirect(reverse("admin:sync_syncpreferences_changelist"))


def _unlock_refusal(result: services.UnlockResult) -> str:
    if result.locked_until is not None:
        return (
            f"Too many wrong codes. You can try again at "
            f"{timezone.localtime(result.locked_until):%H:%M}."
        )
    left = settings.SYNC_UNLOCK_MAX_FAILURES - result.failures
    return f"That authorisation code is not right. {left} tries left before a lockout."


@admin.register(SyncPeer)
class SyncPeerAdmin(admin.ModelAdmin):
    """The Sync with list; servers are added or removed only while the preferences are unlocked."""

    list_display = ["sync_id", "name", "store_code", "url"]
    search_fields = ["name", "store_code", "url"]

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
        services.peer_save(peer=obj)
