"""Who is calling. Until merchant API keys exist, every request acts for the default merchant."""

from __future__ import annotations

from starlette.requests import Request

from api.state import ApiState


def state_of(request: Request) -> ApiState:
    state: ApiState = request.app.state.paytide
    return state


def merchant_of(request: Request) -> str:
    return state_of(request).settings.default_merchant
