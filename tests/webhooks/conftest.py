"""A real HTTP receiver on loopback that verifies signatures with the Standard Webhooks
reference library, endpoints registered with the real CLI, and `relink webhooks` run as a
real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import Engine, text
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

# What the receiver does with one request: answer this status, after this many seconds.
Plan = Callable[[str, int], tuple[int, float]]  # (webhook-id, nth time this id came) -> ...


@dataclass
class Received:
    message_id: str
    headers: dict[str, str]
    body: bytes
    payload: dict[str, Any] | None  # None: the signature did not verify
    status: int


@dataclass
class Receiver:
    """Collects every request; verifies each with `standardwebhooks` (400 if it fails)."""

    secret: str = ""
    plan: Plan = lambda _id, _n: (200, 0.0)
    requests: list[Received] = field(default_factory=list)
    in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def verified(self) -> dict[str, dict[str, Any]]:
        """Message id -> payload of every request that verified and was answered 2xx."""
        with self.lock:
            return {
                r.message_id: r.payload
                for r in self.requests
                if r.payload is not None and 200 <= r.status < 300
            }

    def count(self, message_id: str) -> int:
        with self.lock:
            return sum(1 for r in self.requests if r.message_id == message_id)

    def all(self) -> list[Received]:
        with self.lock:
            return list(self.requests)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            message_id = headers.get("webhook-id", "")
            try:
                payload = Webhook(state.secret).verify(body, headers)
            except WebhookVerificationError:
                payload = None
            with state.lock:
                nth = sum(1 for r in state.requests if r.message_id == message_id) + 1
                state.in_flight += 1
            status, delay = (400, 0.0) if payload is None else state.plan(message_id, nth)
            try:
                time.sleep(delay)
                with state.lock:
                    state.requests.append(Received(message_id, headers, body, payload, status))
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                with state.lock:
                    state.in_flight -= 1

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/relink"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()


def webhooks_env(relink_env: dict[str, str], **overrides: str) -> dict[str, str]:
    """Environment of `relink webhooks` on this test's database and topics, retrying fast."""
    return {
        **relink_env,
        "PYTHONUNBUFFERED": "1",
        "RELINK_WEBHOOKS_GROUP_ID": f"webhooks-{uuid.uuid4().hex[:8]}",
        "RELINK_WEBHOOKS_POLL_TIMEOUT_S": "0.2",
        "RELINK_WEBHOOKS_SESSION_TIMEOUT_S": "6",
        "RELINK_WEBHOOKS_RETRY_SCHEDULE_S": "0.2,0.4,0.8,1,1,1,1,1",
        "RELINK_WEBHOOKS_TIMEOUT_S": "2",
        **overrides,
    }


def relink(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run a `relink` command to completion."""
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=os.getcwd(),
    )
    if check:
        assert done.returncode == 0, done.stderr
    return done


def register(env: dict[str, str], receiver: Receiver, *args: str) -> str:
    """`relink webhooks endpoints add`; the receiver takes the printed secret. The id."""
    done = relink(env, "webhooks", "endpoints", "add", "--url", receiver.url, *args)
    endpoint_id, secret = done.stdout.split()
    assert secret.startswith("whsec_")
    assert secret not in done.stderr
    receiver.secret = secret
    return endpoint_id


def start_dispatcher(env: dict[str, str], log_path: Any) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "services.cli", "webhooks"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=os.getcwd(),
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def wait_for(condition: Callable[[], Any], *, timeout: float = 90.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what or condition}")


def rows(engine: Engine, sql: str, **params: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(sql), params))


def payload_of(body: bytes) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(body)
    return loaded
