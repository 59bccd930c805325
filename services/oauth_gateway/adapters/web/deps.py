"""Request dependencies: the composed gateway, who is asking, CSRF checks."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, Request, Security
from fastapi.responses import HTMLResponse
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.templating import Jinja2Templates

from services.oauth_gateway.adapters.web.auth import csrf_valid, verify_token
from services.oauth_gateway.adapters.web.openapi import bearer, session_cookie
from services.oauth_gateway.domain import Principal
from services.oauth_gateway.errors import Forbidden, NotSignedIn
from services.oauth_gateway.usecases.tutors import Gateway

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


def get_gateway(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


GatewayDep = Annotated[Gateway, Depends(get_gateway)]


def session_token(
    request: Request,
    gateway: GatewayDep,
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
    _cookie: Annotated[str | None, Security(session_cookie)],
) -> tuple[str, bool] | None:
    """The caller's sign-in token and whether it came in the cookie (CSRF applies).

    The two `Security` parameters declare the schemes in the OpenAPI document;
    the token is read here, from the cookie the settings name.
    """
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value:
        return value.strip(), False
    cookie = request.cookies.get(gateway.settings.session_cookie)
    if cookie:
        return cookie, True
    return None


def current_principal(
    token: Annotated[tuple[str, bool] | None, Depends(session_token)], gateway: GatewayDep
) -> Principal:
    if token is None:
        raise NotSignedIn("sign in first")
    return verify_token(token[0], secret=gateway.settings.session_secret.get_secret_value())


CurrentUser = Annotated[Principal, Depends(current_principal)]


async def _with_role(principal: Principal, gateway: Gateway, role: str) -> Principal:
    """The principal, once the database agrees on who it is and what role it has.

    The signed token says who signed in; the role it carries may be stale (or
    minted by a platform bug): the user's row decides, on every request.
    """
    if principal.role != role:
        raise Forbidden(f"this page is for {role}s")
    user = await gateway.user(principal.user_id)
    if user is None:
        raise NotSignedIn("this sign-in names no known user; sign in again")
    if user.role != role:
        raise Forbidden(f"this page is for {role}s")
    return principal


async def current_tutor(principal: CurrentUser, gateway: GatewayDep) -> Principal:
    return await _with_role(principal, gateway, "tutor")


async def current_student(principal: CurrentUser, gateway: GatewayDep) -> Principal:
    return await _with_role(principal, gateway, "student")


CurrentTutor = Annotated[Principal, Depends(current_tutor)]
CurrentStudent = Annotated[Principal, Depends(current_student)]


async def csrf_protected(
    request: Request,
    token: Annotated[tuple[str, bool] | None, Depends(session_token)],
    gateway: GatewayDep,
) -> None:
    """Cookie-authenticated changes must carry the session's CSRF token (form field or header)."""
    if token is None or not token[1]:
        return  # bearer tokens are not sent by browsers on their own
    candidate = request.headers.get(CSRF_HEADER)
    if candidate is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        form = await request.form()
        value = form.get(CSRF_FIELD)
        candidate = value if isinstance(value, str) else None
    if not csrf_valid(
        token[0], candidate, secret=gateway.settings.session_secret.get_secret_value()
    ):
        raise Forbidden("the form is stale or came from another site; reload the page")


CsrfChecked = Depends(csrf_protected)


def not_cross_site(request: Request, gateway: GatewayDep) -> None:
    """Refuse a request another site made the browser send (a link or form elsewhere).

    Starting a switch is a GET (the page's buttons are links to the provider's
    consent), and the session cookie is `SameSite=Lax`, so it travels on a
    top-level GET from any site; with a provider that skips consent for an app
    already authorized, a link on any site could switch a tutor's provider.
    Browsers say where a request comes from (`Sec-Fetch-Site`, and `Origin` on
    most requests): anything from another site is refused. A typed URL or a
    bookmark (`none`) and the platform's own subdomains (`same-site`) pass.
    """
    if request.headers.get("sec-fetch-site", "").lower() == "cross-site":
        raise Forbidden("a switch can only be started from relink's own page")
    origin = request.headers.get("origin")
    if origin is not None and origin != "null":
        ours = urlsplit(gateway.settings.public_base_url)
        theirs = urlsplit(origin)
        if (theirs.scheme, theirs.netloc) != (ours.scheme, ours.netloc):
            raise Forbidden("a switch can only be started from relink's own page")
    elif origin == "null":
        raise Forbidden("a switch can only be started from relink's own page")


SameSiteOnly = Depends(not_cross_site)


def render(
    request: Request, name: str, context: dict[str, Any], *, status_code: int = 200
) -> HTMLResponse:
    """A server-rendered page from the app's templates."""
    templates: Jinja2Templates = request.app.state.templates
    response: HTMLResponse = templates.TemplateResponse(
        request, name, context, status_code=status_code
    )
    return response
