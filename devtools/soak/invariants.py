"""The invariant checker: every line of DESIGN.md's "Invariants" section, as queries.

It reads what the system left behind — PostgreSQL, the provider simulator's
meetings, the SMTP sink's inbox, the topics, the logs — and reports each
violation with what it saw. It changes nothing.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, text

ELIGIBLE = ("SCHEDULED", "JOIN_OPEN")
# The sink parses every kept .eml for messages.json: thousands take a while on a busy machine.
INBOX_TIMEOUT_S = 300
UNSETTLED_SWITCH_STATES = ("PENDING", "PLANNING", "MIGRATING", "ROLLING_BACK")
# services.providers.meeting_marker: "[relink:<switch>:<session>]".
ZOOM_MARKER = re.compile(r"\[relink:[^\]\s]+\]")


@dataclass
class Violation:
    invariant: str
    detail: str


@dataclass
class InvariantReport:
    """What was checked (counts per invariant) and what was wrong."""

    checked: Counter[str] = field(default_factory=Counter)
    violations: list[Violation] = field(default_factory=list)
    # Seen and reported, not violations (e.g. a resend the mailbox folds).
    noted: Counter[str] = field(default_factory=Counter)

    def fail(self, invariant: str, detail: str) -> None:
        self.violations.append(Violation(invariant, detail))

    @property
    def ok(self) -> bool:
        return not self.violations


@dataclass(frozen=True)
class SessionSnapshot:
    """A session as it stood before the run, for the "never touched" invariant."""

    id: uuid.UUID
    status: str
    provider: str | None
    meeting_external_id: str | None
    join_url: str | None
    scheduled_start_at: datetime


def snapshot_ineligible(engine: Engine, *, now: datetime) -> list[SessionSnapshot]:
    """Every past, completed or cancelled session: what must never change."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT id, status, provider, meeting_external_id, join_url, scheduled_start_at "
                "FROM sessions WHERE status NOT IN ('SCHEDULED', 'JOIN_OPEN') "
                "OR scheduled_start_at < :now"
            ),
            {"now": now},
        ).all()
    return [SessionSnapshot(*row) for row in rows]


def unsettled(engine: Engine) -> int:
    """Switches still under way plus migrations not yet final (0 means settled)."""
    with engine.connect() as conn:
        switches = conn.execute(
            text("SELECT count(*) FROM provider_switches WHERE state = ANY(:states)"),
            {"states": list(UNSETTLED_SWITCH_STATES)},
        ).scalar_one()
        # requests the migrator has not handled yet (no progress row), and
        # rollbacks asked for that it has not finished
        switches += conn.execute(
            text(
                "SELECT count(*) FROM switch_requests r "
                "LEFT JOIN provider_switches p ON p.id = r.id WHERE p.id IS NULL "
                "OR (r.rollback_requested_at IS NOT NULL AND p.state <> 'ROLLED_BACK' "
                "AND NOT p.state = ANY(:states))"
            ),
            {"states": list(UNSETTLED_SWITCH_STATES)},
        ).scalar_one()
        migrations = conn.execute(
            text(
                "SELECT count(*) FROM session_migrations m JOIN provider_switches s "
                "ON s.id = m.switch_id WHERE m.state IN ('PENDING', 'MEETING_CREATED') "
                "AND s.state NOT IN ('SUPERSEDED', 'ROLLED_BACK')"
            )
        ).scalar_one()
    return int(switches) + int(migrations)


def live_meetings(sim_url: str) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Every live meeting at the simulator, by (provider, account email)."""
    listing = httpx.get(f"{sim_url}/_admin/meetings", timeout=120).json()
    return {(a["provider"], a["email"]): a["meetings"] for a in listing["accounts"]}


SIM_PROVIDER = {"zoom": "zoom", "google": "google_meet", "google_meet": "google_meet"}


def check_sessions(engine: Engine, report: InvariantReport, *, sim_url: str, now: datetime) -> None:
    """Each eligible future session is on its tutor's provider with a live meeting, or failed."""
    meetings = live_meetings(sim_url)
    live_ids = {
        (SIM_PROVIDER[provider], str(m["id"]))
        for (provider, _), items in meetings.items()
        for m in items
    }
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                """
                SELECT s.id, s.provider, s.meeting_external_id, c.provider,
                       (SELECT m.last_error FROM session_migrations m
                          JOIN provider_switches w ON w.id = m.switch_id
                         WHERE m.session_id = s.id AND m.state = 'FAILED'
                           AND w.to_provider = c.provider AND w.generation = c.generation
                         LIMIT 1),
                       -- The tutor's last switch was rolled back and never moved this
                       -- session (a superseded earlier switch had not reached it): the
                       -- session keeps its own meeting, as the migrator's README says;
                       -- a rollback never creates one.
                       EXISTS (SELECT 1 FROM provider_switches w
                                WHERE w.tutor_id = s.tutor_id AND w.state = 'ROLLED_BACK'
                                  AND w.generation + 1 = c.generation
                                  AND w.from_provider = c.provider AND w.to_provider = s.provider
                                  AND NOT EXISTS (
                                      SELECT 1 FROM session_migrations m
                                      WHERE m.switch_id = w.id AND m.session_id = s.id
                                        AND m.state = 'ROLLED_BACK'))
                  FROM sessions s JOIN tutor_video_provider_connections c ON c.tutor_id = s.tutor_id
                 WHERE s.status IN ('SCHEDULED', 'JOIN_OPEN') AND s.scheduled_start_at >= :now
                """
            ),
            {"now": now},
        ).all()
    for session_id, provider, meeting_id, current, failure, kept_by_rollback in rows:
        report.checked["eligible sessions on the current provider"] += 1
        if provider == current and (current, str(meeting_id)) in live_ids:
            continue
        if failure:
            report.checked["sessions reported failed with a reason"] += 1
            continue
        if kept_by_rollback and (provider, str(meeting_id)) in live_ids:
            report.checked["sessions a rollback left on their own live meeting"] += 1
            continue
        report.fail(
            "eligible session on the current provider",
            f"session {session_id} is on {provider} (meeting {meeting_id}, "
            f"live={(provider, str(meeting_id)) in live_ids}), tutor is on {current}, "
            "and no failure is reported",
        )


def check_untouched(
    engine: Engine, report: InvariantReport, *, before: Iterable[SessionSnapshot]
) -> None:
    """Past, completed and cancelled sessions are exactly as they were."""
    before = list(before)
    with engine.connect() as conn:
        now_rows = {
            row[0]: SessionSnapshot(*row)
            for row in conn.execute(
                text(
                    "SELECT id, status, provider, meeting_external_id, join_url, "
                    "scheduled_start_at FROM sessions WHERE id = ANY(:ids)"
                ),
                {"ids": [s.id for s in before]},
            ).all()
        }
    for snap in before:
        report.checked["ineligible sessions untouched"] += 1
        if now_rows.get(snap.id) != snap:
            report.fail(
                "past/completed/cancelled untouched", f"{snap} became {now_rows.get(snap.id)}"
            )


def check_no_duplicate_meetings(report: InvariantReport, *, sim_url: str) -> None:
    """At most one meeting per (switch, session) at the provider."""
    meetings = live_meetings(sim_url)
    keys: Counter[str] = Counter()
    for (provider, _), items in meetings.items():
        for meeting in items:
            report.checked["live meetings at the providers"] += 1
            if provider == "zoom":
                # relink's marker in the agenda names the (switch, session); the
                # tracking field is opt-in (Zoom takes only fields the account defined).
                for marker in ZOOM_MARKER.findall(str(meeting.get("agenda") or "")):
                    keys[f"zoom:{marker}"] += 1
            else:
                # Google event ids are derived from (switch, session): a second
                # insert is refused by the provider, so count by id.
                keys[f"google:{meeting['id']}"] += 1
    for key, count in keys.items():
        if count > 1:
            report.fail("no duplicate meetings", f"{count} live meetings for {key}")


def check_outbox_drained(engine: Engine, report: InvariantReport) -> None:
    with engine.connect() as conn:
        waiting = conn.execute(
            text("SELECT count(*) FROM outbox WHERE published_at IS NULL")
        ).scalar_one()
    report.checked["outbox rows drained"] += 1
    if waiting:
        report.fail("outbox drained", f"{waiting} outbox rows never published")


def check_emails(
    engine: Engine, report: InvariantReport, *, inbox_url: str, mail_domain: str
) -> None:
    """Each student of each migrated session got exactly one email for that change.

    Checked on what lands in each mailbox: the distinct messages per recipient,
    a repeated SMTP delivery of the same Message-ID counting once — mailbox
    providers fold those (Gmail does), and the notifier's resend after a crash
    between the server's 250 and its COMMIT carries the same Message-ID by
    design. Those repeated deliveries are not hidden: they are counted under
    "duplicate SMTP deliveries" and reported with the soak's figures. Any
    second, different email for one change, any email for no change, and any
    change without its email are violations.
    """
    from services.notifier.domain import change_id, message_id

    mails = httpx.get(f"{inbox_url}/messages.json", timeout=INBOX_TIMEOUT_S).json()
    received: Counter[tuple[str, str]] = Counter()
    for mail in mails:
        for rcpt in mail["to"]:
            received[(str(mail["message_id"]).strip(), rcpt.lower())] += 1
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                """
                SELECT m.switch_id, m.session_id, u.email, m.state, m.kind
                  FROM session_migrations m
                  JOIN sessions s ON s.id = m.session_id
                  JOIN users u ON u.id = s.student_id
                 WHERE m.state IN ('MIGRATED', 'ROLLED_BACK')
                """
            )
        ).all()
        # Every email the notifier owes (students and tutors): what may be in a mailbox.
        owed = {
            (str(mid).strip(), str(rcpt).lower())
            for mid, rcpt in conn.execute(text("SELECT message_id, recipient FROM notifications"))
        }
    for switch_id, session_id, email, state, forward in rows:
        # the move itself (its kind says whether a retry made it), then the rollback
        kinds = [forward] if state == "MIGRATED" else [forward, "rollback"]
        for kind in kinds:
            change = change_id("session", str(switch_id), str(session_id), kind)
            mid = message_id(change, email, domain=mail_domain)
            count = received.get((mid, email.lower()), 0)
            report.checked["student emails (one per change)"] += 1
            if count == 0:
                report.fail(
                    "exactly one email per student per change",
                    f"{email} got no email for {kind} of session {session_id} "
                    f"in switch {switch_id}",
                )
    for (mid, rcpt), count in received.items():
        report.checked["mailbox messages matched to a change"] += 1
        # Every mail is one the notifier recorded as owed for a change (one row
        # per change and recipient): nothing sent for no change.
        if (mid, rcpt) not in owed:
            report.fail("no email without its change", f"{rcpt} received {mid} for no change")
        if count > 1:
            report.noted["duplicate SMTP deliveries (same Message-ID)"] += count - 1


def check_no_tokens_leaked(
    report: InvariantReport, *, sim_url: str, logs: Iterable[Path], topic_payloads: Iterable[bytes]
) -> None:
    """No token the providers issued appears in any log line or topic message."""
    tokens = httpx.get(f"{sim_url}/_admin/issued-tokens", timeout=30).json()["tokens"]
    needles = [t.encode() for t in tokens if len(t) >= 16]
    report.checked["issued tokens searched for"] += len(needles)
    for path in logs:
        data = path.read_bytes() if path.exists() else b""
        report.checked["log bytes scanned"] += len(data)
        for needle in needles:
            if needle in data:
                report.fail("no token in any log", f"a provider token appears in {path}")
                break
    for payload in topic_payloads:
        report.checked["topic messages scanned"] += 1
        for needle in needles:
            if needle in payload:
                report.fail("no token on any topic", "a provider token appears in a message")
                break


# -- the switch's own invariants (issue 17) -------------------------------------------
#
# Each check is two halves: `gather_switch_facts` reads what the run left behind
# (PostgreSQL, the simulator's admin API, the SMTP sink's inbox) into plain
# records, and a `judge_*` function decides on those records alone, so a unit
# test can hand it made-up facts and see it report a violation.

ONE_MEETING = "one live meeting per session after the grace period"
NO_ROLLBACK_MEETING = "no meeting created by a rollback"
SWITCH_STATE_TRUE = "every switch's final state true"
TUTOR_EMAIL_TRUE = "no tutor email claiming a move that did not happen"
RETRY_AFTER = "no provider call inside a Retry-After"

# The gateway's `ce_source` ends so under any RELINK_EVENTS_SOURCE_BASE (and did
# as the relative `/relink/oauth-gateway` before there was one).
GATEWAY_SOURCE_SUFFIX = "/oauth-gateway"
# services.providers._google.event_ids: how many deleted events of one session a create steps over.
GOOGLE_EVENT_ID_CHAIN = 8
MARKER_PARTS = re.compile(r"\[relink:([^\]\s:]+):([^\]\s]+)\]")
SUMMARY_COUNTS = re.compile(r"(\d+) of (\d+) sessions moved")
# The summary of a switch that had nothing to move (it claims no move).
NOTHING_MOVED = "no session needed to move"
# Keys of meetings the gateway makes on the tutor's own request (a booking, a
# meeting the tutor asked to recreate): never a rollback's doing.
TUTOR_REQUEST_KEYS = ("booking-", "recreate-")


@dataclass(frozen=True)
class SwitchFact:
    id: str
    tutor_id: str
    from_provider: str
    to_provider: str
    generation: int
    state: str
    created_at: datetime
    completed_at: datetime | None
    rollback_deadline: datetime | None
    sessions_total: int
    sessions_migrated: int
    sessions_failed: int
    # its provider.switched came from the gateway, i.e. the tutor made it
    by_tutor: bool
    # Outbox ids (per tutor, id order = commit order): the gateway's
    # provider.switched for it, and its last switch.settled (None when absent).
    requested_seq: int | None = None
    settled_seq: int | None = None


@dataclass(frozen=True)
class RollbackRequest:
    switch_id: str
    tutor_id: str
    requested_at: datetime


@dataclass(frozen=True)
class SessionFact:
    id: str
    tutor_id: str
    booking_id: str
    status: str
    scheduled_start_at: datetime


@dataclass(frozen=True)
class MeetingFact:
    """A live meeting at a provider, with its tutor, (switch) key and session when known."""

    provider: str  # relink's name: zoom / google_meet
    account: str
    id: str
    tutor_id: str | None
    key: str | None  # a switch id, "booking-…", "recreate-…"
    session_id: str | None
    created_at: datetime | None


@dataclass(frozen=True)
class AccountFact:
    provider: str
    email: str
    early_calls: int
    # the simulator's note of the first ones: method, path, how far into the wait
    early_log: tuple[str, ...] = ()


@dataclass(frozen=True)
class SummaryMail:
    """A tutor's "N of M sessions moved" email as it landed in the mailbox."""

    switch_id: str
    recipient: str
    subject: str


@dataclass
class SwitchFacts:
    switches: list[SwitchFact] = field(default_factory=list)
    # per switch id: its session_migrations rows counted by state
    rows: dict[str, Counter[str]] = field(default_factory=dict)
    # per switch id: meetings it created (rows with a new meeting), live or deleted since
    created: Counter[str] = field(default_factory=Counter)
    rollbacks: list[RollbackRequest] = field(default_factory=list)
    sessions: list[SessionFact] = field(default_factory=list)
    meetings: list[MeetingFact] = field(default_factory=list)
    accounts: list[AccountFact] = field(default_factory=list)
    summaries: list[SummaryMail] = field(default_factory=list)


def google_event_ids(key: str, session_id: str) -> list[str]:
    """The Calendar event ids relink gives one (key, session): as services.providers._google."""
    import base64
    import hashlib

    digest = hashlib.sha256(f"relink:{key}:{session_id}".encode()).digest()
    ids = [base64.b32hexencode(digest).decode().rstrip("=").lower()]
    while len(ids) < GOOGLE_EVENT_ID_CHAIN:
        digest = hashlib.sha256(f"relink:next:{ids[-1]}".encode()).digest()
        ids.append(base64.b32hexencode(digest).decode().rstrip("=").lower())
    return ids


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def attribute_meetings(
    listing: Iterable[dict[str, Any]],
    *,
    sessions: Iterable[SessionFact],
    switches: Iterable[SwitchFact],
    tutor_by_email: dict[str, str],
) -> list[MeetingFact]:
    """Each live meeting with its tutor, (switch) key and session, as far as they can be told.

    Zoom: relink's agenda marker names (key, session). Google: the event id is
    derived from (key, session), so every candidate key of the tutor's
    sessions (each switch, each booking generation) is tried. Else the
    meeting's start time names the tutor's session that starts then.
    """
    sessions = list(sessions)
    switches = list(switches)
    by_tutor: dict[str, list[SessionFact]] = {}
    for session in sessions:
        by_tutor.setdefault(session.tutor_id, []).append(session)
    switch_ids: dict[str, list[str]] = {}
    generations: Counter[str] = Counter()
    for switch in switches:
        switch_ids.setdefault(switch.tutor_id, []).append(switch.id)
        generations[switch.tutor_id] = max(generations[switch.tutor_id], switch.generation)
    google_ids: dict[str, tuple[str, str]] = {}

    def google_candidates(tutor_id: str) -> None:
        keys = list(switch_ids.get(tutor_id, []))
        for session in by_tutor.get(tutor_id, []):
            own = keys + [
                f"booking-{session.booking_id}-g{g}" for g in range(1, generations[tutor_id] + 2)
            ]
            for key in own:
                for event_id in google_event_ids(key, session.id):
                    google_ids[event_id] = (key, session.id)

    done: set[str] = set()
    facts = []
    for account in listing:
        provider = SIM_PROVIDER[str(account["provider"])]
        email = str(account["email"]).lower()
        tutor = tutor_by_email.get(email)
        for meeting in account["meetings"]:
            key = session_id = None
            if provider == "zoom":
                found = MARKER_PARTS.search(str(meeting.get("agenda") or ""))
                if found:
                    key, session_id = found.group(1), found.group(2)
                created = _parse_time(meeting.get("created_at"))
                start = _parse_time(meeting.get("start_time"))
            else:
                if tutor is not None and tutor not in done:
                    google_candidates(tutor)
                    done.add(tutor)
                if str(meeting["id"]) in google_ids:
                    key, session_id = google_ids[str(meeting["id"])]
                created = _parse_time(meeting.get("created"))
                start = _parse_time((meeting.get("start") or {}).get("dateTime"))
            if session_id is None and tutor is not None and start is not None:
                for session in by_tutor.get(tutor, []):
                    if abs((session.scheduled_start_at - start).total_seconds()) < 1:
                        session_id = session.id
                        break
            facts.append(
                MeetingFact(provider, email, str(meeting["id"]), tutor, key, session_id, created)
            )
    return facts


def gather_switch_facts(engine: Engine, *, sim_url: str, inbox_url: str) -> SwitchFacts:
    """What the new checks judge: switches, their rows, rollbacks, meetings, early calls, emails."""
    from services.notifier.domain import NoticeKind

    facts = SwitchFacts()
    with engine.connect() as conn:
        requested_seq = {
            str(r[0]): int(r[2])
            for r in conn.execute(
                text(
                    "SELECT payload->>'switch_id', headers->>'source', id FROM outbox "
                    "WHERE event_type = 'provider.switched'"
                )
            )
            if str(r[1]).endswith(GATEWAY_SOURCE_SUFFIX)
        }
        tutor_made = set(requested_seq)
        settled_seq = {
            str(r[0]): int(r[1])
            for r in conn.execute(
                text(
                    "SELECT payload->>'switch_id', max(id) FROM outbox "
                    "WHERE event_type = 'switch.settled' GROUP BY 1"
                )
            )
        }
        for r in conn.execute(
            # every switch the tutor asked for (the gateway's request), with the
            # migrator's progress row if it made one (UNHANDLED: it never did)
            text(
                "SELECT r.id, r.tutor_id, r.from_provider, r.to_provider, r.generation, "
                "coalesce(p.state, 'UNHANDLED') AS state, r.requested_at AS created_at, "
                "p.completed_at, r.rollback_deadline, coalesce(p.sessions_total, 0) AS "
                "sessions_total, coalesce(p.sessions_migrated, 0) AS sessions_migrated, "
                "coalesce(p.sessions_failed, 0) AS sessions_failed "
                "FROM switch_requests r LEFT JOIN provider_switches p ON p.id = r.id"
            )
        ):
            facts.switches.append(
                SwitchFact(
                    str(r.id), str(r.tutor_id), r.from_provider, r.to_provider, r.generation,
                    r.state, r.created_at, r.completed_at, r.rollback_deadline,
                    r.sessions_total, r.sessions_migrated, r.sessions_failed,
                    str(r.id) in tutor_made, requested_seq.get(str(r.id)),
                    settled_seq.get(str(r.id)),
                )
            )  # fmt: skip
        for switch_id, state, count in conn.execute(
            text("SELECT switch_id, state, count(*) FROM session_migrations GROUP BY 1, 2")
        ):
            facts.rows.setdefault(str(switch_id), Counter())[state] = int(count)
        for switch_id, count in conn.execute(
            text(
                "SELECT switch_id, count(*) FROM session_migrations "
                "WHERE new_meeting_external_id IS NOT NULL GROUP BY 1"
            )
        ):
            facts.created[str(switch_id)] = int(count)
        for switch_id, tutor_id, requested_at in conn.execute(
            text(
                "SELECT payload->>'switch_id', payload->>'tutor_id', payload->>'requested_at' "
                "FROM outbox WHERE event_type = 'switch.rollback_requested'"
            )
        ):
            moment = _parse_time(requested_at)
            if moment is not None:
                facts.rollbacks.append(RollbackRequest(switch_id, tutor_id, moment))
        facts.sessions = [
            SessionFact(
                str(r.id), str(r.tutor_id), str(r.booking_id), r.status, r.scheduled_start_at
            )
            for r in conn.execute(
                text("SELECT id, tutor_id, booking_id, status, scheduled_start_at FROM sessions")
            )
        ]
        tutor_by_email = {
            str(email).lower(): str(uid)
            for uid, email in conn.execute(text("SELECT id, email FROM users WHERE role = 'tutor'"))
        }
        summary_rows = {
            str(mid).strip(): (str(switch_id), str(rcpt).lower())
            for mid, switch_id, rcpt in conn.execute(
                text(
                    "SELECT message_id, switch_id, recipient FROM notifications "
                    "WHERE kind = :kind AND message_id IS NOT NULL AND switch_id IS NOT NULL"
                ),
                {"kind": NoticeKind.TUTOR_SUMMARY},
            )
        }
    listing = httpx.get(f"{sim_url}/_admin/meetings", timeout=120).json()["accounts"]
    facts.accounts = [
        AccountFact(
            SIM_PROVIDER[str(a["provider"])],
            str(a["email"]),
            int(a.get("early_calls", 0)),
            tuple(str(line) for line in a.get("early_call_log", ())),
        )
        for a in listing
    ]
    facts.meetings = attribute_meetings(
        listing, sessions=facts.sessions, switches=facts.switches, tutor_by_email=tutor_by_email
    )
    for mail in httpx.get(f"{inbox_url}/messages.json", timeout=INBOX_TIMEOUT_S).json():
        known = summary_rows.get(str(mail["message_id"]).strip())
        if known is not None:
            facts.summaries.append(SummaryMail(known[0], known[1], str(mail["subject"])))
    return facts


def judge_one_meeting_per_session(
    report: InvariantReport, facts: SwitchFacts, *, now: datetime
) -> None:
    """(a) Once every switch of its tutor is past its grace period, an eligible
    future session has at most one live meeting at the providers."""
    in_grace = {
        s.tutor_id
        for s in facts.switches
        if s.rollback_deadline is not None and s.rollback_deadline > now
    }
    live: dict[str, list[MeetingFact]] = {}
    for meeting in facts.meetings:
        if meeting.session_id is not None:
            live.setdefault(meeting.session_id, []).append(meeting)
    for session in facts.sessions:
        if session.status not in ELIGIBLE or session.scheduled_start_at < now:
            continue
        if session.tutor_id in in_grace:
            report.noted["sessions not judged for live meetings (grace period not over)"] += 1
            continue
        report.checked[ONE_MEETING] += 1
        meetings = live.get(session.id, [])
        if len(meetings) > 1:
            report.fail(
                ONE_MEETING,
                f"session {session.id} has {len(meetings)} live meetings: "
                + ", ".join(f"{m.provider}:{m.id} (key {m.key})" for m in meetings),
            )


def judge_no_meeting_from_rollback(report: InvariantReport, facts: SwitchFacts) -> None:
    """(b) A live meeting made after a rollback request of its tutor is explained by
    something the tutor did later (a switch to that provider, a booking), never by
    the rollback; and no meeting belongs to a switch the tutor never made."""
    switches = {s.id: s for s in facts.switches}
    requests: dict[str, list[datetime]] = {}
    for request in facts.rollbacks:
        requests.setdefault(request.tutor_id, []).append(request.requested_at)
    tutor_switches: dict[str, list[SwitchFact]] = {}
    for switch in facts.switches:
        if switch.by_tutor:
            tutor_switches.setdefault(switch.tutor_id, []).append(switch)
    # A switch the tutor never made (a rollback's follow-up) and the meetings it
    # created, live or deleted since: `session_migrations` keeps them all.
    live_by_key = Counter(m.key for m in facts.meetings)
    for switch in facts.switches:
        if not switch.by_tutor and facts.created[switch.id]:
            report.fail(
                NO_ROLLBACK_MEETING,
                f"switch {switch.id} {switch.from_provider}->{switch.to_provider} "
                f"(g{switch.generation}), which the tutor never made, created "
                f"{facts.created[switch.id]} meetings ({live_by_key[switch.id]} still live)",
            )
    for meeting in facts.meetings:
        if meeting.tutor_id is None:
            continue
        report.checked[NO_ROLLBACK_MEETING] += 1
        if meeting.key is not None and meeting.key.startswith(TUTOR_REQUEST_KEYS):
            continue
        made_by = switches.get(meeting.key or "")
        if made_by is not None and not made_by.by_tutor:
            if not facts.created[made_by.id]:  # else reported with its switch above
                report.fail(
                    NO_ROLLBACK_MEETING,
                    f"{meeting.provider} meeting {meeting.id} (session {meeting.session_id}) "
                    f"was made for switch {made_by.id} "
                    f"{made_by.from_provider}->{made_by.to_provider}, which the tutor never made",
                )
            continue
        if meeting.created_at is None:
            continue
        before = [r for r in requests.get(meeting.tutor_id, []) if r <= meeting.created_at]
        if not before:
            continue
        asked = max(before)
        if made_by is not None and made_by.created_at >= asked:
            continue  # the tutor's own switch, made after the rollback request
        later = [
            s
            for s in tutor_switches.get(meeting.tutor_id, [])
            if asked <= s.created_at <= meeting.created_at and s.to_provider == meeting.provider
        ]
        if made_by is None and later:
            continue  # not attributable, but a later switch of the tutor explains it
        report.fail(
            NO_ROLLBACK_MEETING,
            f"{meeting.provider} meeting {meeting.id} (session {meeting.session_id}, key "
            f"{meeting.key}) was created at {meeting.created_at.isoformat()}, after tutor "
            f"{meeting.tutor_id} asked for a rollback at {asked.isoformat()}, and no later "
            "switch of the tutor explains it",
        )


def judge_switch_states(report: InvariantReport, facts: SwitchFacts) -> None:
    """(c) Every switch's recorded final state is true: SUPERSEDED when a newer
    generation replaced it before it settled, ROLLED_BACK only after a rollback
    request, COMPLETED only when every row reached the target or failed (and the
    counts say so), and only switches the tutor made."""
    from services.core.db.models import MigrationState, SwitchState

    asked = {r.switch_id for r in facts.rollbacks}
    by_tutor: dict[str, list[SwitchFact]] = {}
    for switch in facts.switches:
        by_tutor.setdefault(switch.tutor_id, []).append(switch)
    completed = (SwitchState.COMPLETED.value, SwitchState.COMPLETED_WITH_FAILURES.value)
    settled_rows = {
        MigrationState.MIGRATED.value,
        MigrationState.FAILED.value,
        MigrationState.SKIPPED.value,
    }
    for switch in facts.switches:
        report.checked[SWITCH_STATE_TRUE] += 1
        rows = facts.rows.get(switch.id, Counter())
        newer = [s for s in by_tutor[switch.tutor_id] if s.generation > switch.generation]
        replaced_at = min((s.created_at for s in newer), default=None)
        where = (
            f"switch {switch.id} ({switch.from_provider}->{switch.to_provider}, "
            f"g{switch.generation}) is {switch.state}"
        )

        def fail(why: str, where: str = where) -> None:
            report.fail(SWITCH_STATE_TRUE, f"{where} {why}")

        if not switch.by_tutor:
            fail("but the tutor never made it (no provider.switched from the gateway)")
        if switch.state == "UNHANDLED":
            fail("the migrator never handled the tutor's request (no progress row)")
            continue
        if switch.id in asked and switch.state != SwitchState.ROLLED_BACK.value:
            fail("though its rollback was requested (should be ROLLED_BACK)")
        if switch.state == SwitchState.ROLLED_BACK.value and switch.id not in asked:
            fail("with no rollback request")
        if switch.state == SwitchState.SUPERSEDED.value and not newer:
            fail("but no newer generation replaced it")
        if switch.state not in completed:
            continue
        if _replaced_before_settled(switch, newer, replaced_at):
            fail(
                f"(completed {switch.completed_at}) though generation "
                f"{min(s.generation for s in newer)} replaced it at {replaced_at} "
                "(should be SUPERSEDED)"
            )
        unsettled = {k: v for k, v in rows.items() if k not in settled_rows and v}
        if unsettled:
            fail(f"with rows not at the target nor failed: {dict(unsettled)}")
        migrated = rows[MigrationState.MIGRATED.value]
        failed = rows[MigrationState.FAILED.value]
        if (switch.sessions_migrated, switch.sessions_failed) != (migrated, failed):
            fail(
                f"recording {switch.sessions_migrated} migrated / {switch.sessions_failed} "
                f"failed, its rows say {migrated} / {failed}"
            )
        if switch.sessions_total != migrated + failed:
            fail(f"recording {switch.sessions_total} sessions, its rows say {migrated + failed}")
        if (switch.state == SwitchState.COMPLETED.value) != (failed == 0):
            fail(f"with {failed} failed rows")


def _replaced_before_settled(
    switch: SwitchFact, newer: list[SwitchFact], replaced_at: datetime | None
) -> bool:
    """A newer switch was committed before this one's completion.

    Told by commit order where the outbox shows it (per tutor, outbox id order
    is commit order): the replacement's provider.switched before this switch's
    last switch.settled. The request's own time is when the tutor clicked, a
    moment before its transaction committed; compared with the completion's
    time it would call a switch replaced by a request still in flight when the
    switch completed. Without the outbox rows, the times are all there is.
    """
    if not newer:
        return False
    seqs = [s.requested_seq for s in newer]
    if switch.settled_seq is not None and all(q is not None for q in seqs):
        return min(q for q in seqs if q is not None) < switch.settled_seq
    return replaced_at is not None and (
        switch.completed_at is None or switch.completed_at > replaced_at
    )


def judge_tutor_summaries(report: InvariantReport, facts: SwitchFacts) -> None:
    """(d) A tutor's "N of M sessions moved" email says what happened: N is the
    number of sessions the switch moved, and a superseded switch (or one the tutor
    never made) gets no such email."""
    from services.core.db.models import MigrationState, SwitchState

    switches = {s.id: s for s in facts.switches}
    for mail in facts.summaries:
        report.checked[TUTOR_EMAIL_TRUE] += 1
        switch = switches.get(mail.switch_id)
        found = SUMMARY_COUNTS.search(mail.subject)
        nothing = NOTHING_MOVED in mail.subject
        if switch is None or (found is None and not nothing):
            report.fail(TUTOR_EMAIL_TRUE, f"{mail.recipient}: {mail.subject!r} names no switch")
            continue
        claimed = int(found.group(1)) if found is not None else 0
        rows = facts.rows.get(switch.id, Counter())
        # moved: still there, or moved and later restored by a rollback
        moved = rows[MigrationState.MIGRATED.value] + rows[MigrationState.ROLLED_BACK.value]
        about = f"{mail.recipient} got {mail.subject!r} for switch {switch.id} ({switch.state})"
        if switch.state == SwitchState.SUPERSEDED.value:
            report.fail(TUTOR_EMAIL_TRUE, f"{about}: a superseded switch gets no summary")
        elif not switch.by_tutor:
            report.fail(TUTOR_EMAIL_TRUE, f"{about}: the tutor never made this switch")
        elif claimed != moved:
            report.fail(TUTOR_EMAIL_TRUE, f"{about}: {moved} sessions moved")


def judge_retry_after(report: InvariantReport, facts: SwitchFacts) -> None:
    """(e) No API call reached a provider account before its 429's Retry-After
    had passed (the simulator's `early_calls`)."""
    for account in facts.accounts:
        report.checked[RETRY_AFTER] += 1
        if account.early_calls:
            report.fail(
                RETRY_AFTER,
                f"{account.provider} account {account.email}: {account.early_calls} calls "
                "inside a Retry-After"
                + (f" ({'; '.join(account.early_log)})" if account.early_log else ""),
            )


def check_switches(
    engine: Engine, report: InvariantReport, *, sim_url: str, inbox_url: str, now: datetime
) -> SwitchFacts:
    """The five checks of issue 17 on what the run left behind."""
    facts = gather_switch_facts(engine, sim_url=sim_url, inbox_url=inbox_url)
    judge_one_meeting_per_session(report, facts, now=now)
    judge_no_meeting_from_rollback(report, facts)
    judge_switch_states(report, facts)
    judge_tutor_summaries(report, facts)
    judge_retry_after(report, facts)
    return facts
