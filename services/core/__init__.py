"""The shared kernel: settings, database, events, Kafka helpers, token cipher."""
