"""The switch's state machine: the tables are whole, and their questions agree."""

from __future__ import annotations

import pytest

from services.core import switching
from services.core.db.models import MigrationState, SessionStatus, SwitchState


def test_every_state_has_a_row_and_every_target_is_a_state() -> None:
    assert set(switching.SWITCH_TRANSITIONS) == set(SwitchState)
    assert set(switching.MIGRATION_TRANSITIONS) == set(MigrationState)
    assert all(t <= set(SwitchState) for t in switching.SWITCH_TRANSITIONS.values())
    assert all(t <= set(MigrationState) for t in switching.MIGRATION_TRANSITIONS.values())


def test_every_state_is_reachable_from_pending() -> None:
    seen, todo = {SwitchState.PENDING}, [SwitchState.PENDING]
    while todo:
        for nxt in switching.SWITCH_TRANSITIONS[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    assert seen == set(SwitchState)


def test_final_states_go_nowhere_and_settled_ones_are_not_in_flight() -> None:
    assert {SwitchState.SUPERSEDED, SwitchState.ROLLED_BACK} == switching.FINAL
    assert not switching.IN_FLIGHT & switching.SETTLED
    assert switching.FINAL <= switching.SETTLED
    assert switching.IN_FLIGHT | switching.SETTLED | {SwitchState.ROLLING_BACK} == set(SwitchState)


@pytest.mark.parametrize(
    ("current", "target", "allowed"),
    [
        ("PENDING", "PLANNING", True),
        ("MIGRATING", "SUPERSEDED", True),
        ("COMPLETED", "MIGRATING", True),  # the tutor retried failed rows
        ("COMPLETED", "SUPERSEDED", False),  # a settled switch is not superseded afterwards
        ("SUPERSEDED", "COMPLETED", False),
        ("ROLLED_BACK", "MIGRATING", False),
        ("ROLLING_BACK", "COMPLETED", False),
    ],
)
def test_moves(current: str, target: str, allowed: bool) -> None:
    assert switching.may_move(current, target) is allowed
    if allowed:
        assert switching.check_move(current, target) == SwitchState(target)
    else:
        with pytest.raises(switching.IllegalTransition, match=f"from {current} to {target}"):
            switching.check_move(current, target)


def test_sources_are_read_from_the_table() -> None:
    assert set(switching.sources_of(SwitchState.SUPERSEDED)) == {
        SwitchState.PENDING,
        SwitchState.PLANNING,
        SwitchState.MIGRATING,
    }
    assert switching.sources_of(SwitchState.ROLLED_BACK) == (SwitchState.ROLLING_BACK,)
    assert set(switching.migration_sources_of(MigrationState.PENDING)) == {MigrationState.FAILED}


def test_sql_lists_hold_states_only() -> None:
    assert switching.sql_states(switching.UNSETTLED) == "('PENDING', 'MEETING_CREATED')"
    with pytest.raises(ValueError, match="not states"):
        switching.sql_states(["PENDING'); DROP TABLE sessions; --"])
    with pytest.raises(ValueError):
        switching.sql_states([])


def test_final_state_and_eligibility() -> None:
    assert switching.final_state(failed=0) is SwitchState.COMPLETED
    assert switching.final_state(failed=2) is SwitchState.COMPLETED_WITH_FAILURES
    assert [s for s in SessionStatus if switching.is_eligible_status(s)] == [
        SessionStatus.SCHEDULED,
        SessionStatus.JOIN_OPEN,
    ]


def test_the_claim_index_covers_exactly_the_unsettled_rows() -> None:
    # models.py cannot import core.switching (which imports models): its
    # partial index spells the list, and this keeps the two in step.
    from services.core.db.models import Base

    table = Base.metadata.tables["session_migrations"]
    (index,) = [i for i in table.indexes if i.name == "ix_session_migrations_tutor_due"]
    where = str(index.dialect_options["postgresql"]["where"])
    assert where == f"state IN {switching.sql_states(switching.UNSETTLED)}"


def test_reachable_states_follow_the_table() -> None:
    S = SwitchState
    assert switching.reachable_from(S.ROLLED_BACK) == {S.ROLLED_BACK}
    assert switching.reachable_from(S.SUPERSEDED) == {S.SUPERSEDED}
    done = switching.reachable_from(S.COMPLETED)
    # a completed switch reopens for a retry, settles again, or is rolled back ...
    assert {S.MIGRATING, S.COMPLETED_WITH_FAILURES, S.ROLLING_BACK, S.ROLLED_BACK} <= done
    # ... but never goes back to being planned
    assert S.PENDING not in done and S.PLANNING not in done


def test_the_state_shown_joins_the_request_and_the_progress() -> None:
    S = SwitchState
    # not handled by the migrator yet: what the tutor asked for
    assert switching.shown_state(None, rollback_requested=False) is S.PENDING
    assert switching.shown_state(None, rollback_requested=True) is S.ROLLING_BACK
    # handled: the migrator's state, unless a rollback was asked for and is not done
    assert switching.shown_state("MIGRATING", rollback_requested=False) is S.MIGRATING
    assert switching.shown_state("COMPLETED", rollback_requested=True) is S.ROLLING_BACK
    assert switching.shown_state("ROLLED_BACK", rollback_requested=True) is S.ROLLED_BACK
    # every state the migrator can be in when the rollback is asked for leads to ROLLING_BACK
    for state in switching.sources_of(S.ROLLING_BACK):
        assert switching.shown_state(state, rollback_requested=True) is S.ROLLING_BACK
