"""structlog set-up shared by every paytide process.

Console output on a terminal, JSON lines elsewhere. The SDK's own loggers (including the
replay-safe ``workflow.logger`` and ``activity.logger``) go through the standard library, so
their records are routed through the same processors and carry the same fields.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog
from temporalio import activity, workflow

from paytide.settings import LogFormat, Settings
from paytide.tracing import add_trace_ids

REDACTED = "[redacted]"
# Field names whose values are credentials; matched case-insensitively anywhere in the key.
_SECRET_KEY = re.compile(
    r"(secret|password|passwd|api_key|apikey|authorization|hmac|token|signature|client_secret)",
    re.IGNORECASE,
)
# Values shaped like credentials, wherever they appear in a message. API keys carry their mode
# (sk_live_…, and paytide's own pt_live_<id>_<secret>; its bare prefix pt_live_<id> is public and
# kept); webhook signing secrets do not (Stripe's are whsec_ and random characters).
_SECRET_VALUE = re.compile(
    r"\b(?:(?:sk|rk|pk)_(?:live|test|sandbox)[A-Za-z0-9_]*|whsec_[A-Za-z0-9_+/=]+"
    r"|pt_(?:live|test)_[0-9a-f]+_[0-9a-f]+)"
    r"|Bearer\s+[A-Za-z0-9._~+/=-]+"
)
# A run of 13-19 digits (optionally spaced) looks like a card number; never log one.
_PAN = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")


def _scrub_text(text: str) -> str:
    return _PAN.sub(REDACTED, _SECRET_VALUE.sub(REDACTED, text))


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return _scrub_text(value)
    if isinstance(value, dict):
        return {
            k: REDACTED if isinstance(k, str) and _SECRET_KEY.search(k) else _scrub(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Drop credential values from a log event before it is rendered."""
    for key in list(event_dict):
        if _SECRET_KEY.search(key) and key != "event":
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _scrub(event_dict[key])
    return event_dict


def _lift_temporal_context(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Lift the SDK's ``temporal_workflow`` / ``temporal_activity`` extras to top-level keys."""
    for extra in ("temporal_workflow", "temporal_activity"):
        info = event_dict.pop(extra, None)
        if isinstance(info, dict):
            if "workflow_id" in info:
                event_dict.setdefault("workflow_id", info["workflow_id"])
            if "activity_type" in info:
                event_dict.setdefault("activity", info["activity_type"])
            if "attempt" in info and extra == "temporal_activity":
                event_dict.setdefault("attempt", info["attempt"])
    return event_dict


def _use_console(settings: Settings) -> bool:
    if settings.log_format is LogFormat.CONSOLE:
        return True
    if settings.log_format is LogFormat.JSON:
        return False
    return sys.stderr.isatty()


def configure_logging(settings: Settings) -> None:
    # The SDK would also append its context dict to every message; we carry it as fields.
    workflow.logger.workflow_info_on_message = False
    activity.logger.activity_info_on_message = False
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        _lift_temporal_context,
        add_trace_ids,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=True)
        if _use_console(settings)
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    # Access logs repeat what our own request logging says, with less context.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger
