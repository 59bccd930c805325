"""Notify use cases: record what events mean (audit + owed emails), send what is owed.

Exactly once per (change, recipient), and why it holds:

1. `record` writes, in ONE transaction, each new event's tracking record
   (`core.tracking`: consumer `notifier`, event source, event id), the audit
   rows of a batch and one `notifications` row per email owed (rendered,
   state PENDING), keyed by (change id, recipient) with ON CONFLICT DO
   NOTHING. Only then does the consumer commit the Kafka offsets. A
   redelivered event (produced twice, or re-read after a restart before the
   commit) is recognised by its tracking record and does nothing at all: it is
   not verified again, audited again, nor mailed again. The change-keyed
   notification row still holds the same change re-emitted under a new id.
2. `send_due` locks one PENDING row (FOR UPDATE SKIP LOCKED: a second
   notifier skips it), hands the email to SMTP, and marks it SENT in the
   same transaction. A crash before the SMTP server's 250 rolls the lock
   back and the email is sent on restart — nothing lost. A crash in the few
   milliseconds between the 250 and the COMMIT sends it a second time: this
   is the residual at-least-once window, chosen over at-most-once because a
   student missing their new link is worse than a duplicate. The resend
   carries the same deterministic Message-ID, which mail clients and many
   servers use to fold duplicates.
3. A transient SMTP failure leaves the row PENDING with `next_attempt_at`
   pushed back (doubling, capped); a 5xx for the recipient or message marks
   it FAILED_PERMANENT with the server's answer.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from services.core import metrics, tracing, tracking
from services.core.backoff import Backoff
from services.core.db.models import NotificationState, SessionStatus
from services.core.events import Event, EventType
from services.core.logs import get_logger
from services.notifier import domain
from services.notifier.adapters.calendar import (
    CANCEL,
    REQUEST,
    CalendarUpdate,
    attach_calendar,
    render_calendar,
)
from services.notifier.adapters.db import DueEmail, NotifierDb, OwedEmail
from services.notifier.adapters.emails import (
    DelayNotice,
    DisconnectNotice,
    FailedSession,
    Rendered,
    RollbackSummary,
    SessionNotice,
    SwitchSummary,
    build_message,
    render_delay_notice,
    render_disconnect_notice,
    render_rollback_summary,
    render_session_notice,
    render_switch_summary,
)
from services.notifier.adapters.smtp import Mailer
from services.notifier.domain import Consumed, NoticeKind
from services.notifier.errors import PermanentMailError, TransientMailError
from services.notifier.settings import NotifierSettings

log = get_logger(__name__)

INACTIVE_SESSION = (SessionStatus.CANCELLED, SessionStatus.COMPLETED, SessionStatus.NO_SHOW)


@dataclass
class RecordReport:
    """What a batch left owed, and the events refused as untrusted (with why)."""

    owed: int = 0
    refused: list[tuple[Consumed, str]] = field(default_factory=list)
    redelivered: int = 0  # events handled before (their tracking record exists): skipped


@dataclass
class SendReport:
    sent: int = 0
    retrying: int = 0
    failed: int = 0


class Notifier:
    """Turns events into audit rows and emails owed, and sends the emails."""

    def __init__(
        self,
        *,
        db: NotifierDb,
        mailer: Mailer,
        settings: NotifierSettings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.mailer = mailer
        self.settings = settings
        self._clock = clock
        self._mail_server_down_until = 0.0
        self._consecutive_failures = 0

    # -- recording -------------------------------------------------------------

    def record(self, batch: Sequence[Consumed]) -> RecordReport:
        """Write the batch's audit rows and the emails it owes, in one transaction.

        Nothing that arrives is trusted: each event is first checked against
        the database (the switch, session, student and tutor it names belong
        together; the meeting it names is the one recorded). What cannot be is
        neither audited nor mailed: it comes back in `refused`, for the
        dead-letter topic. Links and recipients always come from the database.
        """
        report = RecordReport()
        received = _receive_spans(batch)
        with self.db.transaction() as s:
            fresh = self._not_yet_handled(s, batch)
            report.redelivered = len(batch) - len(fresh)
            trusted: list[tuple[Consumed, domain.Verdict]] = []
            for consumed in fresh:
                verdict = self._verify(s, consumed.event)
                if verdict.refused is not None:
                    log.warning(
                        "refused %s %s from %s: %s",
                        consumed.event.type,
                        consumed.event.id,
                        consumed.event.source,
                        verdict.refused,
                    )
                    report.refused.append((consumed, verdict.refused))
                else:
                    trusted.append((consumed, verdict))
            # Tracked only once trusted: a refused event is dead-lettered after this
            # commit, and a crash before that must leave it to be handled again.
            new = tracking.track(s, [_delivery(c) for c, _ in trusted])
            trusted = [(c, v) for c, v in trusted if c.event.dedup_key in new]
            self.db.add_audit(s, [domain.consumed_audit_row(c) for c, _ in trusted])
            for consumed, verdict in trusted:
                for email in self._emails_for(s, consumed.event, verdict):
                    report.owed += self.db.owe(s, email)
        for span in received:
            span.end()
        return report

    def _not_yet_handled(self, s: Session, batch: Sequence[Consumed]) -> list[Consumed]:
        """The batch without the events handled already, each event once."""
        done = tracking.handled(s, tracking.NOTIFIER, (c.event.dedup_key for c in batch))
        fresh: dict[tuple[str, str], Consumed] = {}
        for consumed in batch:
            key = consumed.event.dedup_key
            if key in done or key in fresh:
                log.info(
                    "%s %s from %s handled already (redelivered at %s[%s]@%s); skipped",
                    consumed.event.type,
                    consumed.event.id,
                    consumed.event.source,
                    consumed.topic,
                    consumed.partition,
                    consumed.offset,
                )
                continue
            fresh[key] = consumed
        return list(fresh.values())

    def _verify(self, s: Session, event: Event) -> domain.Verdict:
        data, tutor = event.data, event.tutor_id
        allow_http = self.settings.dev_mode
        if event.type == EventType.SESSION_MIGRATED:
            switch_id = domain.as_uuid(data["switch_id"])
            session_id = domain.as_uuid(data["session_id"])
            if switch_id is None or session_id is None:
                return domain.Verdict("malformed ids")
            rows = self.db.migration_rows(s, switch_id=switch_id, session_id=session_id)
            return domain.verify_migrated(data, tutor_id=tutor, rows=rows, allow_http=allow_http)
        if event.type == EventType.SESSION_MEETING_RECREATED:
            session_id = domain.as_uuid(data["session_id"])
            current = (
                self.db.current_meeting(s, session_id=session_id)
                if session_id is not None
                else None
            )
            return domain.verify_recreated(
                data, tutor_id=tutor, current=current, allow_http=allow_http
            )
        if event.type == EventType.SESSION_CANCELLED:
            session_id = domain.as_uuid(data["session_id"])
            current = (
                self.db.current_meeting(s, session_id=session_id)
                if session_id is not None
                else None
            )
            return domain.verify_cancelled(data, tutor_id=tutor, current=current)
        if event.type == EventType.PROVIDER_DISCONNECTED:
            user = domain.as_uuid(tutor)
            known = user is not None and self.db.is_tutor(s, user_id=user)
            return domain.TRUSTED if known else domain.Verdict("no such tutor")
        switch_id = domain.as_uuid(data.get("switch_id"))
        if switch_id is None:
            return domain.Verdict("malformed switch id")
        if event.type == EventType.SWITCH_SETTLED:
            switch = self.db.switch_row(s, switch_id=switch_id)
            return domain.verify_settled(data, tutor_id=tutor, switch=switch)
        owner = self.db.switch_owner(s, switch_id=switch_id)
        return domain.verify_owner(owner, tutor_id=tutor, what="switch")

    def _emails_for(self, s: Session, event: Event, verdict: domain.Verdict) -> list[OwedEmail]:
        if event.type == EventType.SESSION_MIGRATED:
            email = self._session_email(s, event, join_url=verdict.join_url)
            return [email] if email is not None else []
        if event.type == EventType.SWITCH_ROLLED_BACK:
            email = self._rollback_email(s, event)
            return [email] if email is not None else []
        if event.type == EventType.SWITCH_SETTLED:
            email = self._summary_email(s, event)
            return [email] if email is not None else []
        if event.type == EventType.SWITCH_DELAYED:
            email = self._delay_email(s, event)
            return [email] if email is not None else []
        if event.type == EventType.PROVIDER_DISCONNECTED:
            email = self._disconnect_email(s, event)
            return [email] if email is not None else []
        if event.type == EventType.SESSION_MEETING_RECREATED:
            email = self._recreated_email(s, event, join_url=verdict.join_url)
            return [email] if email is not None else []
        if event.type == EventType.SESSION_CANCELLED:
            email = self._cancelled_email(s, event)
            return [email] if email is not None else []
        return []

    def _student_facts(
        self, s: Session, event: Event
    ) -> tuple[uuid.UUID | None, dict[str, Any] | None]:
        """The event's session id, and its student's session facts (None: no such student)."""
        session_id = domain.as_uuid(event.data["session_id"])
        student_id = domain.as_uuid(event.data["student_id"])
        if student_id is None:
            return session_id, None
        facts = self.db.session_facts(
            s,
            student_id=student_id,
            session_id=session_id,
            tutor_id=domain.as_uuid(event.tutor_id),
            switch_id=None,
        )
        return session_id, facts

    def _cancelled_email(self, s: Session, event: Event) -> OwedEmail | None:
        """The student's cancellation, with the calendar's CANCEL of the invitation's UID."""
        data = event.data
        session_id, facts = self._student_facts(s, event)
        change = domain.cancelled_change(str(data["session_id"]))
        if facts is None:
            log.warning("%s %s: no such student %s", event.type, event.id, data["student_id"])
            return _undeliverable(
                change,
                f"student:{data['student_id']}",
                NoticeKind.SESSION_CANCELLED,
                None,
                session_id,
                "no such student",
            )
        notice = _session_notice(
            NoticeKind.SESSION_CANCELLED,
            facts,
            {**data, "provider": data.get("provider") or ""},
            from_provider=data.get("provider"),
            join_url=None,
        )
        return self._owed(
            change,
            facts["student_email"],
            facts["student_name"],
            NoticeKind.SESSION_CANCELLED,
            None,
            session_id,
            render_session_notice(notice),
            calendar=self._calendar(s, event, facts, notice, session_id=session_id, method=CANCEL),
        )

    def _recreated_email(
        self, s: Session, event: Event, *, join_url: str | None
    ) -> OwedEmail | None:
        data = event.data
        session_id, facts = self._student_facts(s, event)
        if facts is None:
            log.warning("%s %s: no such student %s", event.type, event.id, data["student_id"])
            return None
        if facts["status"] in INACTIVE_SESSION:
            return None
        notice = _session_notice(
            NoticeKind.SESSION_RECREATED,
            facts,
            data,
            from_provider=data["provider"],
            join_url=join_url,
        )
        return self._owed(
            domain.recreated_change(str(data["session_id"]), data["meeting_external_id"]),
            facts["student_email"],
            facts["student_name"],
            NoticeKind.SESSION_RECREATED,
            None,
            session_id,
            render_session_notice(notice),
            calendar=self._calendar(s, event, facts, notice, session_id=session_id),
        )

    def _disconnect_email(self, s: Session, event: Event) -> OwedEmail | None:
        data = event.data
        facts = self.db.tutor_and_switch(s, tutor_id=domain.as_uuid(event.tutor_id), switch_id=None)
        if facts is None:
            log.warning("%s %s: no such tutor %s", event.type, event.id, event.tutor_id)
            return None
        base = self.settings.gateway_public_url.rstrip("/")
        notice = DisconnectNotice(
            tutor_name=facts["tutor_name"],
            tutor_timezone=facts["tutor_timezone"],
            provider=data["provider"],
            upcoming=data["upcoming_sessions"],
            disconnected_at=domain.parse_time(data["disconnected_at"]),
            setup_url=f"{base}/tutor/video-setup",
        )
        return self._owed(
            domain.disconnected_change(
                str(data["tutor_id"]), data["provider"], data["disconnected_at"]
            ),
            facts["tutor_email"],
            facts["tutor_name"],
            NoticeKind.TUTOR_DISCONNECTED,
            None,
            None,
            render_disconnect_notice(notice),
        )

    def _tutor_of(self, s: Session, event: Event) -> dict[str, Any] | None:
        """The tutor (and switch) a switch-level event is about; None, logged, if unknown."""
        facts = self.db.tutor_and_switch(
            s,
            tutor_id=domain.as_uuid(event.tutor_id),
            switch_id=domain.as_uuid(event.data["switch_id"]),
        )
        if facts is None:
            log.warning("%s %s: no such tutor %s", event.type, event.id, event.tutor_id)
        return facts

    def _delay_email(self, s: Session, event: Event) -> OwedEmail | None:
        data = event.data
        facts = self._tutor_of(s, event)
        if facts is None:
            return None
        notice = DelayNotice(
            tutor_name=facts["tutor_name"],
            tutor_timezone=facts["tutor_timezone"],
            to_provider=data["provider"],
            total=data["sessions_total"],
            waiting=data["sessions_waiting"],
            # No `resumes_at` (reason usage_limits): the provider gave no time.
            resumes_at=domain.parse_time(data["resumes_at"]) if data.get("resumes_at") else None,
            setup_url=self._setup_url(data["switch_id"]),
        )
        return self._owed(
            domain.delayed_change(data["switch_id"], data.get("resumes_at") or data["reason"]),
            facts["tutor_email"],
            facts["tutor_name"],
            NoticeKind.TUTOR_DELAYED,
            domain.as_uuid(data["switch_id"]),
            None,
            render_delay_notice(notice),
        )

    def _session_email(self, s: Session, event: Event, *, join_url: str | None) -> OwedEmail | None:
        change = domain.session_change(event)
        data = event.data
        student_id = domain.as_uuid(data["student_id"])
        if change is None:
            return None
        switch_id = domain.as_uuid(data["switch_id"])
        session_id = domain.as_uuid(data["session_id"])
        facts = None
        if student_id is not None:
            facts = self.db.session_facts(
                s,
                student_id=student_id,
                session_id=session_id,
                tutor_id=domain.as_uuid(event.tutor_id),
                switch_id=switch_id,
            )
        kind = domain.session_notice_kind(event)
        if facts is None:
            # Nobody to write to; recorded so the audit shows the student was not told.
            log.warning("session.migrated %s: no such student %s", event.id, data["student_id"])
            return _undeliverable(
                change,
                f"student:{data['student_id']}",
                kind,
                switch_id,
                session_id,
                "no such student",
            )
        if facts["status"] in INACTIVE_SESSION:
            log.info("session %s is %s: student not emailed", data["session_id"], facts["status"])
            return None
        from_provider = data.get("previous_provider")
        if from_provider is None and kind == NoticeKind.SESSION_MOVED:
            from_provider = facts["switch_from"]
        notice = _session_notice(kind, facts, data, from_provider=from_provider, join_url=join_url)
        return self._owed(
            change,
            facts["student_email"],
            facts["student_name"],
            kind,
            switch_id,
            session_id,
            render_session_notice(notice),
            calendar=self._calendar(s, event, facts, notice, session_id=session_id),
        )

    def _rollback_email(self, s: Session, event: Event) -> OwedEmail | None:
        data = event.data
        facts = self._tutor_of(s, event)
        if facts is None:
            return None
        summary = RollbackSummary(
            tutor_name=facts["tutor_name"],
            restored_provider=data["restored_provider"],
            from_provider=facts["to_provider"],
            restored=data["sessions_restored"],
            failed=data["sessions_failed"],
            setup_url=self._setup_url(data["switch_id"]),
        )
        return self._owed(
            domain.rollback_change(data["switch_id"]),
            facts["tutor_email"],
            facts["tutor_name"],
            NoticeKind.TUTOR_ROLLBACK,
            domain.as_uuid(data["switch_id"]),
            None,
            render_rollback_summary(summary),
        )

    def _summary_email(self, s: Session, event: Event) -> OwedEmail | None:
        """The tutor's switch summary, owed by a `switch.settled` the database still agrees with.

        Counts and failures come from the database. The failed sessions'
        reasons are the migrator's rows, committed with (or before) the
        settlement, so nothing is waited for.
        """
        data = event.data
        switch_id = domain.as_uuid(data["switch_id"])
        if switch_id is None:
            return None
        switch = self.db.switch_row(s, switch_id=switch_id)
        if switch is None or not domain.summary_is_due(data, switch=switch):
            log.info(
                "switch.settled %s (%s): no summary (the switch is %s now)",
                event.id,
                data["state"],
                switch["state"] if switch else "gone",
                extra={"switch_id": data["switch_id"]},
            )
            return None
        facts = self._tutor_of(s, event)
        if facts is None:
            return None
        failures = [
            FailedSession(
                topic=f["topic"] or "Tutoring session",
                student_name=f["student_name"] or "a student",
                when=domain.local_time(f["scheduled_start_at"], facts["tutor_timezone"])
                if f["scheduled_start_at"] is not None
                else "unknown time",
                reason=f["reason"] or "not moved",
            )
            for f in self.db.switch_failures(s, switch_id=switch_id)
        ]
        summary = SwitchSummary(
            tutor_name=facts["tutor_name"],
            from_provider=switch["from_provider"],
            to_provider=switch["to_provider"],
            total=switch["sessions_total"],
            migrated=switch["sessions_migrated"],
            failed=switch["sessions_failed"],
            setup_url=self._setup_url(data["switch_id"]),
            failures=failures,
        )
        return self._owed(
            domain.summary_change(data["switch_id"]),
            facts["tutor_email"],
            facts["tutor_name"],
            NoticeKind.TUTOR_SUMMARY,
            switch_id,
            None,
            render_switch_summary(summary),
        )

    def _owed(
        self,
        change: uuid.UUID,
        recipient: str,
        name: str | None,
        kind: str,
        switch_id: uuid.UUID | None,
        session_id: uuid.UUID | None,
        rendered: Rendered,
        *,
        calendar: str | None = None,
    ) -> OwedEmail:
        return OwedEmail(
            change_id=change,
            recipient=recipient,
            recipient_name=name,
            kind=kind,
            switch_id=switch_id,
            session_id=session_id,
            message_id=domain.message_id(change, recipient, domain=self.settings.message_id_domain),
            subject=rendered.subject,
            body_text=rendered.text,
            body_html=rendered.html,
            calendar=calendar,
        )

    def _calendar(
        self,
        s: Session,
        event: Event,
        facts: dict[str, Any],
        notice: SessionNotice,
        *,
        session_id: uuid.UUID | None,
        method: str = REQUEST,
    ) -> str | None:
        """The student's calendar update for this change (iTIP REQUEST, or CANCEL): the
        invitation's UID, the next SEQUENCE of the session, the link the email gives."""
        if not self.settings.ical_enabled or session_id is None:
            return None
        if method == REQUEST and not notice.join_url:
            return None
        uid = self.settings.ical_uid_template.format(
            session_id=session_id,
            booking_id=facts["booking_id"],
            external_id=facts["session_external_id"] or session_id,
        )
        update = CalendarUpdate(
            method=method,
            uid=uid,
            sequence=self.db.next_calendar_sequence(s, session_id=session_id),
            stamp=event.time,
            starts_at=notice.starts_at,
            duration_minutes=notice.duration_minutes,
            # the session's zone (its booking's), as the platform booked it
            timezone=facts["booking_timezone"] or facts["student_timezone"],
            summary=f"{notice.topic} with {notice.tutor_name}",
            join_url=notice.join_url,
            provider=notice.to_provider,
            organizer_email=facts["tutor_email"],
            organizer_name=facts["tutor_name"],
            attendee_email=facts["student_email"],
            attendee_name=facts["student_name"],
        )
        return render_calendar(update)

    def _setup_url(self, switch_id: str) -> str:
        base = self.settings.gateway_public_url.rstrip("/")
        return f"{base}/tutor/video-setup?switch={switch_id}"

    # -- sending ---------------------------------------------------------------

    def send_due(self, *, limit: int) -> SendReport:
        """Send up to `limit` due emails, one transaction each; stop early while SMTP is down."""
        report = SendReport()
        while report.sent + report.failed + report.retrying < limit:
            if self._clock() < self._mail_server_down_until:
                break
            with contextlib.ExitStack() as in_trace:
                with self.db.transaction() as s:
                    due = self.db.next_due(s)
                    if due is None:
                        break
                    # the email's span, in its switch's trace: the send and its log line
                    in_trace.enter_context(tracing.using(_send_span(s, due), end=True))
                    message = build_message(
                        Rendered(subject=due.subject, text=due.body_text, html=due.body_html),
                        sender=self.settings.smtp_from,
                        recipient=due.recipient,
                        recipient_name=due.recipient_name,
                        message_id=due.message_id,
                        date=due.created_at,
                    )
                    if due.calendar:
                        attach_calendar(message, due.calendar)
                    try:
                        self.mailer.send(message, recipient=due.recipient)
                    except TransientMailError as exc:
                        delay = self._mail_server_failed()
                        self.db.retry_later(s, due.id, delay_s=delay, error=str(exc))
                        outcome, level = f"to be retried in {delay:.1f}s: {exc}", logging.WARNING
                        report.retrying += 1
                    except PermanentMailError as exc:
                        self.db.mark_failed(s, due.id, error=str(exc))
                        outcome, level = f"refused for good: {exc}", logging.WARNING
                        report.failed += 1
                    else:
                        self.db.mark_sent(s, due.id)
                        self._consecutive_failures = 0
                        outcome, level = "sent", logging.INFO
                        report.sent += 1
                metrics.EMAILS.labels(
                    kind=due.kind, outcome=_email_outcome(outcome, due.attempts)
                ).inc()
                # After the commit, one line per email: its row id, kind, attempt and outcome,
                # with the switch and session ids; never its address, subject or links.
                log.log(
                    level,
                    "email %s (%s, attempt %d) %s",
                    due.id,
                    due.kind,
                    due.attempts + 1,
                    outcome,
                    extra={
                        k: str(v)
                        for k, v in (("switch_id", due.switch_id), ("session_id", due.session_id))
                        if v is not None
                    },
                )
                if outcome.startswith("to be retried"):
                    break
        return report

    def _mail_server_failed(self) -> float:
        self._consecutive_failures += 1
        delay = Backoff(
            base_s=self.settings.backoff_initial_s,
            cap_s=self.settings.backoff_max_s,
            jitter="none",
        ).delay_s(self._consecutive_failures)
        self._mail_server_down_until = self._clock() + delay
        return delay

    def seconds_to_next_send(self) -> float | None:
        """How long until an email is due (None: nothing pending)."""
        with self.db.transaction() as s:
            due_in = self.db.seconds_to_next_due(s)
        if due_in is None:
            return None
        return max(due_in, self._mail_server_down_until - self._clock())


def _receive_spans(batch: Sequence[Consumed]) -> list[tracing.Span]:
    """A CONSUMER span per traced event (ended once recorded); its switch's trace kept for sends."""
    spans = []
    for consumed in batch:
        event = consumed.event
        if not event.trace:
            continue
        span = tracing.start_span(
            f"process {event.type}",
            parent=event.trace,
            kind=tracing.SpanKind.CONSUMER,
            attributes={
                "messaging.system": "kafka",
                "messaging.destination.name": consumed.topic,
                "cloudevents.event_id": event.id,
                "cloudevents.event_type": event.type,
            },
        )
        if event.data.get("switch_id"):
            tracing.SWITCHES.remember(event.data["switch_id"], tracing.carrier(span))
        spans.append(span)
    return spans


def _send_span(s: Session, due: DueEmail) -> tracing.Span | None:
    """The span of one send, child of its switch's trace; None for an email of no traced switch."""
    parent = tracing.load_switch(s, due.switch_id) if due.switch_id is not None else {}
    if not parent:
        return None
    attributes: dict[str, str | int] = {
        "relink.notification_id": due.id,
        "relink.email_kind": due.kind,
        "relink.attempt": due.attempts + 1,
        "relink.switch_id": str(due.switch_id),
    }
    if due.session_id is not None:
        attributes["relink.session_id"] = str(due.session_id)
    return tracing.start_span(
        "send email", parent=parent, kind=tracing.SpanKind.CLIENT, attributes=attributes
    )


def _email_outcome(outcome: str, attempts: int) -> str:
    """The relink_notifier_emails_total outcome of one send (attempts: those before it)."""
    if outcome == "sent":
        return "sent" if attempts == 0 else "resent"
    return "retrying" if outcome.startswith("to be retried") else "failed"


def _undeliverable(
    change: uuid.UUID,
    recipient: str,
    kind: str,
    switch_id: uuid.UUID | None,
    session_id: uuid.UUID | None,
    why: str,
) -> OwedEmail:
    return OwedEmail(
        change_id=change,
        recipient=recipient,
        recipient_name=None,
        kind=kind,
        switch_id=switch_id,
        session_id=session_id,
        message_id="",
        subject="",
        body_text="",
        body_html="",
        state=NotificationState.FAILED_PERMANENT.value,
        last_error=why,
    )


def _session_notice(
    kind: str,
    facts: dict[str, Any],
    data: dict[str, Any],
    *,
    from_provider: str | None,
    join_url: str | None,
) -> SessionNotice:
    """A student's email about one session: who, when and what from the database's facts;
    the link is the verified one (from the database too)."""
    return SessionNotice(
        kind=kind,
        student_name=facts["student_name"],
        student_timezone=facts["student_timezone"] or facts["booking_timezone"],
        tutor_name=facts["tutor_name"] or "Your tutor",
        topic=facts["topic"] or "Tutoring session",
        starts_at=domain.parse_time(data["scheduled_start_at"]),
        duration_minutes=facts["duration_minutes"],
        from_provider=from_provider,
        to_provider=data["provider"],
        join_url=join_url or "",
    )


def _delivery(consumed: Consumed) -> tracking.Delivery:
    return tracking.Delivery.of(
        tracking.NOTIFIER,
        consumed.event,
        topic=consumed.topic,
        partition=consumed.partition,
        offset=consumed.offset,
    )
