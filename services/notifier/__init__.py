"""The notifier: emails students once per change, writes the audit trail, replays it."""
