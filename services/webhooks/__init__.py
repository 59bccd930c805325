"""The webhook dispatcher: relink's events, signed (Standard Webhooks) and POSTed to the
platform's registered endpoints, at least once, with retries over hours."""
