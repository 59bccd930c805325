"""The event contract evolves compatibly within a version (issue 20; `schemas/README.md`).

Every schema in `schemas/` is compared with the set last released
(`schemas-released/`); and the checker itself is shown each kind of change.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from devtools.contract.compat import RELEASED, ROOT, check, incompatible, release


def test_every_schema_is_compatible_with_its_released_version() -> None:
    assert sorted(RELEASED.glob("*/v*.json")), "schemas/released/ is empty"
    assert check() == {}


BASE: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["switch_id", "reason"],
    "properties": {
        "switch_id": {"type": "string", "format": "uuid"},
        "reason": {"type": "string", "enum": ["daily_quota", "usage_limits"]},
        "note": {"type": "string", "maxLength": 100, "description": "words"},
    },
}


def changed(edit: Any) -> dict[str, Any]:
    schema = copy.deepcopy(BASE)
    edit(schema)
    return schema


@pytest.mark.parametrize(
    "edit",
    [
        lambda s: s["properties"].update(extra={"type": "integer"}),  # an optional field
        lambda s: s["properties"]["note"].update(description="other words"),
        lambda s: s["properties"]["reason"]["enum"].append("new_reason"),
        lambda s: s["properties"]["note"].update(maxLength=200),
        lambda s: s["properties"]["note"].pop("maxLength"),
        lambda s: s["properties"]["note"].update({"x-enum": ["a", "b"]}),
    ],
    ids=[
        "optional field added",
        "words",
        "enum widened",
        "bound loosened",
        "bound dropped",
        "x- annotation",
    ],
)
def test_compatible_changes_pass(edit: Any) -> None:
    assert incompatible(BASE, changed(edit)) == []


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda s: s["properties"].pop("note"), "$.properties.note removed"),
        (lambda s: s["required"].append("note"), "$.required now includes 'note'"),
        (
            lambda s: s["properties"]["note"].update(type="integer"),
            '$.properties.note.type changed from "string" to "integer"',
        ),
        (
            lambda s: s["properties"]["reason"]["enum"].remove("usage_limits"),
            '$.properties.reason.enum no longer allows "usage_limits"',
        ),
        (
            lambda s: s["properties"]["note"].update(maxLength=10),
            "$.properties.note.maxLength lowered from 100 to 10",
        ),
        (
            lambda s: (
                s["properties"].update(extra={"type": "string"}),
                s["required"].append("extra"),
            ),
            "$.properties.extra added as required",
        ),
    ],
    ids=[
        "field removed",
        "made required",
        "type changed",
        "enum narrowed",
        "bound tightened",
        "required field added",
    ],
)
def test_incompatible_changes_are_named(edit: Any, expected: str) -> None:
    assert expected in incompatible(BASE, changed(edit))


def test_a_released_version_that_disappears_is_incompatible(tmp_path: Path) -> None:
    schemas, released = tmp_path / "schemas", tmp_path / "released"
    (schemas / "thing.happened").mkdir(parents=True)
    (schemas / "thing.happened" / "v1.json").write_text(json.dumps(BASE))
    assert release(schemas, released) == ["thing.happened/v1.json"]
    assert check(schemas, released) == {}
    (schemas / "thing.happened" / "v1.json").unlink()
    assert "thing.happened/v1.json" in check(schemas, released)


def test_the_released_set_is_the_repositorys() -> None:
    assert RELEASED.parent == ROOT.parent and RELEASED.name == "schemas-released"
