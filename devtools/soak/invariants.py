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
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, text

ELIGIBLE = ("SCHEDULED", "JOIN_OPEN")
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
    listing = httpx.get(f"{sim_url}/_admin/meetings", timeout=30).json()
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
                         LIMIT 1)
                  FROM sessions s JOIN tutor_video_provider_connections c ON c.tutor_id = s.tutor_id
                 WHERE s.status IN ('SCHEDULED', 'JOIN_OPEN') AND s.scheduled_start_at >= :now
                """
            ),
            {"now": now},
        ).all()
    for session_id, provider, meeting_id, current, failure in rows:
        report.checked["eligible sessions on the current provider"] += 1
        if provider == current and (current, str(meeting_id)) in live_ids:
            continue
        if failure:
            report.checked["sessions reported failed with a reason"] += 1
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


def check_no_early_calls(report: InvariantReport, *, sim_url: str) -> None:
    """No provider call for an account inside a Retry-After that account was given.

    The simulator counts, per account, the API calls that arrived before its
    last 429's Retry-After had passed (`early_calls`).
    """
    listing = httpx.get(f"{sim_url}/_admin/meetings", timeout=30).json()
    for account in listing["accounts"]:
        report.checked["provider accounts paced"] += 1
        if account.get("early_calls"):
            report.fail(
                "no provider call inside a Retry-After",
                f"{account['early_calls']} early calls for {account['provider']} "
                f"{account['email']}",
            )


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

    mails = httpx.get(f"{inbox_url}/messages.json", timeout=30).json()
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
