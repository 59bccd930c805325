"""What to do with a batch once Kafka has answered: pure decisions."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Delivery:
    """Kafka's answer for one outbox row: acknowledged, or the error."""

    row_id: int
    tutor_id: str
    error: str | None = None


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """Rows to mark published, rows to leave for the next try, and why."""

    published: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    first_error: str | None = None


def settle(deliveries: list[Delivery]) -> BatchOutcome:
    """Split a batch, in id order, by Kafka's answers.

    A tutor's rows after its first failed one are not marked even if Kafka
    acknowledged them: they are sent again after the failed row gets through,
    so the last copy a consumer sees follows the tutor's order. (With the
    idempotent producer this only happens for per-message errors such as a
    message too large; a broker outage fails the tail of each partition.)
    """
    published: list[int] = []
    failed: list[int] = []
    blocked: set[str] = set()
    first_error: str | None = None
    for delivery in deliveries:
        if delivery.error is None and delivery.tutor_id not in blocked:
            published.append(delivery.row_id)
            continue
        failed.append(delivery.row_id)
        blocked.add(delivery.tutor_id)
        first_error = first_error or delivery.error or "held back behind an earlier failure"
    return BatchOutcome(published=published, failed=failed, first_error=first_error)


def should_wait_for_notify(claimed: int, *, batch_size: int) -> bool:
    """A short batch means the backlog is drained: sleep until NOTIFY or the poll."""
    return claimed < batch_size
