"""What the notifier does: `notify` (record events, owe and send emails), `audit` (replay,
verify, show)."""
