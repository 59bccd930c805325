"""What the webhook dispatcher does: `dispatch` (record, deliver) and `endpoints`
(register, disable, replay, the delivery log)."""
