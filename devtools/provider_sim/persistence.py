"""The simulator's state on disk, so it survives a restart as a real provider's does.

Zoom and Google keep their accounts, grants, tokens and meetings when relink
restarts; PostgreSQL keeps relink's side (connections with their refresh
tokens, join links). A simulator that forgot its side on restart would answer
every stored refresh token with "Invalid Token!" and 404 every old join link.

What is saved is the whole `SimState` object minus what only makes sense in
the running process: its `settings`, any names listed in an optional
`SimState.RUNTIME_ONLY`, and anything that cannot be pickled (locks, HTTP
clients), found and left out on the first save. Saving generically, with
pickle, means a field or dataclass added to the state later is saved with no
change here; on load, fields a newer code version added are filled with their
defaults. Object identity survives too: one `Grant` shared by a code, an
access token and a refresh token is one object again after a load, so revoking
it still revokes all three.

Pickle runs code named in the file when loading; the file lives under the
devstack's home, written by this process, which anyone able to write there
could already run as the user. It is a dev tool's file, not an exchange format.

Writes are atomic (a temporary file in the same folder, fsync, rename), so a
crash mid-write leaves the previous state. Saves are debounced: a request marks
the state dirty and one save follows shortly after a burst of requests; a
final save runs when the simulator stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import pickle
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from devtools.provider_sim.state import SimState

log = logging.getLogger(__name__)

FORMAT = 1
# Attributes of a SimState that belong to the running process, never saved.
DEFAULT_RUNTIME_ONLY = frozenset({"settings"})


class StateFile:
    """Load a `SimState` from a file and save it back, atomically and debounced."""

    def __init__(self, state: SimState, path: Path, *, debounce_s: float = 0.25) -> None:
        self.state = state
        self.path = path
        self.debounce_s = debounce_s
        self._skipped: set[str] = set()
        self._dirty = False
        self._scheduled = False
        self._closed = False
        self._lock = threading.Lock()  # one write at a time (loop saves vs. the final one)
        # Disk writes leave the event loop; one worker keeps them in order.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sim-state")

    # -- loading ------------------------------------------------------------------

    def load(self) -> bool:
        """Restore the saved state into `self.state`; False when there is none (or unreadable)."""
        if not self.path.is_file():
            return False
        try:
            saved = pickle.loads(self.path.read_bytes())
            if not isinstance(saved, dict) or saved.get("format") != FORMAT:
                raise ValueError("not a provider-sim state file of this format")
            attributes: dict[str, Any] = saved["attributes"]
        except Exception as exc:
            # A file from an older code version that no longer unpickles, or a
            # damaged one: keep it aside for a look and start from a fresh world.
            aside = self.path.with_name(self.path.name + ".unreadable")
            with contextlib.suppress(OSError):
                self.path.replace(aside)
            log.warning("provider-sim state %s unreadable (%s); moved to %s", self.path, exc, aside)
            return False
        known = vars(self.state)
        runtime = self._runtime_only()
        for name, value in attributes.items():
            # Only what the current code still has; what it added keeps its default.
            if name in known and name not in runtime:
                setattr(self.state, name, _with_defaults(value))
        log.info("provider-sim state loaded from %s", self.path)
        return True

    # -- saving -------------------------------------------------------------------

    def _runtime_only(self) -> frozenset[str]:
        declared = getattr(type(self.state), "RUNTIME_ONLY", DEFAULT_RUNTIME_ONLY)
        return frozenset(declared) | DEFAULT_RUNTIME_ONLY | self._skipped

    def snapshot(self) -> bytes:
        """The state as bytes; call on the thread that mutates it (the event loop)."""
        runtime = self._runtime_only()
        attributes = {k: v for k, v in vars(self.state).items() if k not in runtime}
        try:
            return pickle.dumps({"format": FORMAT, "attributes": attributes}, protocol=5)
        except (pickle.PicklingError, TypeError, AttributeError):
            # Something process-bound (a lock, a client) was added to the state
            # without being declared runtime-only: find it once and leave it out.
            for name, value in attributes.items():
                try:
                    pickle.dumps(value, protocol=5)
                except (pickle.PicklingError, TypeError, AttributeError):
                    log.info("provider-sim state: %s is not saved (cannot be pickled)", name)
                    self._skipped.add(name)
            attributes = {k: v for k, v in attributes.items() if k not in self._skipped}
            return pickle.dumps({"format": FORMAT, "attributes": attributes}, protocol=5)

    def _write(self, data: bytes) -> None:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise

    def save(self) -> None:
        """Save now, synchronously (the state must not be changing meanwhile)."""
        self._dirty = False
        self._write(self.snapshot())

    def mark_dirty(self) -> None:
        """A request may have changed the state: save soon (one save per burst)."""
        self._dirty = True
        if self._scheduled:
            return
        self._scheduled = True
        asyncio.get_running_loop().call_later(self.debounce_s, self._save_from_loop)

    def _save_from_loop(self) -> None:
        self._scheduled = False
        if not self._dirty or self._closed:
            return
        self._dirty = False
        data = self.snapshot()  # on the loop: no request changes the state meanwhile
        future = self._writer.submit(self._write, data)
        future.add_done_callback(_log_failure)

    def close(self) -> None:
        """Wait for pending writes and save the final state (the server has stopped); once."""
        if self._closed:
            return
        self._closed = True
        self._writer.shutdown(wait=True)
        self.save()


def _log_failure(future: Any) -> None:
    exc = future.exception()
    if exc is not None:
        log.error("provider-sim state could not be saved: %s", exc)


def _with_defaults(value: Any) -> Any:
    """Fill the fields a newer code version added to saved dataclasses and models."""
    seen: set[int] = set()
    stack = [value]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list | tuple | set | frozenset):
            stack.extend(node)
        elif dataclasses.is_dataclass(node) and not isinstance(node, type):
            for f in dataclasses.fields(node):
                # (a plain default is a class attribute, so only factories go missing)
                if not hasattr(node, f.name) and f.default_factory is not dataclasses.MISSING:
                    object.__setattr__(node, f.name, f.default_factory())
                if hasattr(node, f.name):
                    stack.append(getattr(node, f.name))
        elif isinstance(node, BaseModel):
            for name, info in type(node).model_fields.items():
                if name not in node.__dict__:
                    node.__dict__[name] = info.get_default(call_default_factory=True)
            stack.extend(node.__dict__.values())
    return value
