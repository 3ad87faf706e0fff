"""A satellite's push history against the master's record: in step, lost answer, restored."""

import pytest

from sync.changes import Cursor, changes_last, range_digest
from sync.models import PeerState
from sync.push import PushRecord
from sync.registry import LOCAL_STORE_DATA_SCOPE
from sync.run import History, history_compare
from tests.factories import TransactionFactory

pytestmark = pytest.mark.django_db


def state(generation: int, cursor: Cursor, *, initialised: bool = True) -> PeerState:
    return PeerState(
        push_generation=generation,
        push_txid=cursor.txid,
        push_seq=cursor.seq,
        initialised=initialised,
    )


@pytest.fixture
def pushed() -> PushRecord:
    """The master's record of a batch holding this site's first two transactions."""
    TransactionFactory.create_batch(2)
    end = changes_last()
    return PushRecord(3, Cursor(), end, range_digest(Cursor(), end, LOCAL_STORE_DATA_SCOPE))


def test_a_master_that_never_received_a_push_opens_a_new_history(pushed: PushRecord) -> None:
    assert history_compare(state=state(0, Cursor()), master=PushRecord()) is History.NEW


def test_a_satellite_at_the_masters_end_is_in_step(pushed: PushRecord) -> None:
    assert history_compare(state=state(3, pushed.end), master=pushed) is History.IN_STEP


def test_a_lost_answer_is_recognised_by_the_log_the_satellite_still_holds(
    pushed: PushRecord,
) -> None:
    assert history_compare(state=state(3, Cursor()), master=pushed) is History.CARRY_ON


def test_a_log_that_differs_from_the_batch_the_master_applied_is_a_restore(
    pushed: PushRecord,
) -> None:
    other = PushRecord(3, pushed.start, pushed.end, "another history")
    assert history_compare(state=state(3, Cursor()), master=other) is History.RESTORED
    # Restored to a backup older than the satellite's previous healing.
    assert history_compare(state=state(2, pushed.end), master=pushed) is History.RESTORED


def test_a_never_initialised_satellite_opens_a_new_history_instead_of_healing(
    pushed: PushRecord,
) -> None:
    rebuilt = state(0, Cursor(), initialised=False)
    assert history_compare(state=rebuilt, master=pushed) is History.NEW


def test_a_satellite_ahead_of_the_master_carries_on_from_the_masters_end(
    pushed: PushRecord,
) -> None:
    behind = PushRecord(3, Cursor(), Cursor(0, 1), "")
    assert history_compare(state=state(3, pushed.end), master=behind) is History.CARRY_ON
