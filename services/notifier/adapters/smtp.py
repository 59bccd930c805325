"""The SMTP adapter: hand a message to the server, translate smtplib's errors.

One connection is kept open between messages (a new TCP + EHLO per email
would halve the throughput) and dropped on any error.
"""

from __future__ import annotations

import contextlib
import smtplib
import ssl
from email.message import EmailMessage
from typing import Protocol

from services.notifier.errors import PermanentMailError, TransientMailError
from services.notifier.settings import NotifierSettings


class Mailer(Protocol):
    """What the notifier needs from a mail transport."""

    def send(self, message: EmailMessage, *, recipient: str) -> None: ...
    def close(self) -> None: ...


class SmtpMailer:
    """Sends over SMTP (optionally SSL or STARTTLS, optionally authenticated)."""

    def __init__(self, settings: NotifierSettings) -> None:
        self._settings = settings
        self._smtp: smtplib.SMTP | None = None

    def send(self, message: EmailMessage, *, recipient: str) -> None:
        """Deliver to one recipient; raise TransientMailError or PermanentMailError."""
        try:
            smtp = self._connection()
            refused = smtp.send_message(message, to_addrs=[recipient])
        except smtplib.SMTPRecipientsRefused as exc:
            self._reset()
            raise _classify(exc.recipients.get(recipient, (450, b"refused"))) from exc
        except (smtplib.SMTPDataError, smtplib.SMTPSenderRefused) as exc:
            self._reset()
            # A refused sender is our configuration, not this email's fault:
            # retry it rather than mark every email as undeliverable.
            code = exc.smtp_code if isinstance(exc, smtplib.SMTPDataError) else 451
            raise _classify((code, exc.smtp_error)) from exc
        except (smtplib.SMTPException, OSError) as exc:
            self._reset()
            raise TransientMailError(
                f"SMTP server unavailable: {type(exc).__name__}: {exc}"
            ) from exc
        if refused:
            raise _classify(refused.get(recipient, (450, b"refused")))

    def close(self) -> None:
        if self._smtp is not None:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                self._smtp.quit()
        self._smtp = None

    def _connection(self) -> smtplib.SMTP:
        if self._smtp is not None:
            return self._smtp
        s = self._settings
        smtp: smtplib.SMTP
        if s.smtp_ssl:
            smtp = smtplib.SMTP_SSL(
                s.smtp_host,
                s.smtp_port,
                timeout=s.smtp_timeout_s,
                context=ssl.create_default_context(),
            )
        else:
            smtp = smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=s.smtp_timeout_s)
            if s.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context())
        if s.smtp_username:
            smtp.login(s.smtp_username, s.smtp_password)
        self._smtp = smtp
        return smtp

    def _reset(self) -> None:
        if self._smtp is not None:
            with contextlib.suppress(OSError):
                self._smtp.close()
        self._smtp = None


def _classify(answer: tuple[int, bytes | str]) -> TransientMailError | PermanentMailError:
    code, text = answer
    detail = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    if 500 <= code < 600:
        return PermanentMailError(f"{code} {detail}")
    return TransientMailError(f"{code} {detail}")
