"""A run that meets an unexpected error records it plainly, and the next run completes."""

from collections.abc import Iterator

import pytest

from msupply.sites import Cluster

pytestmark = pytest.mark.servers

CREATE_ITEM = (
    "from stores.services import item_create; "
    "item_create(code='ORS-1L', name='Oral rehydration salts 1 L', unit='sachet')"
)

# Past the services, which refuse item writes on a satellite.
ROGUE_ITEM = (
    "from stores.models import Item; "
    "Item.objects.bulk_create([Item(code='ORS-1L', name='Hand-made row', unit='sachet')])"
)
DELETE_ROGUE_ITEM = "from stores.models import Item; Item.objects.filter(code='ORS-1L').delete()"


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
    # Someone wrote to the satellite's database by hand: an item the master will also create.
    satellite.manage("shell", "--no-imports", "-c", ROGUE_ITEM)
    cluster.master.manage("shell", "--no-imports", "-c", CREATE_ITEM)

    failed = satellite.manage_json("sync_now", check=False)
    assert failed["result"] == "failure"
    assert failed["error_code"] == "internal_error"
    assert "unexpected error" in failed["message"]
    assert "IntegrityError" in failed["message"]
    assert satellite.sql("SELECT COUNT(*) FROM sync_synclog WHERE result = 'running'") == [(0,)]

    satellite.manage("shell", "--no-imports", "-c", DELETE_ROGUE_ITEM)
    assert satellite.manage_json("sync_now")["result"] == "success"
    assert satellite.sql("SELECT name FROM stores_item WHERE code = 'ORS-1L'") == [
        ("Oral rehydration salts 1 L",)
    ]
