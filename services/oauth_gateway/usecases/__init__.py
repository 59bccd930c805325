"""What the gateway does, one module per group of use cases.

- `tutors`: `Gateway`, what tutors and students do through the browser and the
  tutor API: OAuth start and callback (the switch), switch status, history,
  retry and rollback requests, bookings, re-created meetings, and what Zoom
  and Google notify;
- `platform`: `Platform`, what the tutoring platform's backend does through the
  service API (`/platform/v1`, API keys): users and sessions kept true.
"""
