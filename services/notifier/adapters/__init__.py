"""The notifier's I/O: PostgreSQL (db), Kafka (kafka), SMTP (smtp), email rendering (emails)."""
