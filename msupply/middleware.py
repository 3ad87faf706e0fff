"""Show times in the viewer's own time zone, as their browser reports it."""

import zoneinfo
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.utils import timezone, translation

# Set by the script in templates/admin/base_site.html from the browser's Intl time zone.
TIMEZONE_COOKIE = "django_timezone"


def viewer_timezone(name: str) -> zoneinfo.ZoneInfo | None:
    """The IANA zone called `name`, or None for an empty, malformed or unknown name."""
    if not name or len(name) > 64:
        return None
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return None


class ViewerTimezoneMiddleware:
    """Activate the time zone the browser stored in a cookie; without one, settings.TIME_ZONE."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        zone = viewer_timezone(request.COOKIES.get(TIMEZONE_COOKIE, ""))
        if zone is None:
            timezone.deactivate()
        else:
            timezone.activate(zone)
        return self.get_response(request)


class ApiInEnglishMiddleware:
    """Answer the sync API and its schema in English whatever the caller's Accept-Language.

    The protocol carries codes and English messages: a satellite in French stores the same codes,
    and a master in French answers the same words; the viewer's language applies on display.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path_info.startswith("/api/"):
            return self.get_response(request)
        with translation.override("en"):
            request.LANGUAGE_CODE = "en"
            response = self.get_response(request)
            # LocaleMiddleware's own Content-Language came from Accept-Language; say what it is.
            response.headers["Content-Language"] = "en"
            return response
