"""Engine and session factories (composed per process, never at import time)."""

from __future__ import annotations

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


def libpq_conninfo(database_url: str) -> str:
    """A libpq URI from a SQLAlchemy URL (`postgresql+psycopg://` and friends), for raw psycopg."""
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)
