"""The event contract's guard: each schema against the set last released (`schemas-released/`)."""
