"""The webhook dispatcher's errors.

RelinkError
└── WebhooksError            something in the webhook dispatcher went wrong
    ├── EndpointError        a registration or replay request is wrong (bad URL, unknown id, ...)
    └── SecretError          a secret is not a Standard Webhooks `whsec_` base64 key
"""

from __future__ import annotations

from services.core.errors import RelinkError


class WebhooksError(RelinkError):
    """Base of the webhook dispatcher's errors."""


class EndpointError(WebhooksError):
    """A request about an endpoint that cannot be done as asked; nothing was changed."""


class SecretError(WebhooksError):
    """A secret that is not `whsec_` followed by the base64 of 24 to 64 bytes."""
