"""Database: models, engine, Alembic migrations."""
