"""Production mode refuses provider endpoints that still point at the simulator.

The simulator answers everything, so a production deployment left on its
URLs would "work" while no tutor's meeting exists anywhere real.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from services.core.errors import ConfigurationError
from services.providers import ProviderSettings
from services.providers._settings import ENDPOINT_SETTINGS

REAL = {
    "zoom_auth_base": "https://zoom.us",
    "zoom_api_base": "https://api.zoom.us/v2",
    "google_auth_base": "https://accounts.google.com",
    "google_token_base": "https://oauth2.googleapis.com",
    "google_api_base": "https://www.googleapis.com",
}
REAL_SECRETS = {"zoom_client_secret": "zoom-app-secret", "google_client_secret": "google-secret"}


def _production(**overrides: Any) -> ProviderSettings:
    return ProviderSettings(dev_mode=False, **{**REAL_SECRETS, **REAL, **overrides})


def test_real_endpoints_are_accepted() -> None:
    settings = _production()
    assert settings.zoom_api_base == "https://api.zoom.us/v2"


def test_the_simulator_defaults_are_refused_naming_every_variable() -> None:
    defaults = {field: ProviderSettings.model_fields[field].default for field in REAL}
    with pytest.raises(ConfigurationError, match="still point at the simulator") as caught:
        _production(**defaults)
    for env in ENDPOINT_SETTINGS.values():
        assert env in str(caught.value)


@pytest.mark.parametrize(
    ("field", "url", "why"),
    [
        ("zoom_api_base", "https://localhost/v2", "loopback"),
        ("zoom_auth_base", "https://127.0.0.2", "loopback"),
        ("google_api_base", "https://[::1]:8443", "loopback"),
        ("google_token_base", "https://sim.localhost", "loopback"),
        # docker-compose's simulator: not loopback, but plain http and the sim's paths
        ("zoom_api_base", "http://provider-sim:18090/zoom/v2", "not https"),
        ("google_auth_base", "https://sim.example.com/google", "simulator's path"),
        ("zoom_auth_base", "https://sim.example.com/zoom", "simulator's path"),
    ],
)
def test_each_simulator_shape_is_refused(field: str, url: str, why: str) -> None:
    with pytest.raises(ConfigurationError, match=why) as caught:
        _production(**{field: url})
    assert ENDPOINT_SETTINGS[field] in str(caught.value)
    # only the offending variable is named
    others = set(ENDPOINT_SETTINGS.values()) - {ENDPOINT_SETTINGS[field]}
    assert not any(f"{env}=" in str(caught.value) for env in others)


def test_dev_mode_keeps_the_simulator() -> None:
    settings = ProviderSettings(dev_mode=True)
    assert settings.zoom_api_base.startswith("http://127.0.0.1")


def test_a_production_gateway_on_simulator_endpoints_exits_with_the_reason(
    tmp_path: Path,
) -> None:
    key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("RELINK_")},
        "RELINK_DEV_MODE": "false",
        "RELINK_TOKEN_KEYS": f"k1:{key}",
        "RELINK_GATEWAY_SESSION_SECRET": "a-real-session-secret-of-enough-length-0123",
        "RELINK_ZOOM_CLIENT_SECRET": "zoom-app-secret",
        "RELINK_GOOGLE_CLIENT_SECRET": "google-secret",
        # the real Google endpoints, but Zoom still on the simulator's defaults
        "RELINK_GOOGLE_AUTH_BASE": REAL["google_auth_base"],
        "RELINK_GOOGLE_TOKEN_BASE": REAL["google_token_base"],
        "RELINK_GOOGLE_API_BASE": REAL["google_api_base"],
        "RELINK_GATEWAY_PORT": "0",
    }
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "gateway"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "provider endpoints still point at the simulator" in output
    assert "RELINK_ZOOM_API_BASE=http://127.0.0.1:18090/zoom/v2" in output
    assert "RELINK_GOOGLE_API_BASE=" not in output
