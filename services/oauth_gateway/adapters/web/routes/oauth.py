"""OAuth start and callback for each provider."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import RedirectResponse

from services.oauth_gateway.adapters.web.deps import CurrentTutor, GatewayDep, SameSiteOnly
from services.oauth_gateway.errors import OAuthRejected

router = APIRouter(prefix="/oauth", tags=["oauth"])


@router.get("/{provider}/start", dependencies=[SameSiteOnly])
async def oauth_start(provider: str, tutor: CurrentTutor, gateway: GatewayDep) -> RedirectResponse:
    """Send the tutor to the provider's consent page with a fresh state and PKCE challenge."""
    url = await gateway.start_oauth(tutor, provider)
    return RedirectResponse(url, status_code=302)


@router.get("/{provider}/callback")
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
