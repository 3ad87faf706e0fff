"""Between real servers: the master sees a satellite's refused logins as its trouble."""

from collections.abc import Iterator

import pytest

from tests.servers import Cluster
from tests.sync.realsites import sync_fails

pytestmark = pytest.mark.servers


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A master and one satellite that has not enrolled yet."""
    cluster = Cluster(tmp_path_factory.mktemp("trouble"), satellites=1)
    cluster.satellites[0].extra_env["SYNC_RETRIES"] = "0"
    try:
        cluster.provision(items=4, names=2)
        yield cluster
    finally:
        cluster.destroy()


def test_a_wrong_password_shows_on_the_master_and_the_satellite_as_the_same_error(
    cluster: Cluster,
) -> None:
    satellite = cluster.satellites[0]
    satellite.manage("sync_config", "--password-stdin", stdin="not-the-password\n")
    report = sync_fails(satellite)
    assert report["error_code"] == "wrong_credentials", report

    master_view = {
        peer["sync_id"]: peer for peer in cluster.master.manage_json("sync_status")["peers"]
    }[2]
    assert (master_view["last_error_code"], master_view["failure_streak"]) == (
        "wrong_credentials",
        1,
    )
    assert "refused the password" in master_view["last_error"]
    assert master_view["last_failed_at"]

    (own_view,) = satellite.manage_json("sync_status")["peers"]
    assert (own_view["last_error_code"], own_view["failure_streak"]) == ("wrong_credentials", 1)
