"""Is a schema change compatible within its version? (`schemas/README.md`, the policy)

Within one version (`<type>/vN.json`) a change may only:
- add an optional property (not in `required`);
- change words (`title`, `description`, `examples`, `$comment`, any `x-…` annotation,
  which validators ignore);
- accept more: drop a bound (`minLength`, `maxLength`, `minimum`, `maximum`, `pattern`, `format`),
  widen an `enum`.

Anything else a consumer written against the released schema could trip on,
or a producer could no longer fill, is incompatible: a property removed or
made required, a type changed, an enum narrowed, a bound added or tightened.
Those need a new version (`vN+1.json`), published beside the old one.

The released set is `schemas-released/`, copied from `schemas/` when a version
ships (`python -m devtools.contract.compat --release`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

WORDS = frozenset({"title", "description", "examples", "$comment"})
LOOSENED_BY_REMOVAL = frozenset(
    {"minLength", "maxLength", "minimum", "maximum", "pattern", "format", "minItems", "maxItems"}
)
ROOT = Path(__file__).resolve().parents[2] / "schemas"
RELEASED = ROOT.parent / "schemas-released"


def incompatible(old: dict[str, Any], new: dict[str, Any], path: str = "$") -> list[str]:
    """Every change from `old` to `new` that a consumer or producer of `old` could trip on."""
    problems: list[str] = []
    for key in sorted(set(old) | set(new)):
        if key in WORDS or key.startswith("x-") or key == "properties" or key == "required":
            continue
        here = f"{path}.{key}"
        if key not in new:
            if key not in LOOSENED_BY_REMOVAL and key != "enum":
                problems.append(f"{here} removed")
            continue
        if key not in old:
            if key == "additionalProperties" and new[key] is True:
                continue
            problems.append(f"{here} added")
            continue
        was, now = old[key], new[key]
        if key == "enum":
            narrowed = sorted(set(map(json.dumps, was)) - set(map(json.dumps, now)))
            if narrowed:
                problems.append(f"{here} no longer allows {', '.join(narrowed)}")
        elif key in ("minLength", "minimum", "minItems"):
            if now > was:
                problems.append(f"{here} raised from {was} to {now}")
        elif key in ("maxLength", "maximum", "maxItems"):
            if now < was:
                problems.append(f"{here} lowered from {was} to {now}")
        elif key == "additionalProperties" and was is False and now is True:
            continue
        elif isinstance(was, dict) and isinstance(now, dict):
            problems += incompatible(was, now, here)
        elif was != now:
            problems.append(f"{here} changed from {json.dumps(was)} to {json.dumps(now)}")
    was_required, now_required = set(old.get("required", [])), set(new.get("required", []))
    for name in sorted(now_required - was_required):
        problems.append(f"{path}.required now includes {name!r}")
    old_props, new_props = old.get("properties", {}), new.get("properties", {})
    for name in sorted(set(old_props) | set(new_props)):
        here = f"{path}.properties.{name}"
        if name not in new_props:
            problems.append(f"{here} removed")
        elif name not in old_props:
            if name in now_required:
                problems.append(f"{here} added as required")
        else:
            problems += incompatible(old_props[name], new_props[name], here)
    return problems


def check(schemas: Path = ROOT, released: Path = RELEASED) -> dict[str, list[str]]:
    """Per released schema file: its incompatible changes in `schemas/` (missing counts as one)."""
    report: dict[str, list[str]] = {}
    for old_path in sorted(released.glob("*/v*.json")):
        name = f"{old_path.parent.name}/{old_path.name}"
        new_path = schemas / name
        if not new_path.exists():
            report[name] = ["removed: a released version stays published for its window"]
            continue
        problems = incompatible(json.loads(old_path.read_text()), json.loads(new_path.read_text()))
        if problems:
            report[name] = problems
    return report


def release(schemas: Path = ROOT, released: Path = RELEASED) -> list[str]:
    """Copy every schema version into the released set; the names copied."""
    copied = []
    for path in sorted(schemas.glob("*/v*.json")):
        if path.parent.parent != schemas:
            continue
        target = released / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        copied.append(f"{path.parent.name}/{path.name}")
    return copied


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", action="store_true", help="record schemas/ as released")
    args = parser.parse_args(argv)
    if args.release:
        for name in release():
            print(f"released {name}")
        return 0
    report = check()
    for name, problems in report.items():
        for problem in problems:
            print(f"{name}: {problem}", file=sys.stderr)
    if report:
        print("incompatible within a version: publish a new version instead", file=sys.stderr)
        return 1
    print("every schema is compatible with its released version")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
