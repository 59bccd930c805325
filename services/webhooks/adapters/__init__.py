"""The webhook dispatcher's I/O: PostgreSQL, Kafka, HTTP."""
