"""What the commands print at -v 0 and -v 1, their exit codes, and their progress bar in a pty."""

import fcntl
import io
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db.models import Model
from django.test import Client
from django.urls import reverse

from msupply.commands import EXIT_ALREADY_RUNNING, EXIT_FAILURE, EXIT_SUCCESS, EXIT_USAGE
from sync import keys
from sync.models import SyncPeer, SyncPreferences
from sync.run import RUN_LOCK
from sync.selectors import preferences_get
from sync.services import COMMAND_USERNAME
from tests.factories import StoreFactory, UserFactory
from tests.servers import ROOT, Cluster, Site
from tests.sync.test_change_author import unlock

SECRET = "a-sync-password-9"
CODE = "an-unlock-code-9"


def run(*args: str, stdin: str = "") -> tuple[str, str]:
    """Run a command in this process; returns what it wrote on stdout and on stderr."""
    out, err = io.StringIO(), io.StringIO()
    sys_stdin, sys.stdin = sys.stdin, io.StringIO(stdin)
    try:
        call_command(*args, stdout=out, stderr=err)
    finally:
        sys.stdin = sys_stdin
    return out.getvalue(), err.getvalue()


def peer_add(*extra: str) -> tuple[str, str]:
    return run(
        "sync_peer", "add", "--sync-id", "4", "--name", "Island", "--store", "S042",
        "--url", "http://127.0.0.1:9/", *extra,
    )  # fmt: skip


# -v 0 and -v 1, in this process ---------------------------------------------------------------


@pytest.mark.django_db
def test_changes_print_nothing_at_verbosity_0_and_confirm_at_1() -> None:
    StoreFactory(code="S042")
    StoreFactory(code="S043")
    User.objects.create_superuser("keeper", "k@example.org", "pw")
    add = ["sync_peer", "add", "--name", "Island", "--url", "http://127.0.0.1:9/"]
    # (run at -v 0, run at -v 1, what -v 1 confirms)
    changes = [
        (["sync_config", "--interval", "4"], None, "4 minutes"),
        (
            [*add, "--sync-id", "4", "--store", "S042"],
            [*add, "--sync-id", "5", "--store", "S043"],
            "5\tIsland\tS043",
        ),
        (["sync_peer", "update", "--sync-id", "4", "--name", "Isle"], None, "4\tIsle\tS042"),
        (["sync_key", "reset", "--sync-id", "4", "--user", "keeper"], None, "4\tIsle\tnot enr"),
        (["sync_prune"], None, "Removed 0 change-log rows"),
        (["sync_alerts"], None, "SYNC_ALERT_EMAILS is empty"),
        (["sync_rejected", "list"], None, "No records are set aside."),
        (["seed_demo", "--stores", "2", "--items", "3", "--names", "2"], None, "Master data now"),
    ]
    for quiet, loud, confirmation in changes:
        assert run(*quiet, "-v", "0") == ("", ""), quiet
        out, err = run(*(loud or quiet), "-v", "1")
        assert confirmation in out, (loud or quiet, out)
        assert err == "", quiet
    assert run("sync_peer", "remove", "--sync-id", "4", "-v", "0") == ("", "")
    assert list(SyncPeer.objects.values_list("sync_id", flat=True)) == [5]


@pytest.mark.django_db
def test_what_was_asked_for_is_printed_at_every_verbosity() -> None:
    """A listing, a status, an issued key and --json are results, as in dumpdata."""
    StoreFactory(code="S042")
    peer_add()
    UserFactory(username="warden", permissions=[keys.KEY_PERMISSION])
    for verbosity in ("0", "1"):
        assert "4\tIsland\tS042" in run("sync_peer", "list", "-v", verbosity)[0]
        assert "Sync ID:" in run("sync_config", "-v", verbosity)[0]
        assert "Sync ID 1 (master)" in run("sync_status", "-v", verbosity)[0]
        assert json.loads(run("sync_prune", "--json", "-v", verbosity)[0])["changes"] == 0
    out, err = run("sync_key", "issue", "--sync-id", "4", "--user", "warden", "-v", "0")
    assert keys.KEY_PATTERN.fullmatch(out.strip())
    assert err == ""
    run("sync_key", "reset", "--sync-id", "4", "--user", "warden")
    out, err = run("sync_key", "issue", "--sync-id", "4", "--user", "warden")
    assert keys.KEY_PATTERN.fullmatch(out.strip())
    assert "it is shown only now" in err


# History -----------------------------------------------------------------------------------


def history(obj: Model) -> list[LogEntry]:
    return list(LogEntry.objects.filter(object_id=str(obj.pk)).order_by("pk"))


@pytest.mark.django_db
def test_sync_config_changes_go_into_the_history_naming_fields_never_secrets() -> None:
    keeper = User.objects.create_superuser("keeper", "k@example.org", "pw")
    run(
        "sync_config", "--interval", "3", "--username", "sync", "--password-stdin",
        "--unlock-code-stdin", "--user", "keeper", stdin=f"{SECRET}\n{CODE}\n",
    )  # fmt: skip
    (entry,) = history(SyncPreferences.objects.get())
    assert (entry.user, entry.action_flag) == (keeper, CHANGE)
    message = entry.get_change_message()
    for label in ("User name", "Sync time interval", "Password", "Authorisation code"):
        assert label in message
    assert "Sync ID" not in message  # unchanged
    assert SECRET not in entry.change_message
    assert CODE not in entry.change_message


@pytest.mark.django_db
def test_a_command_without_user_is_recorded_as_the_inactive_manage_py_user() -> None:
    run("sync_config", "--interval", "5")
    (entry,) = history(SyncPreferences.objects.get())
    assert entry.user.username == COMMAND_USERNAME
    assert not entry.user.is_active
    assert not entry.user.has_usable_password()
    assert "Sync time interval" in entry.get_change_message()
    run("sync_config", "--interval", "6")
    assert User.objects.filter(username=COMMAND_USERNAME).count() == 1


@pytest.mark.django_db
def test_sync_peer_add_update_remove_go_into_the_history() -> None:
    StoreFactory(code="S042")
    keeper = User.objects.create_superuser("keeper", "k@example.org", "pw")
    peer_add("--user", "keeper")
    peer = SyncPeer.objects.get()
    run("sync_peer", "update", "--sync-id", "4", "--url", "https://isle.example.org/",
        "--user", "keeper")  # fmt: skip
    run("sync_peer", "remove", "--sync-id", "4", "--user", "keeper")
    added, changed, removed = history(peer)
    assert [e.action_flag for e in (added, changed, removed)] == [ADDITION, CHANGE, DELETION]
    assert {e.user for e in (added, changed, removed)} == {keeper}
    assert added.get_change_message() == "Added."
    assert changed.get_change_message() == "Changed URL."
    assert removed.object_repr == str(peer)


@pytest.mark.django_db
def test_an_unknown_user_is_refused_and_nothing_changes() -> None:
    with pytest.raises(CommandError, match="No user 'nobody'"):
        run("sync_config", "--interval", "9", "--user", "nobody")
    assert preferences_get().sync_interval_minutes != 9
    assert not LogEntry.objects.exists()


@pytest.mark.django_db
def test_the_admin_writes_one_history_entry_per_save_through_the_service(client: Client) -> None:
    keeper = User.objects.create_superuser("keeper", "k@example.org", "pw")
    client.force_login(keeper)
    unlock(client)
    store = StoreFactory()
    response = client.post(
        reverse("admin:sync_syncpeer_add"),
        {"sync_id": 3, "name": "Island", "store_code": store.code, "url": "http://127.0.0.1:9/"},
    )
    assert response.status_code == 302
    peer = SyncPeer.objects.get()
    response = client.post(
        reverse("admin:sync_syncpeer_change", args=[peer.pk]),
        {"sync_id": 3, "name": "Isle", "store_code": store.code, "url": "http://127.0.0.1:9/"},
    )
    assert response.status_code == 302
    added, changed = history(peer)
    assert (added.action_flag, added.user, added.get_change_message()) == (
        ADDITION,
        keeper,
        "Added.",
    )
    assert (changed.action_flag, changed.get_change_message()) == (CHANGE, "Changed Name.")


# Real processes: exit codes, stderr, the progress bar ---------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A migrated site of its own (SQLite file, or its own PostgreSQL database)."""
    site = Site("cmd", tmp_path_factory.mktemp("commands"))
    try:
        site.manage("migrate", "--verbosity", "0")
        yield site
    finally:
        site.destroy()


def manage(site: Site, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return site.manage(*args, stdin=stdin, check=False)


@pytest.mark.servers
def test_exit_codes_are_distinct(site: Site) -> None:
    ok = manage(site, "sync_config", "--interval", "2", "-v", "0")
    assert (ok.returncode, ok.stdout, ok.stderr) == (EXIT_SUCCESS, "", "")
    refused = manage(site, "sync_peer", "remove", "--sync-id", "9", "-v", "0")
    assert refused.returncode == EXIT_FAILURE
    assert refused.stdout == ""
    assert "No server with Sync ID 9" in refused.stderr
    usage = manage(site, "sync_peer", "frobnicate")
    assert usage.returncode == EXIT_USAGE
    assert "invalid choice" in usage.stderr
    # The master does not start syncs: a failed run.
    failed = manage(site, "sync_now", "-v", "0")
    assert (failed.returncode, failed.stdout) == (EXIT_FAILURE, "")
    assert "This server is the master" in failed.stderr


LOCK_HOLD = (
    "import django, sys; django.setup()\n"
    "from sync.locks import lock_acquire, lock_release\n"
    "if sys.argv[1] == 'take':\n"
    "    assert lock_acquire(name=sys.argv[2], holder='test', ttl_seconds=600)\n"
    "else:\n"
    "    lock_release(name=sys.argv[2], holder='test')\n"
)


def lock(site: Site, action: str) -> None:
    subprocess.run(
        [sys.executable, "-c", LOCK_HOLD, action, RUN_LOCK],
        cwd=ROOT, env=site.env(), check=True, timeout=60,
    )  # fmt: skip


@pytest.mark.servers
def test_sync_now_exits_3_while_a_run_holds_the_lease(site: Site) -> None:
    lock(site, "take")
    try:
        busy = manage(site, "sync_now")
        assert busy.returncode == EXIT_ALREADY_RUNNING
        assert "A sync is already running" in busy.stderr
        busy_json = manage(site, "sync_now", "--json", "-v", "0")
        assert busy_json.returncode == EXIT_ALREADY_RUNNING
        assert json.loads(busy_json.stdout)["result"] == "already_running"
    finally:
        lock(site, "release")
    # Released, the run starts (and fails: this site is the master).
    assert manage(site, "sync_now").returncode == EXIT_FAILURE


def in_pty(site: Site, *args: str, timeout: float = 300) -> tuple[int, str]:
    """Run `manage.py args` with a 120-column pseudo-terminal as stdout and stderr."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    process = subprocess.Popen(
        [sys.executable, "manage.py", *args],
        cwd=ROOT, env=site.env(), stdin=subprocess.DEVNULL, stdout=follower, stderr=follower,
    )  # fmt: skip
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.5)
        if ready:
            try:
                data = os.read(leader, 65536)
            except OSError:  # the follower closed: the process is gone
                break
            if not data:
                break
            chunks.append(data)
        elif process.poll() is not None:
            break
    os.close(leader)
    return process.wait(timeout=30), b"".join(chunks).decode(errors="replace")


SEED = ["seed_demo", "--stores", "2", "--items", "4000", "--names", "200", "--transactions", "36"]


@pytest.mark.servers
def test_seed_demo_shows_a_bar_in_a_terminal_and_plain_lines_in_a_pipe(site: Site) -> None:
    code, screen = in_pty(site, *SEED)
    assert code == EXIT_SUCCESS, screen
    # tqdm's bar: label, percentage, counts, elapsed<left, rate; redrawn with carriage returns.
    assert "Master data: 100%|" in screen
    assert "4202/4202 [" in screen
    assert "Transactions: 100%|" in screen
    assert "36/36 [" in screen
    assert "records/s]" in screen
    assert "transactions/s]" in screen
    # A message said while a bar is under way goes above it, on a line of its own.
    assert "\nCreated 36 transactions in store" in screen.replace("\r", "\n")
    assert "\r" in screen
    assert "Master data: 1000 of" not in screen

    piped = manage(site, "seed_demo", "--items", "5000", "--transactions", "48")
    assert piped.returncode == EXIT_SUCCESS, piped.stderr
    assert "\r" not in piped.stdout
    lines = piped.stdout.splitlines()
    assert "Master data: 1000 of 5000 records." in lines
    assert "Transactions: 12 of 12." in lines
    assert "%|" not in piped.stdout

    code, screen = in_pty(site, "seed_demo", "--transactions", "60", "-v", "0")
    assert (code, screen) == (EXIT_SUCCESS, "")


def test_verbosity_0_turns_the_progress_bar_off_too() -> None:
    from msupply.progress import ProgressReporter, progress_quiet, progress_reporter

    assert progress_reporter(io.StringIO(), verbosity=0) is progress_quiet
    lines = progress_reporter(io.StringIO(), verbosity=1)
    assert isinstance(lines, ProgressReporter)
    assert not lines.bar


@pytest.mark.servers
def test_sync_now_initialisation_shows_a_bar_in_a_terminal(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """A first sync of a few thousand records, 500 a page: one bar, then the summary."""
    cluster = Cluster(
        tmp_path_factory.mktemp("init-bar"), satellites=1, env={"SYNC_BATCH_SIZE": "500"}
    )
    try:
        cluster.provision(items=3000, names=200)
        code, screen = in_pty(cluster.satellites[0], "sync_now")
        assert code == EXIT_SUCCESS, screen
        assert "Initialising: 100%|" in screen
        assert "records/s]" in screen
        assert "\r" in screen
        assert "Initialising: 500 of" not in screen  # the bar replaces the per-page lines
        assert "Success: pushed 0 records" in screen
    finally:
        cluster.destroy()
