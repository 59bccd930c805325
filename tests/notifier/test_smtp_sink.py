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


def test_the_inbox_opens_one_message_with_its_text_html_and_attachments() -> None:
    """The per-message view: text part, HTML part and attachments, each over HTTP."""
    invite = b"BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nEND:VCALENDAR\r\n"
    with SmtpSink(http_port=free_port()) as sink:
        for n in (1, 2):
            message = EmailMessage()
            message["From"], message["To"] = "a@x.test", "b@x.test"
            message["Subject"] = f"Your session moved ({n})"
            message["Message-ID"] = f"<m{n}@x.test>"
            message.set_content(f"New link: https://meet.example/{n}\nSee you <then>")
            message.add_alternative(f"<p>New <b>link</b> number {n}</p>", subtype="html")
            message.add_attachment(
                invite, maintype="text", subtype="calendar", filename="session.ics"
            )
            with smtplib.SMTP(sink.host, sink.port) as smtp:
                smtp.send_message(message)
        base = f"http://{sink.host}:{sink.http_port}"
        assert 'href="/messages/2"' in httpx.get(f"{base}/").text
        page = httpx.get(f"{base}/messages/2")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "Your session moved (2)" in page.text
        assert "New link: https://meet.example/2\nSee you &lt;then&gt;" in page.text
        assert '<iframe sandbox src="/messages/2/html"' in page.text
        assert 'href="/messages/2/attachments/1">session.ics</a> (text/calendar' in page.text
        html_part = httpx.get(f"{base}/messages/2/html")
        assert html_part.text.strip() == "<p>New <b>link</b> number 2</p>"
        ics = httpx.get(f"{base}/messages/2/attachments/1")
        assert ics.headers["content-type"] == "text/calendar"
        assert ics.content == invite
        assert 'filename="session.ics"' in ics.headers["content-disposition"]
        one = httpx.get(f"{base}/messages/1.json").json()
        assert one["subject"] == "Your session moved (1)"
        assert one["attachments"] == [
            {"filename": "session.ics", "content_type": "text/calendar", "size": len(invite)}
        ]
        assert "Message-ID: <m1@x.test>" in httpx.get(f"{base}/messages/1/raw").text
        assert httpx.get(f"{base}/messages/3").status_code == 404
        assert httpx.get(f"{base}/messages/1/attachments/2").status_code == 404


def test_the_list_leaves_out_what_a_poller_has_seen() -> None:
    """`/messages.json?since=N`: only the messages after the first N, numbered."""
    with SmtpSink(http_port=free_port()) as sink:
        for n in (1, 2, 3):
            with smtplib.SMTP(sink.host, sink.port) as smtp:
                smtp.sendmail("a@x.test", [f"b{n}@x.test"], f"Subject: n{n}\r\n\r\nx".encode())
        base = f"http://{sink.host}:{sink.http_port}"
        every = httpx.get(f"{base}/messages.json").json()
        assert [m["subject"] for m in every] == ["n1", "n2", "n3"]
        assert [m["number"] for m in every] == [1, 2, 3]
        newer = httpx.get(f"{base}/messages.json", params={"since": 2}).json()
        assert [(m["number"], m["to"]) for m in newer] == [(3, ["b3@x.test"])]
        assert httpx.get(f"{base}/messages.json", params={"since": 9}).json() == []
        assert httpx.get(f"{base}/messages.json", params={"since": "x"}).status_code == 400
