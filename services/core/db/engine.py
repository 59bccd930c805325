"""Engine and session factories (composed per process, never at import time)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, create_engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from services.core.db.errors import translate_errors
from services.core.settings import normalize_database_url


def make_engine(url: str, *, pool_size: int = 5, echo: bool = False) -> Engine:
    """A psycopg 3 engine with pre-ping, so a restarted PostgreSQL is reconnected.

    Its connection failures and aborted transactions raise `core.db.errors`'
    `StoreUnavailable` and `RetryableConflict`.
    """
    engine = create_engine(
        normalize_database_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        echo=echo,
    )
    return translate_errors(engine)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


class TransactionalStore:
    """A store over a session factory: its engine, and the caller's transactions.

    The use case opens `transaction()` and hands its session to each method,
    so one event's effects commit together (the notifier, the webhooks
    dispatcher).
    """

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    @property
    def engine(self) -> Engine:
        bind = self._sessions.kw["bind"]
        assert isinstance(bind, Engine)
        return bind

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with self._sessions() as s, s.begin():
            yield s


def libpq_conninfo(database_url: str) -> str:
    """A libpq URI from a SQLAlchemy URL (`postgresql+psycopg://` and friends), for raw psycopg."""
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)
