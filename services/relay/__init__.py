"""The relay: publishes outbox rows to Kafka, at least once, in order per tutor.

See README.md (its "Layout" section lists the modules).
"""
