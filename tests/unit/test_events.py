"""One table of event names (workflows/events.py) that every channel, the API and the docs use."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

from api.schemas import EventType as SubscribableEvent
from workflows.events import CHANNELS, ENDPOINT_EVENTS, Channel, EventType, carried_by

ROOT = Path(__file__).resolve().parents[2]
# Where paytide names the events it sends; gateways/ holds the gateways' own inbound names.
SENDERS = ("activities", "api", "paytide", "workflows", "worker")
NAME = re.compile(r"""["']((?:payment|refund|dispute|webhook)\.[a-z_]+)["']""")


def test_every_event_has_its_channels() -> None:
    """Every event name is carried by at least one channel, and each channel's list is its own."""
    assert set(CHANNELS) == set(EventType)
    assert all(CHANNELS[event] for event in EventType)
    assert set(carried_by(Channel.OPERATORS)) >= {
        EventType.PAYMENT_NEEDS_ATTENTION,
        EventType.PAYMENT_CONFLICTED,
        EventType.PAYMENT_IN_REVIEW,
    }


def test_endpoints_subscribe_to_the_tables_names() -> None:
    """The API accepts exactly the events the fan-out delivers, escalations included."""
    assert list(get_args(SubscribableEvent)) == [str(event) for event in ENDPOINT_EVENTS]
    assert {"payment.needs_attention", "payment.conflicted"} <= set(ENDPOINT_EVENTS)


def test_no_event_name_outside_the_table() -> None:
    """Every event name in the code that sends events is one of the table's names."""
    names: dict[str, set[str]] = {}
    for folder in SENDERS:
        for path in (ROOT / folder).rglob("*.py"):
            for name in NAME.findall(path.read_text()):
                names.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    unknown = {name: where for name, where in names.items() if name not in set(EventType)}
    assert unknown == {}


def test_the_webhooks_page_lists_the_endpoint_events() -> None:
    """docs/webhooks.md's event table names exactly the events endpoints can subscribe to."""
    page = (ROOT / "docs" / "webhooks.md").read_text()
    table = page.split("## Events", 1)[1].split("\n\n", 2)[1]
    listed = set(re.findall(r"`((?:payment|refund|dispute)\.[a-z_]+)`", table))
    assert listed == {str(event) for event in ENDPOINT_EVENTS}
