"""`relink seed demo`: demo tutors, students and sessions for the devstack (idempotent).

* Ada Lovelace (tutor) is on Zoom with future sessions (SCHEDULED and one
  JOIN_OPEN), a past one, a completed one and a cancelled one.
* Grace Hopper (tutor) is on Google Meet with two future sessions.
* Alan Turing (tutor) has no provider yet.
* Three students with emails and timezones.

When the provider simulator answers (RELINK_ZOOM_*/RELINK_GOOGLE_* point at
it), the seed connects Ada and Grace through the simulator's consent page, so
their tokens are real there and every session has a real meeting. When it
does not, connections get placeholder tokens and sessions plausible meeting
ids and links (the migrator then cannot reach the old meetings; switching
still works because the new provider's tokens come from a real OAuth flow).

Sessions are placed relative to the time of seeding (`make run` seeds at every
start). Ids are fixed (uuid5) and rows are inserted only when absent, so
running it again never duplicates anything; when the demo has gone stale (one
of its upcoming sessions is less than half its lead time away, e.g. the
JOIN_OPEN one 10 minutes after seeding, or every one on a later day), every
demo session is placed again relative to now, with its planned status. Meetings
at the providers keep their ids and links (only the times in relink move).
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html import unescape
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session, sessionmaker

from services.core.db.engine import make_engine, make_session_factory
from services.core.db.models import Booking, SessionStatus, User
from services.core.db.models import Session as SessionRow
from services.core.errors import ConfigurationError
from services.oauth_gateway.adapters.db import GatewayStore
from services.oauth_gateway.settings import GatewaySettings
from services.providers import (
    Meeting,
    MeetingRequest,
    ProviderAccount,
    ProviderClient,
    ProviderError,
    ProviderName,
    ProviderSettings,
    TokenSet,
    build_client,
    new_pkce_verifier,
)

log = logging.getLogger(__name__)
NAMESPACE = uuid.UUID("6f2d8a52-7d41-4c38-9a61-3b1f0c4e2a10")
DOMAIN = "demo.relink.example"


def demo_id(name: str) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, name)


@dataclass(frozen=True)
class DemoUser:
    key: str
    role: str
    name: str
    timezone: str

    @property
    def id(self) -> uuid.UUID:
        return demo_id(f"user:{self.key}")

    @property
    def email(self) -> str:
        return f"{self.key}@{DOMAIN}"


TUTORS = [
    DemoUser("ada", "tutor", "Ada Lovelace", "Europe/London"),
    DemoUser("grace", "tutor", "Grace Hopper", "America/New_York"),
    DemoUser("alan", "tutor", "Alan Turing", "Europe/London"),
]
STUDENTS = [
    DemoUser("sam", "student", "Sam Rivera", "America/Los_Angeles"),
    DemoUser("maria", "student", "María García", "Europe/Madrid"),
    DemoUser("kenji", "student", "Kenji Tanaka", "Asia/Tokyo"),
]
CONNECTED: dict[str, ProviderName] = {"ada": "zoom", "grace": "google_meet"}


@dataclass(frozen=True)
class DemoSession:
    key: str
    tutor: str
    student: str
    topic: str
    start_offset: timedelta
    status: str = SessionStatus.SCHEDULED.value
    duration: int = 60

    @property
    def id(self) -> uuid.UUID:
        return demo_id(f"session:{self.key}")

    @property
    def booking_id(self) -> uuid.UUID:
        return demo_id(f"booking:{self.key}")


D = timedelta(days=1)
H = timedelta(hours=1)
SESSIONS = [
    DemoSession("ada-1", "ada", "sam", "Algebra: quadratic equations", 1 * D),
    DemoSession("ada-2", "ada", "maria", "Calculus: limits", 2 * D + 3 * H),
    DemoSession("ada-3", "ada", "kenji", "Probability basics", 4 * D),
    DemoSession("ada-4", "ada", "sam", "Algebra: inequalities", 8 * D),
    DemoSession("ada-5", "ada", "maria", "Calculus: derivatives", 9 * D + 2 * H),
    DemoSession(
        "ada-open",
        "ada",
        "kenji",
        "Exam prep",
        10 * timedelta(minutes=1),
        status=SessionStatus.JOIN_OPEN.value,
    ),
    DemoSession("ada-past", "ada", "sam", "Fractions review", -2 * D),
    DemoSession(
        "ada-done", "ada", "maria", "Intro session", -7 * D, status=SessionStatus.COMPLETED.value
    ),
    DemoSession(
        "ada-cancelled", "ada", "kenji", "Geometry", 3 * D, status=SessionStatus.CANCELLED.value
    ),
    DemoSession("grace-1", "grace", "kenji", "Programming: loops", 1 * D + 5 * H),
    DemoSession("grace-2", "grace", "sam", "Programming: functions", 5 * D),
]


@dataclass
class SeedReport:
    users_created: int = 0
    users_total: int = 0
    sessions_created: int = 0
    sessions_refreshed: int = 0
    meetings_source: str = "none created"
    connected: list[str] = field(default_factory=list)


def seed_demo(
    settings: GatewaySettings, *, provider_settings: ProviderSettings | None = None
) -> SeedReport:
    """Create whatever of the demo data is missing."""
    if not settings.dev_mode:
        raise ConfigurationError("`relink seed demo` runs only with RELINK_DEV_MODE=true")
    return asyncio.run(_seed(settings, provider_settings or ProviderSettings()))


async def _seed(settings: GatewaySettings, provider_settings: ProviderSettings) -> SeedReport:
    engine = make_engine(settings.sync_database_url, pool_size=2)
    factory = make_session_factory(engine)
    store = GatewayStore(factory, cipher=settings.token_cipher(), topics=settings)
    report = SeedReport()
    clients = {p: build_client(p, settings=provider_settings) for p in set(CONNECTED.values())}
    try:
        with factory() as s, s.begin():
            for user in TUTORS + STUDENTS:
                created = s.execute(
                    pg_insert(User)
                    .values(
                        id=user.id,
                        role=user.role,
                        name=user.name,
                        email=user.email,
                        timezone=user.timezone,
                    )
                    .on_conflict_do_nothing()
                    .returning(User.id)
                ).scalar_one_or_none()
                report.users_created += created is not None
            report.users_total = len(list(s.scalars(select(User.id))))
        live: dict[str, TokenSet | None] = {}
        for key, provider in CONNECTED.items():
            live[key] = await _connect(store, clients[provider], TUTORS_BY_KEY[key])
            report.connected.append(f"{key}:{provider}")
        report.meetings_source = (
            "real, at the provider simulator"
            if all(live.values())
            else "placeholder ids (the simulator did not answer)"
        )
        now = datetime.now(UTC).replace(second=0, microsecond=0)
        report.sessions_refreshed = _refresh_stale(factory, now=now)
        for plan in SESSIONS:
            tokens = live.get(plan.tutor)
            provider = CONNECTED[plan.tutor]
            if await _add_session(factory, plan, clients[provider], provider, tokens, now=now):
                report.sessions_created += 1
    finally:
        for client in clients.values():
            await client.aclose()
        engine.dispose()
    return report


TUTORS_BY_KEY = {t.key: t for t in TUTORS}


async def _connect(store: GatewayStore, client: ProviderClient, tutor: DemoUser) -> TokenSet | None:
    """Connect the tutor unless connected; the live tokens when the simulator answered."""
    existing = store.connection_snapshot(tutor.id)
    if existing is not None:
        live = not existing.tokens.access_token.startswith("demo-placeholder")
        return existing.tokens if live else None
    tokens: TokenSet | None
    try:
        tokens = await consent_at_simulator(client, email=tutor.email)
        account = await client.account(tokens.access_token)
    except (httpx.HTTPError, ProviderError, ValueError) as exc:
        log.warning("provider simulator not usable (%s); seeding placeholder tokens", exc)
        tokens = None
        account = ProviderAccount(id=f"demo-{tutor.key}", email=tutor.email)
    saved = tokens or TokenSet(
        access_token="demo-placeholder-access",
        refresh_token="demo-placeholder-refresh",
        expires_at=datetime.now(UTC) + timedelta(days=365),
    )
    store.save_connection(
        tutor_id=tutor.id,
        provider=client.provider,
        tokens=saved,
        account=account,
        now=datetime.now(UTC),
        rollback_grace=timedelta(0),
    )
    return tokens


async def consent_at_simulator(client: ProviderClient, *, email: str) -> TokenSet:
    """Click "Allow" on the simulator's consent page, as a browser would, and exchange the code."""
    verifier = new_pkce_verifier()
    url = client.authorization_url(state="demo-seed", code_verifier=verifier, login_hint=email)
    async with httpx.AsyncClient(timeout=5) as browser:
        page = await browser.get(url)
        page.raise_for_status()
        action = re.search(r'<form method="post" action="([^"]+)"', page.text)
        if action is None:
            raise ValueError("no consent form: not the relink provider simulator")
        fields = {
            name: unescape(value)
            for name, value in re.findall(
                r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.text
            )
        }
        fields |= {"email": email, "decision": "allow"}
        # Google's consent lists each scope with a checkbox, ticked by default: send
        # the ticked ones, as a browser does (devtools/provider_sim/oauth.py).
        ticked = [
            unescape(v)
            for v in re.findall(
                r'<input type="checkbox" name="granted_scope" value="([^"]*)" checked>', page.text
            )
        ]
        answer = await browser.post(
            urljoin(url, unescape(action.group(1))), data={**fields, "granted_scope": ticked}
        )
    code = parse_qs(urlsplit(answer.headers.get("location", "")).query).get("code")
    if answer.status_code != 302 or not code:
        raise ValueError("the simulator did not hand back a code")
    return await client.exchange_code(code[0], code_verifier=verifier)


async def _add_session(
    sessions: sessionmaker[Session],
    plan: DemoSession,
    client: ProviderClient,
    provider: ProviderName,
    tokens: TokenSet | None,
    *,
    now: datetime,
) -> bool:
    with sessions() as s:
        if s.get(SessionRow, plan.id) is not None:
            return False
    start = now + plan.start_offset
    meeting = await _meeting(client, provider, plan, tokens, start=start)
    tutor, student = TUTORS_BY_KEY[plan.tutor], STUDENTS_BY_KEY[plan.student]
    with sessions() as s, s.begin():
        s.execute(
            pg_insert(Booking)
            .values(
                id=plan.booking_id,
                tutor_id=tutor.id,
                student_id=student.id,
                topic=plan.topic,
                duration_minutes=plan.duration,
                timezone=student.timezone,
            )
            .on_conflict_do_nothing()
        )
        inserted = s.execute(
            pg_insert(SessionRow)
            .values(
                id=plan.id,
                tutor_id=tutor.id,
                student_id=student.id,
                booking_id=plan.booking_id,
                provider=provider,
                meeting_external_id=meeting.external_id,
                join_url=meeting.join_url,
                status=plan.status,
                scheduled_start_at=start,
                duration_minutes=plan.duration,
                meeting_created_at=now,
            )
            .on_conflict_do_nothing()
            .returning(SessionRow.id)
        ).scalar_one_or_none()
    return inserted is not None


STUDENTS_BY_KEY = {s.key: s for s in STUDENTS}


def is_stale(starts: dict[str, datetime], *, now: datetime) -> bool:
    """Whether the seeded demo no longer shows what it promises: an upcoming session
    of the plan is less than half its lead time away (or has passed)."""
    return any(
        plan.start_offset > timedelta(0) and starts[plan.key] < now + plan.start_offset / 2
        for plan in SESSIONS
        if plan.key in starts
    )


def _refresh_stale(sessions: sessionmaker[Session], *, now: datetime) -> int:
    """Place every demo session again relative to now when the demo has gone stale.

    The rows keep their ids, meetings and links; nothing is inserted, so the demo
    never doubles. Returns how many sessions moved (0 when the demo is still fresh).
    """
    by_id = {plan.id: plan for plan in SESSIONS}
    with sessions() as s, s.begin():
        rows = s.execute(
            select(SessionRow.id, SessionRow.scheduled_start_at)
            .where(SessionRow.id.in_(list(by_id)))
            .with_for_update()
        ).all()
        starts = {by_id[sid].key: start for sid, start in rows}
        if not is_stale(starts, now=now):
            return 0
        for sid, _ in rows:
            plan = by_id[sid]
            s.execute(
                update(SessionRow)
                .where(SessionRow.id == sid)
                .values(
                    scheduled_start_at=now + plan.start_offset,
                    status=plan.status,
                    version=SessionRow.version + 1,
                    updated_at=now,
                )
            )
    return len(rows)


async def _meeting(
    client: ProviderClient,
    provider: ProviderName,
    plan: DemoSession,
    tokens: TokenSet | None,
    *,
    start: datetime,
) -> Meeting:
    if tokens is not None:
        try:
            return await client.create_meeting(
                tokens.access_token,
                MeetingRequest(
                    switch_id="demo-seed",
                    session_id=str(plan.id),
                    topic=plan.topic,
                    start_time=start,
                    duration_min=plan.duration,
                ),
            )
        except ProviderError as exc:
            log.warning("demo meeting for %s not created (%s); placeholder used", plan.key, exc)
    number = str(plan.id.int)[:11]
    if provider == "zoom":
        return Meeting(provider, number, f"https://zoom.us/j/{number}")
    code = plan.id.hex[:10]
    return Meeting(
        provider, f"demo{code}", f"https://meet.google.com/{code[:3]}-{code[3:7]}-{code[7:]}"
    )
