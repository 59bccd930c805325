"""The relay's pure parts: slots, settling a batch, backoff, metrics text (no I/O)."""

from __future__ import annotations

import pytest

from services.relay.domain import (
    Delivery,
    owns_everything,
    settle,
    should_wait_for_notify,
    wanted_slots,
)
from services.relay.metrics import RelayMetrics
from services.relay.settings import RelaySettings


def test_relays_split_the_slots_without_overlap_or_gap() -> None:
    owned = [wanted_slots(instance=n, instances=3, slot_count=64) for n in range(3)]
    flat = sorted(slot for slots in owned for slot in slots)
    assert flat == list(range(64))
    assert owns_everything(set(wanted_slots(instance=0, instances=1, slot_count=8)), slot_count=8)


def test_instance_must_be_below_instances() -> None:
    with pytest.raises(ValueError):
        wanted_slots(instance=2, instances=2, slot_count=64)
    with pytest.raises(ValueError):
        RelaySettings(RELINK_RELAY_INSTANCE=2, RELINK_RELAY_INSTANCES=2)


def test_settle_marks_acknowledged_rows_and_holds_back_a_tutors_tail_after_a_failure() -> None:
    outcome = settle(
        [
            Delivery(1, "a"),
            Delivery(2, "b", error="MSG_SIZE_TOO_LARGE"),
            Delivery(3, "a"),
            Delivery(4, "b"),  # acknowledged, but after b's failure: sent again later
        ]
    )
    assert outcome.published == [1, 3]
    assert outcome.failed == [2, 4]
    assert outcome.first_error == "MSG_SIZE_TOO_LARGE"


def test_a_short_batch_means_wait_for_notify() -> None:
    assert should_wait_for_notify(10, batch_size=100)
    assert not should_wait_for_notify(100, batch_size=100)


def test_metrics_render_in_prometheus_text_format() -> None:
    metrics = RelayMetrics()
    metrics.add_batch(published=7, failed=2)
    metrics.set_backlog(rows=3, oldest_age_s=1.5)
    text = metrics.render().decode()
    # prometheus_client writes every value as a float
    assert "# TYPE relink_relay_published_total counter\nrelink_relay_published_total 7.0\n" in text
    assert "relink_relay_publish_errors_total 2" in text
    assert "relink_relay_outbox_backlog 3" in text
    assert "relink_relay_oldest_unpublished_age_seconds 1.5" in text


def test_metrics_endpoint_serves_the_text() -> None:
    import urllib.request

    from services.relay.metrics import serve_metrics

    metrics = RelayMetrics()
    metrics.add_batch(published=5, failed=0)
    server = serve_metrics(metrics, host="127.0.0.1", port=0)
    try:
        port = server.server_address[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            assert "relink_relay_published_total 5" in response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
