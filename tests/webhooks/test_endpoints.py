"""Registering endpoints with `relink webhooks endpoints`: bad input is refused and changes
nothing; secrets are stored encrypted like OAuth tokens, rotate with the token keys, and
are never shown again or logged."""

from __future__ import annotations

import base64
import os
from pathlib import Path

from sqlalchemy import Engine

from services.core.settings import CommonSettings
from services.core.tokens import TokenCipher, generate_key
from tests.notifier.conftest import make_world, produce, switched_event
from tests.webhooks.conftest import (
    Receiver,
    register,
    relink,
    rows,
    start_dispatcher,
    stop,
    wait_for,
    webhooks_env,
)


def test_bad_registrations_are_refused_and_change_nothing(
    engine: Engine, relink_env: dict[str, str]
) -> None:
    env = webhooks_env(relink_env)
    production = {**env, "RELINK_DEV_MODE": "false", "RELINK_TOKEN_KEYS": generate_key("k1")}
    refused = [
        (env, ["--url", "ftp://platform.example/hooks"], "http(s)://"),
        (env, ["--url", "https://user:pw@platform.example/hooks"], "credentials"),
        (env, ["--url", "not a url"], "http(s)://"),
        (production, ["--url", "http://platform.example/hooks"], "https://"),
        (env, ["--url", "https://p.example/h", "--event-type", "session.moved"], "session.moved"),
        (env, ["--url", "https://p.example/h", "--secret", "abc"], "whsec_"),
        (env, ["--url", "https://p.example/h", "--secret", "whsec_!!notbase64"], "base64"),
        (env, ["--url", "https://p.example/h", "--secret", "whsec_" + "QUJD"], "24 to 64 bytes"),
    ]
    for environment, args, says in refused:
        done = relink(environment, "webhooks", "endpoints", "add", *args, check=False)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        assert says in done.stderr and "Traceback" not in done.stderr, (args, done.stderr)
    for command in ("disable", "enable"):
        done = relink(env, "webhooks", "endpoints", command, "we_nosuch", check=False)
        assert done.returncode == 2 and "no webhook endpoint we_nosuch" in done.stderr
    done = relink(env, "webhooks", "replay", "--since", "yesterday", check=False)
    assert done.returncode == 2 and "not an ISO time" in done.stderr
    assert rows(engine, "SELECT id FROM webhook_endpoints") == []


def test_the_secret_is_encrypted_at_rest_and_rotates_with_the_token_keys(
    engine: Engine,
    settings: CommonSettings,
    relink_env: dict[str, str],
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    old, new = generate_key("k-old"), generate_key("k-new")
    env = webhooks_env(relink_env, RELINK_TOKEN_KEYS=old)
    key = os.urandom(32)
    secret = "whsec_" + base64.b64encode(key).decode()
    endpoint = register(env, receiver, "--secret", secret)
    assert receiver.secret == secret
    (stored,) = rows(engine, "SELECT secret_encrypted FROM webhook_endpoints")
    blob = bytes(stored.secret_encrypted)
    assert secret.encode() not in blob and key not in blob
    assert TokenCipher.from_spec(old).key_id_of(blob) == "k-old"
    listed = relink(env, "webhooks", "endpoints", "list").stdout
    assert endpoint in listed and secret not in listed

    # A dispatcher without the key the secret was sealed with refuses to start, naming it.
    lacking = relink({**env, "RELINK_TOKEN_KEYS": new}, "webhooks", check=False)
    assert lacking.returncode == 2 and "'k-old'" in lacking.stderr

    # `relink keys rotate` re-encrypts it; the old key can then go.
    rotated = relink({**env, "RELINK_TOKEN_KEYS": f"{old},{new}"}, "keys", "rotate")
    assert secret not in rotated.stdout + rotated.stderr
    (stored,) = rows(engine, "SELECT secret_encrypted FROM webhook_endpoints")
    assert TokenCipher.from_spec(new).key_id_of(bytes(stored.secret_encrypted)) == "k-new"

    world = make_world(engine, sessions_per_student=[1])
    event = switched_event(world)
    produce(settings, [event])
    log_path = tmp_path / "webhooks.log"
    dispatcher = start_dispatcher({**env, "RELINK_TOKEN_KEYS": new}, log_path)
    try:
        wait_for(lambda: f"msg_{event.id}" in receiver.verified(), what="the signed delivery")
    finally:
        stop(dispatcher)
    text = log_path.read_text()
    assert secret not in text and base64.b64encode(key).decode() not in text
