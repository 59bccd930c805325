"""Switches and their sessions by state, read from PostgreSQL when Prometheus scrapes.

The database is the truth every migrator shares, so these gauges are the same
whichever migrator answers (and survive restarts, unlike a process's counters).
One short query per scrape on its own one-connection engine.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from sqlalchemy import Engine, text

from services.core.db.models import SwitchState
from services.core.logs import get_logger
from services.core.switching import IN_FLIGHT

log = get_logger(__name__)

SWITCHES_SQL = text(
    "SELECT state, count(*), "
    "COALESCE(EXTRACT(EPOCH FROM now() - min(COALESCE(started_at, created_at))), 0) "
    "FROM provider_switches GROUP BY state"
)
MIGRATIONS_SQL = text("SELECT state, count(*) FROM session_migrations GROUP BY state")


class SwitchStates(Collector):
    """relink_switches{state}, relink_switch_oldest_in_flight_seconds, relink_session_migrations."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        switches = GaugeMetricFamily(
            "relink_switches", "Switches by state (from PostgreSQL).", labels=["state"]
        )
        oldest = GaugeMetricFamily(
            "relink_switch_oldest_in_flight_seconds",
            "Age of the oldest switch still PENDING, PLANNING or MIGRATING (0: none).",
        )
        migrations = GaugeMetricFamily(
            "relink_session_migrations",
            "Session migrations by state (MIGRATED, FAILED, PENDING, ...; from PostgreSQL).",
            labels=["state"],
        )
        up = GaugeMetricFamily(
            "relink_migrator_database_up", "1 when PostgreSQL answered the last scrape's query."
        )
        try:
            with self.engine.connect() as connection:
                rows = connection.execute(SWITCHES_SQL).all()
                states = connection.execute(MIGRATIONS_SQL).all()
        except Exception as exc:
            log.warning("switch gauges: PostgreSQL did not answer (%s)", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        by_state = {str(state): (int(n), float(age)) for state, n, age in rows}
        for state in SwitchState:
            switches.add_metric([state.value], by_state.get(state.value, (0, 0.0))[0])
        in_flight = [by_state[s.value][1] for s in IN_FLIGHT if s.value in by_state]
        oldest.add_metric([], max(in_flight, default=0.0))
        for state, n in states:
            migrations.add_metric([str(state)], int(n))
        up.add_metric([], 1)
        yield from (switches, oldest, migrations, up)

    def describe(self) -> Iterable[Metric]:
        return ()
