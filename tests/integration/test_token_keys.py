"""Token keys against a real PostgreSQL: the start-up check and a rotation that
goes on past rows it cannot re-encrypt (issue #18, outages and key rotation)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, make_url, text

from services.core.db.token_keys import check_token_keys, key_ids_in_use
from services.core.errors import ConfigurationError
from services.core.keys_cli import rotate_tokens
from services.core.settings import CommonSettings
from services.core.tokens import TokenCipher, generate_key
from tests.conftest import TestInfrastructure as Infrastructure


def _tutor(engine: Engine, cipher: TokenCipher, *, bind_to: uuid.UUID | None = None) -> uuid.UUID:
    """A tutor with a Zoom connection whose tokens `cipher` made (bound to `bind_to`'s row)."""
    tutor = uuid.uuid4()
    owner = bind_to or tutor
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO users (id, role, name, email) VALUES (:id, 'tutor', 'T', :email)"),
            {"id": tutor, "email": f"{tutor}@example.test"},
        )
        conn.execute(
            text(
                "INSERT INTO tutor_video_provider_connections (tutor_id, provider, "
                "access_token_encrypted, refresh_token_encrypted) VALUES (:t, 'zoom', :a, :r)"
            ),
            {
                "t": tutor,
                "a": cipher.encrypt(f"tok-a-{tutor}", tutor_id=owner, field="access_token"),
                "r": cipher.encrypt(f"tok-r-{tutor}", tutor_id=owner, field="refresh_token"),
            },
        )
    return tutor


def test_the_check_names_the_key_ids_this_process_lacks(engine: Engine) -> None:
    old, new = generate_key("k-old"), generate_key("k-new")
    _tutor(engine, TokenCipher.from_spec(old))
    _tutor(engine, TokenCipher.from_spec(new))
    assert key_ids_in_use(engine) == {"k-old": 2, "k-new": 2}
    check_token_keys(engine, TokenCipher.from_spec(f"{old},{new}").key_ids, process="test")
    with pytest.raises(ConfigurationError, match=r"'k-old' \(2 ciphertexts\)"):
        check_token_keys(engine, TokenCipher.from_spec(new).key_ids, process="relink migrator")


def test_a_process_without_a_key_in_use_refuses_to_start(
    engine: Engine, relink_env: dict[str, str], settings: CommonSettings
) -> None:
    old, new = generate_key("k-old"), generate_key("k-new")
    _tutor(engine, TokenCipher.from_spec(old))
    for command in ("migrator", "gateway"):
        done = subprocess.run(
            [sys.executable, "-m", "services.cli", command],
            env={**relink_env, "RELINK_TOKEN_KEYS": new},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 2, (command, done.stdout, done.stderr[-2000:])
        assert "configuration error" in done.stderr
        assert "'k-old'" in done.stderr
        assert "Traceback" not in done.stderr


def test_rotation_reports_what_it_cannot_reencrypt_and_does_the_rest(
    engine: Engine, relink_env: dict[str, str]
) -> None:
    old, new = generate_key("k-old"), generate_key("k-new")
    cipher = TokenCipher.from_spec(old)
    good = _tutor(engine, cipher)
    victim = _tutor(engine, cipher)
    misbound = _tutor(engine, cipher, bind_to=victim)  # ciphertexts of another tutor's row
    later = _tutor(engine, cipher)
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "keys", "rotate"],
        env={**relink_env, "RELINK_TOKEN_KEYS": f"{old},{new}"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("could not re-encrypt")]
    assert len(lines) == 2  # access and refresh of the misbound row
    assert all(str(misbound) in line and "'k-old'" in line for line in lines)
    assert "2 ciphertext(s) not re-encrypted" in done.stderr
    assert "tok-" not in done.stderr + done.stdout  # no token in the clear
    both = TokenCipher.from_spec(f"{old},{new}")
    with engine.connect() as conn:
        rows = {
            r.tutor_id: r
            for r in conn.execute(
                text(
                    "SELECT tutor_id, access_token_encrypted, refresh_token_encrypted "
                    "FROM tutor_video_provider_connections"
                )
            )
        }
    for tutor in (good, victim, later):  # the rows after the bad one were done too
        assert both.key_id_of(rows[tutor].access_token_encrypted) == "k-new"
        assert both.key_id_of(rows[tutor].refresh_token_encrypted) == "k-new"
    assert both.key_id_of(rows[misbound].access_token_encrypted) == "k-old"
    # the report object says the same to a caller
    again = rotate_tokens(relink_env["DATABASE_URL"], both)
    assert again.total == 0 and [f.tutor_id for f in again.failed] == [str(misbound)] * 2


def test_a_database_without_relink_tables_is_one_clear_line(
    devstack: Infrastructure, tmp_path: Path
) -> None:
    """Pointed at a reachable database that was never migrated: say so, not a traceback."""
    name = f"bare_{uuid.uuid4().hex[:8]}"
    admin = create_engine(devstack.database_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = make_url(devstack.database_url).set(database=name).render_as_string(hide_password=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELINK_")}
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "gateway"],
        env={**env, "DATABASE_URL": url, "RELINK_DEV_MODE": "true", "RELINK_GATEWAY_PORT": "0"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "has no relink schema" in output and "relink db upgrade" in output
    assert "Traceback" not in output
