"""How sync records show a time and a duration to a person: local time with its zone named."""

from datetime import datetime, timedelta

from django.utils import formats, timezone
from django.utils.translation import gettext


def local_time_text(when: datetime) -> str:
    """`when` in the viewer's time zone (the one activated for this request), zone named.

    The format is the active language's DATETIME_FORMAT (msupply/formats), which names the zone
    (UTC, CET, EAT), so a time read off the screen can be compared with a clinic's clock.
    """
    return formats.date_format(timezone.localtime(when), "DATETIME_FORMAT")


def local_clock_text(when: datetime) -> str:
    """The time of day of `when` in the viewer's time zone, in the active language's format."""
    return formats.time_format(timezone.localtime(when), "TIME_FORMAT")


def duration_text(duration: timedelta) -> str:
    """A duration as a person reads it: "340 ms", "2.4 s", "3 min 12 s", "2 h 5 min"."""
    seconds = max(duration.total_seconds(), 0.0)
    # Each unit is chosen on the rounded figure, so 999.6 ms shows as "1.0 s", not "1000 ms".
    if round(seconds * 1000) < 1000:
        return gettext("%(ms)d ms") % {"ms": round(seconds * 1000)}
    if round(seconds, 1) < 60:
        # Rounded as f-strings do (number_format truncates); the language's decimal separator.
        figure = f"{seconds:.1f}".replace(".", formats.get_format("DECIMAL_SEPARATOR"))
        return gettext("%(s)s s") % {"s": figure}
    hours, rest = divmod(round(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return gettext("%(h)d h %(min)d min") % {"h": hours, "min": minutes}
    return gettext("%(min)d min %(s)d s") % {"min": minutes, "s": secs}
