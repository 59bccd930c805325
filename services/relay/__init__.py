"""The relay: publishes outbox rows to Kafka, at least once, in order per tutor.

Layers: `ownership`, `batching`, `metrics` are pure; `store` (PostgreSQL) and
`publisher` (Kafka) are the adapters; `service` is the loop, `bootstrap`
composes it, `cli` is the `relink relay` entrypoint. See README.md.

Errors:

    RelinkError
    └── RelayError               the relay cannot make progress right now
        ├── StoreUnavailable     PostgreSQL is unreachable or the connection broke;
        │                        reconnect with backoff (rows are safe in the table)
        └── PublishFailed        Kafka did not acknowledge some messages in time;
                                 their rows stay unpublished, retry with backoff
"""

from __future__ import annotations

from services.core.errors import RelinkError


class RelayError(RelinkError):
    """Base of the relay's errors; the loop retries every one of them."""


class StoreUnavailable(RelayError):
    """PostgreSQL could not be reached or the connection broke mid-batch."""


class PublishFailed(RelayError):
    """Kafka did not acknowledge every message of a batch."""
