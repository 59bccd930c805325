"""Written once: state names in the enums, events in their dataclasses (issue 17).

No quoted state literal anywhere else in the product: a state spelled as a
string in a store module or a use case is a copy that can drift from the
state machine (`services/core/switching.py`, issue 17). SQL
takes states from `sql_state` / `sql_states`; Python compares with the enum
members. The enums themselves, and the migrations (history, frozen as they
were), are the only places a state is spelled.
"""

from __future__ import annotations

import re
from pathlib import Path

from services.core.db.models import MigrationState, NotificationState, SessionStatus, SwitchState

ROOT = Path(__file__).resolve().parents[3] / "services"
ALLOWED = {
    ROOT / "core" / "db" / "models.py",
    # iCalendar's own STATUS vocabulary (RFC 5545 3.8.1.11), not a relink state
    ROOT / "notifier" / "adapters" / "calendar.py",
}
STATES = sorted(
    {
        s.value
        for enum in (SwitchState, MigrationState, SessionStatus, NotificationState)
        for s in enum
    },
    key=len,
    reverse=True,
)
NAMES = "|".join(re.escape(s) for s in STATES)
QUOTED = re.compile(rf"""(["'])({NAMES})\1""")


def offending_lines() -> list[str]:
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        if path in ALLOWED or "migrations" in path.parts:
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            code = line.split("#", 1)[0]
            if QUOTED.search(code):
                found.append(f"{path.relative_to(ROOT.parent)}:{number}: {line.strip()}")
    return found


def test_no_state_is_spelled_outside_the_enums() -> None:
    assert offending_lines() == []


def test_the_check_sees_a_literal() -> None:
    assert QUOTED.search('if switch.state != "ROLLING_BACK":')
    assert QUOTED.search("WHERE state = 'MIGRATED'")
    assert not QUOTED.search("SwitchState.ROLLING_BACK")


def test_every_producer_writes_events_from_their_dataclasses() -> None:
    """Events leave as `core.messages` dataclasses (`message_row`), never a hand-built dict:
    the fields and types are the dataclass's, and its schema checks the payload."""
    raw = re.compile(r"\boutbox_rows?\(")
    found = [
        f"{path.relative_to(ROOT.parent)}:{number}"
        for path in sorted(ROOT.rglob("*.py"))
        if path.parent != ROOT / "core"
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if raw.search(line.split("#", 1)[0])
    ]
    assert found == []
