"""The sync log and exchange lists: readable times, durations, colours, errors and filters."""

import csv
import html
import io
import re
from datetime import UTC, datetime, timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from sync.display import duration_text, local_time_text
from sync.models import AuthFailure, SyncLog, SyncResult, SyncTrigger
from tests.factories import SyncExchangeFactory, SyncLogFactory

pytestmark = pytest.mark.django_db

CSV = "0"  # the export form's first format choice (settings.IMPORT_EXPORT_FORMATS)

LOG_LIST = reverse("admin:sync_synclog_changelist")
STARTED = datetime(2026, 3, 9, 11, 3, 22, 123456, tzinfo=UTC)
LONG_MESSAGE = (
    "The master at https://master.example.org/ could not be reached: the connection timed out "
    "after 3 tries. Check this server's internet connection, then press Sync now again."
)


@pytest.mark.parametrize(
    ("duration", "text"),
    [
        (timedelta(milliseconds=340), "340 ms"),
        (timedelta(microseconds=999_600), "1.0 s"),
        (timedelta(seconds=2.4), "2.4 s"),
        (timedelta(seconds=59.97), "1 min 0 s"),
        (timedelta(minutes=3, seconds=12.4), "3 min 12 s"),
        (timedelta(hours=2, minutes=5, seconds=40), "2 h 5 min"),
        (timedelta(seconds=-1), "0 ms"),
    ],
)
def test_durations_read_in_the_unit_that_fits(duration: timedelta, text: str) -> None:
    assert duration_text(duration) == text


def test_times_show_in_the_active_zone_with_seconds_and_the_zone_named() -> None:
    with timezone.override("Europe/Paris"):
        assert local_time_text(STARTED) == "9 Mar 2026, 12:03:22 CET"
        log = SyncLogFactory.build(started_at=STARTED, result=SyncResult.FAILURE)
        assert str(log) == "Sync with 1 at 9 Mar 2026, 12:03:22 CET: Failure"
    assert local_time_text(STARTED) == "9 Mar 2026, 11:03:22 UTC"


def assert_short_error(page: str, code: str) -> None:
    """The error cell shows the code and the start of the message; its tooltip holds all of it."""
    cells = re.findall(r'<td class="field-error">(.*?)</td>', page, re.DOTALL)
    errors = [cell for cell in cells if cell != "-"]
    assert len(errors) == 1, cells
    shown = re.fullmatch(
        r'<span class="sync-error-code">(.*)</span> <span title="(.*)">(.*)</span>', errors[0]
    )
    assert shown, errors[0]
    assert (shown[1], html.unescape(shown[2])) == (code, LONG_MESSAGE)
    visible = html.unescape(shown[3])
    assert visible.endswith("…")
    assert len(visible) < len(LONG_MESSAGE)
    assert LONG_MESSAGE.startswith(visible[:-1])


def listed(client: Client, **query: str) -> list[SyncLog]:
    response = client.get(LOG_LIST, query)
    assert response.status_code == 200
    return list(response.context["cl"].result_list)


@pytest.fixture
def logs() -> dict[str, SyncLog]:
    """Runs with satellite 2 and 3 by each trigger, on two days, with each result."""
    return {
        "failed": SyncLogFactory(
            peer_sync_id=2,
            trigger=SyncTrigger.SCHEDULE,
            started_at=STARTED,
            ended_at=STARTED + timedelta(seconds=2.4),
            message=LONG_MESSAGE,
        ),
        "succeeded": SyncLogFactory(
            peer_sync_id=3,
            trigger=SyncTrigger.BUTTON,
            started_at=STARTED - timedelta(days=1),
            ended_at=STARTED - timedelta(days=1) + timedelta(minutes=3, seconds=12),
            result=SyncResult.SUCCESS,
            error_code="",
            message="",
            records_pushed=12,
            records_pulled=340,
        ),
        "running": SyncLogFactory(
            peer_sync_id=2,
            trigger=SyncTrigger.COMMAND,
            started_at=STARTED + timedelta(hours=1),
            result=SyncResult.RUNNING,
            error_code="",
            message="",
            step="pull",
        ),
    }


def test_sync_logs_filter_by_peer_result_trigger_and_date(
    admin_client: Client, logs: dict[str, SyncLog]
) -> None:
    assert len(listed(admin_client)) == 3
    assert listed(admin_client, peer_sync_id="3") == [logs["succeeded"]]
    assert listed(admin_client, result="failure") == [logs["failed"]]
    assert listed(admin_client, trigger="button") == [logs["succeeded"]]
    day = {"started_at__gte": "2026-03-09 00:00+00:00", "started_at__lt": "2026-03-10 00:00+00:00"}
    assert listed(admin_client, **day) == [logs["running"], logs["failed"]]
    hierarchy = {"started_at__year": "2026", "started_at__month": "3", "started_at__day": "8"}
    assert listed(admin_client, **hierarchy) == [logs["succeeded"]]
    filters = admin_client.get(LOG_LIST).context["cl"].filter_specs
    assert {spec.title for spec in filters} >= {"Peer sync ID", "result", "trigger", "started at"}


def test_sync_log_list_shows_durations_colours_local_times_and_a_short_error(
    admin_client: Client, logs: dict[str, SyncLog]
) -> None:
    admin_client.cookies["django_timezone"] = "Africa/Nairobi"
    page = admin_client.get(LOG_LIST).content.decode()
    assert "9 Mar 2026, 14:03:22 EAT" in page
    assert "123456" not in page
    assert "2.4 s" in page
    assert "3 min 12 s" in page
    assert "12 pushed, 340 pulled" in page
    assert '<td class="field-duration">running</td>' in page
    for colour in ["sync-error", "sync-ok", "sync-running"]:
        assert f'class="sync-badge {colour}"' in page
    assert_short_error(page, "unreachable")
    assert "sync/admin.css" in page


def test_sync_log_page_title_names_run_and_zone(
    admin_client: Client, logs: dict[str, SyncLog]
) -> None:
    page = admin_client.get(
        reverse("admin:sync_synclog_change", args=[logs["failed"].pk])
    ).content.decode()
    assert "Sync with 2 at 9 Mar 2026, 11:03:22 UTC: Failure" in page
    assert '<div class="readonly">2.4 s</div>' in page


def test_exchange_list_shows_durations_local_times_and_the_error(admin_client: Client) -> None:
    SyncExchangeFactory(
        started_at=STARTED,
        duration_ms=2400,
        message=LONG_MESSAGE,
        records=4,
        bytes_in=2048,
        bytes_out=0,
    )
    page = admin_client.get(reverse("admin:sync_syncexchange_changelist")).content.decode()
    assert "9 Mar 2026, 11:03:22 UTC" in page
    assert "2.4 s" in page
    assert "4 records, 2.0\xa0KB in, 0\xa0bytes out" in page
    assert_short_error(page, "wrong_credentials")
    assert 'class="sync-badge sync-error"' in page


def export_rows(client: Client, url: str) -> list[dict[str, str]]:
    """The rows of the CSV export at `url` (a list's export page, with its filters), all fields."""
    page = client.get(url)
    fields = [name for name in page.context["form"].fields if "resource_" in name]
    response = client.post(url, {"format": CSV, "resource": "0", **dict.fromkeys(fields, "on")})
    assert response.status_code == 200
    return list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"))))


def test_the_read_only_sync_lists_export(admin_client: Client) -> None:
    AuthFailure.objects.create(address="203.0.113.9", sync_id=7, code="wrong_credentials")

    failures = export_rows(admin_client, reverse("admin:sync_authfailure_export"))
    assert [(row["address"], row["code"]) for row in failures] == [
        ("203.0.113.9", "wrong_credentials")
    ]
    for model in ["bufferedrecord", "rejectedrecord"]:
        assert export_rows(admin_client, reverse(f"admin:sync_{model}_export")) == []
