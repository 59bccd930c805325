"""deploy/: the alert rules pass `promtool check rules` and their unit tests
(`promtool test rules`), and the Grafana dashboard names only series relink defines."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterable

from prometheus_client import REGISTRY
from prometheus_client.metrics_core import Metric
from sqlalchemy import Engine

from services.core import metrics
from services.core.kafka import consumer_config
from services.core.settings import CommonSettings
from services.migrator.adapters.db.metrics import SwitchStates
from services.oauth_gateway.metrics import GatewayMetrics
from services.relay.metrics import RelayCollector, RelayMetrics
from services.webhooks.adapters.metrics import OwedDeliveries
from tests.ops.prometheus import DEPLOY, binary

RULES = DEPLOY / "prometheus" / "alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "alerts_test.yml"
SCRAPE_CONFIG = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "relink.json"
# Series Prometheus itself makes for every target.
PROMETHEUS_OWN = {"up"}
SERIES = re.compile(r"\b(relink_[a-z0-9_]+|up)\b(?!\s*\()")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary("promtool"), *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_alert_rules_pass_promtool_check() -> None:
    done = promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 9 rules found" in done.stdout


def test_the_scrape_config_names_a_job_per_process_and_loads_the_rules() -> None:
    done = promtool("check", "config", str(SCRAPE_CONFIG))
    assert done.returncode == 0, done.stdout + done.stderr
    jobs = set(re.findall(r"job_name: (relink-[a-z]+)", SCRAPE_CONFIG.read_text()))
    assert jobs == {f"relink-{p}" for p in ("gateway", "relay", "migrator", "notifier", "webhooks")}


def test_alert_rules_unit_tests_pass() -> None:
    done = promtool("test", "rules", str(RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def exported(families: Iterable[Metric]) -> set[str]:
    names = set()
    for family in families:
        for suffix in SUFFIXES.get(family.type, ("",)):
            names.add(family.name + suffix)
    return names


def defined_series(engine: Engine, settings: CommonSettings) -> set[str]:
    """Every series name a relink process can export (the collectors asked for real)."""
    names = exported(REGISTRY.collect())
    names |= exported(GatewayMetrics().registry.collect())
    names |= exported(RelayCollector(RelayMetrics()).collect())
    names |= exported(SwitchStates(engine).collect())
    names |= exported(OwedDeliveries(engine).collect())
    lag = metrics.ConsumerLag(
        consumer_config(settings, group_id="relink-notifier"),
        group="relink-notifier",
        topics=["none"],
    )
    try:
        names |= exported(lag.collect())
    finally:
        lag.close()
    return {n for n in names if n.startswith("relink_")}


def test_the_dashboard_names_only_series_the_code_defines(
    engine: Engine, settings: CommonSettings
) -> None:
    defined = defined_series(engine, settings)
    assert {
        "relink_sessions_migrated_total",
        "relink_relay_oldest_unpublished_age_seconds",
        "relink_kafka_consumer_lag",
        "relink_switches",
    } <= defined
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert exprs
    unknown = {}
    for expr in exprs:
        named = set(SERIES.findall(expr))
        assert named, f"no series in {expr!r}"
        if missing := named - defined - PROMETHEUS_OWN:
            unknown[expr] = sorted(missing)
    assert not unknown, unknown
    # and so do the alert rules
    rules = RULES.read_text()
    assert set(SERIES.findall(rules)) - defined - PROMETHEUS_OWN == set()
