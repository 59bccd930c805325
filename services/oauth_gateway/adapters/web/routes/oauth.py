"""OAuth start and callback for each provider."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import RedirectResponse

from services.oauth_gateway.adapters.web.deps import CurrentTutor, GatewayDep, SameSiteOnly
from services.oauth_gateway.adapters.web.openapi import ALWAYS, answers
from services.oauth_gateway.errors import OAuthRejected

router = APIRouter(prefix="/oauth", tags=["oauth"])


# Browser routes: their errors are the error page (HTML), not JSON.
@router.get(
    "/{provider}/start",
    dependencies=[SameSiteOnly],
    status_code=302,
    response_class=RedirectResponse,
    responses=answers(302, 401, 403, 404, *ALWAYS, html=True),
)
async def oauth_start(provider: str, tutor: CurrentTutor, gateway: GatewayDep) -> RedirectResponse:
    """Send the tutor to the provider's consent page with a fresh state and PKCE challenge."""
    url = await gateway.start_oauth(tutor, provider)
    return RedirectResponse(url, status_code=302)


@router.get(
    "/{provider}/callback",
    status_code=303,
    response_class=RedirectResponse,
    responses=answers(303, 400, 401, 403, 404, 502, *ALWAYS, html=True),
)
async def oauth_callback(
    provider: str,
    tutor: CurrentTutor,
    gateway: GatewayDep,
    state: str | None = None,
    code: str | None = None,
    error: str | None = None,
) -> RedirectResponse:
    """Check the state, save the connection (and the switch), redirect to the setup page at once."""
    try:
        result = await gateway.complete_oauth(tutor, provider, state=state, code=code, error=error)
    except OAuthRejected as exc:
        gateway.metrics.callback(provider=provider, outcome=exc.reason)
        raise
    gateway.metrics.callback(provider=provider, outcome=result.saved.outcome.value)
    return RedirectResponse(result.redirect_path, status_code=303)
