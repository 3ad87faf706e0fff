"""How sync records show a time and a duration to a person: local time with its zone named."""

from datetime import datetime, timedelta

from django.utils import formats, timezone

# Seconds, not microseconds, and the zone's abbreviation (UTC, CET, EAT), so a time read off the
# screen can be compared with a clinic's clock or a server log.
LOCAL_TIME_FORMAT = "Y-m-d H:i:s T"


def local_time_text(when: datetime) -> str:
    """`when` in the viewer's time zone (the one activated for this request), zone named."""
    return formats.date_format(timezone.localtime(when), LOCAL_TIME_FORMAT)


def duration_text(duration: timedelta) -> str:
    """A duration as a person reads it: "340 ms", "2.4 s", "3 min 12 s", "2 h 5 min"."""
    seconds = max(duration.total_seconds(), 0.0)
    # Each unit is chosen on the rounded figure, so 999.6 ms shows as "1.0 s", not "1000 ms".
    if round(seconds * 1000) < 1000:
        return f"{round(seconds * 1000)} ms"
    if round(seconds, 1) < 60:
        return f"{seconds:.1f} s"
    hours, rest = divmod(round(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s"
