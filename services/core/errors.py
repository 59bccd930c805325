"""Root of relink's exceptions.

RelinkError
├── ConfigurationError      settings are missing or unsafe; fix the environment
└── DevstackError           (the workshop's: devtools.devstack.errors)
"""

from __future__ import annotations


class RelinkError(Exception):
    """Base of every error relink raises on purpose."""


class ConfigurationError(RelinkError):
    """Settings are missing, malformed or unsafe outside dev mode."""
