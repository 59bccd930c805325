"""The OAuth gateway: OAuth start/callback, the switch in one transaction, the video-setup page,
the sessions and bookings APIs (see README.md)."""
