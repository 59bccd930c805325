"""The devstack: real PostgreSQL, real Kafka, started locally with no Docker."""
