"""OAuth 2.0 for both simulated providers: consent, code + PKCE exchange, refresh, revoke."""

from __future__ import annotations

import base64
import hashlib
import hmac
from html import escape
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from devtools.provider_sim.state import Provider, SimState

TITLES = {"zoom": "Zoom", "google": "Google"}
DEFAULT_EMAIL = {"zoom": "tutor@zoom.example", "google": "tutor@gmail.example"}
AUTHORIZE_FIELDS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
    "access_type",
    "prompt",
    "include_granted_scopes",
)


# Google's Sign-In scopes. With granular consent Google asks for these on a
# page of their own (all or nothing: the user signs in or not) and shows
# every other requested scope with its own checkbox, ticked by default; the
# app gets only what stayed ticked and "can't assume users grant all
# requested scopes" (Google OAuth 2.0 docs, "How to handle granular
# permissions",
# https://developers.google.com/identity/protocols/oauth2/resources/granular-permissions).
# The simulator grants the Sign-In scopes with Allow and the others as ticked.
GOOGLE_SIGN_IN_SCOPES = frozenset(
    {
        "openid",
        "email",
        "profile",
        "https://www.googleapis.com/auth/userinfo.email",
        "https://www.googleapis.com/auth/userinfo.profile",
    }
)


def scope_checkboxes(provider: Provider, params: dict[str, str]) -> str:
    """Google's granular consent: one ticked checkbox per non-Sign-In scope requested.

    Contract other code relies on: each is
    `<input type="checkbox" name="granted_scope" value="<scope>" checked>`.
    """
    if provider != "google":
        return ""
    boxes = "\n".join(
        f'<li><label><input type="checkbox" name="granted_scope" value="{escape(scope)}" '
        f"checked> {escape(scope)}</label></li>"
        for scope in dict.fromkeys(params.get("scope", "").split())
        if scope not in GOOGLE_SIGN_IN_SCOPES
    )
    return f"<p>Select what relink can access:</p>\n<ul>\n{boxes}\n</ul>" if boxes else ""


def granted_scope(provider: Provider, requested: str, ticked: list[str]) -> str:
    """The scopes a consent grants: all requested (Zoom); Sign-In plus the ticked ones (Google).

    A ticked value that was never requested grants nothing: the form is the
    browser's to forge, the request is the app's.
    """
    scopes = list(dict.fromkeys(requested.split()))
    if provider != "google":
        return " ".join(scopes)
    chosen = set(ticked)
    return " ".join(s for s in scopes if s in GOOGLE_SIGN_IN_SCOPES or s in chosen)


def s256(verifier: str) -> str:
    """RFC 7636 §4.2: BASE64URL(SHA256(verifier)) without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def client_credentials(provider: Provider, state: SimState) -> tuple[str, str]:
    settings = state.settings
    if provider == "zoom":
        return settings.zoom_client_id, settings.zoom_client_secret
    return settings.google_client_id, settings.google_client_secret


def oauth_error(provider: Provider, status: int, error: str, text: str) -> JSONResponse:
    """Token endpoint errors: Zoom says `reason`, Google `error_description` (RFC 6749 §5.2)."""
    if provider == "zoom":
        return JSONResponse({"reason": text, "error": error}, status_code=status)
    return JSONResponse({"error": error, "error_description": text}, status_code=status)


def authorize_problem(provider: Provider, state: SimState, params: dict[str, str]) -> str | None:
    """Why an authorization request cannot be shown a consent page, if it cannot."""
    client_id, _ = client_credentials(provider, state)
    if params.get("response_type") != "code":
        return "response_type must be code"
    if params.get("client_id") != client_id:
        return "unknown client_id"
    redirect = params.get("redirect_uri", "")
    if not redirect.startswith(state.settings.redirect_uri_prefixes):
        return "redirect_uri is not registered"
    if params.get("code_challenge_method") != "S256" or not params.get("code_challenge"):
        return "PKCE with code_challenge_method=S256 is required"
    return None


def consent_page(provider: Provider, params: dict[str, str], *, action: str) -> str:
    """An HTML consent screen: an account email, Allow and Deny."""
    hidden = "\n".join(
        f'<input type="hidden" name="{name}" value="{escape(params[name])}">'
        for name in AUTHORIZE_FIELDS
        if name in params
    )
    email = escape(params.get("login_hint") or DEFAULT_EMAIL[provider])
    title = TITLES[provider]
    scopes = escape(params.get("scope", ""))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} (simulated) - sign in</title></head>
<body>
<h1>{title} <small>(local simulator)</small></h1>
<p>relink wants to manage your meetings. Scopes: <code>{scopes}</code></p>
<form method="post" action="{escape(action)}">
{hidden}
<label>Account email <input type="email" name="email" id="email" value="{email}"></label>
{scope_checkboxes(provider, params)}
<button type="submit" name="decision" value="allow" id="allow">Allow</button>
<button type="submit" name="decision" value="deny" id="deny">Deny</button>
</form>
</body></html>"""


async def authorize_page(provider: Provider, request: Request) -> Response:
    """GET of the authorize endpoint: the consent page, or a 400 page for a bad request."""
    state: SimState = request.app.state.sim
    params = dict(request.query_params)
    problem = authorize_problem(provider, state, params)
    if problem:
        return HTMLResponse(f"<h1>Bad request</h1><p>{escape(problem)}</p>", status_code=400)
    return HTMLResponse(consent_page(provider, params, action=request.url.path))


async def authorize_decision(provider: Provider, request: Request) -> Response:
    """POST of the consent form: redirect back with a code, or with error=access_denied."""
    state: SimState = request.app.state.sim
    raw = await request.form()
    form = {key: str(value) for key, value in raw.items()}
    problem = authorize_problem(provider, state, form)
    if problem:
        return HTMLResponse(f"<h1>Bad request</h1><p>{escape(problem)}</p>", status_code=400)
    ticked = [str(value) for value in raw.getlist("granted_scope")]
    back: dict[str, str] = {}
    if form.get("decision") != "allow":
        back["error"] = "access_denied"
    else:
        back["code"] = state.issue_code(
            provider=provider,
            client_id=form["client_id"],
            email=form.get("email") or DEFAULT_EMAIL[provider],
            scope=granted_scope(provider, form.get("scope", ""), ticked),
            redirect_uri=form["redirect_uri"],
            code_challenge=form["code_challenge"],
        )
    if form.get("state"):
        back["state"] = form["state"]
    separator = "&" if "?" in form["redirect_uri"] else "?"
    return RedirectResponse(form["redirect_uri"] + separator + urlencode(back), status_code=302)


def authenticated_client(
    provider: Provider, state: SimState, request: Request, form: dict[str, str]
) -> bool:
    """Whether the app authenticated: HTTP Basic (both), or form fields (Google only)."""
    client_id, secret = client_credentials(provider, state)
    header = request.headers.get("authorization", "")
    if header.lower().startswith("basic "):
        try:
            given_id, _, given_secret = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
    elif provider == "google":
        given_id, given_secret = form.get("client_id", ""), form.get("client_secret", "")
    else:
        return False
    return given_id == client_id and hmac.compare_digest(given_secret, secret)


async def token_endpoint(provider: Provider, request: Request) -> Response:
    """The token endpoint: authorization_code (with PKCE) and refresh_token grants."""
    state: SimState = request.app.state.sim
    form = {key: str(value) for key, value in (await request.form()).items()}
    if not authenticated_client(provider, state, request, form):
        return oauth_error(provider, 401, "invalid_client", "Invalid client_id or client_secret")
    grant_type = form.get("grant_type")
    answer: dict[str, Any] | None
    if grant_type == "authorization_code":
        # Codes are single-use and short-lived (RFC 6749 §4.1.2; Zoom OAuth docs:
        # valid five minutes; Google OAuth 2.0 docs): `take_code` removes the code
        # on first use, so a second exchange, like an expired code, is invalid_grant.
        record = state.take_code(form.get("code", ""))
        if record is None:
            if provider == "zoom":
                return oauth_error(provider, 400, "invalid_grant", "Invalid authorization code")
            # Google's answer to a used or expired code.
            return oauth_error(provider, 400, "invalid_grant", "Bad Request")
        if record.redirect_uri != form.get("redirect_uri"):
            return oauth_error(provider, 400, "invalid_grant", "redirect_uri mismatch")
        if s256(form.get("code_verifier", "")) != record.code_challenge:
            return oauth_error(provider, 400, "invalid_grant", "Invalid code_verifier")
        if provider == "zoom":
            # Zoom OAuth docs: re-authorizing the app revokes the user's earlier
            # authorization for it; its access and refresh tokens stop working.
            state.revoke_earlier_grants(record.grant)
        answer = state.issue_tokens(record.grant)
    elif grant_type == "refresh_token":
        answer = state.refresh(provider, form.get("refresh_token", ""), rotate=provider == "zoom")
        if answer is None:
            # Zoom's answer to a used (rotated), revoked or superseded refresh token,
            # as zoom.us/oauth/token sends it: HTTP 400 {"reason":"Invalid Token!",
            # "error":"invalid_grant"} (Zoom OAuth docs, "Refresh an access token";
            # the body as reported in raycast/extensions#10896). Google's invalid_grant.
            if provider == "zoom":
                return oauth_error(provider, 400, "invalid_grant", "Invalid Token!")
            return oauth_error(provider, 400, "invalid_grant", "Token has been expired or revoked.")
    else:
        return oauth_error(provider, 400, "unsupported_grant_type", "Unsupported grant type")
    return JSONResponse(answer, headers={"Cache-Control": "no-store"})


async def revoke_endpoint(provider: Provider, request: Request) -> Response:
    """RFC 7009 revocation: the grant behind the token stops working."""
    state: SimState = request.app.state.sim
    form = {key: str(value) for key, value in (await request.form()).items()}
    token = form.get("token") or request.query_params.get("token", "")
    if provider == "zoom" and not authenticated_client(provider, state, request, form):
        return oauth_error(provider, 401, "invalid_client", "Invalid client_id or client_secret")
    revoked = state.revoke_token(provider, token)
    if provider == "zoom":
        return JSONResponse({"status": "success"})
    if not revoked:
        return JSONResponse(
            {"error": "invalid_token", "error_description": "Token expired or revoked"}, 400
        )
    return JSONResponse({})
