"""Test data for the migrator: the state the gateway leaves behind after a switch.

Tokens are real: obtained from the provider simulator through its consent
flow, and stored encrypted like the gateway stores them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, insert, text
from sqlalchemy.orm import Session

from services.core import events
from services.core.db.models import Booking, Connection, Outbox, SwitchRequest, User
from services.core.db.models import Session as SessionRow
from services.core.settings import CommonSettings
from services.providers import MeetingRequest, ProviderClient, TokenSet
from tests.providers.conftest import connect

SOURCE = "/relink/tests/gateway-factory"


@dataclass
class Tutor:
    """A tutor with an account at each provider (tokens from the simulator)."""

    id: uuid.UUID
    email: str
    tokens: dict[str, TokenSet] = field(default_factory=dict)
    students: list[uuid.UUID] = field(default_factory=list)


class Factory:
    """Builds users, connections, sessions and switches in one test's database."""

    def __init__(
        self, engine: Engine, settings: CommonSettings, clients: dict[str, ProviderClient]
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.cipher = settings.token_cipher()
        self.clients = clients

    async def tutor(self, *, provider: str = "zoom", students: int = 3) -> Tutor:
        """A tutor connected to `provider`, with tokens for both providers at the simulator."""
        tutor = Tutor(id=uuid.uuid4(), email=f"tutor-{uuid.uuid4().hex[:10]}@example.com")
        for name, client in self.clients.items():
            tutor.tokens[name] = await connect(client, tutor.email)
        with Session(self.engine) as db, db.begin():
            db.add(User(id=tutor.id, role="tutor", name="Tara Tutor", email=tutor.email))
            for n in range(students):
                student = uuid.uuid4()
                db.add(
                    User(
                        id=student,
                        role="student",
                        name=f"Student {n}",
                        email=f"student-{student.hex[:10]}@example.com",
                    )
                )
                tutor.students.append(student)
            db.flush()
            db.add(
                Connection(
                    tutor_id=tutor.id,
                    provider=provider,
                    generation=1,
                    **self._encrypted(tutor, provider),
                )
            )
        return tutor

    def _encrypted(self, tutor: Tutor, provider: str, *, prefix: str = "") -> dict[str, Any]:
        tokens = tutor.tokens[provider]
        return {
            f"{prefix}access_token_encrypted": self.cipher.encrypt(
                tokens.access_token, tutor_id=tutor.id, field=f"{prefix}access_token"
            ),
            f"{prefix}refresh_token_encrypted": self.cipher.encrypt(
                tokens.refresh_token or "", tutor_id=tutor.id, field=f"{prefix}refresh_token"
            ),
            f"{prefix}token_expires_at": tokens.expires_at,
        }

    def sessions(
        self,
        tutor: Tutor,
        *,
        count: int,
        provider: str | None = "zoom",
        start_in: timedelta = timedelta(days=1),
        every: timedelta = timedelta(hours=1),
        status: str = "SCHEDULED",
    ) -> list[uuid.UUID]:
        """`count` sessions of the tutor, the first `start_in` from now, `every` apart."""
        now = datetime.now(UTC)
        ids: list[uuid.UUID] = []
        bookings: list[dict[str, Any]] = []
        rows: list[dict[str, Any]] = []
        for n in range(count):
            student = tutor.students[n % len(tutor.students)]
            booking, session = uuid.uuid4(), uuid.uuid4()
            bookings.append(
                {
                    "id": booking,
                    "tutor_id": tutor.id,
                    "student_id": student,
                    "topic": f"Lesson {n}",
                    "duration_minutes": 45,
                }
            )
            rows.append(
                {
                    "id": session,
                    "tutor_id": tutor.id,
                    "student_id": student,
                    "booking_id": booking,
                    "provider": provider,
                    "meeting_external_id": f"old-{session.hex[:8]}" if provider else None,
                    "join_url": f"https://old.example/{session.hex[:8]}" if provider else None,
                    "status": status,
                    "scheduled_start_at": now + start_in + every * n,
                    "duration_minutes": 45,
                }
            )
            ids.append(session)
        with Session(self.engine) as db, db.begin():
            if bookings:
                db.execute(insert(Booking), bookings)
                db.execute(insert(SessionRow), rows)
        return ids

    async def real_meetings(
        self, tutor: Tutor, sessions: list[uuid.UUID], *, provider: str
    ) -> None:
        """Give the sessions real meetings at the simulator (what an earlier switch left)."""
        client = self.clients[provider]
        with Session(self.engine) as db, db.begin():
            for n, session_id in enumerate(sessions):
                starts = db.execute(
                    text("SELECT scheduled_start_at FROM sessions WHERE id = :id"),
                    {"id": session_id},
                ).scalar_one()
                meeting = await client.create_meeting(
                    tutor.tokens[provider].access_token,
                    MeetingRequest(
                        switch_id=str(uuid.uuid4()),
                        session_id=str(session_id),
                        topic=f"Lesson {n}",
                        start_time=starts,
                        duration_min=45,
                    ),
                )
                db.execute(
                    text(
                        "UPDATE sessions SET provider = :p, meeting_external_id = :m, "
                        "join_url = :u WHERE id = :id"
                    ),
                    {
                        "p": provider,
                        "m": meeting.external_id,
                        "u": meeting.join_url,
                        "id": session_id,
                    },
                )

    def switch(
        self,
        tutor: Tutor,
        *,
        to_provider: str,
        rollback_deadline: datetime | None = None,
        publish: bool = True,
    ) -> uuid.UUID:
        """What the gateway's callback commits: connection, switch row and outbox row together.

        `publish=False` leaves the outbox row out (`publish` writes it later): the
        migrator sees the new connection before it hears of the switch.
        """
        switch_id = uuid.uuid4()
        with Session(self.engine) as db, db.begin():
            current = db.execute(
                text(
                    "SELECT provider, generation FROM tutor_video_provider_connections "
                    "WHERE tutor_id = :t FOR UPDATE"
                ),
                {"t": tutor.id},
            ).one()
            generation = current.generation + 1
            db.execute(
                text(
                    "UPDATE tutor_video_provider_connections SET provider = :p, generation = :g, "
                    "previous_provider = provider, "
                    "previous_access_token_encrypted = :pa, "
                    "previous_refresh_token_encrypted = :pr, "
                    "previous_token_expires_at = token_expires_at, "
                    "access_token_encrypted = :a, refresh_token_encrypted = :r, "
                    "token_expires_at = :e, updated_at = now() WHERE tutor_id = :t"
                ),
                {
                    "t": tutor.id,
                    "p": to_provider,
                    "g": generation,
                    **self._sql_tokens(tutor, to_provider),
                    **{
                        f"p{k}": v
                        for k, v in self._sql_tokens(
                            tutor, current.provider, prefix="previous_"
                        ).items()
                    },
                },
            )
            # The gateway's request; the migrator makes the switch's progress row.
            db.add(
                SwitchRequest(
                    id=switch_id,
                    tutor_id=tutor.id,
                    from_provider=current.provider,
                    to_provider=to_provider,
                    generation=generation,
                    requested_at=datetime.now(UTC),
                    rollback_deadline=rollback_deadline or datetime.now(UTC) + timedelta(hours=24),
                )
            )
            db.flush()
            if publish:
                self._publish(db, switch_id)
        return switch_id

    def publish(self, switch_id: uuid.UUID) -> None:
        """Write the switch's `provider.switched` outbox row (after `switch(publish=False)`)."""
        with Session(self.engine) as db, db.begin():
            self._publish(db, switch_id)

    def _publish(self, db: Session, switch_id: uuid.UUID) -> None:
        row = db.get_one(SwitchRequest, switch_id)
        db.execute(
            insert(Outbox).values(
                **events.outbox_row(
                    "provider.switched",
                    {
                        "switch_id": str(switch_id),
                        "tutor_id": str(row.tutor_id),
                        "from_provider": row.from_provider,
                        "to_provider": row.to_provider,
                        "generation": row.generation,
                        "switched_at": datetime.now(UTC).isoformat(),
                    },
                    tutor_id=str(row.tutor_id),
                    source=SOURCE,
                    topics=self.settings,
                )
            )
        )

    def _sql_tokens(self, tutor: Tutor, provider: str, *, prefix: str = "") -> dict[str, Any]:
        values = self._encrypted(tutor, provider, prefix=prefix)
        return {
            "a": values[f"{prefix}access_token_encrypted"],
            "r": values[f"{prefix}refresh_token_encrypted"],
            "e": values[f"{prefix}token_expires_at"],
        }
