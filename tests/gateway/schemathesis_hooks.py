"""Schemathesis hooks for the gateway's fuzz run: reach the code behind the 404s.

Random UUIDs name no student and no switch, so every booking and every retry
or rollback would stop at "not found". With these hooks about half of the
generated requests name the real ones the test made (passed in
`RELINK_FUZZ_IDS` as JSON), so the fuzzer also reaches the provider call,
the state checks and the 409s. Loaded by `SCHEMATHESIS_HOOKS`.
"""

from __future__ import annotations

import json
import os
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

import schemathesis

IDS: dict[str, Any] = json.loads(os.environ.get("RELINK_FUZZ_IDS", "{}"))


def _half(value: object) -> bool:
    """A stable coin: the same generated value always lands the same way."""
    return zlib.crc32(repr(value).encode()) % 2 == 0


def _pick(choices: list[str], value: object) -> str:
    return choices[zlib.crc32(repr(value).encode()) % len(choices)]


@schemathesis.hook
def map_body(context: Any, body: Any) -> Any:
    if isinstance(body, dict) and "student_id" in body and IDS.get("student_id") and _half(body):
        # A booking the gateway can accept, but for its generated topic and
        # duration: it reaches the provider (and the database step after it).
        body["student_id"] = IDS["student_id"]
        body["scheduled_start_at"] = (datetime.now(UTC) + timedelta(days=3)).isoformat()
        body["timezone"] = "Europe/Paris"
    return body


@schemathesis.hook
def map_path_parameters(context: Any, path_parameters: Any) -> Any:
    if not isinstance(path_parameters, dict) or not _half(path_parameters):
        return path_parameters
    switches = IDS.get("switch_ids") or []
    if "switch_id" in path_parameters and switches:
        path_parameters["switch_id"] = _pick(switches, path_parameters)
    if "provider" in path_parameters:
        path_parameters["provider"] = _pick(["zoom", "google_meet"], path_parameters)
    return path_parameters
