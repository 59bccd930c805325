"""Schemathesis over the served gateway's `/openapi.json`, with and without credentials.

The document promises, for each operation, its security schemes, every status
it answers and each answer's body. A bounded fuzz run (issue 18) holds the
gateway to it through real HTTP: `relink gateway` and `relink provider-sim` as
processes on this test's database, a tutor connected through the real OAuth
round trip, and schemathesis' own CLI (`st run`, installed by `make`). It fails
on any 5xx, any status the document does not list, and any body or content
type that is not the documented one. `make fuzz` runs the same for longer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import Engine, func, insert, select

from devtools.soak.stack import ProcessStack
from services.core.db.engine import make_session_factory
from services.core.db.models import Booking, User
from services.core.settings import CommonSettings
from services.oauth_gateway.adapters.db.platform import SCOPES, PlatformStore
from services.oauth_gateway.adapters.web.auth import issue_token
from services.oauth_gateway.settings import GatewaySettings
from tests.gateway.conftest import consent

CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "response_schema_conformance",
        "content_type_conformance",
    )
)
# Bounded for the suite (about two minutes for both runs); `make fuzz` sets more.
MAX_EXAMPLES = int(os.environ.get("RELINK_FUZZ_MAX_EXAMPLES", "25"))
# A fixed seed keeps the suite's run reproducible; `make fuzz` draws new ones.
SEED = os.environ.get("RELINK_FUZZ_SEED", "20261127")
HOOKS = "tests.gateway.schemathesis_hooks"
# Three bounded runs, each a few hundred requests through real HTTP.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


@pytest.fixture
def served(
    database_url: str, kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> Iterator[ProcessStack]:
    stack = ProcessStack(
        database_url=database_url,
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=topic_prefix,
        workdir=tmp_path / "stack",
        names=("provider-sim", "gateway"),
    )
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()


def _user(engine: Engine, role: str) -> tuple[uuid.UUID, str]:
    uid = uuid.uuid4()
    email = f"fuzz-{role}-{uid.hex[:8]}@example.com"
    with engine.begin() as conn:
        conn.execute(insert(User).values(id=uid, role=role, name=email, email=email))
    return uid, email


async def _connect(gateway: str, cookie: str, provider: str, email: str) -> str | None:
    """The real OAuth round trip through the served gateway; the switch id, if one began."""
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as http:
        started = await http.get(f"/oauth/{provider}/start", headers={"Cookie": cookie})
        assert started.status_code == 302, started.text
        back = urlsplit(await consent(started.headers["location"], email=email))
        done = await http.get(f"{back.path}?{back.query}", headers={"Cookie": cookie})
        assert done.status_code == 303, done.text
    values = parse_qs(urlsplit(done.headers["location"]).query).get("switch")
    return values[0] if values else None


def _schemathesis(
    url: str, *headers: str, ids: dict[str, object], only: str | None = None
) -> subprocess.CompletedProcess[str]:
    command = [
        str(Path(sys.executable).with_name("st")),
        "run",
        f"{url}/openapi.json",
        "--checks",
        CHECKS,
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        SEED,
        "--no-color",
    ]
    for header in headers:
        command += ["-H", header]
    if only:
        command += ["--include-path-regex", only]
    env = {
        **os.environ,
        "SCHEMATHESIS_HOOKS": HOOKS,
        "RELINK_FUZZ_IDS": json.dumps(ids),
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


async def test_schemathesis_finds_no_5xx_and_nothing_undocumented(
    served: ProcessStack, engine: Engine
) -> None:
    secret = GatewaySettings().session_secret.get_secret_value()
    tutor, tutor_email = _user(engine, "tutor")
    student, _ = _user(engine, "student")
    token = issue_token(tutor, role="tutor", secret=secret, ttl_s=3600)
    cookie = f"relink_session={token}"
    # A connected tutor with a switch: bookings reach the provider, and retry
    # and rollback reach their state checks.
    await _connect(served.gateway_url, cookie, "zoom", tutor_email)
    switch = await _connect(served.gateway_url, cookie, "google_meet", tutor_email)
    assert switch is not None
    ids: dict[str, object] = {"student_id": str(student), "switch_ids": [switch]}

    document = httpx.get(f"{served.gateway_url}/openapi.json").json()
    operations = sum(len(methods) for methods in document["paths"].values())
    platform_operations = sum(
        len(methods) for path, methods in document["paths"].items() if path.startswith("/platform/")
    )
    anonymous = _schemathesis(served.gateway_url, ids=ids)
    signed_in = _schemathesis(served.gateway_url, f"Authorization: Bearer {token}", ids=ids)
    # The service API with a platform key of every scope (its own run: other credentials).
    key = (
        PlatformStore(make_session_factory(engine), topics=CommonSettings())
        .create_key("fuzz", SCOPES)
        .secret
    )
    platform = _schemathesis(
        served.gateway_url, f"Authorization: Bearer {key}", ids=ids, only="^/platform/"
    )

    for name, run, tested in (
        ("without credentials", anonymous, operations),
        ("as a tutor", signed_in, operations),
        ("as the platform", platform, platform_operations),
    ):
        assert run.returncode == 0, (
            f"schemathesis {name}:\n{run.stdout[-6000:]}\n{run.stderr[-2000:]}"
        )
        assert f"Tested: {tested}" in run.stdout, run.stdout[-3000:]
    # The hooks steered part of the run past "no such student": bookings were made.
    with engine.connect() as conn:
        booked = conn.scalar(
            select(func.count()).select_from(Booking).where(Booking.tutor_id == tutor)
        )
    assert booked and booked > 0
    served_log = served.log_path("gateway").read_text(errors="replace")
    assert "Traceback" not in served_log, served_log[-4000:]
