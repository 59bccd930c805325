"""The local SMTP sink: a real SMTP exchange in, the HTTP inbox and .eml files out."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage
from pathlib import Path

import httpx
import pytest

from devtools.smtp_sink.sink import SmtpSink, free_port


def test_sink_keeps_mail_and_shows_it_at_the_inbox(tmp_path: Path) -> None:
    with SmtpSink(folder=tmp_path, http_port=free_port()) as sink:
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = "a@x.test", "b@x.test", "Hello"
        message["Message-ID"] = "<one@x.test>"
        message.set_content("see you on Google Meet")
        with smtplib.SMTP(sink.host, sink.port) as smtp:
            smtp.send_message(message)
        base = f"http://{sink.host}:{sink.http_port}"
        (listed,) = httpx.get(f"{base}/messages.json").json()
        assert listed["to"] == ["b@x.test"] and listed["subject"] == "Hello"
        assert "see you on Google Meet" in listed["text"]
        assert "Hello" in httpx.get(f"{base}/").text
        assert len(list(tmp_path.glob("*.eml"))) == 1
        assert httpx.delete(f"{base}/messages").status_code == 204
        assert sink.mails() == []


def test_sink_refuses_a_bounced_recipient_with_550() -> None:
    with SmtpSink() as sink:
        sink.faults.reject_recipients.add("gone@x.test")
        with (
            smtplib.SMTP(sink.host, sink.port) as smtp,
            pytest.raises(smtplib.SMTPRecipientsRefused) as refused,
        ):
            smtp.sendmail("a@x.test", ["gone@x.test"], b"Subject: x\r\n\r\nx")
        assert refused.value.recipients["gone@x.test"][0] == 550
