"""A small local SMTP sink (aiosmtpd) with an HTTP inbox: `relink smtp-sink`."""
