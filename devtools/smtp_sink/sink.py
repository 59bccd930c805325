"""The SMTP sink: a real SMTP server on loopback that keeps what it receives.

Mail is kept in memory and, when a folder is given, written as `.eml` files
there. A tiny HTTP inbox lets a person and the tests read what arrived:

* `/`: the list, newest first, each subject linking to its message;
* `/messages/<n>`: message n (1 = the first received): its headers, its text
  part, its HTML part (rendered in a sandboxed frame) and its attachments;
* `/messages/<n>/html`: the HTML part alone; `/messages/<n>/raw`: the `.eml`;
  `/messages/<n>/attachments/<k>`: attachment k (1-based) with its own type;
* `/messages.json` (the list as JSON, oldest first; `?since=N` leaves out the
  first N, so a poller reads only what is new), `/messages/<n>.json` (one
  message, with its attachments' names, types and sizes); `DELETE /messages`
  empties it. Each message is parsed once, when it arrives: listing it again
  costs a copy, not a parse (the e2e bench polls the list every 50 ms).

For fault tests the sink can refuse recipients permanently (550) and slow
down each RCPT, so a client can be killed in the middle of a send. Stopping
and starting it again on the same port stands for "the mail server was down".
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import html
import json
import re
import socket
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

DEFAULT_SMTP_PORT = 10025
DEFAULT_HTTP_PORT = 18025


@dataclass(frozen=True, slots=True)
class ReceivedMail:
    """One message as the sink received it, per envelope recipient."""

    mail_from: str
    rcpt_to: tuple[str, ...]
    raw: bytes
    received_at: datetime

    @property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed

    @property
    def message_id(self) -> str:
        # a long Message-ID is folded onto its own line: unfold it
        return str(self.message.get("Message-ID", "")).strip()

    @property
    def subject(self) -> str:
        return str(self.message.get("Subject", ""))

    def body(self, subtype: str = "plain") -> str:
        """The text (or `html`) part's content, with the wire's CRLF line ends as newlines."""
        part = self.message.get_body(preferencelist=(subtype,))
        return "" if part is None else str(part.get_content()).replace("\r\n", "\n")

    def attachments(self) -> list[Attachment]:
        """Every attachment (and every inline part that is neither the text nor the
        HTML body, such as a calendar update), in the order they appear."""
        message = self.message
        bodies = {id(p) for p in (message.get_body(("plain",)), message.get_body(("html",))) if p}
        found: list[Attachment] = []
        for part in message.walk():
            if part.is_multipart() or id(part) in bodies:
                continue
            payload = part.get_payload(decode=True)
            found.append(
                Attachment(
                    filename=part.get_filename() or f"part-{len(found) + 1}",
                    content_type=part.get_content_type(),
                    data=payload if isinstance(payload, bytes) else b"",
                )
            )
        return found

    def detail(self, number: int) -> dict[str, Any]:
        return {
            **self.summary(),
            "number": number,
            "html": self.body("html"),
            "headers": [(k, str(v)) for k, v in self.message.items()],
            "attachments": [
                {"filename": a.filename, "content_type": a.content_type, "size": len(a.data)}
                for a in self.attachments()
            ],
        }

    def summary(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "from": self.mail_from,
            "to": list(self.rcpt_to),
            "subject": self.subject,
            "received_at": self.received_at.isoformat(),
            "text": self.body("plain"),
        }


@dataclass(frozen=True, slots=True)
class Attachment:
    """One attachment of a received message."""

    filename: str
    content_type: str
    data: bytes


@dataclass
class SinkFaults:
    """What the sink does wrong on purpose (tests only)."""

    reject_recipients: set[str] = field(default_factory=set)
    rcpt_delay_s: float = 0.0


class _Handler:
    """aiosmtpd handler: accept (or refuse) recipients and keep each message."""

    def __init__(self, sink: SmtpSink) -> None:
        self._sink = sink

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        faults = self._sink.faults
        if faults.rcpt_delay_s:
            await asyncio.sleep(faults.rcpt_delay_s)
        if address.lower() in faults.reject_recipients:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        self._sink.keep(
            ReceivedMail(
                mail_from=envelope.mail_from or "",
                rcpt_to=tuple(envelope.rcpt_tos),
                raw=raw if isinstance(raw, bytes) else raw.encode(),
                received_at=datetime.now(UTC),
            )
        )
        return "250 Message accepted for delivery"


class SmtpSink:
    """An SMTP server (and optional HTTP inbox) that keeps every message it accepts."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        folder: Path | None = None,
        http_port: int | None = None,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.folder = folder
        self.http_port = http_port
        self.faults = SinkFaults()
        self._mails: list[ReceivedMail] = []
        self._summaries: list[dict[str, Any]] = []  # parsed once, as each arrives
        self._lock = threading.Lock()
        self._controller: Controller | None = None
        self._http: ThreadingHTTPServer | None = None

    def start(self) -> SmtpSink:
        """Listen for SMTP (and HTTP, if a port was given)."""
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
        self._controller = Controller(_Handler(self), hostname=self.host, port=self.port)
        self._controller.start()
        if self.http_port is not None and self._http is None:
            self._http = _serve_inbox(self, host=self.host, port=self.http_port)
        return self

    def stop(self) -> None:
        """Stop listening for SMTP (the HTTP inbox stays up until `close`)."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def close(self) -> None:
        self.stop()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.close()

    def keep(self, mail: ReceivedMail) -> None:
        summary = mail.summary()
        with self._lock:
            self._mails.append(mail)
            index = len(self._mails)
            self._summaries.append({**summary, "number": index})
        if self.folder is not None:
            stamp = mail.received_at.strftime("%Y%m%dT%H%M%S%f")
            name = re.sub(r"[^A-Za-z0-9._-]", "_", mail.message_id)[:80]
            (self.folder / f"{stamp}-{index:06d}-{name}.eml").write_bytes(mail.raw)

    def mails(self) -> list[ReceivedMail]:
        with self._lock:
            return list(self._mails)

    def summaries(self, since: int = 0) -> list[dict[str, Any]]:
        """The list the inbox serves, oldest first, after the first `since`."""
        with self._lock:
            return self._summaries[max(since, 0) :]

    def clear(self) -> None:
        with self._lock:
            self._mails.clear()
            self._summaries.clear()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (aiosmtpd cannot bind port 0)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def _serve_inbox(sink: SmtpSink, *, host: str, port: int) -> ThreadingHTTPServer:
    class Inbox(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path.startswith("/messages.json"):
                query = parse_qs(self.path.split("?", 1)[1] if "?" in self.path else "")
                since = query.get("since", ["0"])[0]
                if not since.isdigit():
                    self._reply(400, "text/plain", b"since must be a whole number")
                    return
                mails = sink.summaries(int(since))
                self._reply(200, "application/json", json.dumps(mails).encode())
            elif path in ("/", "/index.html"):
                mails = sink.summaries()
                self._reply(200, "text/html; charset=utf-8", _inbox_page(mails).encode())
            elif (one := _MESSAGE_PATH.fullmatch(path)) is not None:
                self._message(int(one["n"]), one["rest"] or "")
            else:
                self._reply(404, "text/plain", b"not found")

        def _message(self, number: int, rest: str) -> None:
            mails = sink.mails()
            if not 1 <= number <= len(mails):
                self._reply(404, "text/plain", f"no message {number}".encode())
                return
            mail = mails[number - 1]
            if rest == "":
                page = _message_page(mail.detail(number))
                self._reply(200, "text/html; charset=utf-8", page.encode())
            elif rest == ".json":
                self._reply(200, "application/json", json.dumps(mail.detail(number)).encode())
            elif rest == "/html":
                # served on its own so the page's sandboxed frame shows it as a mail client
                # would; the sandbox (no scripts, no same origin) keeps it inert
                self._reply(200, "text/html; charset=utf-8", mail.body("html").encode())
            elif rest == "/raw":
                self._reply(200, "message/rfc822", mail.raw)
            elif (att := re.fullmatch(r"/attachments/(\d+)", rest)) is not None:
                attachments = mail.attachments()
                k = int(att[1])
                if not 1 <= k <= len(attachments):
                    self._reply(404, "text/plain", f"no attachment {k}".encode())
                    return
                found = attachments[k - 1]
                self._reply(
                    200,
                    found.content_type,
                    found.data,
                    disposition=f'inline; filename="{_header_safe(found.filename)}"',
                )
            else:
                self._reply(404, "text/plain", b"not found")

        def do_DELETE(self) -> None:
            sink.clear()
            self._reply(204, "text/plain", b"")

        def _reply(
            self, status: int, content_type: str, body: bytes, *, disposition: str | None = None
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            if disposition is not None:
                self.send_header("Content-Disposition", disposition)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            return  # keep the console for the SMTP side

    server = ThreadingHTTPServer((host, port), Inbox)
    threading.Thread(target=server.serve_forever, name="smtp-sink-http", daemon=True).start()
    return server


_MESSAGE_PATH = re.compile(r"/messages/(?P<n>\d+)(?P<rest>\.json|/html|/raw|/attachments/\d+)?")


def _header_safe(value: str) -> str:
    return re.sub(r"[^A-Za-z0-9._ -]", "_", value)


_STYLE = (
    "<style>body{font-family:sans-serif}td,th{vertical-align:top;border-top:1px solid #ccc;"
    "padding:4px;text-align:left}pre{white-space:pre-wrap;margin:0}"
    "iframe{width:100%;height:32em;border:1px solid #ccc}</style>"
)


def _inbox_page(mails: list[dict[str, Any]]) -> str:
    rows = "".join(
        '<tr><td>{}</td><td>{}</td><td><a href="/messages/{}">{}</a></td><td><pre>{}</pre></td>'
        "</tr>".format(
            html.escape(m["received_at"]),
            html.escape(", ".join(m["to"])),
            number,
            html.escape(m["subject"] or "(no subject)"),
            html.escape(m["text"]),
        )
        for number, m in reversed(list(enumerate(mails, start=1)))
    )
    return (
        "<!doctype html><meta charset=utf-8><title>relink mail inbox</title>"
        f"{_STYLE}<h1>relink mail inbox ({len(mails)})</h1>"
        "<table><tr><th>received</th><th>to</th><th>subject</th><th>text</th></tr>"
        f"{rows}</table>"
    )


def _message_page(detail: dict[str, Any]) -> str:
    """One message: headers, the text part, the HTML part in a sandboxed frame, attachments."""
    number = detail["number"]
    headers = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in detail["headers"]
    )
    attachments = "".join(
        '<li><a href="/messages/{n}/attachments/{k}">{name}</a> ({type}, {size} bytes)</li>'.format(
            n=number,
            k=k,
            name=html.escape(a["filename"]),
            type=html.escape(a["content_type"]),
            size=a["size"],
        )
        for k, a in enumerate(detail["attachments"], start=1)
    )
    html_part = (
        f'<iframe sandbox src="/messages/{number}/html" title="HTML part"></iframe>'
        if detail["html"]
        else "<p>(no HTML part)</p>"
    )
    return (
        "<!doctype html><meta charset=utf-8>"
        f"<title>{html.escape(detail['subject'])} - relink mail inbox</title>{_STYLE}"
        f'<p><a href="/">inbox</a> · <a href="/messages/{number}/raw">.eml</a></p>'
        f"<h1>{html.escape(detail['subject'] or '(no subject)')}</h1>"
        f"<table>{headers}</table>"
        f"<h2>Text part</h2><pre>{html.escape(detail['text']) or '(no text part)'}</pre>"
        f"<h2>HTML part</h2>{html_part}"
        f"<h2>Attachments ({len(detail['attachments'])})</h2>"
        f"<ul>{attachments or '<li>none</li>'}</ul>"
    )
