"""The gateway's I/O: `db` (PostgreSQL, SQLAlchemy ORM) and `web` (routes, views, deps, auth)."""
