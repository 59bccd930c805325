"""`NotifierSettings`: the notifier's environment variables (documented in README.md)."""

from __future__ import annotations

from pydantic import Field, model_validator

from services.core.settings import DEVSTACK_GATEWAY_PORT, DEVSTACK_SMTP_PORT, CommonSettings


class NotifierSettings(CommonSettings):
    """Where to send mail from and to, how to retry, how to consume."""

    # Prometheus `/metrics` on this port (0 = no endpoint); `relink run` gives each
    # process its own (README "Operating relink").
    metrics_port: int = Field(default=0, ge=0, le=65535, alias="RELINK_NOTIFIER_METRICS_PORT")
    metrics_host: str = Field(default="127.0.0.1", alias="RELINK_NOTIFIER_METRICS_HOST")

    group_id: str = Field(default="relink-notifier", alias="RELINK_NOTIFIER_GROUP_ID")
    # How soon the group hands a dead notifier's partitions to another one.
    session_timeout_s: float = Field(
        default=45.0, ge=6.0, le=300.0, alias="RELINK_NOTIFIER_SESSION_TIMEOUT_S"
    )
    batch_size: int = Field(default=500, ge=1, le=100_000, alias="RELINK_NOTIFIER_BATCH_SIZE")
    poll_timeout_s: float = Field(default=0.5, gt=0, alias="RELINK_NOTIFIER_POLL_TIMEOUT_S")
    # Emails sent per turn of the loop before going back to Kafka, so a big
    # backlog of mail never starves the consumer (max.poll.interval.ms).
    send_burst: int = Field(default=200, ge=1, alias="RELINK_NOTIFIER_SEND_BURST")
    backoff_initial_s: float = Field(default=2.0, gt=0, alias="RELINK_NOTIFIER_BACKOFF_INITIAL_S")
    backoff_max_s: float = Field(default=300.0, gt=0, alias="RELINK_NOTIFIER_BACKOFF_MAX_S")
    gateway_public_url: str = Field(
        default=f"http://127.0.0.1:{DEVSTACK_GATEWAY_PORT}",
        alias="RELINK_NOTIFIER_GATEWAY_PUBLIC_URL",
    )
    message_id_domain: str = Field(
        default="relink.notifier", alias="RELINK_NOTIFIER_MESSAGE_ID_DOMAIN"
    )
    # The students' calendar updates (iTIP REQUEST / CANCEL in each session email).
    # The UID must be the one of the invitation the platform sent, so calendar apps
    # update that event in place: a template over {session_id} and {booking_id} (relink's
    # ids) and {external_id} (the platform's own session id, from the service API;
    # relink's session id for a session the platform gave none).
    ical_enabled: bool = Field(default=True, alias="RELINK_NOTIFIER_ICAL")
    ical_uid_template: str = Field(
        default="{session_id}@relink.invalid", alias="RELINK_NOTIFIER_ICAL_UID_TEMPLATE"
    )

    smtp_host: str = Field(default="127.0.0.1", alias="RELINK_SMTP_HOST")
    smtp_port: int = Field(default=DEVSTACK_SMTP_PORT, ge=1, le=65535, alias="RELINK_SMTP_PORT")
    smtp_from: str = Field(default="relink <no-reply@relink.example>", alias="RELINK_SMTP_FROM")
    smtp_starttls: bool = Field(default=False, alias="RELINK_SMTP_STARTTLS")
    smtp_ssl: bool = Field(default=False, alias="RELINK_SMTP_SSL")
    smtp_username: str = Field(default="", alias="RELINK_SMTP_USERNAME")
    smtp_password: str = Field(default="", alias="RELINK_SMTP_PASSWORD", repr=False)
    smtp_timeout_s: float = Field(default=10.0, gt=0, alias="RELINK_SMTP_TIMEOUT_S")

    @model_validator(mode="after")
    def _one_tls_mode(self) -> NotifierSettings:
        if self.smtp_ssl and self.smtp_starttls:
            raise ValueError("set RELINK_SMTP_SSL or RELINK_SMTP_STARTTLS, not both")
        try:
            uid = self.ical_uid_template.format(session_id="s", booking_id="b", external_id="e")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(
                "RELINK_NOTIFIER_ICAL_UID_TEMPLATE may use {session_id}, {booking_id}"
                " and {external_id} only"
                f" ({exc!r})"
            ) from exc
        if not uid.strip() or any(c in uid for c in "\r\n"):
            raise ValueError("RELINK_NOTIFIER_ICAL_UID_TEMPLATE must give a one-line UID")
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError("RELINK_NOTIFIER_BACKOFF_MAX_S must be >= BACKOFF_INITIAL_S")
        return self
