"""The devstack's errors, under relink's root exception.

RelinkError
└── DevstackError           a local part (PostgreSQL, Kafka, ...) failed to start or stop
    ├── ToolMissingError    java / mvn not installed
    ├── PortInUseError      the port we want is taken by someone else
    └── StartTimeoutError   the part did not become ready in time (see its log)
"""

from __future__ import annotations

from services.core.errors import RelinkError


class DevstackError(RelinkError):
    """A devstack part failed; the message names the log file to read."""


class ToolMissingError(DevstackError):
    """A tool the devstack needs (java, mvn) is not installed."""


class PortInUseError(DevstackError):
    """A port the devstack wants is already taken by another process."""


class StartTimeoutError(DevstackError):
    """A part did not become ready within its start timeout."""
