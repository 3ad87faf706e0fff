"""Provisioning commands: sync_config, sync_peer and seed_demo, with exit codes on bad input."""

import io
import subprocess
import sys

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from msupply.commands import EXIT_FAILURE, EXIT_USAGE
from stores.models import Item, Name, Store
from sync.models import PeerState, SyncPeer
from sync.selectors import preferences_get
from tests.factories import StoreFactory

pytestmark = pytest.mark.django_db


def run(*args: str, stdin: str = "") -> str:
    out = io.StringIO()
    sys_stdin = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        call_command(*args, stdout=out)
    finally:
        sys.stdin = sys_stdin
    return out.getvalue()


def test_sync_config_prints_preferences_with_password_masked() -> None:
    run("sync_config", "--username", "syncuser", "--password-stdin", stdin="top-secret\n")
    output = run("sync_config")
    assert "syncuser" in output
    assert "********" in output
    assert "top-secret" not in output


def test_sync_config_sets_every_preference() -> None:
    output = run(
        "sync_config",
        "--sync-id",
        "5",
        "--username",
        "u",
        "--interval",
        "3",
        "--password-stdin",
        "--unlock-code-stdin",
        stdin="pw\ncode\n",
    )
    preferences = preferences_get()
    assert (preferences.sync_id, preferences.username, preferences.sync_interval_minutes) == (
        5,
        "u",
        3,
    )
    assert preferences.check_password("pw")
    assert preferences.check_unlock_code("code")
    assert "5 (satellite)" in output


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["--sync-id", "65"], "", "sync_id"),
        (["--sync-id", "0"], "", "sync_id"),
        (["--interval", "-1"], "", "--interval"),
        (["--password-stdin"], "", "password on standard input"),
        (["--password-stdin", "--unlock-code-stdin"], "only-one\n", "unlock_code"),
    ],
)
def test_sync_config_refuses_bad_input(args: list[str], stdin: str, message: str) -> None:
    with pytest.raises(CommandError, match=message):
        run("sync_config", *args, stdin=stdin)
    assert preferences_get().sync_id == 1


def test_sync_peer_adds_lists_and_removes() -> None:
    store = StoreFactory(code="S042")
    run(
        "sync_peer",
        "add",
        "--sync-id",
        "4",
        "--name",
        "Island",
        "--store",
        "S042",
        "--url",
        "https://island.example.org/",
    )
    assert "4\tIsland\tS042\thttps://island.example.org/" in run("sync_peer", "list")
    run("sync_peer", "remove", "--sync-id", "4")
    assert not SyncPeer.objects.exists()
    assert store.code == "S042"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["add", "--sync-id", "4", "--name", "X", "--store", "S042"], "--url"),
        (
            ["add", "--sync-id", "4", "--name", "X", "--store", "NOPE", "--url", "http://a.b/"],
            "NOPE",
        ),
        (
            ["add", "--sync-id", "4", "--name", "X", "--store", "S042", "--url", "ftp://a.b/"],
            "http",
        ),
        (["remove", "--sync-id", "9"], "No server with Sync ID 9"),
        (["remove"], "--sync-id"),
    ],
)
def test_sync_peer_refuses_bad_input(args: list[str], message: str) -> None:
    StoreFactory(code="S042")
    with pytest.raises(CommandError, match=message):
        run("sync_peer", *args)
    assert not SyncPeer.objects.exists()


def test_seed_demo_is_idempotent() -> None:
    run("seed_demo", "--stores", "3", "--items", "50", "--names", "20")
    first = sorted(Item.objects.values_list("id", "code", "name", "unit"))
    run("seed_demo", "--stores", "3", "--items", "50", "--names", "20")
    assert sorted(Item.objects.values_list("id", "code", "name", "unit")) == first
    # 20 customers and suppliers, and the name each store trades under.
    assert (Store.objects.count(), Item.objects.count(), Name.objects.count()) == (3, 50, 23)
    assert Name.objects.filter(store__isnull=False).count() == 3
    assert Name.objects.filter(kind=Name.Kind.SUPPLIER).count() == 4
    assert Item.objects.filter(name__startswith="Amoxicillin").exists()


def test_seed_demo_is_refused_on_a_satellite(satellite: int) -> None:
    with pytest.raises(CommandError, match="only be added, changed or deleted on the master"):
        run("seed_demo", "--items", "5")
    assert not Item.objects.exists()


@pytest.mark.parametrize(
    ("args", "code"),
    [
        # Refused by the command (Django's CommandError): 1.
        (["sync_config", "--sync-id", "99"], EXIT_FAILURE),
        (["sync_peer", "remove", "--sync-id", "9"], EXIT_FAILURE),
        # Refused by argparse, as every Django command's usage errors: 2.
        (["sync_peer", "frobnicate"], EXIT_USAGE),
        (["sync_config", "--interval", "often"], EXIT_USAGE),
    ],
)
def test_commands_exit_non_zero_with_a_message_on_bad_input(
    args: list[str], code: int, tmp_path
) -> None:
    # A real process: operators' scripts read the exit code, not an exception.
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "DEBUG": "true",
        "PATH": "/usr/bin:/bin",
    }
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "-v0"], env=env, check=True, timeout=120
    )
    result = subprocess.run(
        [sys.executable, "manage.py", *args], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == code
    assert result.stderr.strip()
    assert result.stdout == ""


@pytest.fixture
def master_peer(satellite: int) -> SyncPeer:
    """A satellite's Sync with list holding the master, added with the command."""
    run("sync_peer", "add", "--sync-id", "1", "--name", "Master", "--store", "S001",
        "--url", "http://127.0.0.1:9001/")  # fmt: skip
    return SyncPeer.objects.get()


def test_sync_peer_update_changes_the_url_and_keeps_the_sync_state(master_peer: SyncPeer) -> None:
    PeerState.objects.create(peer=master_peer, pull_txid=7, pull_seq=42, initialised=True)
    output = run("sync_peer", "update", "--sync-id", "1", "--url", "https://master.example.org/")
    assert "1\tMaster\tS001\thttps://master.example.org/" in output
    state = PeerState.objects.get(peer__sync_id=1)
    assert (state.pull_txid, state.pull_seq, state.initialised) == (7, 42, True)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["update", "--url", "http://a.b/"], "--sync-id"),
        (["update", "--sync-id", "5", "--url", "http://a.b/"], "No server with Sync ID 5"),
        (["update", "--sync-id", "1", "--url", "ftp://a.b/"], "http"),
    ],
)
def test_sync_peer_update_refuses_bad_input(
    master_peer: SyncPeer, args: list[str], message: str
) -> None:
    with pytest.raises(CommandError, match=message):
        run("sync_peer", *args)
    assert SyncPeer.objects.get().url == "http://127.0.0.1:9001/"
