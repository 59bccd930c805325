"""`python -m devtools.provider_sim`: the simulator without the rest of the CLI."""

from __future__ import annotations

from devtools.provider_sim.server import serve

serve()
