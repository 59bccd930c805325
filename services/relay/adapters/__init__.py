"""The relay's I/O: `db` (PostgreSQL through raw psycopg) and `kafka` (the producer)."""
