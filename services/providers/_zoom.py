"""Zoom: OAuth (authorization code + PKCE, rotating refresh tokens) and the Meetings API."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx

from services.core.links import checked_join_url
from services.providers._base import ProviderClient, json_body
from services.providers._errors import (
    AuthorizationRevokedError,
    DailyQuotaExhaustedError,
    ErrorContext,
    InvalidRequestError,
    MeetingNotFoundError,
    ProviderError,
    ProviderUnavailableError,
    RateLimitedError,
    TokenExpiredError,
)
from services.providers._limits import zoom_fields
from services.providers._models import (
    Meeting,
    MeetingRequest,
    ProviderAccount,
    ProviderName,
    meeting_marker,
)
from services.providers._ratelimit import (
    is_zoom_daily_limit,
    next_utc_midnight,
    parse_retry_after,
    retry_after_from_headers,
)

# Zoom error codes (Zoom API "Error codes" reference and endpoint pages):
# 124 invalid / expired access token; 3001 meeting does not exist;
# 4700/4711 token lacks the scopes (the user must consent again).
ZOOM_INVALID_TOKEN = "124"
ZOOM_MEETING_NOT_FOUND = "3001"
ZOOM_SCOPE_CODES = frozenset({"4700", "4711"})
# "type": 2 is a scheduled meeting (Zoom "Create a meeting" request body).
ZOOM_SCHEDULED_MEETING = 2
# "List meetings" pages hold at most 300 records (Zoom API "Pagination").
ZOOM_LIST_PAGE_SIZE = 300


def zoom_time(when: datetime) -> str:
    """Zoom's GMT start_time form, yyyy-MM-ddTHH:mm:ssZ."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_zoom_time(value: str | None) -> datetime | None:
    """A Zoom timestamp as an aware datetime."""
    if not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class ZoomClient(ProviderClient):
    """Zoom's OAuth endpoints (zoom.us/oauth) and REST API (api.zoom.us/v2)."""

    provider: ProviderName = "zoom"
    # Zoom's token endpoint takes the client credentials as HTTP Basic only.
    token_auth_method = "client_secret_basic"

    @property
    def client_id(self) -> str:
        return self.settings.zoom_client_id

    @property
    def client_secret(self) -> str:
        return self.settings.zoom_client_secret.get_secret_value()

    @property
    def authorize_url(self) -> str:
        return f"{self.settings.zoom_auth_base}/oauth/authorize"

    @property
    def token_url(self) -> str:
        return f"{self.settings.zoom_auth_base}/oauth/token"

    @property
    def revoke_url(self) -> str:
        return f"{self.settings.zoom_auth_base}/oauth/revoke"

    @property
    def redirect_uri(self) -> str:
        return self.settings.zoom_redirect_uri

    @property
    def scopes(self) -> str:
        return self.settings.zoom_scopes

    def _api(self, path: str) -> str:
        return f"{self.settings.zoom_api_base}{path}"

    def api_error(self, response: httpx.Response, *, operation: str) -> ProviderError:
        """Zoom's `{"code": ..., "message": ...}` errors mapped onto our tree."""
        body = json_body(response)
        status = response.status_code
        code = str(body.get("code", status))
        message = f"{operation}: {body.get('message') or response.reason_phrase}"
        common: ErrorContext = {"provider": self.provider, "status": status, "code": code}
        if code in ZOOM_SCOPE_CODES:
            # Checked before the status: the token lacks a scope (4711 comes as
            # HTTP 400, 4700 may come as 401). A refresh returns the same
            # scopes and would only rotate the refresh token: reconnect.
            return AuthorizationRevokedError(message, **common)
        if status == 401:
            # 124 "Invalid access token" / "Access token is expired": refresh
            # once and retry (AuthorizedSession.call).
            return TokenExpiredError(message, **common)
        if status == 429:
            if is_zoom_daily_limit(headers=response.headers, message=message):
                # The daily-cap 429 may come without Retry-After; the cap resets
                # at 00:00 UTC ("You may resume these requests at GMT 00:00:00").
                wait = parse_retry_after(response.headers.get("retry-after"))
                resets_at = next_utc_midnight()
                if wait is not None and wait > 0:
                    resets_at = datetime.fromtimestamp(datetime.now(UTC).timestamp() + wait, UTC)
                return DailyQuotaExhaustedError(message, resets_at=resets_at, **common)
            wait = retry_after_from_headers(response.headers)
            return RateLimitedError(message, retry_after_s=wait, **common)
        if status >= 500:
            return ProviderUnavailableError(message, **common)
        if status == 404 and code == ZOOM_MEETING_NOT_FOUND:
            return MeetingNotFoundError(message, **common)
        # 300 "Validation Failed." and the other 4xx: Zoom refused this request;
        # sending it again unchanged cannot help.
        fields = [
            str(item.get("field"))
            for item in body.get("errors") or []
            if isinstance(item, dict) and item.get("field")
        ]
        if fields:
            message += f" (fields: {', '.join(fields)})"
        return InvalidRequestError(message, **common)

    async def account(self, access_token: str) -> ProviderAccount:
        """GET /users/me: the Zoom user id and email."""
        response = await self.api_call(
            "GET", self._api("/users/me"), access_token=access_token, operation="get user"
        )
        body = json_body(response)
        return ProviderAccount(id=str(body["id"]), email=str(body.get("email", "")))

    async def create_meeting(self, access_token: str, request: MeetingRequest) -> Meeting:
        """POST /users/me/meetings: a scheduled meeting for the session."""
        marker = meeting_marker(request.switch_id, request.session_id)
        # Within Zoom's limits before anything is sent (limits.py): a request
        # Zoom would refuse never leaves relink.
        fields = zoom_fields(request, marker=marker, note="Scheduled by relink")
        payload: dict[str, object] = {
            "topic": fields.topic,
            "type": ZOOM_SCHEDULED_MEETING,
            "start_time": zoom_time(request.start_time),
            "duration": request.duration_min,
            "timezone": fields.timezone,
            # Zoom has no idempotency key. The agenda (which "List meetings"
            # returns, unlike tracking fields) carries our marker so a retry
            # finds the meeting a create whose answer was lost made.
            "agenda": fields.agenda,
            "settings": {"join_before_host": False, "waiting_room": True},
        }
        if self.settings.zoom_tracking_field:
            # For operators: Zoom's reports filter by tracking field. Zoom takes
            # only fields the account's admin defined, so this is opt-in.
            payload["tracking_fields"] = [
                {
                    "field": self.settings.zoom_tracking_field,
                    "value": f"{request.switch_id}:{request.session_id}",
                }
            ]
        response = await self.api_call(
            "POST",
            self._api("/users/me/meetings"),
            access_token=access_token,
            operation="create meeting",
            json=payload,
            idempotent=False,
        )
        return self._meeting(json_body(response))

    async def find_meeting(self, access_token: str, request: MeetingRequest) -> Meeting | None:
        """GET /users/me/meetings, every page: the meeting whose agenda has our marker."""
        marker = meeting_marker(request.switch_id, request.session_id)
        params = {"type": "scheduled", "page_size": str(ZOOM_LIST_PAGE_SIZE)}
        seen: set[str] = set()
        while True:
            response = await self.api_call(
                "GET",
                self._api("/users/me/meetings"),
                access_token=access_token,
                operation="list meetings",
                params=params,
            )
            body = json_body(response)
            for item in body.get("meetings") or []:
                if isinstance(item, dict) and marker in str(item.get("agenda") or ""):
                    return self._meeting(item)
            # An empty token ends the list; a repeated one would loop forever.
            token = str(body.get("next_page_token") or "")
            if not token or token in seen:
                return None
            seen.add(token)
            params = {**params, "next_page_token": token}

    async def get_meeting(self, access_token: str, external_id: str) -> Meeting | None:
        """GET /meetings/{id}; None on Zoom's 3001 "Meeting does not exist"."""
        try:
            response = await self.api_call(
                "GET",
                self._api(f"/meetings/{external_id}"),
                access_token=access_token,
                operation="get meeting",
            )
        except MeetingNotFoundError:
            return None
        return self._meeting(json_body(response))

    async def delete_meeting(self, access_token: str, external_id: str) -> bool:
        """DELETE /meetings/{id}; False when Zoom says it does not exist."""
        try:
            await self.api_call(
                "DELETE",
                self._api(f"/meetings/{external_id}"),
                access_token=access_token,
                operation="delete meeting",
            )
        except MeetingNotFoundError:
            return False
        return True

    def _meeting(self, body: dict[str, object]) -> Meeting:
        return Meeting(
            provider=self.provider,
            external_id=str(body["id"]),
            join_url=checked_join_url(
                body.get("join_url"),
                allow_http=self.settings.zoom_api_base.startswith("http://"),
            ),
            start_time=parse_zoom_time(str(body["start_time"]) if body.get("start_time") else None),
        )
