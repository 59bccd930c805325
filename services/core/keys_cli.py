"""`relink keys generate` and `relink keys rotate`: token encryption keys.

Rotation: put a new key LAST in RELINK_TOKEN_KEYS (old keys still listed),
run `relink keys rotate` to re-encrypt every stored token under it, then
drop the old keys from RELINK_TOKEN_KEYS. Rotating is idempotent and safe
while the gateway runs: each row is locked while it is re-encrypted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import typer

keys_app = typer.Typer(help="Token encryption keys (RELINK_TOKEN_KEYS).", no_args_is_help=True)

# (table, key column, tutor column, [(column, field the ciphertext is bound to)])
TOKEN_COLUMNS: list[tuple[str, str, str, list[tuple[str, str]]]] = [
    (
        "tutor_video_provider_connections",
        "id",
        "tutor_id",
        [
            ("access_token_encrypted", "access_token"),
            ("refresh_token_encrypted", "refresh_token"),
            ("previous_access_token_encrypted", "previous_access_token"),
            ("previous_refresh_token_encrypted", "previous_refresh_token"),
        ],
    ),
    ("oauth_states", "state", "tutor_id", [("code_verifier_encrypted", "code_verifier")]),
    # webhook secrets are bound to their endpoint's id (services/webhooks/domain.py)
    ("webhook_endpoints", "id", "id", [("secret_encrypted", "webhook_secret")]),
]
BATCH = 500


@dataclass(frozen=True)
class Unrotated:
    """A ciphertext that could not be re-encrypted: where it is and which key made it."""

    table: str
    column: str
    tutor_id: str
    key_id: str
    why: str


@dataclass
class RotationReport:
    """How many ciphertexts were re-encrypted, per table, how many were already current,
    and each one that could not be (the rotation goes on past them)."""

    rotated: dict[str, int] = field(default_factory=dict)
    current: int = 0
    failed: list[Unrotated] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.rotated.values())


def rotate_tokens(database_url: str, cipher: Any) -> RotationReport:
    """Re-encrypt every token not made by the cipher's newest key, in batches of locked rows."""
    from sqlalchemy import text

    from services.core.db.engine import make_engine

    engine = make_engine(database_url, pool_size=1)
    report = RotationReport()
    try:
        for table, key, tutor, columns in TOKEN_COLUMNS:
            names = ", ".join(c for c, _ in columns)
            last: Any = None
            report.rotated[table] = 0
            while True:
                with engine.begin() as conn:
                    after = "" if last is None else f"WHERE {key} > :last"
                    rows = conn.execute(
                        text(
                            f"SELECT {key}, {tutor}, {names} FROM {table} {after} "
                            f"ORDER BY {key} LIMIT {BATCH} FOR UPDATE"
                        ),
                        {"last": last},
                    ).all()
                    if not rows:
                        break
                    for row in rows:
                        changes = _reencrypt(row, table, columns, cipher=cipher, report=report)
                        if changes:
                            sets = ", ".join(f"{c} = :{c}" for c in changes)
                            conn.execute(
                                text(f"UPDATE {table} SET {sets} WHERE {key} = :key"),
                                {**changes, "key": row[0]},
                            )
                            report.rotated[table] += len(changes)
                    last = rows[-1][0]
    finally:
        engine.dispose()
    return report


def _reencrypt(
    row: Any, table: str, columns: list[tuple[str, str]], *, cipher: Any, report: RotationReport
) -> dict[str, bytes]:
    from services.core.tokens import TokenDecryptError

    changes: dict[str, bytes] = {}
    tutor_id = row[1]
    for index, (column, bound_field) in enumerate(columns, start=2):
        blob = row[index]
        if blob is None:
            continue
        try:
            fresh = cipher.reencrypt(bytes(blob), tutor_id=tutor_id, field=bound_field)
        except TokenDecryptError as exc:
            try:
                key_id = cipher.key_id_of(bytes(blob))
            except TokenDecryptError:
                key_id = "(unreadable)"
            report.failed.append(Unrotated(table, column, str(tutor_id), key_id, str(exc)))
            continue
        if fresh is None:
            report.current += 1
        else:
            changes[column] = fresh
    return changes


@keys_app.command("generate")
def generate(key_id: str = typer.Option(None, "--id", help="key id (default: k<date>)")) -> None:
    """Print a fresh `<id>:<base64 key>` entry to append to RELINK_TOKEN_KEYS."""
    from datetime import UTC, datetime

    from services.core.tokens import generate_key

    typer.echo(generate_key(key_id or f"k{datetime.now(UTC):%Y%m%d%H%M%S}"))


@keys_app.command("rotate")
def rotate() -> None:
    """Re-encrypt every stored token under the newest key of RELINK_TOKEN_KEYS."""
    from services.core.settings import CommonSettings

    settings = CommonSettings()
    cipher = settings.token_cipher()
    report = rotate_tokens(settings.sync_database_url, cipher)
    for table, count in report.rotated.items():
        typer.echo(f"{table:36} {count} re-encrypted")
    if report.failed:
        for miss in report.failed:
            typer.echo(
                f"could not re-encrypt {miss.table}.{miss.column} of tutor {miss.tutor_id} "
                f"(key {miss.key_id!r}): {miss.why}",
                err=True,
            )
        typer.echo(
            f"{len(report.failed)} ciphertext(s) not re-encrypted (listed above); the others "
            f"are under key {cipher.current_key_id!r}. Keep the old keys until these rows are "
            "repaired (the tutor reconnects) or removed, then run `relink keys rotate` again.",
            err=True,
        )
        raise typer.Exit(1)
    typer.echo(
        f"all tokens now under key {cipher.current_key_id!r} "
        f"({report.current} already were); older keys can be removed"
    )
