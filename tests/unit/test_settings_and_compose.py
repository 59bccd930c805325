"""Settings behave as documented, and docker-compose.yml only sets real settings."""

from __future__ import annotations

import importlib
import pkgutil
import re
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from pydantic_settings import BaseSettings

import devtools
import services
from devtools.devstack.settings import DevstackSettings
from services.core.errors import ConfigurationError
from services.core.settings import CommonSettings, normalize_database_url

ROOT = Path(__file__).resolve().parents[2]


def _settings_classes() -> list[type[BaseSettings]]:
    """Every settings class of the product and of the workshop (compose runs the simulator)."""
    for package in (services, devtools):
        for module in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if module.name.endswith(".settings"):
                importlib.import_module(module.name)
    found: list[type[BaseSettings]] = []
    stack: list[type[BaseSettings]] = [BaseSettings]
    while stack:
        cls = stack.pop()
        for sub in cls.__subclasses__():
            if sub.__module__.startswith(("services.", "devtools.")):
                found.append(sub)
            stack.append(sub)
    return found


def _env_names(cls: type[BaseSettings]) -> set[str]:
    prefix = str(cls.model_config.get("env_prefix", "") or "")
    names = set()
    for name, field in cls.model_fields.items():
        names.add((field.alias or f"{prefix}{name}").upper())
    return names


def test_every_env_name_in_compose_is_a_setting() -> None:
    known = set().union(*(_env_names(cls) for cls in _settings_classes()))
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    relink_services = {
        name: svc for name, svc in compose["services"].items() if svc.get("build") or svc.get("<<")
    }
    assert {"init", "relay", "provider-sim"} <= set(relink_services)
    for name, svc in relink_services.items():
        env = svc.get("environment") or {}
        assert env, f"{name} sets no environment"
        unknown = sorted(set(env) - known)
        assert not unknown, f"{name} sets variables no settings model reads: {unknown}"


def test_compose_uses_official_images() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose["services"]["kafka"]["image"].startswith("apache/kafka:4")
    assert compose["services"]["postgres"]["image"].startswith("postgres:")


def test_every_setting_is_documented_in_a_readme() -> None:
    docs = "\n".join(p.read_text() for p in ROOT.glob("**/README.md") if ".venv" not in p.parts)
    missing = sorted(
        name
        for cls in _settings_classes()
        for name in _env_names(cls)
        if not re.search(rf"\b{re.escape(name)}\b", docs)
    )
    assert not missing, f"settings without documentation: {missing}"


def test_defaults_point_at_the_devstack(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (
        "DATABASE_URL",
        "KAFKA_BOOTSTRAP_SERVERS",
        "RELINK_TOPIC_PREFIX",
        "HOME_X",
        "RELINK_DEVSTACK_PG_PORT",
        "RELINK_DEVSTACK_KAFKA_PORT",
    ):
        monkeypatch.delenv(var, raising=False)
    settings = CommonSettings()
    assert settings.sync_database_url.endswith("@127.0.0.1:54329/relink")
    assert settings.kafka_bootstrap_servers == "127.0.0.1:19092"
    assert settings.topics[-1] == "relink.dead-letter"


def test_unset_addresses_follow_the_devstack_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    """Exporting only the devstack's ports moves every command to that stack."""
    for var in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("RELINK_DEVSTACK_PG_PORT", "55001")
    monkeypatch.setenv("RELINK_DEVSTACK_KAFKA_PORT", "19001")
    settings = CommonSettings()
    assert settings.sync_database_url == "postgresql+psycopg://relink@127.0.0.1:55001/relink"
    assert settings.kafka_bootstrap_servers == "127.0.0.1:19001"
    # a URL that is set wins over the ports
    monkeypatch.setenv("DATABASE_URL", "postgresql://db.example/relink")
    assert CommonSettings().sync_database_url == "postgresql+psycopg://db.example/relink"


def test_topic_prefix_applies_to_every_topic() -> None:
    settings = CommonSettings(RELINK_TOPIC_PREFIX="t1.")
    assert all(name.startswith("t1.") for name in settings.topics)


def test_database_url_override_makes_the_devstack_leave_postgres_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgres://someone@db.internal/relink")
    settings = DevstackSettings()
    assert settings.postgres_mode == "external"
    assert settings.kafka_mode == "embedded"
    assert settings.sync_database_url == "postgresql+psycopg://someone@db.internal/relink"


def test_home_environment_variable_is_not_the_devstack_home(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOME", "/somewhere/else")
    assert DevstackSettings().home == Path(".devstack")


def test_outside_dev_mode_a_token_key_is_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELINK_DEV_MODE", "false")
    monkeypatch.delenv("RELINK_TOKEN_KEYS", raising=False)
    with pytest.raises(ConfigurationError, match="RELINK_TOKEN_KEYS is required"):
        CommonSettings()


def test_outside_dev_mode_the_dev_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.core.tokens import DEV_TOKEN_KEYS

    monkeypatch.setenv("RELINK_DEV_MODE", "false")
    monkeypatch.setenv("RELINK_TOKEN_KEYS", DEV_TOKEN_KEYS)
    with pytest.raises(ConfigurationError, match="dev token key"):
        CommonSettings()


@pytest.mark.parametrize("spelling", ["unpadded", "renamed", "standard alphabet", "among others"])
def test_outside_dev_mode_the_dev_key_is_refused_however_spelled(
    monkeypatch: pytest.MonkeyPatch, spelling: str
) -> None:
    import base64

    from services.core.tokens import DEV_TOKEN_KEYS, generate_key, parse_keys

    (dev,) = parse_keys(DEV_TOKEN_KEYS)
    spec = {
        "unpadded": f"dev:{base64.urlsafe_b64encode(dev.secret).decode().rstrip('=')}",
        "renamed": f"prod-1:{base64.urlsafe_b64encode(dev.secret).decode()}",
        "standard alphabet": f"k:{base64.b64encode(dev.secret).decode()}",
        "among others": f"{generate_key('a')},x:{base64.urlsafe_b64encode(dev.secret).decode()}",
    }[spelling]
    assert parse_keys(spec)[-1].secret == dev.secret
    monkeypatch.setenv("RELINK_DEV_MODE", "false")
    monkeypatch.setenv("RELINK_TOKEN_KEYS", spec)
    with pytest.raises(ConfigurationError, match="dev token key"):
        CommonSettings()


def test_bad_values_are_rejected_with_the_variable_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELINK_TOPIC_PARTITIONS", "zero")
    with pytest.raises(ValidationError, match="RELINK_TOPIC_PARTITIONS"):
        CommonSettings()


def test_event_url_bases_must_be_absolute_uris(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELINK_EVENTS_SOURCE_BASE", "https://relink.school.test/")
    monkeypatch.setenv("RELINK_EVENTS_SCHEMA_BASE", "https://relink.school.test/schemas")
    chosen = CommonSettings()
    assert chosen.events_source_base == "https://relink.school.test"
    assert chosen.events_schema_base == "https://relink.school.test/schemas"
    for name, bad in (
        ("RELINK_EVENTS_SOURCE_BASE", "relink.school.test"),
        ("RELINK_EVENTS_SCHEMA_BASE", "/schemas"),
        ("RELINK_EVENTS_SCHEMA_BASE", "https://relink.school.test/schemas?v=1"),
    ):
        monkeypatch.setenv(name, bad)
        with pytest.raises(ValidationError, match=name):
            CommonSettings()
        monkeypatch.delenv(name)


def test_normalize_database_url() -> None:
    assert normalize_database_url("postgresql://a@b/c") == "postgresql+psycopg://a@b/c"
    assert normalize_database_url("postgresql+psycopg://a@b/c") == "postgresql+psycopg://a@b/c"
