"""The import contracts stay whole as modules are added (import-linter cannot say `_*`)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_private_provider_module_is_in_the_privacy_contract() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (contract,) = [
        c
        for c in config["tool"]["importlinter"]["contracts"]
        if c["name"].startswith("Only services.providers imports its private modules")
    ]
    private = {
        f"services.providers.{p.stem}"
        for p in (ROOT / "services" / "providers").glob("_*.py")
        if p.stem != "__init__"
    }
    assert set(contract["forbidden_modules"]) == private
