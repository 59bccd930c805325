"""The migrator's I/O: `db/`, PostgreSQL through async SQLAlchemy Core.

Kafka is consumed and produced by the Faust app itself (`entrypoint`).
"""
