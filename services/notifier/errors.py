"""The notifier's errors.

RelinkError
└── NotifierError              something in the notifier went wrong
    ├── MailError              an email could not be handed to the SMTP server
    │   ├── TransientMailError retry later with backoff (server down, 4xx, timeout)
    │   └── PermanentMailError give up and record it (5xx for this recipient/message)
    ├── DeadLetterError        the dead-letter topic did not acknowledge; the batch is not committed
    └── ReplayError            audit replay could not read the topics
"""

from __future__ import annotations

from services.core.errors import RelinkError


class NotifierError(RelinkError):
    """Base of the notifier's errors."""


class MailError(NotifierError):
    """An email could not be handed over to the SMTP server."""


class TransientMailError(MailError):
    """Try again later: the server is unreachable, busy (4xx) or timed out."""


class PermanentMailError(MailError):
    """The server refused this message or recipient for good (5xx): do not retry."""


class DeadLetterError(NotifierError):
    """The dead-letter topic did not acknowledge; the batch is not committed."""


class ReplayError(NotifierError):
    """The topics could not be read for an audit replay or verification."""
