"""HTTP of the webhook dispatcher: one POST per attempt, its answer or its error."""

from __future__ import annotations

import time

import httpx

from services.webhooks.domain import Answer


class WebhookSender:
    """POSTs signed bodies; never follows redirects (the signature is for that URL)."""

    def __init__(self, *, timeout_s: float) -> None:
        self._client = httpx.Client(timeout=timeout_s, follow_redirects=False)

    def post(self, url: str, *, body: str, headers: dict[str, str]) -> Answer:
        started = time.monotonic()
        try:
            response = self._client.post(url, content=body.encode(), headers=headers)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            # The error's kind and its text (httpx names the URL only in status errors,
            # which are not raised here); never the headers or the body.
            return Answer(None, f"{type(exc).__name__}: {exc}", _ms(started))
        return Answer(response.status_code, None, _ms(started))

    def close(self) -> None:
        self._client.close()


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
