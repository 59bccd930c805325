"""OAuth start and callback for each provider."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse

from services.core import tracing
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
    request: Request,
    provider: str,
    tutor: CurrentTutor,
    gateway: GatewayDep,
    state: str | None = None,
    code: str | None = None,
    error: str | None = None,
) -> RedirectResponse:
    """Check the state, save the connection (and the switch), redirect to the setup page at once.

    The switch's trace starts here (or continues the caller's `traceparent`): its
    `provider.switched` row keeps this span's context (`core.tracing`).
    """
    with tracing.span(
        "oauth callback",
        parent=request.headers,
        kind=tracing.SpanKind.SERVER,
        attributes={"relink.provider": provider, "http.route": "/oauth/{provider}/callback"},
    ) as span:
        try:
            result = await gateway.complete_oauth(
                tutor, provider, state=state, code=code, error=error
            )
        except OAuthRejected as exc:
            gateway.metrics.callback(provider=provider, outcome=exc.reason)
            tracing.failed(span, exc.reason)
            raise
        gateway.metrics.callback(provider=provider, outcome=result.saved.outcome.value)
        span.set_attribute("relink.outcome", result.saved.outcome.value)
        if result.saved.switch_id is not None:
            span.set_attribute("relink.switch_id", str(result.saved.switch_id))
    return RedirectResponse(result.redirect_path, status_code=303)
