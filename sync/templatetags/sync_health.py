"""The master's admin index card: how many satellites are OK, stale, failing or never synced."""

from typing import Any

from django import template
from django.urls import reverse

from sync import selectors

register = template.Library()


@register.inclusion_tag("admin/sync/health_card.html", takes_context=True)
def sync_health_card(context: dict[str, Any]) -> dict[str, Any]:
    """On the master, for users who may see the Sync with list: each health's count and link."""
    request = context.get("request")
    user = getattr(request, "user", None)
    if user is None or not user.has_perm("sync.view_syncpeer") or not selectors.site_is_master():
        return {"healths": []}
    counts = selectors.satellite_health_counts()
    changelist = reverse("admin:sync_syncpeer_changelist")
    return {
        "healths": [
            (health, label, counts[health], f"{changelist}?health={health}")
            for health, label in selectors.SATELLITE_HEALTH_LABELS.items()
        ]
    }
