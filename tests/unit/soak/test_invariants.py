"""The soak's switch checks (issue 17) on hand-made facts: each reports the violation it
exists for, and stays quiet on the same facts told right."""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from devtools.soak.invariants import (
    NO_ROLLBACK_MEETING,
    ONE_MEETING,
    RETRY_AFTER,
    SWITCH_STATE_TRUE,
    TUTOR_EMAIL_TRUE,
    AccountFact,
    InvariantReport,
    MeetingFact,
    RollbackRequest,
    SessionFact,
    SummaryMail,
    SwitchFact,
    SwitchFacts,
    attribute_meetings,
    google_event_ids,
    judge_no_meeting_from_rollback,
    judge_one_meeting_per_session,
    judge_retry_after,
    judge_switch_states,
    judge_tutor_summaries,
)
from services.core.db.models import MigrationState, SwitchState
from services.providers._google import event_ids
from services.providers._models import MeetingRequest

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
TUTOR = str(uuid.uuid4())


def switch(
    generation: int,
    state: SwitchState,
    *,
    to: str = "google_meet",
    at: float = 0.0,
    completed: float | None = None,
    rows: tuple[int, int, int] = (0, 0, 0),
    by_tutor: bool = True,
    deadline: float = 60.0,
) -> SwitchFact:
    """A switch `at` seconds after T0, its totals (total, migrated, failed)."""
    total, migrated, failed = rows
    return SwitchFact(
        id=str(uuid.uuid4()),
        tutor_id=TUTOR,
        from_provider="zoom" if to == "google_meet" else "google_meet",
        to_provider=to,
        generation=generation,
        state=state.value,
        created_at=T0 + timedelta(seconds=at),
        completed_at=None if completed is None else T0 + timedelta(seconds=completed),
        rollback_deadline=T0 + timedelta(seconds=deadline),
        sessions_total=total,
        sessions_migrated=migrated,
        sessions_failed=failed,
        by_tutor=by_tutor,
    )


def session(days: int = 3) -> SessionFact:
    return SessionFact(
        str(uuid.uuid4()), TUTOR, str(uuid.uuid4()), "SCHEDULED", T0 + timedelta(days=days)
    )


def meeting(
    session_id: str | None, *, key: str | None = None, at: float = 0.0, provider: str = "zoom"
) -> MeetingFact:
    return MeetingFact(
        provider=provider,
        account="tutor@soak.example",
        id=str(uuid.uuid4().int % 10**11),
        tutor_id=TUTOR,
        key=key,
        session_id=session_id,
        created_at=T0 + timedelta(seconds=at),
    )


def violations(report: InvariantReport, name: str) -> list[str]:
    return [v.detail for v in report.violations if v.invariant == name]


# (a) at most one live meeting per session once the grace period has passed


def test_two_live_meetings_of_one_session_after_the_grace_period_are_reported() -> None:
    s = session()
    facts = SwitchFacts(
        switches=[switch(2, SwitchState.COMPLETED, rows=(1, 1, 0), completed=5)],
        sessions=[s],
        meetings=[meeting(s.id, at=1), meeting(s.id, at=2, provider="google_meet")],
    )
    report = InvariantReport()
    judge_one_meeting_per_session(report, facts, now=T0 + timedelta(seconds=120))
    assert report.checked[ONE_MEETING] == 1
    [detail] = violations(report, ONE_MEETING)
    assert s.id in detail and "2 live meetings" in detail

    # within the grace period the old meeting is kept for a rollback: not judged
    report = InvariantReport()
    judge_one_meeting_per_session(report, facts, now=T0 + timedelta(seconds=30))
    assert report.ok and report.checked[ONE_MEETING] == 0
    # one meeting is right
    report = InvariantReport()
    judge_one_meeting_per_session(
        report, replace(facts, meetings=facts.meetings[:1]), now=T0 + timedelta(seconds=120)
    )
    assert report.ok and report.checked[ONE_MEETING] == 1


def test_meetings_are_attributed_to_their_session_by_marker_event_id_and_start() -> None:
    zoom_session, google_session, booked = session(2), session(3), session(4)
    made = switch(2, SwitchState.COMPLETED)
    listing = [
        {
            "provider": "zoom",
            "email": "Tutor@soak.example",
            "meetings": [
                {
                    "id": 81000000001,
                    "agenda": f"Scheduled by relink [relink:{made.id}:{zoom_session.id}]",
                    "created_at": "2026-11-27T12:00:05Z",
                },
                {
                    "id": 81000000002,
                    "agenda": "",
                    "start_time": booked.scheduled_start_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                },
            ],
        },
        {
            "provider": "google",
            "email": "tutor@soak.example",
            "meetings": [
                {
                    "id": google_event_ids(made.id, google_session.id)[1],
                    "created": "2026-11-27T12:00:07+00:00",
                }
            ],
        },
    ]
    facts = attribute_meetings(
        listing,
        sessions=[zoom_session, google_session, booked],
        switches=[made],
        tutor_by_email={"tutor@soak.example": TUTOR},
    )
    assert [(m.provider, m.key, m.session_id) for m in facts] == [
        ("zoom", made.id, zoom_session.id),
        ("zoom", None, booked.id),
        ("google_meet", made.id, google_session.id),
    ]
    assert facts[0].created_at == T0 + timedelta(seconds=5)


def test_the_event_id_chain_is_the_google_clients_own() -> None:
    request = MeetingRequest("switch-1", "session-1", "topic", T0, 30)
    assert google_event_ids("switch-1", "session-1") == event_ids(request)


# (b) no meeting created by a rollback


def test_a_meeting_made_after_a_rollback_request_is_reported() -> None:
    s = session()
    first = switch(2, SwitchState.ROLLED_BACK, to="google_meet", at=0)
    asked = RollbackRequest(first.id, TUTOR, T0 + timedelta(seconds=10))
    # the migrator's own follow-up switch (the tutor never made it) and its meeting
    follow_up = switch(3, SwitchState.COMPLETED, to="zoom", at=11, by_tutor=False)
    stray = meeting(s.id, key=follow_up.id, at=12)
    # a meeting of the tutor's switch made after the request (an unattributed one too)
    late = meeting(s.id, key=first.id, at=13, provider="google_meet")
    unknown = meeting(s.id, key=None, at=14)
    facts = SwitchFacts(
        switches=[first, follow_up],
        rollbacks=[asked],
        sessions=[s],
        meetings=[stray, late, unknown],
    )
    report = InvariantReport()
    judge_no_meeting_from_rollback(report, facts)
    found = violations(report, NO_ROLLBACK_MEETING)
    assert len(found) == 3, found
    assert "never made" in found[0]
    assert all("asked for a rollback" in d for d in found[1:])

    # the follow-up switch's rows say it created meetings: reported once, with the
    # ones since deleted (gone from the providers' listings) counted too
    report = InvariantReport()
    judge_no_meeting_from_rollback(
        report, replace(facts, meetings=[late], created=Counter({follow_up.id: 5}))
    )
    found = violations(report, NO_ROLLBACK_MEETING)
    assert len(found) == 2, found
    assert follow_up.id in found[0] and "created 5 meetings (0 still live)" in found[0]


def test_meetings_a_tutor_asked_for_after_a_rollback_are_not_reported() -> None:
    s = session()
    first = switch(2, SwitchState.ROLLED_BACK, to="google_meet", at=0)
    asked = RollbackRequest(first.id, TUTOR, T0 + timedelta(seconds=10))
    again = switch(3, SwitchState.COMPLETED, to="google_meet", at=20)
    facts = SwitchFacts(
        switches=[first, again],
        rollbacks=[asked],
        sessions=[s],
        meetings=[
            meeting(s.id, key=first.id, at=5, provider="google_meet"),  # before the request
            meeting(s.id, key=again.id, at=25, provider="google_meet"),  # the tutor's new switch
            meeting(s.id, key="booking-x-g3", at=26),  # a booking
            meeting(s.id, key=None, at=27, provider="google_meet"),  # after `again`
        ],
    )
    report = InvariantReport()
    judge_no_meeting_from_rollback(report, facts)
    assert report.ok, report.violations
    assert report.checked[NO_ROLLBACK_MEETING] == 4


# (c) every switch's recorded final state true


def test_false_final_states_are_reported() -> None:
    replaced = switch(2, SwitchState.COMPLETED, at=0, completed=3)  # 0/0 after g3 came
    newest = switch(3, SwitchState.COMPLETED, to="zoom", at=1, completed=4, rows=(2, 2, 0))
    unasked = switch(4, SwitchState.ROLLED_BACK, at=5)
    asked_only = switch(5, SwitchState.COMPLETED, at=6, completed=7, rows=(1, 1, 0))
    lonely = switch(9, SwitchState.SUPERSEDED, at=13)  # the newest, yet "superseded"
    early = switch(7, SwitchState.COMPLETED, to="zoom", at=9, completed=10, rows=(2, 1, 0))
    ghost = switch(8, SwitchState.COMPLETED, at=11, completed=12, by_tutor=False)
    facts = SwitchFacts(
        switches=[replaced, newest, unasked, asked_only, lonely, early, ghost],
        rows={
            newest.id: Counter({MigrationState.MIGRATED.value: 2}),
            asked_only.id: Counter({MigrationState.MIGRATED.value: 1}),
            early.id: Counter({MigrationState.MIGRATED.value: 1, MigrationState.PENDING.value: 1}),
        },
        rollbacks=[RollbackRequest(asked_only.id, TUTOR, T0 + timedelta(seconds=6.5))],
    )
    report = InvariantReport()
    judge_switch_states(report, facts)
    found = violations(report, SWITCH_STATE_TRUE)
    assert report.checked[SWITCH_STATE_TRUE] == 7

    def about(s: SwitchFact) -> list[str]:
        return [d for d in found if s.id in d]

    assert any("should be SUPERSEDED" in d for d in about(replaced))
    assert about(newest) == []  # completed before g4 came: COMPLETED is true
    assert any("with no rollback request" in d for d in about(unasked))
    assert any("should be ROLLED_BACK" in d for d in about(asked_only))
    assert any("no newer generation" in d for d in about(lonely))
    assert any("not at the target nor failed" in d for d in about(early))
    assert any("never made" in d for d in about(ghost))


def test_true_final_states_are_not_reported() -> None:
    done = switch(2, SwitchState.COMPLETED, at=0, completed=2, rows=(2, 2, 0))
    partly = switch(3, SwitchState.COMPLETED_WITH_FAILURES, to="zoom", at=3, completed=4,
                    rows=(2, 1, 1))  # fmt: skip
    replaced = switch(4, SwitchState.SUPERSEDED, at=5)
    back = switch(5, SwitchState.ROLLED_BACK, to="zoom", at=6)
    facts = SwitchFacts(
        switches=[done, partly, replaced, back],
        rows={
            done.id: Counter({MigrationState.MIGRATED.value: 2}),
            partly.id: Counter(
                {
                    MigrationState.MIGRATED.value: 1,
                    MigrationState.FAILED.value: 1,
                    MigrationState.SKIPPED.value: 1,
                }
            ),
            back.id: Counter({MigrationState.ROLLED_BACK.value: 2}),
        },
        rollbacks=[RollbackRequest(back.id, TUTOR, T0 + timedelta(seconds=7))],
    )
    report = InvariantReport()
    judge_switch_states(report, facts)
    assert report.ok, report.violations


def test_replacement_is_judged_by_commit_order_where_the_outbox_shows_it() -> None:
    """The request's time is the click; its commit (its outbox id) can come after
    a completion that started later. Outbox id order per tutor is commit order."""
    from dataclasses import replace

    # g2 completed at 3.002 s, g3 clicked at 3.000 s: by the times, "replaced".
    raced = switch(2, SwitchState.COMPLETED, at=0, completed=3.002)
    newer = switch(3, SwitchState.COMPLETED, to="zoom", at=3.0, completed=5)
    # ... but g2's switch.settled (id 11) committed before g3's provider.switched (12).
    facts = SwitchFacts(
        switches=[replace(raced, settled_seq=11), replace(newer, requested_seq=12, settled_seq=13)]
    )
    report = InvariantReport()
    judge_switch_states(report, facts)
    assert report.ok, report.violations

    # g3's request committed first (id 10): COMPLETED is false, whatever the times say.
    late = switch(2, SwitchState.COMPLETED, at=0, completed=2.9)
    facts = SwitchFacts(
        switches=[replace(late, settled_seq=11), replace(newer, requested_seq=10, settled_seq=13)]
    )
    report = InvariantReport()
    judge_switch_states(report, facts)
    assert any("should be SUPERSEDED" in d for d in violations(report, SWITCH_STATE_TRUE))


# (d) no tutor email that claims a move that did not happen


def test_summaries_that_claim_moves_that_did_not_happen_are_reported() -> None:
    superseded = switch(2, SwitchState.SUPERSEDED, at=0)
    newer = switch(3, SwitchState.COMPLETED, to="zoom", at=1, completed=3, rows=(2, 2, 0))
    ghost = switch(4, SwitchState.COMPLETED, at=4, completed=5, rows=(7, 7, 0), by_tutor=False)
    moved = Counter({MigrationState.MIGRATED.value: 1, MigrationState.FAILED.value: 1})
    facts = SwitchFacts(
        switches=[superseded, newer, ghost],
        rows={newer.id: moved, ghost.id: Counter({MigrationState.MIGRATED.value: 7})},
        summaries=[
            SummaryMail(superseded.id, "t@x", "Your switch to Google Meet: 0 of 0 sessions moved"),
            SummaryMail(newer.id, "t@x", "Your switch to Zoom: 2 of 2 sessions moved"),
            SummaryMail(ghost.id, "t@x", "Your switch to Google Meet: 7 of 7 sessions moved"),
        ],
    )
    report = InvariantReport()
    judge_tutor_summaries(report, facts)
    found = violations(report, TUTOR_EMAIL_TRUE)
    assert len(found) == 3, found
    assert "superseded" in found[0]
    assert "1 sessions moved" in found[1]
    assert "never made" in found[2]

    told_right = SummaryMail(newer.id, "t@x", "Your switch to Zoom: 1 of 2 sessions moved, 1 …")
    report = InvariantReport()
    judge_tutor_summaries(report, replace(facts, summaries=[told_right]))
    assert report.ok and report.checked[TUTOR_EMAIL_TRUE] == 1

    # a switch that had nothing to move says so, and claims nothing
    empty = switch(5, SwitchState.COMPLETED, to="zoom", at=5, completed=6, rows=(0, 0, 0))
    nothing = SummaryMail(empty.id, "t@x", "Your switch to Zoom is done: no session needed to move")
    report = InvariantReport()
    judge_tutor_summaries(report, replace(facts, switches=[empty], summaries=[nothing]))
    assert report.ok and report.checked[TUTOR_EMAIL_TRUE] == 1
    lying = SummaryMail(empty.id, "t@x", "Your switch to Zoom: 3 of 3 sessions moved")
    report = InvariantReport()
    judge_tutor_summaries(report, replace(facts, switches=[empty], summaries=[lying]))
    assert "0 sessions moved" in violations(report, TUTOR_EMAIL_TRUE)[0]


# (e) no provider call inside a Retry-After


def test_early_calls_are_reported_per_account() -> None:
    facts = SwitchFacts(
        accounts=[
            AccountFact("zoom", "a@soak.example", 0),
            AccountFact("google_meet", "b@soak.example", 3),
        ]
    )
    report = InvariantReport()
    judge_retry_after(report, facts)
    assert report.checked[RETRY_AFTER] == 2
    [detail] = violations(report, RETRY_AFTER)
    assert "b@soak.example" in detail and "3 calls" in detail
