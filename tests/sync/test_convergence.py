"""Random sequences of everyday actions, syncs and faults always converge (see tests/convergence).

CI runs CONVERGENCE_CI_SEEDS fixed seeds of CONVERGENCE_CI_STEPS steps. With CONVERGENCE_SEEDS=N
(and optionally CONVERGENCE_STEPS, CONVERGENCE_FIRST_SEED) the `convergence_long` test runs N
more; bench/convergence.py runs the same with figures.
"""

import os
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import psycopg
import pytest

from sync.capture import SQLITE_CHANGED_BY_FUNCTION, SQLITE_SOURCE_FUNCTION
from tests.convergence import (
    Action,
    ConvergenceCluster,
    Sequence,
    convergence_cluster,
    is_postgres,
)
from tests.servers import Site

pytestmark = pytest.mark.servers

CONVERGENCE_CI_SEEDS = (1, 2, 3)
CONVERGENCE_CI_STEPS = 25


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConvergenceCluster]:
    with convergence_cluster(Path(tmp_path_factory.mktemp("convergence"))) as provisioned:
        yield provisioned


def assert_converges(cluster: ConvergenceCluster, seed: int, steps: int) -> None:
    outcome = Sequence(cluster, seed).run(steps)
    assert outcome.actions, "the sequence did nothing"
    assert not outcome.discrepancies, outcome.report()


@pytest.mark.parametrize("seed", CONVERGENCE_CI_SEEDS)
def test_a_random_sequence_of_actions_syncs_and_faults_converges(
    cluster: ConvergenceCluster, seed: int
) -> None:
    assert_converges(cluster, seed, CONVERGENCE_CI_STEPS)


def write(site: Site, statement: str) -> None:
    """Change `site`'s database behind its back."""
    if is_postgres(site):
        with psycopg.connect(site.database_url, autocommit=True) as connection:
            connection.execute(statement)
        return
    with closing(sqlite3.connect(site.database_url.removeprefix("sqlite:///"))) as connection:
        # The change-capture triggers ask this function which site a change came from.
        connection.create_function(SQLITE_SOURCE_FUNCTION, 0, lambda: None)
        connection.create_function(SQLITE_CHANGED_BY_FUNCTION, 0, lambda: "")
        connection.execute(statement)
        connection.commit()


DRAFT_ON_SATELLITE_2: list[Action] = [
    {
        "op": "create", "site": "satellite2", "tx": "T1", "kind": "supplier_invoice",
        "date": "2024-01-05", "name": "N00005",
        "lines": [{"item": "I00001", "batch": "A", "expiry": "2030-01-31", "quantity": 4}],
    },
    {"op": "sync", "site": "satellite2"},
]  # fmt: skip


def test_the_checks_see_a_satellite_record_that_differs_from_the_masters_copy(
    cluster: ConvergenceCluster,
) -> None:
    sequence = Sequence(cluster)
    outcome = sequence.replay(DRAFT_ON_SATELLITE_2)
    assert (outcome.figures["create done"], outcome.discrepancies) == (1, [])
    write(cluster.satellites[0], "UPDATE stores_transactionline SET quantity = quantity + 1")
    sequence.check()
    (found,) = outcome.discrepancies
    assert found.startswith("satellite2: its store differs from the master's copy: ")
    assert "quantity=5" in found


LONG_SEEDS = int(os.environ.get("CONVERGENCE_SEEDS", "0"))
LONG_STEPS = int(os.environ.get("CONVERGENCE_STEPS", "60"))
FIRST_SEED = int(os.environ.get("CONVERGENCE_FIRST_SEED", "1000"))


@pytest.mark.convergence_long
@pytest.mark.skipif(not LONG_SEEDS, reason="set CONVERGENCE_SEEDS=N to run N long sequences")
@pytest.mark.parametrize("seed", range(FIRST_SEED, FIRST_SEED + LONG_SEEDS))
def test_a_long_random_sequence_converges(cluster: ConvergenceCluster, seed: int) -> None:
    assert_converges(cluster, seed, LONG_STEPS)
