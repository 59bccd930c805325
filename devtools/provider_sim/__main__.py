"""`python -m services.provider_sim`: the simulator without the rest of the CLI."""

from __future__ import annotations

from services.provider_sim.server import serve

serve()
