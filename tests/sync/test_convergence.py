"""Random sequences of everyday actions, syncs and faults always converge (see tests/convergence).

CI runs CONVERGENCE_CI_SEEDS fixed seeds of CONVERGENCE_CI_STEPS steps. With CONVERGENCE_SEEDS=N
(and optionally CONVERGENCE_STEPS, CONVERGENCE_FIRST_SEED) the `convergence_long` test runs N
more; bench/convergence.py runs the same with figures.
"""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.convergence import ConvergenceCluster, Sequence, convergence_cluster

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


LONG_SEEDS = int(os.environ.get("CONVERGENCE_SEEDS", "0"))
LONG_STEPS = int(os.environ.get("CONVERGENCE_STEPS", "60"))
FIRST_SEED = int(os.environ.get("CONVERGENCE_FIRST_SEED", "1000"))


@pytest.mark.convergence_long
@pytest.mark.skipif(not LONG_SEEDS, reason="set CONVERGENCE_SEEDS=N to run N long sequences")
@pytest.mark.parametrize("seed", range(FIRST_SEED, FIRST_SEED + LONG_SEEDS))
def test_a_long_random_sequence_converges(cluster: ConvergenceCluster, seed: int) -> None:
    assert_converges(cluster, seed, LONG_STEPS)
