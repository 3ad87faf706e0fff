"""A run that meets an unexpected error records it plainly, and the next run completes."""

from collections.abc import Iterator

import pytest

from msupply.sites import Cluster

pytestmark = pytest.mark.servers

CREATE_ITEM = (
    "from stores.services import item_create; "
    "item_create(code='ORS-1L', name='Oral rehydration salts 1 L', unit='sachet')"
)

# Someone changed the satellite's database by hand: a trigger that refuses every new item.
ROGUE_TRIGGER = """
from django.db import connection
with connection.cursor() as cursor:
    if connection.vendor == "sqlite":
        cursor.execute(
            "CREATE TRIGGER rogue BEFORE INSERT ON stores_item "
            "BEGIN SELECT RAISE(ABORT, 'hand-made trigger'); END"
        )
    else:
        cursor.execute(
            "CREATE FUNCTION rogue() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'hand-made trigger'; END $$"
        )
        cursor.execute(
            "CREATE TRIGGER rogue BEFORE INSERT ON stores_item "
            "FOR EACH ROW EXECUTE FUNCTION rogue()"
        )
"""
DROP_ROGUE_TRIGGER = """
from django.db import connection
with connection.cursor() as cursor:
    on_table = "" if connection.vendor == "sqlite" else " ON stores_item"
    cursor.execute("DROP TRIGGER rogue" + on_table)
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    cluster = Cluster(tmp_path_factory.mktemp("run-failures"), satellites=1)
    try:
        cluster.provision(items=5, names=5)
        cluster.satellites[0].manage("sync_now")
        yield cluster
    finally:
        cluster.destroy()


def test_an_unexpected_database_error_fails_the_run_plainly_and_the_next_run_recovers(
    cluster: Cluster,
) -> None:
    satellite = cluster.satellites[0]
    satellite.manage("shell", "--no-imports", "-c", ROGUE_TRIGGER)
    cluster.master.manage("shell", "--no-imports", "-c", CREATE_ITEM)

    failed = satellite.manage_json("sync_now", check=False)
    assert failed["result"] == "failure"
    assert failed["error_code"] == "internal_error"
    assert "unexpected error" in failed["message"]
    assert "hand-made trigger" in failed["message"]
    assert "resumes" not in failed["message"]
    assert satellite.sql("SELECT COUNT(*) FROM sync_synclog WHERE result = 'running'") == [(0,)]
    assert satellite.sql("SELECT COUNT(*) FROM stores_item WHERE code = 'ORS-1L'") == [(0,)]

    satellite.manage("shell", "--no-imports", "-c", DROP_ROGUE_TRIGGER)
    assert satellite.manage_json("sync_now")["result"] == "success"
    assert satellite.sql("SELECT name FROM stores_item WHERE code = 'ORS-1L'") == [
        ("Oral rehydration salts 1 L",)
    ]
