"""The migrator: `provider.switched` → meetings at the new provider → session events."""
