"""``GET /openapi.json``: the API described as OpenAPI 3.1, built from the same pydantic models
that validate requests, so the spec cannot drift from what the handlers accept.

Response shapes are described here as models of their own. They leave extra properties open:
a client must tolerate new fields, and the schema test (schemathesis against the live app)
checks that every answer the API gives still fits them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.schemas import (
    CancelBody,
    CaptureBody,
    CreatePayment,
    CreateRefund,
    CreateWebhookEndpoint,
    EventType,
    ReviewBody,
    UpdateWebhookEndpoint,
)
from workflows.contract import CaptureMethod, DisputeState, GatewayName, PaymentStatus, RefundState

COMPONENTS = "#/components/schemas/{model}"
BEARER = "apiKey"


class ErrorDetail(BaseModel):
    code: str = Field(description="machine-readable, stable; see docs/api.md")
    message: str = Field(description="what is wrong and what to do, for a human")
    details: Any = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class RiskFactorOut(BaseModel):
    name: str
    weight: int
    evidence: dict[str, int | str]


class FailureOut(BaseModel):
    code: str
    message: str
    retryable: bool


class NextActionOut(BaseModel):
    type: str
    redirect_url: str | None = None


class RefundOut(BaseModel):
    id: str
    object: Literal["refund"]
    payment_id: str
    status: RefundState
    amount: int = Field(description="minor units")
    currency: str
    reason: str | None
    metadata: dict[str, str]
    gateway: GatewayName | None
    gateway_reference: str | None
    failure: FailureOut | None
    created_at: str
    updated_at: str


class AcceptedRefund(BaseModel):
    """A 202: the refund is reserved in the ledger and goes on; poll its Location."""

    id: str
    object: Literal["refund"]
    payment_id: str
    status: RefundState
    amount: int | None


class RefundList(BaseModel):
    object: Literal["list"]
    data: list[RefundOut]


class DisputeOut(BaseModel):
    id: str
    object: Literal["dispute"]
    payment_id: str | None
    status: DisputeState
    amount: int | None
    currency: str | None
    reason: str | None
    gateway: GatewayName
    gateway_reference: str
    evidence_due_by: str | None
    created_at: str
    updated_at: str


class PaymentOut(BaseModel):
    id: str
    object: Literal["payment"]
    status: PaymentStatus
    amount: int = Field(description="minor units")
    amount_captured: int | None = Field(
        description="minor units taken from the card: null until the payment succeeded, less "
        "than amount after a partial capture; refunds are bounded by it"
    )
    currency: str
    customer_id: str
    order_id: str
    capture: CaptureMethod
    gateway: GatewayName | None
    gateway_reference: str | None
    risk_score: int | None
    risk_factors: list[RiskFactorOut]
    failure: FailureOut | None
    created_at: str
    updated_at: str
    client_secret: str | None = Field(default=None, description="only in requires_action")
    next_action: NextActionOut | None = Field(default=None, description="only in requires_action")
    refunds: list[RefundOut] | None = Field(default=None, description="GET /payments/{id} only")
    disputes: list[DisputeOut] | None = Field(default=None, description="GET /payments/{id} only")


class AcceptedPayment(BaseModel):
    """A 202: the payment is in the ledger and its charge goes on; poll its Location."""

    id: str
    object: Literal["payment"]
    status: PaymentStatus
    amount: int
    currency: str


class PaymentList(BaseModel):
    object: Literal["list"]
    data: list[PaymentOut]
    next_cursor: str | None = None


class Health(BaseModel):
    status: Literal["ok"]


class ReadyPart(BaseModel):
    ready: bool
    detail: str


class Readiness(BaseModel):
    ready: bool
    parts: dict[str, ReadyPart] | None = Field(
        default=None, description="each check and its detail; only for an operator key"
    )
    gateways: dict[str, str] | None = Field(
        default=None, description="availability of each gateway; only for an operator key"
    )


class WebhookReceipt(BaseModel):
    received: int
    deliveries: list[str]


class DashboardLatency(BaseModel):
    p50: float | None = Field(description="milliseconds, last 5 minutes; null without samples")
    p95: float | None


class DashboardGateway(BaseModel):
    gateway: str
    total: int
    succeeded: int
    failed: int
    success_rate: float | None
    link: str = Field(description="Temporal Web UI list of these payments")


class DashboardData(BaseModel):
    """The live dashboard's numbers (docs/observability.md); links open Temporal Web UI lists."""

    generated_at: str
    window_minutes: int
    per_minute: list[dict[str, int | str]]
    totals: dict[str, int]
    success_rate: float | None
    initiation_latency_ms: DashboardLatency
    by_gateway: list[DashboardGateway]
    fraud_blocks: int
    open_reviews: int
    stuck: int
    stuck_after_seconds: float
    failed_notifications: int
    links: dict[str, str]


class WebhookEndpointOut(BaseModel):
    id: str
    object: Literal["webhook_endpoint"]
    url: str
    events: list[EventType]
    status: Literal["enabled", "disabled"]
    description: str | None
    previous_secret_expires_at: str | None = Field(
        description="while a rotated-out secret still signs beside the new one"
    )
    created_at: str
    updated_at: str


class WebhookEndpointWithSecret(WebhookEndpointOut):
    """Create and rotate only: the signing secret, shown this once."""

    secret: str = Field(description="whsec_…; verify Paytide-Signature with it (docs/webhooks.md)")


class WebhookEndpointList(BaseModel):
    object: Literal["list"]
    data: list[WebhookEndpointOut]


class WebhookDeliveryOut(BaseModel):
    id: str
    object: Literal["webhook_delivery"]
    event_id: str
    event_type: EventType
    endpoint_id: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    redrives: int
    last_status_code: int | None
    last_error: str | None
    created_at: str
    updated_at: str
    delivered_at: str | None


class DeliveryAttemptOut(BaseModel):
    attempt: int
    status_code: int | None = Field(description="null when no answer came (network error)")
    latency_ms: int
    error: str | None
    at: str


class WebhookDeliveryDetail(WebhookDeliveryOut):
    attempt_log: list[DeliveryAttemptOut] = Field(description="every attempt, oldest first")


class WebhookDeliveryList(BaseModel):
    object: Literal["list"]
    data: list[WebhookDeliveryOut]
    next_cursor: str | None = None


class CodecPayload(BaseModel):
    """A Temporal Payload in proto3 JSON, where null means the field's default."""

    metadata: dict[str, str] | None = Field(default=None, description="base64 values")
    data: str | None = Field(default=None, description="base64")


class CodecPayloads(BaseModel):
    # proto3 JSON leaves an empty list out, so `{}` is a valid (empty) request.
    payloads: list[CodecPayload] = Field(default_factory=list)


_MODELS: list[type[BaseModel]] = [
    CreatePayment,
    CancelBody,
    CaptureBody,
    ReviewBody,
    CreateRefund,
    CreateWebhookEndpoint,
    UpdateWebhookEndpoint,
    ErrorBody,
    RefundOut,
    AcceptedRefund,
    RefundList,
    PaymentOut,
    AcceptedPayment,
    PaymentList,
    Health,
    Readiness,
    WebhookReceipt,
    WebhookEndpointOut,
    WebhookEndpointWithSecret,
    WebhookEndpointList,
    WebhookDeliveryOut,
    WebhookDeliveryDetail,
    WebhookDeliveryList,
    CodecPayloads,
    DashboardData,
]

_ERROR_TEXT = {
    400: "malformed request (JSON, header or query), or control characters in the path or query",
    401: "missing or unusable credentials",
    403: "the credentials may not do this",
    404: "no such resource for this merchant",
    405: "method not allowed",
    409: "the resource's state does not allow this now",
    413: "body too large",
    422: "validation failed; details name each field",
    429: "rate limited; see Retry-After",
    503: "a dependency is unreachable; retry after Retry-After",
}


@dataclass(frozen=True, kw_only=True)
class Operation:
    method: str
    path: str
    summary: str
    ok: dict[int, tuple[str, type[BaseModel] | None]]
    errors: tuple[int, ...]
    body: type[BaseModel] | None = None
    body_required: bool = True
    parameters: list[dict[str, Any]] = field(default_factory=list)
    tag: str = "payments"
    # Operations that take this one's answer `id` as their `payment_id` (OpenAPI links), so a
    # client generator or a stateful fuzzer can follow a payment from its creation.
    leads_to: tuple[str, ...] = ()
    # Probes, the spec itself, gateway webhooks (signed by the gateway), the codec (its own
    # optional token) and the dashboard's page need no API key: api/auth.py keeps the same list.
    public: bool = False
    # The successful answers' media type: JSON except for the metrics text and the HTML page.
    media_type: str = "application/json"


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": COMPONENTS.format(model=model.__name__)}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


_PAYMENT_ID = {
    "name": "payment_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1},
}
_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
    "description": "1-255 visible ASCII characters; the same key never charges twice",
}
_REFUND_ID = {
    "name": "refund_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1},
}
_ENDPOINT_ID = {
    "name": "endpoint_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1},
}
_DELIVERY_ID = {
    "name": "delivery_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "minLength": 1},
}
_STATUSES = [s.value for s in PaymentStatus]
_COMMON_ERRORS = (401, 429, 503)

OPERATIONS: list[Operation] = [
    Operation(
        method="get",
        path="/healthz",
        summary="The process is alive",
        ok={200: ("alive", Health)},
        errors=(),
        tag="health",
        public=True,
    ),
    Operation(
        method="get",
        path="/readyz",
        summary="Each part paytide needs is usable (503 when one is not); the details of each "
        "part only with an operator key, which is optional here",
        ok={200: ("ready", Readiness), 503: ("not ready", Readiness)},
        errors=(401, 429),
        tag="health",
        public=True,
    ),
    Operation(
        method="get",
        path="/openapi.json",
        summary="This document",
        ok={200: ("OpenAPI 3.1", None)},
        errors=(),
        tag="health",
        public=True,
    ),
    Operation(
        method="get",
        path="/metrics",
        summary="Prometheus metrics of this API process (operator key)",
        ok={200: ("Prometheus text exposition format", None)},
        errors=(403, *_COMMON_ERRORS),
        tag="operators",
        media_type="text/plain",
    ),
    Operation(
        method="get",
        path="/dashboard",
        summary="The live payments dashboard (a static page; it asks for an operator key)",
        ok={200: ("the page", None)},
        errors=(),
        tag="operators",
        public=True,
        media_type="text/html",
    ),
    Operation(
        method="get",
        path="/dashboard/data",
        summary="The dashboard's numbers: the last 15 minutes from the ledger and this API",
        ok={200: ("the numbers", DashboardData)},
        errors=(400, 403, *_COMMON_ERRORS),
        tag="operators",
    ),
    Operation(
        method="post",
        path="/payments",
        summary="Start a payment, or join the one started under the same Idempotency-Key",
        ok={
            201: ("created", PaymentOut),
            200: ("replayed (header Idempotent-Replayed: true)", PaymentOut),
            202: ("accepted; poll Location", AcceptedPayment),
        },
        errors=(400, 409, 413, 422, *_COMMON_ERRORS),
        body=CreatePayment,
        parameters=[_IDEMPOTENCY_KEY],
        leads_to=(
            "/payments/{payment_id}",
            "/payments/{payment_id}/cancel",
            "/payments/{payment_id}/capture",
            "/payments/{payment_id}/review",
            "/payments/{payment_id}/refunds",
        ),
    ),
    Operation(
        method="get",
        path="/payments",
        summary="List payments, newest first",
        ok={200: ("a page", PaymentList)},
        errors=(400, *_COMMON_ERRORS),
        parameters=[
            _query("customer_id", {"type": "string"}, "only this customer's payments"),
            _query("status", {"type": "string", "enum": _STATUSES}, "only this status"),
            _query("created_after", {"type": "string"}, "ISO 8601 time"),
            _query("limit", {"type": "integer", "minimum": 1, "maximum": 100}, "page size"),
            _query("cursor", {"type": "string"}, "next_cursor of the previous page"),
        ],
    ),
    Operation(
        method="get",
        path="/payments/{payment_id}",
        summary="One payment",
        ok={200: ("the payment", PaymentOut)},
        errors=(404, *_COMMON_ERRORS),
        parameters=[_PAYMENT_ID],
    ),
    Operation(
        method="post",
        path="/payments/{payment_id}/cancel",
        summary="Cancel a payment that has not settled",
        ok={
            200: ("canceled", PaymentOut),
            202: ("handed to the payment's workflow, not finished yet; poll Location", PaymentOut),
        },
        errors=(400, 404, 409, 413, 422, *_COMMON_ERRORS),
        body=CancelBody,
        body_required=False,
        parameters=[_PAYMENT_ID],
    ),
    Operation(
        method="post",
        path="/payments/{payment_id}/capture",
        summary="Capture an authorized payment (all of it, or less)",
        ok={
            200: ("captured, or failed with the gateway's reason", PaymentOut),
            202: ("handed to the payment's workflow, not finished yet; poll Location", PaymentOut),
        },
        errors=(400, 404, 409, 413, 422, *_COMMON_ERRORS),
        body=CaptureBody,
        body_required=False,
        parameters=[_PAYMENT_ID],
    ),
    Operation(
        method="post",
        path="/payments/{payment_id}/review",
        summary="An operator's decision on a payment in review",
        ok={
            200: ("decided", PaymentOut),
            202: ("handed to the payment's workflow, not finished yet; poll Location", PaymentOut),
        },
        errors=(400, 403, 404, 409, 413, 422, *_COMMON_ERRORS),
        body=ReviewBody,
        parameters=[_PAYMENT_ID],
        tag="operators",
    ),
    Operation(
        method="post",
        path="/payments/{payment_id}/refunds",
        summary="Refund all or part of a succeeded payment (Idempotency-Key required)",
        ok={
            201: ("reserved and sent to the gateway", RefundOut),
            200: ("replayed (header Idempotent-Replayed: true)", RefundOut),
            202: ("accepted; poll Location", AcceptedRefund),
        },
        errors=(400, 404, 409, 413, 422, *_COMMON_ERRORS),
        body=CreateRefund,
        parameters=[_PAYMENT_ID, {**_IDEMPOTENCY_KEY, "required": True}],
        tag="refunds",
    ),
    Operation(
        method="get",
        path="/payments/{payment_id}/refunds",
        summary="A payment's refunds",
        ok={200: ("the refunds", RefundList)},
        errors=(404, *_COMMON_ERRORS),
        parameters=[_PAYMENT_ID],
        tag="refunds",
    ),
    Operation(
        method="get",
        path="/payments/{payment_id}/refunds/{refund_id}",
        summary="One refund",
        ok={200: ("the refund", RefundOut)},
        errors=(404, *_COMMON_ERRORS),
        parameters=[_PAYMENT_ID, _REFUND_ID],
        tag="refunds",
    ),
    Operation(
        method="get",
        path="/reviews",
        summary="Payments waiting for an operator's decision",
        ok={200: ("the queue", PaymentList)},
        errors=(400, 403, *_COMMON_ERRORS),
        parameters=[_query("limit", {"type": "integer", "minimum": 1, "maximum": 200}, "at most")],
        tag="operators",
    ),
    Operation(
        method="post",
        path="/webhook-endpoints",
        summary="Add a URL for signed events; the answer shows its signing secret, once",
        ok={201: ("created", WebhookEndpointWithSecret)},
        errors=(400, 413, 422, *_COMMON_ERRORS),
        body=CreateWebhookEndpoint,
        tag="notifications",
    ),
    Operation(
        method="get",
        path="/webhook-endpoints",
        summary="The merchant's webhook endpoints (secrets never shown)",
        ok={200: ("the endpoints", WebhookEndpointList)},
        errors=_COMMON_ERRORS,
        tag="notifications",
    ),
    Operation(
        method="get",
        path="/webhook-endpoints/{endpoint_id}",
        summary="One webhook endpoint",
        ok={200: ("the endpoint", WebhookEndpointOut)},
        errors=(404, *_COMMON_ERRORS),
        parameters=[_ENDPOINT_ID],
        tag="notifications",
    ),
    Operation(
        method="post",
        path="/webhook-endpoints/{endpoint_id}",
        summary="Change an endpoint's URL, events, description or status",
        ok={200: ("updated", WebhookEndpointOut)},
        errors=(400, 404, 413, 422, *_COMMON_ERRORS),
        body=UpdateWebhookEndpoint,
        parameters=[_ENDPOINT_ID],
        tag="notifications",
    ),
    Operation(
        method="post",
        path="/webhook-endpoints/{endpoint_id}/disable",
        summary="Stop sending events to an endpoint",
        ok={200: ("disabled", WebhookEndpointOut)},
        errors=(404, *_COMMON_ERRORS),
        parameters=[_ENDPOINT_ID],
        tag="notifications",
    ),
    Operation(
        method="post",
        path="/webhook-endpoints/{endpoint_id}/rotate-secret",
        summary="A new signing secret; the old one keeps signing beside it for a window",
        ok={200: ("rotated; the new secret, shown once", WebhookEndpointWithSecret)},
        errors=(404, *_COMMON_ERRORS),
        parameters=[_ENDPOINT_ID],
        tag="notifications",
    ),
    Operation(
        method="get",
        path="/webhook-deliveries",
        summary="Deliveries to the merchant's endpoints, newest first (failed: dead letters)",
        ok={200: ("a page", WebhookDeliveryList)},
        errors=(400, *_COMMON_ERRORS),
        parameters=[
            _query(
                "status",
                {"type": "string", "enum": ["pending", "delivered", "failed"]},
                "only this status",
            ),
            _query("limit", {"type": "integer", "minimum": 1, "maximum": 100}, "page size"),
            _query("cursor", {"type": "string"}, "next_cursor of the previous page"),
        ],
        tag="notifications",
    ),
    Operation(
        method="get",
        path="/webhook-deliveries/{delivery_id}",
        summary="One delivery and every attempt the ledger logged",
        ok={200: ("the delivery", WebhookDeliveryDetail)},
        errors=(404, *_COMMON_ERRORS),
        parameters=[_DELIVERY_ID],
        tag="notifications",
    ),
    Operation(
        method="post",
        path="/webhook-deliveries/{delivery_id}/retry",
        summary="Re-drive a failed delivery (a dead letter) with a fresh retry window",
        ok={202: ("re-driven; it is pending again", WebhookDeliveryOut)},
        errors=(404, 409, *_COMMON_ERRORS),
        parameters=[_DELIVERY_ID],
        tag="notifications",
    ),
    Operation(
        method="post",
        path="/webhooks/{gateway}",
        summary="A gateway's signed event; verified before it is parsed or stored",
        ok={200: ("recorded (Adyen is answered with the text [accepted])", WebhookReceipt)},
        errors=(400, 404, 413, 503),
        parameters=[
            {
                "name": "gateway",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "enum": [g.value for g in GatewayName]},
            }
        ],
        tag="webhooks",
        public=True,
    ),
    Operation(
        method="post",
        path="/codec/encode",
        summary="Encrypt payloads for the Temporal Web UI and CLI",
        ok={200: ("encoded", CodecPayloads)},
        errors=(400, 401, 403, 413),
        body=CodecPayloads,
        tag="codec",
        public=True,
    ),
    Operation(
        method="post",
        path="/codec/decode",
        summary="Decrypt payloads for the Temporal Web UI and CLI",
        ok={200: ("decoded", CodecPayloads)},
        errors=(400, 401, 403, 413),
        body=CodecPayloads,
        tag="codec",
        public=True,
    ),
]


def _operation(op: Operation) -> dict[str, Any]:
    responses: dict[str, Any] = {}
    for status, (description, model) in op.ok.items():
        if op.media_type != "application/json":
            content: dict[str, Any] = {op.media_type: {"schema": {"type": "string"}}}
        else:
            schema = _ref(model) if model else {"type": "object"}
            content = {"application/json": {"schema": schema}}
        if op.path.startswith("/webhooks/") and status == 200:
            content["text/plain"] = {"schema": {"type": "string"}}
        responses[str(status)] = {"description": description, "content": content}
        if op.leads_to:
            responses[str(status)]["links"] = {
                operation_id(_method_of(path), path): {
                    "operationId": operation_id(_method_of(path), path),
                    "parameters": {"payment_id": "$response.body#/id"},
                }
                for path in op.leads_to
            }
    # api/request_target.py refuses control characters in any path id or query value.
    errors = op.errors if 400 in op.errors or not op.parameters else (400, *op.errors)
    for status in errors:
        responses[str(status)] = {
            "description": _ERROR_TEXT[status],
            "content": {"application/json": {"schema": _ref(ErrorBody)}},
        }
    spec: dict[str, Any] = {
        "summary": op.summary,
        "operationId": operation_id(op.method, op.path),
        "tags": [op.tag],
        "responses": responses,
    }
    if not op.public:
        spec["security"] = [{BEARER: []}]
    if op.parameters:
        spec["parameters"] = op.parameters
    if op.body is not None:
        spec["requestBody"] = {
            "required": op.body_required,
            "content": {"application/json": {"schema": _ref(op.body)}},
        }
    elif op.path.startswith("/webhooks/"):
        spec["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    return spec


def _method_of(path: str) -> str:
    return next(op.method for op in OPERATIONS if op.path == path)


def build_spec(version: str) -> dict[str, Any]:
    _, schemas = models_json_schema(
        [(model, "validation") for model in _MODELS], ref_template=COMPONENTS
    )
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "paytide",
            "version": version,
            "description": "Durable payments on Temporal. Errors are always "
            '{"error": {"code", "message", "details"}}; see docs/api.md.',
        },
        "paths": paths,
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {
                BEARER: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a merchant's or operator's API key, `pt_live_…` or `pt_test_…` "
                    "(`paytide merchants create`)",
                }
            },
        },
    }


def operation_id(method: str, path: str) -> str:
    words = path.strip("/").replace("{", "").replace("}", "").replace(".", "_").split("/")
    return "_".join([method, *words])


async def openapi_json(request: Request) -> Response:
    spec: dict[str, Any] = request.app.state.openapi
    return JSONResponse(spec)
