"""Items imported in the master's admin reach a satellite by a real sync between real servers."""

import html
import re
import uuid
from collections.abc import Iterator
from http.cookiejar import CookieJar
from pathlib import Path
from urllib.parse import urlencode
from urllib.request import HTTPCookieProcessor, OpenerDirector, Request, build_opener

import pytest

from tests.servers import Cluster, Site
from tests.sync.realsites import sql, sync_ok

# sql() takes no parameters: queries embed only codes these tests made themselves.
# ruff: noqa: S608

pytestmark = pytest.mark.servers

ADMIN = "importer"
ITEMS = 200


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A master serving HTTP and satellite 2, initialised, with an admin user on the master."""
    cluster = Cluster(tmp_path_factory.mktemp("import"), satellites=1)
    try:
        cluster.provision(items=10, names=5)
        cluster.master.manage(
            "createsuperuser", "--noinput", "--username", ADMIN, "--email", "i@example.org",
            env={"DJANGO_SUPERUSER_PASSWORD": ADMIN},
        )  # fmt: skip
        sync_ok(cluster.satellites[0])
        yield cluster
    finally:
        cluster.destroy()


class AdminSession:
    """A logged-in admin session on a real server, over plain HTTP with its cookies."""

    def __init__(self, site: Site) -> None:
        self.url = site.url.rstrip("/")
        self.csrf_cookie = site.cookie_names()["CSRF_COOKIE_NAME"]
        self.cookies = CookieJar()
        self.opener: OpenerDirector = build_opener(HTTPCookieProcessor(self.cookies))

    def csrf(self) -> str:
        return next(c.value for c in self.cookies if c.name == self.csrf_cookie) or ""

    def get(self, path: str) -> str:
        with self.opener.open(self.url + path, timeout=60) as response:
            return str(response.read().decode())

    def post(self, path: str, body: bytes, content_type: str) -> str:
        request = Request(  # noqa: S310 - http://127.0.0.1 only
            self.url + path,
            data=body,
            headers={"Content-Type": content_type, "X-CSRFToken": self.csrf()},
        )
        with self.opener.open(request, timeout=120) as response:
            return str(response.read().decode())

    def post_form(self, path: str, fields: dict[str, str]) -> str:
        body = urlencode({**fields, "csrfmiddlewaretoken": self.csrf()}).encode()
        return self.post(path, body, "application/x-www-form-urlencoded")

    def post_file(self, path: str, fields: dict[str, str], name: str, content: bytes) -> str:
        boundary = uuid.uuid4().hex
        parts = [
            f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'
            for key, value in {**fields, "csrfmiddlewaretoken": self.csrf()}.items()
        ]
        body = (
            "".join(parts).encode()
            + f'--{boundary}\r\nContent-Disposition: form-data; name="import_file"; '
            f'filename="{name}"\r\nContent-Type: text/csv\r\n\r\n'.encode()
            + content
            + f"\r\n--{boundary}--\r\n".encode()
        )
        return self.post(path, body, f"multipart/form-data; boundary={boundary}")

    def log_in(self, username: str, password: str) -> None:
        self.get("/admin/login/")
        page = self.post_form(
            "/admin/login/?next=/admin/", {"username": username, "password": password}
        )
        assert "Log out" in page or "logout" in page, page[:500]


def hidden_inputs(page: str) -> dict[str, str]:
    return {
        name: html.unescape(value)
        for name, value in re.findall(r'type="hidden" name="(\w+)" value="([^"]*)"', page)
        if name != "csrfmiddlewaretoken"
    }


def test_items_imported_in_the_masters_admin_reach_the_satellite_by_sync(
    cluster: Cluster, tmp_path: Path
) -> None:
    master, satellite = cluster.master, cluster.satellites[0]
    rows = "\r\n".join(f"X{number:04d},Imported item {number},vial,1" for number in range(ITEMS))
    content = f"code,name,unit,active\r\n{rows}\r\n".encode()
    session = AdminSession(master)
    session.log_in(ADMIN, ADMIN)

    previewed = session.post_file(
        "/admin/stores/item/import/", {"format": "0", "resource": "0"}, "items.csv", content
    )
    assert "Confirm import" in previewed
    assert sql(master, "SELECT count(*) FROM stores_item WHERE code LIKE 'X%'") == [(0,)]
    confirm = hidden_inputs(previewed)
    assert confirm["original_file_name"] == "items.csv"
    done = session.post_form("/admin/stores/item/process_import/", confirm)
    assert f"Import finished: {ITEMS} new" in done

    assert sql(master, "SELECT count(*) FROM stores_item WHERE code LIKE 'X%'") == [(ITEMS,)]
    authors = sql(
        master,
        "SELECT DISTINCT c.changed_by FROM sync_changelog c JOIN stores_item i ON i.id = "
        "c.record_id WHERE i.code LIKE 'X%'",
    )
    assert authors == [(ADMIN,)]
    sync_ok(satellite)
    query = "SELECT code, name, unit FROM stores_item WHERE code LIKE 'X%' ORDER BY code"
    on_satellite = sql(satellite, query)
    assert len(on_satellite) == ITEMS
    assert on_satellite == sql(master, query)
