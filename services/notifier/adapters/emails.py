"""Email content: Jinja2 templates (text and HTML) into `email.message.EmailMessage`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, formataddr
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from services.notifier.domain import NoticeKind, local_time, provider_name, zone

# The templates stay at services/notifier/templates (shipped as package data).
TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


@dataclass(frozen=True, slots=True)
class Rendered:
    """An email's content, ready to be stored and sent later."""

    subject: str
    text: str
    html: str


@dataclass(frozen=True, slots=True)
class SessionNotice:
    """What a student's email says about one session."""

    kind: str  # NoticeKind.SESSION_MOVED, SESSION_RESTORED, SESSION_RECREATED, SESSION_CANCELLED
    student_name: str
    student_timezone: str | None
    tutor_name: str
    topic: str
    starts_at: Any  # datetime (UTC)
    duration_minutes: int | None
    from_provider: str | None
    to_provider: str
    join_url: str


@dataclass(frozen=True, slots=True)
class FailedSession:
    topic: str
    student_name: str
    when: str
    reason: str


@dataclass(frozen=True, slots=True)
class SwitchSummary:
    """What the tutor's email says when a switch settles."""

    tutor_name: str
    from_provider: str
    to_provider: str
    total: int
    migrated: int
    failed: int
    setup_url: str
    failures: list[FailedSession] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class RollbackSummary:
    tutor_name: str
    restored_provider: str
    from_provider: str | None
    restored: int
    failed: int
    setup_url: str


@dataclass(frozen=True, slots=True)
class DelayNotice:
    """A switch's remaining sessions wait for the new provider's daily limit to reset."""

    tutor_name: str
    tutor_timezone: str | None
    to_provider: str
    total: int
    waiting: int
    # None: the provider named no time (Google's usage limits), so we promise none.
    resumes_at: datetime | None
    setup_url: str


@dataclass(frozen=True, slots=True)
class DisconnectNotice:
    """The tutor removed relink's app at a provider: reconnect required."""

    tutor_name: str
    tutor_timezone: str | None
    provider: str
    upcoming: int
    disconnected_at: datetime
    setup_url: str


@cache
def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
    )


def _render(name: str, subject: str, context: dict[str, Any]) -> Rendered:
    env = _environment()
    return Rendered(
        subject=subject,
        text=env.get_template(f"{name}.txt").render(context),
        html=env.get_template(f"{name}.html").render(context),
    )


def render_session_notice(notice: SessionNotice) -> Rendered:
    """The student's email about one session that moved (came back, got a new meeting, or
    was cancelled)."""
    to_name = provider_name(notice.to_provider)
    local = notice.starts_at.astimezone(zone(notice.student_timezone))
    short = f"{local:%a} {local.day} {local:%b, %H:%M}"
    context = {
        "student_name": notice.student_name,
        "tutor_name": notice.tutor_name,
        "topic": notice.topic,
        "when": local_time(notice.starts_at, notice.student_timezone),
        "duration": notice.duration_minutes,
        "from_name": provider_name(notice.from_provider),
        "to_name": to_name,
        "join_url": notice.join_url,
    }
    if notice.kind == NoticeKind.SESSION_CANCELLED:
        date = f"{local:%a} {local.day} {local:%b}"
        subject = f"\u201c{notice.topic}\u201d on {date} is cancelled"
        return _render("session_cancelled", subject, context)
    if notice.kind == NoticeKind.SESSION_RECREATED:
        subject = f"Your session \u201c{notice.topic}\u201d ({short}) has a new {to_name} link"
        return _render("session_recreated", subject, context)
    if notice.kind == NoticeKind.SESSION_RESTORED:
        subject = f"Your session \u201c{notice.topic}\u201d ({short}) is back on {to_name}"
        return _render("session_restored", subject, context)
    subject = f"Your session \u201c{notice.topic}\u201d ({short}) moved to {to_name}: new link"
    return _render("session_moved", subject, context)


def render_switch_summary(summary: SwitchSummary) -> Rendered:
    """The tutor's email when a switch settled."""
    to_name = provider_name(summary.to_provider)
    attention = max(summary.failed, len(summary.failures))
    subject = f"Your switch to {to_name}: {summary.migrated} of {summary.total} sessions moved"
    if not (summary.total or attention):
        # Nothing was planned: "0 of 0 sessions moved" claims a move that never happened.
        subject = f"Your switch to {to_name} is done: no session needed to move"
    if attention:
        subject += f", {attention} need attention"
    context = {
        "tutor_name": summary.tutor_name,
        "from_name": provider_name(summary.from_provider),
        "to_name": to_name,
        "total": summary.total,
        "migrated": summary.migrated,
        "failures": summary.failures,
        "failed": summary.failed,
        "setup_url": summary.setup_url,
    }
    return _render("tutor_summary", subject, context)


def render_rollback_summary(summary: RollbackSummary) -> Rendered:
    """The tutor's email when a rollback finished."""
    to_name = provider_name(summary.restored_provider)
    context = {
        "tutor_name": summary.tutor_name,
        "to_name": to_name,
        "restored": summary.restored,
        "failed": summary.failed,
        "setup_url": summary.setup_url,
    }
    subject = f"Your sessions are back on {to_name}"
    if not (summary.restored or summary.failed):
        # The switch had moved nothing: no session went back and no student heard of it.
        subject = f"Your switch was rolled back: {to_name} is connected again"
    return _render("tutor_rollback", subject, context)


def render_delay_notice(notice: DelayNotice) -> Rendered:
    """The tutor's email when the remaining sessions must wait for a provider's limit."""
    to_name = provider_name(notice.to_provider)
    if notice.resumes_at is None:
        # Google's "Calendar usage limits exceeded" names no reset time.
        subject = (
            f"Your switch to {to_name}: the remaining {notice.waiting} sessions move "
            f"once {to_name} allows new events again"
        )
        return _render(
            "tutor_delayed_usage",
            subject,
            {
                "tutor_name": notice.tutor_name,
                "to_name": to_name,
                "total": notice.total,
                "waiting": notice.waiting,
                "setup_url": notice.setup_url,
            },
        )
    when = local_time(notice.resumes_at, notice.tutor_timezone)
    context = {
        "tutor_name": notice.tutor_name,
        "to_name": to_name,
        "total": notice.total,
        "moving_now": max(notice.total - notice.waiting, 0),
        "waiting": notice.waiting,
        "when": when,
        "setup_url": notice.setup_url,
    }
    subject = f"Your switch to {to_name}: the remaining {notice.waiting} sessions move after {when}"
    return _render("tutor_delayed", subject, context)


def render_disconnect_notice(notice: DisconnectNotice) -> Rendered:
    """The tutor's email when relink's app was removed at the provider."""
    name = provider_name(notice.provider)
    context = {
        "tutor_name": notice.tutor_name,
        "provider_name": name,
        "upcoming": notice.upcoming,
        "when": local_time(notice.disconnected_at, notice.tutor_timezone),
        "setup_url": notice.setup_url,
    }
    subject = f"relink lost access to {name}: reconnect to keep your sessions up to date"
    return _render("tutor_disconnected", subject, context)


def build_message(
    rendered: Rendered,
    *,
    sender: str,
    recipient: str,
    recipient_name: str | None,
    message_id: str,
    date: Any,
) -> EmailMessage:
    """A multipart/alternative message with the given (deterministic) Message-ID."""
    message = EmailMessage()
    message["From"] = sender
    message["To"] = formataddr((recipient_name or "", recipient))
    message["Subject"] = rendered.subject
    message["Message-ID"] = message_id
    message["Date"] = format_datetime(date)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    return message
