"""What the migrator does, one module per group of use cases.

- `migrate`: per event, supersede / record the plan / queue retries; the sweep;
- `execute`: the bounded executor: claim due rows, create meetings, settle rows;
- `rollback`: rollback within the grace period, cleanup of old meetings after it;
- `connections`: the provider sessions on a tutor's tokens, shared by execute and rollback.
"""
