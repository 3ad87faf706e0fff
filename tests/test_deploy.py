"""Production mode: check --deploy, no start without a key, static files, a busy gunicorn."""

import http.client
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, closing
from pathlib import Path

import pytest

from sync.protocol import PROTOCOL_VERSION, SYNC_ID_HEADER, VERSION_HEADER
from tests.servers import ROOT, Cluster, Site
from tests.sync.realsites import enrolling_client

# The block of README.md that documents a production server's environment.
README_ENV = re.compile(r"```bash\n# Production environment\n(.*?)```", re.DOTALL)


def documented_production_env(tmp_path: Path) -> dict[str, str]:
    """README's production environment, with a real key and a scratch SQLite database."""
    block = README_ENV.search((ROOT / "README.md").read_text())
    assert block, "README.md has no '# Production environment' block"
    env = dict(line.split("=", 1) for line in block.group(1).splitlines() if "=" in line)
    assert env["DEBUG"] == "false"
    return {
        **env,
        "SECRET_KEY": secrets.token_urlsafe(50),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "PATH": "/usr/bin:/bin",
    }


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_documented_production_env_passes_check_deploy_without_warnings(tmp_path: Path) -> None:
    result = manage(
        "check", "--deploy", "--fail-level", "WARNING", env=documented_production_env(tmp_path)
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "WARNING" not in output.upper(), output
    assert "no issues" in output


def test_production_refuses_to_start_without_a_secret_key(tmp_path: Path) -> None:
    env = documented_production_env(tmp_path)
    del env["SECRET_KEY"]
    without_debug = {key: value for key, value in env.items() if key != "DEBUG"}
    for production in (env, without_debug):  # DEBUG=false, and DEBUG unset
        result = manage("check", env=production)
        assert result.returncode != 0
        assert "ImproperlyConfigured: SECRET_KEY is not set" in result.stderr
        assert "python -c 'import secrets; print(secrets.token_urlsafe(50))'" in result.stderr


def test_schema_commands_run_on_a_fresh_checkout_without_a_key(tmp_path: Path) -> None:
    # As a build script or an operator's first migrate runs them: no DEBUG, no SECRET_KEY.
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", "PATH": "/usr/bin:/bin"}
    for command in (["makemigrations", "--check", "--dry-run"], ["migrate", "--verbosity", "0"]):
        result = manage(*command, env=env)
        assert result.returncode == 0, result.stderr
    assert manage("check", env=env).returncode != 0


def get(site: Site, path: str, **headers: str) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", site.port, timeout=10)
    connection.request("GET", path, headers=headers)
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


@pytest.mark.servers
def test_gunicorn_serves_static_files_in_production(tmp_path: Path) -> None:
    site = Site("static", tmp_path, {"DEBUG": "false"})
    try:
        site.manage("migrate", "--verbosity", "0")
        site.start(server="gunicorn")
        for path in ("/static/admin/css/base.css", "/static/reports/reports.css"):
            response = get(site, path)
            assert response.status == 200, path
            assert response.headers["Content-Type"].startswith("text/css"), path
        connection = http.client.HTTPConnection("127.0.0.1", site.port, timeout=10)
        connection.request("GET", "/admin/login/")
        page = connection.getresponse()
        assert page.status == 200
        hashed = re.search(
            r'href="(/static/admin/css/base\.[0-9a-f]{12}\.css)"', page.read().decode()
        )
        assert hashed, "the login page does not name the stylesheet by its hash"
        response = get(site, hashed.group(1), **{"Accept-Encoding": "gzip"})
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/css")
        assert response.headers["Content-Encoding"] == "gzip"
        assert "immutable" in response.headers["Cache-Control"]
    finally:
        site.destroy()


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A production-mode master under gunicorn (2 gthread workers) that knows satellite 2."""
    cluster = Cluster(tmp_path_factory.mktemp("busy"), satellites=1, master_env={"DEBUG": "false"})
    try:
        cluster.provision(items=5, names=5, server="gunicorn")
        yield cluster.master
    finally:
        cluster.destroy()


def stalled_upload(master: Site, token: str) -> socket.socket:
    """A push whose headers and first bytes arrive, then nothing: a slow link, or an attacker."""
    sock = socket.create_connection(("127.0.0.1", master.port), timeout=10)
    sock.sendall(
        b"POST /api/sync/v1/push/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 20000000\r\n"
        + f"{SYNC_ID_HEADER}: 2\r\n{VERSION_HEADER}: {PROTOCOL_VERSION}\r\n".encode()
        + f"Authorization: Bearer {token}\r\n\r\n".encode()
        + b'{"batch_id": "'
    )
    return sock


@pytest.mark.servers
def test_stalled_uploads_do_not_starve_the_sync_api(master: Site) -> None:
    satellite = enrolling_client(master, 2, read_timeout=10)
    token = satellite.handshake()["token"]
    with ExitStack() as stack:
        stack.callback(satellite.close)
        for _ in range(3):
            stack.enter_context(closing(stalled_upload(master, token)))
        time.sleep(1)
        start = time.monotonic()
        # With gunicorn's sync workers instead, this handshake waits out its read timeout.
        satellite.close()  # a new connection, as the next run would make
        answer = satellite.handshake()
        handshake_seconds = time.monotonic() - start
        assert answer["role"] == "master"
        assert handshake_seconds < 5, handshake_seconds
        start = time.monotonic()
        refused = get(master, "/api/sync/v1/handshake/", **{VERSION_HEADER: str(PROTOCOL_VERSION)})
        assert time.monotonic() - start < 5
        assert refused.status == 401
        assert refused.headers["Content-Type"] == "application/json"
        assert get(master, "/admin/login/").status == 200
    # The three uploads were being read by the push view: closing them cut them.
    deadline = time.monotonic() + 10
    while master.log_path.read_text().count("was cut before its end") < 3:
        assert time.monotonic() < deadline, master.log_path.read_text()[-3000:]
        time.sleep(0.2)
