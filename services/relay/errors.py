"""Every exception the relay defines.

Errors:

    RelinkError
    └── RelayError               the relay cannot make progress right now
        ├── StoreUnavailable     PostgreSQL is unreachable or the connection broke;
        │                        reconnect with backoff (rows are safe in the table)
        └── PublishFailed        Kafka did not acknowledge some messages in time;
                                 their rows stay unpublished, retry with backoff
"""

from __future__ import annotations

from services.core.db import errors as db_errors
from services.core.errors import RelinkError


class RelayError(RelinkError):
    """Base of the relay's errors; the loop retries every one of them."""


class StoreUnavailable(RelayError, db_errors.StoreUnavailable):
    """PostgreSQL could not be reached or the connection broke mid-batch (`core.db.errors`'
    translation of the relay's raw psycopg errors)."""


class PublishFailed(RelayError):
    """Kafka did not acknowledge every message of a batch."""
