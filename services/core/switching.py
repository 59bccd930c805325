"""The switch's one home: its states, the transitions between them, and its rules.

A tutor's provider switch and each session's migration within it are state
machines. Their transition tables are written here once, from the enums in
`core.db.models`; the stores take the states their SQL needs from here
(`sources_of`, `sql_states`) instead of spelling literals, and the domain
modules of the gateway and the migrator ask the same questions here:

- is a switch still in flight, or settled (and is that final)?
- which sessions are eligible to move?
- which migration rows are still unsettled?
- what is the final state of a switch whose rows all settled?

Pure: no I/O. `tests/unit/core/test_switching.py` walks the tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

from services.core.db.models import MigrationState, SessionStatus, SwitchState

S = SwitchState
M = MigrationState

# Who moves a switch: the migrator, alone (one writer per table, issue 17). The
# gateway writes the tutor's requests (`switch_requests`: the switch, then maybe
# its rollback); the migrator creates the progress row (PENDING) when it
# handles the switch and sets ROLLING_BACK when it handles the rollback, from
# any state but the final ones. Until then `shown_state` says what the tutor
# asked for.
SWITCH_TRANSITIONS: Mapping[SwitchState, frozenset[SwitchState]] = MappingProxyType(
    {
        S.PENDING: frozenset({S.PLANNING, S.SUPERSEDED, S.ROLLING_BACK}),
        # PLANNING -> PLANNING: a redelivered provider.switched plans again (idempotent)
        S.PLANNING: frozenset(
            {
                S.PLANNING,
                S.MIGRATING,
                S.COMPLETED,
                S.COMPLETED_WITH_FAILURES,
                S.SUPERSEDED,
                S.ROLLING_BACK,
            }
        ),
        S.MIGRATING: frozenset(
            {S.COMPLETED, S.COMPLETED_WITH_FAILURES, S.SUPERSEDED, S.ROLLING_BACK}
        ),
        # A completed switch reopens when the tutor retries failed rows (or a late
        # plan batch adds rows), and can still be rolled back in its grace period.
        S.COMPLETED: frozenset({S.MIGRATING, S.ROLLING_BACK}),
        S.COMPLETED_WITH_FAILURES: frozenset({S.MIGRATING, S.ROLLING_BACK}),
        S.SUPERSEDED: frozenset(),
        S.ROLLING_BACK: frozenset({S.ROLLED_BACK}),
        S.ROLLED_BACK: frozenset(),
    }
)

MIGRATION_TRANSITIONS: Mapping[MigrationState, frozenset[MigrationState]] = MappingProxyType(
    {
        M.PENDING: frozenset({M.MEETING_CREATED, M.MIGRATED, M.FAILED, M.SKIPPED}),
        M.MEETING_CREATED: frozenset({M.MIGRATED, M.FAILED, M.SKIPPED}),
        # A rollback restores the previous meeting (ROLLED_BACK) or finds the
        # session gone meanwhile (SKIPPED).
        M.MIGRATED: frozenset({M.ROLLED_BACK, M.SKIPPED}),
        # A retry (the tutor's, or the automatic one) puts a failed row back.
        M.FAILED: frozenset({M.PENDING, M.SKIPPED}),
        M.SKIPPED: frozenset(),
        M.ROLLED_BACK: frozenset(),
    }
)

# Switch states nothing moves on from except a retry or a rollback.
IN_FLIGHT: frozenset[SwitchState] = frozenset({S.PENDING, S.PLANNING, S.MIGRATING})
SETTLED: frozenset[SwitchState] = frozenset(
    {S.COMPLETED, S.COMPLETED_WITH_FAILURES, S.SUPERSEDED, S.ROLLED_BACK}
)
FINAL: frozenset[SwitchState] = frozenset(s for s, nxt in SWITCH_TRANSITIONS.items() if not nxt)
# A switch whose work stopped for good: no row of it is started any more.
DROPPED: frozenset[SwitchState] = frozenset({S.SUPERSEDED, S.ROLLING_BACK, S.ROLLED_BACK})

# Only these sessions move; past, running, completed and cancelled ones never do.
ELIGIBLE_SESSION_STATUSES: tuple[SessionStatus, ...] = (
    SessionStatus.SCHEDULED,
    SessionStatus.JOIN_OPEN,
)
# Rows still to be worked on (a MEETING_CREATED row has its meeting, not yet its session).
UNSETTLED: tuple[MigrationState, ...] = (M.PENDING, M.MEETING_CREATED)


class IllegalTransition(ValueError):
    """A move the state machine does not have."""


def may_move(current: str, target: str) -> bool:
    """Whether a switch may go from `current` to `target`."""
    return SwitchState(target) in SWITCH_TRANSITIONS[SwitchState(current)]


def check_move(current: str, target: str) -> SwitchState:
    """`target` as a state, or IllegalTransition naming both ends."""
    if not may_move(current, target):
        raise IllegalTransition(f"a switch cannot go from {current} to {target}")
    return SwitchState(target)


def reachable_from(state: SwitchState) -> frozenset[SwitchState]:
    """`state` and every state a switch can reach from it, by any number of moves."""
    seen = {state}
    frontier = [state]
    while frontier:
        for nxt in SWITCH_TRANSITIONS[frontier.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                frontier.append(nxt)
    return frozenset(seen)


def sources_of(target: SwitchState) -> tuple[SwitchState, ...]:
    """Every switch state that may move to `target` (for a guarded UPDATE's WHERE)."""
    return tuple(s for s in SwitchState if target in SWITCH_TRANSITIONS[s])


def migration_sources_of(target: MigrationState) -> tuple[MigrationState, ...]:
    """Every migration-row state that may move to `target`."""
    return tuple(s for s in MigrationState if target in MIGRATION_TRANSITIONS[s])


def sql_states(states: Iterable[str]) -> str:
    """An SQL list literal, `('A', 'B')`, of enum values (never user input)."""
    values = [str(s) for s in states]
    known = {str(v) for e in (SwitchState, MigrationState, SessionStatus) for v in e}
    unknown = [v for v in values if v not in known]
    if unknown or not values:
        raise ValueError(f"not states: {unknown or 'none given'}")
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


def shown_state(progress: str | None, *, rollback_requested: bool) -> SwitchState:
    """A switch's state from the tutor's request and the migrator's progress row.

    `progress` is None until the migrator has handled the request (PENDING
    then). A rollback the tutor asked for is ROLLING_BACK from that moment
    (the connection is swapped back in the same transaction) until the
    migrator records it ROLLED_BACK.
    """
    state = S.PENDING if progress is None else SwitchState(progress)
    if rollback_requested and state is not S.ROLLED_BACK:
        return S.ROLLING_BACK
    return state


def final_state(*, failed: int) -> SwitchState:
    """The state of a switch whose rows all settled (nothing superseded or rolled it back)."""
    return S.COMPLETED_WITH_FAILURES if failed > 0 else S.COMPLETED


def is_eligible_status(status: str) -> bool:
    """Whether a session in this status is moved by a switch (its start must be future too)."""
    return status in {s.value for s in ELIGIBLE_SESSION_STATUSES}


def sql_state(state: SwitchState | MigrationState | SessionStatus) -> str:
    """One state as a quoted SQL literal (from an enum member only)."""
    return sql_states([state])
