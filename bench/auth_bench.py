"""What a satellite's identity costs: handshakes by key, token and password on a real master.

Times each kind of handshake over HTTP from the client's side (median and range of --repeats),
the idle `sync_now` a satellite waits for, and a wrong user name against a wrong password (the
hash runs for both). Prints the bytes of each credential's header, and the machine's load.
"""

import argparse
import base64
import gzip
import http.client
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import django  # noqa: E402

# The protocol module loads DRF, which reads settings; no database is used here.
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "msupply.settings")
os.environ.setdefault("DEBUG", "true")
django.setup()

from sync.protocol import API_PREFIX, PROTOCOL_VERSION  # noqa: E402
from tests.servers import SYNC_PASSWORD, SYNC_USERNAME, Cluster  # noqa: E402


def _handshake(port: int, authorization: str, source: str = "127.0.0.1") -> tuple[float, int]:
    """One handshake as satellite 2 on a new connection; (milliseconds, HTTP status)."""
    body = gzip.compress(json.dumps({"sync_id": 2, "protocol_version": PROTOCOL_VERSION}).encode())
    headers = {
        "X-Sync-Id": "2",
        "X-Sync-Protocol": str(PROTOCOL_VERSION),
        "Authorization": authorization,
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
    }
    connection = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=60, source_address=(source, 0)
    )
    try:
        start = time.perf_counter()
        connection.request("POST", API_PREFIX + "handshake/", body, headers)
        response = connection.getresponse()
        response.read()
        return (time.perf_counter() - start) * 1000, response.status
    finally:
        connection.close()


def _summary(values: list[float]) -> str:
    median = statistics.median(values)
    return f"median {median:7.1f} ms  (range {min(values):.1f}-{max(values):.1f})"


def _basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        cluster = Cluster(Path(workdir), satellites=1)
        try:
            cluster.provision(items=5, names=3, server="gunicorn")
            satellite = cluster.satellites[0]
            started = time.perf_counter()
            satellite.manage("sync_now")
            enrolling_run = time.perf_counter() - started
            key = satellite.sql("SELECT sync_key FROM sync_syncpreferences")[0][0]
            token = satellite.sql("SELECT auth_token FROM sync_peerstate")[0][0]
            port = cluster.master.port
            credentials = {
                "key": f"Key {key}",
                "token": f"Bearer {token}",
                "shared password (refused: enrolled)": _basic(SYNC_USERNAME, SYNC_PASSWORD),
            }
            results: dict[str, list[float]] = {name: [] for name in credentials}
            for _ in range(args.repeats):
                for name, authorization in credentials.items():
                    milliseconds, _status = _handshake(port, authorization)
                    results[name].append(milliseconds)
            # Wrong guesses from a new address each, so that no lockout cuts the hash short.
            guesses: dict[str, list[float]] = {"wrong password": [], "wrong user name": []}
            for attempt in range(args.repeats):
                for offset, (name, authorization) in enumerate(
                    [
                        ("wrong password", _basic(SYNC_USERNAME, "a-guess")),
                        ("wrong user name", _basic("nobody", SYNC_PASSWORD)),
                    ]
                ):
                    source = f"127.0.{2 + offset}.{1 + attempt % 250}"
                    milliseconds, status = _handshake(port, authorization, source)
                    assert status == 401, status
                    guesses[name].append(milliseconds)
            idle_runs = []
            for _ in range(max(3, args.repeats // 4)):
                started = time.perf_counter()
                satellite.manage("sync_now")
                idle_runs.append((time.perf_counter() - started) * 1000)
        finally:
            cluster.destroy()
    print(f"load average {os.getloadavg()}, {os.cpu_count()} cores, {args.repeats} repeats")
    print(f"first sync_now (enrols, initialises): {enrolling_run * 1000:.0f} ms")
    for name, values in {**results, **guesses}.items():
        print(f"handshake by {name:38s} {_summary(values)}")
    print(f"idle sync_now (token or key handshake):       {_summary(idle_runs)}")
    sizes: dict[str, Any] = {name: len(value) for name, value in credentials.items()}
    print(f"Authorization header bytes: {sizes}")


if __name__ == "__main__":
    main()
