"""Routing: which gateways a payment may use, in order, from rules in settings.

A rule matches on merchant, currency and amount range; the first matching rule gives an ordered
list of gateways. Gateways without credentials are dropped (they are "not available"). An explicit
gateway in the request wins when it is available.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from paytide.routing import RoutingRule
from workflows.contract import GatewayName


class NoGatewayAvailable(Exception):
    """No configured gateway can take this payment; the message says why."""


def route(
    rules: Sequence[RoutingRule],
    available: Collection[GatewayName],
    *,
    merchant: str,
    currency: str,
    amount_minor: int,
    requested: GatewayName | None = None,
) -> list[GatewayName]:
    if requested is not None:
        if requested not in available:
            raise NoGatewayAvailable(
                f"gateway {requested.value!r} is not configured on this deployment; available: "
                f"{sorted(g.value for g in available)}"
            )
        return [requested]
    for rule in rules:
        if rule.matches(merchant=merchant, currency=currency, amount_minor=amount_minor):
            wanted = [GatewayName(name) for name in dict.fromkeys(rule.gateways)]
            ordered = [g for g in wanted if g in available]
            if ordered:
                return ordered
    raise NoGatewayAvailable(
        f"no available gateway is routed for {currency} payments of merchant {merchant!r}"
    )
