"""Errors of the inline baseline.

BaselineError
├── StateRejected         unknown, used or expired OAuth state: start again
└── CodeExchangeFailed    the provider refused the code: start again
"""

from __future__ import annotations


class BaselineError(Exception):
    """Base of the baseline's errors; the message is safe to show."""


class StateRejected(BaselineError):
    """The callback's state is not one we issued, was used, or expired."""


class CodeExchangeFailed(BaselineError):
    """The provider did not accept the authorization code."""
