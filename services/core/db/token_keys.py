"""Which token keys the stored ciphertexts were made with, and whether we hold them all.

A key rotation is deployed in steps (see `relink keys rotate`); a process
started without a key id that stored rows still use would fail only at the
first such row, minutes or days later, as a per-tutor error. Each process
that reads tokens (gateway, migrator, webhooks) calls `check_token_keys` at start
instead, and refuses to start naming the missing key ids.

The ciphertext layout is `core.tokens`': b"rl1", one length byte, the key id,
then nonce and sealed bytes; the key id is read in SQL so the check is one
query, not a decryption per row.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Engine, text

from services.core.db.errors import StoreUnavailable
from services.core.errors import ConfigurationError
from services.core.logs import get_logger
from services.core.tokens import MAGIC

log = get_logger(__name__)

# (table, ciphertext columns): every column a process may decrypt.
TOKEN_COLUMNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "tutor_video_provider_connections",
        (
            "access_token_encrypted",
            "refresh_token_encrypted",
            "previous_access_token_encrypted",
            "previous_refresh_token_encrypted",
        ),
    ),
    ("oauth_states", ("code_verifier_encrypted",)),
    ("webhook_endpoints", ("secret_encrypted",)),
)


def _key_id_sql(column: str) -> str:
    # bytea is 1-based for substring, 0-based for get_byte; byte len(MAGIC) is the id's length.
    n = len(MAGIC)
    return (
        f"CASE WHEN substring({column} from 1 for {n}) = '\\x{MAGIC.hex()}'::bytea "
        f"THEN convert_from(substring({column} from {n + 2} for get_byte({column}, {n})), "
        "'UTF8') ELSE '(not a relink ciphertext)' END"
    )


def key_ids_in_use(engine: Engine) -> dict[str, int]:
    """Every key id found in stored ciphertexts, with how many ciphertexts use it."""
    parts = [
        f"SELECT {_key_id_sql(column)} AS kid FROM {table} WHERE {column} IS NOT NULL"
        for table, columns in TOKEN_COLUMNS
        for column in columns
    ]
    query = f"SELECT kid, count(*) AS n FROM ({' UNION ALL '.join(parts)}) k GROUP BY kid"
    with engine.connect() as conn:
        return {row.kid: int(row.n) for row in conn.execute(text(query))}


def missing_key_ids(in_use: dict[str, int], configured: Iterable[str]) -> dict[str, int]:
    """The key ids stored rows use that this process was not given."""
    have = set(configured)
    return {kid: n for kid, n in sorted(in_use.items()) if kid not in have}


def check_token_keys(engine: Engine, configured: Iterable[str], *, process: str) -> None:
    """Refuse to start when stored tokens use a key id not in RELINK_TOKEN_KEYS.

    An unreachable database is not a key problem: the process starts and
    rides the outage out like any other; the check is then skipped, said once.
    """
    try:
        in_use = key_ids_in_use(engine)
    except StoreUnavailable as exc:
        log.warning(
            "%s could not check which token keys stored rows use (database unreachable: %s)",
            process,
            exc,
        )
        return
    missing = missing_key_ids(in_use, configured)
    if missing:
        listed = ", ".join(f"{kid!r} ({n} ciphertexts)" for kid, n in missing.items())
        raise ConfigurationError(
            f"{process}: stored tokens use key ids missing from RELINK_TOKEN_KEYS: {listed}; "
            "deploy every key still in use (old ones until `relink keys rotate` has finished)"
        )


def check_token_keys_at(database_url: str, configured: Iterable[str], *, process: str) -> None:
    """`check_token_keys` on a short-lived engine (a process's start-up)."""
    from services.core.db.engine import make_engine

    engine = make_engine(database_url, pool_size=1)
    try:
        check_token_keys(engine, configured, process=process)
    finally:
        engine.dispose()
