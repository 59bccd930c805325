"""The migrator's errors.

RelinkError
└── MigratorError            something the migrator cannot do with an event
    └── UnknownSwitchError   the event names a switch nobody requested (not in switch_requests);
                             it goes to the dead-letter topic (`unknown_switch`)
"""

from __future__ import annotations

from services.core.errors import RelinkError


class MigratorError(RelinkError):
    """Base of the migrator's errors."""


class UnknownSwitchError(MigratorError):
    """An event refers to a switch this database does not know."""

    reason = "unknown_switch"
