"""Routing rules as configuration: which gateways, in which order, for which payments."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

GatewayId = Literal["sandbox", "stripe", "adyen"]


class RoutingRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    merchant: str | None = None
    currency: str | None = None
    min_amount: int | None = Field(default=None, ge=0)
    max_amount: int | None = Field(default=None, ge=0)
    gateways: list[GatewayId] = Field(min_length=1)

    def matches(self, *, merchant: str, currency: str, amount_minor: int) -> bool:
        return (
            (self.merchant is None or self.merchant == merchant)
            and (self.currency is None or self.currency == currency)
            and (self.min_amount is None or amount_minor >= self.min_amount)
            and (self.max_amount is None or amount_minor <= self.max_amount)
        )


DEFAULT_RULES = [RoutingRule(gateways=["sandbox"])]
