"""The live payments dashboard: ``GET /dashboard`` (a static page, no data) and
``GET /dashboard/data`` (the numbers, operator key only).

A browser cannot send a Bearer header when it navigates, so the page itself carries nothing
worth protecting: it asks for an operator key, keeps it in the tab's sessionStorage and sends
it on each poll of the data endpoint, which checks the role like every operator route.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from importlib.resources import files
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from api.auth import require_operator, state_of
from api.errors import ApiError
from ledger import dashboard
from ledger.engine import transaction
from paytide.metrics import ApiMetrics
from paytide.settings import Settings

WINDOW_MINUTES = 15
FAILED_NOTIFICATIONS_WINDOW = timedelta(hours=24)
_PAGE = files("api").joinpath("static/dashboard.html")
# The page runs only its own script and talks only to this origin.
_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self' 'unsafe-inline'; "
    "style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "Cache-Control": "no-cache",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


async def dashboard_page(request: Request) -> Response:
    return HTMLResponse(_PAGE.read_text(encoding="utf-8"), headers=_PAGE_HEADERS)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class Links:
    """Temporal Web UI lists (visibility queries on paytide's search attributes)."""

    def __init__(self, settings: Settings) -> None:
        namespace = quote(settings.temporal_namespace, safe="")
        self._base = f"{settings.effective_temporal_ui_url}/namespaces/{namespace}/workflows"

    def query(self, *clauses: str) -> str:
        text = " AND ".join(('WorkflowType="PaymentWorkflow"', *clauses))
        return f"{self._base}?query={quote(text, safe='')}"


def _rate(succeeded: int, total: int) -> float | None:
    return round(succeeded / total, 4) if total else None


def build_data(
    snap: dashboard.Snapshot, metrics: ApiMetrics, settings: Settings, now: datetime
) -> dict[str, Any]:
    since = now - timedelta(minutes=WINDOW_MINUTES)
    links = Links(settings)
    started_since = f'StartTime >= "{_iso(since)}"'
    totals = {
        outcome: sum(minute[outcome] for minute in snap.per_minute)
        for outcome in dashboard.OUTCOMES
    }
    finished = sum(totals.values())
    p50, p95 = metrics.recent_initiations.quantiles(0.5, 0.95)
    gateways = []
    for name, tally in sorted(snap.by_gateway.items()):
        total = sum(tally.values())
        gateway_clause = f'PaymentGateway="{name}"' if name != "none" else "PaymentGateway IS NULL"
        gateways.append(
            {
                "gateway": name,
                "total": total,
                "succeeded": tally["succeeded"],
                "failed": tally["failed"],
                "success_rate": _rate(tally["succeeded"], total),
                "link": links.query(gateway_clause, started_since),
            }
        )
    stuck_before = now - timedelta(seconds=settings.dashboard_stuck_after)
    return {
        "generated_at": _iso(now),
        "window_minutes": WINDOW_MINUTES,
        "per_minute": [
            {"minute": _iso(since + timedelta(minutes=index)), **counts}
            for index, counts in enumerate(snap.per_minute)
        ],
        "totals": totals,
        "success_rate": _rate(totals["succeeded"], finished),
        "initiation_latency_ms": {
            "p50": None if p50 is None else round(p50 * 1000, 1),
            "p95": None if p95 is None else round(p95 * 1000, 1),
        },
        "by_gateway": gateways,
        "fraud_blocks": totals["blocked"],
        "open_reviews": snap.open_reviews,
        "stuck": snap.stuck,
        "stuck_after_seconds": settings.dashboard_stuck_after,
        "failed_notifications": snap.failed_notifications,
        "links": {
            **{
                outcome: links.query(f'PaymentStatus="{outcome}"', started_since)
                for outcome in dashboard.OUTCOMES
            },
            "started": links.query(started_since),
            "open_reviews": links.query('PaymentStatus="in_review"', 'ExecutionStatus="Running"'),
            "stuck": links.query(
                'ExecutionStatus="Running"',
                "PaymentStatus IN ({})".format(
                    ", ".join(f'"{status}"' for status in dashboard.IN_FLIGHT)
                ),
                f'StartTime < "{_iso(stuck_before)}"',
            ),
            # A payment whose final notification failed stays open for a re-drive
            # (`retry_notification`): final status, workflow still running.
            "failed_notifications": links.query(
                'ExecutionStatus="Running"',
                "PaymentStatus IN ({})".format(
                    ", ".join(f'"{status}"' for status in dashboard.OUTCOMES)
                ),
            ),
        },
    }


async def dashboard_data(request: Request) -> Response:
    require_operator(request)
    if request.query_params:
        raise ApiError(400, "invalid_query", "this endpoint takes no query parameters")
    state = state_of(request)
    now = datetime.now(UTC)

    def read() -> dashboard.Snapshot:
        with transaction(state.sessions) as session:
            return dashboard.snapshot(
                session,
                now=now,
                minutes=WINDOW_MINUTES,
                stuck_after=timedelta(seconds=state.settings.dashboard_stuck_after),
                notifications_since=now - FAILED_NOTIFICATIONS_WINDOW,
            )

    snap = await run_in_threadpool(read)
    metrics: ApiMetrics = request.app.state.metrics
    return JSONResponse(
        build_data(snap, metrics, state.settings, now), headers={"Cache-Control": "no-store"}
    )
