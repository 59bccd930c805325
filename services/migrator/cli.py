"""`relink migrator`: run the Faust worker until SIGTERM / Ctrl-C."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.migrator.settings import MigratorSettings


def migrator() -> None:
    """Move future sessions to tutors' new providers (settings: RELINK_MIGRATOR_*)."""
    from services.core.db.token_keys import check_token_keys_at
    from services.migrator.settings import MigratorSettings
    from services.providers import ProviderSettings

    settings = MigratorSettings()
    # Settings first (a wrong endpoint or secret exits naming it), then the database.
    ProviderSettings()
    check_token_keys_at(
        settings.sync_database_url, settings.token_cipher().key_ids, process="relink migrator"
    )
    if settings.event_loop == "uvloop":
        import mode.loop

        # Before Faust makes its loop.
        mode.loop.use("uvloop")

    import faust

    from services.core.kafka import create_topics, throttle_aiokafka
    from services.core.tracing import configure_tracing
    from services.migrator.bootstrap import build_migrator
    from services.migrator.entrypoint import create_app

    # Faust does not see the partitions of a topic created after it started.
    # Only the topics it uses: on a secured cluster its user sees no others.
    create_topics(settings, names=[settings.topic_provider_switched, settings.topic_dead_letter])
    settings.datadir.mkdir(parents=True, exist_ok=True)
    configure_tracing("migrator")
    app = create_app(build_migrator(settings))
    throttle_aiokafka()  # a broker outage: a line a minute, not ten a second
    serve_metrics_of(settings)
    worker = faust.Worker(app, loglevel=settings.log_level, redirect_stdouts=False)
    worker.execute_from_commandline()


def serve_metrics_of(settings: MigratorSettings) -> None:
    """`/metrics` on RELINK_MIGRATOR_METRICS_PORT (when set): this process's counters,
    the switches by state from PostgreSQL and the Faust group's lag from Kafka."""
    from services.core import metrics
    from services.core.db.engine import make_engine
    from services.core.kafka import consumer_config
    from services.migrator.adapters.db.metrics import SwitchStates

    metrics.process_started("migrator")
    if not settings.metrics_port:
        return
    switches = SwitchStates(make_engine(settings.sync_database_url, pool_size=1))
    lag = metrics.ConsumerLag(
        consumer_config(settings, group_id=settings.faust_app_id),
        group=settings.faust_app_id,
        topics=[settings.topic_provider_switched],
    )
    metrics.serve_metrics(
        lambda: metrics.render(switches, lag),
        host=settings.metrics_host,
        port=settings.metrics_port,
        name="migrator",
    )
