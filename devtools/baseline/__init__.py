"""The brief's original approach, kept as a yardstick: migrate every session inside the callback.

`GET /oauth/{provider}/callback` exchanges the code, saves the connection and,
when the provider changed, creates a meeting at the new provider for every
future session and updates its row, one after the other, before it answers
(`lib/services/migrateSessionsToNewProvider.ts` in BRIEF.md). relink does not
serve it; `relink bench gateway` runs it as its own uvicorn process beside the
gateway, on the same simulator and PostgreSQL, so the ratio is measured.
"""
