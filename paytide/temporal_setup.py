"""``paytide temporal setup``: register paytide's search attributes on a cluster, idempotently."""

from __future__ import annotations

from collections.abc import Callable

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import (
    AddSearchAttributesRequest,
    ListSearchAttributesRequest,
)
from temporalio.client import Client

from paytide.search_attributes import ALL_KEYS


class SetupConflict(RuntimeError):
    """An attribute exists with another type; only an operator can resolve that."""


async def register_search_attributes(client: Client, say: Callable[[str], None]) -> list[str]:
    """Add the attributes the namespace lacks; return their names. Existing ones are checked."""
    existing = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    present = dict(existing.custom_attributes)
    missing: dict[str, IndexedValueType.ValueType] = {}
    for key in ALL_KEYS:
        wanted = IndexedValueType.ValueType(key.indexed_value_type)
        have = present.get(key.name)
        if have is None:
            missing[key.name] = wanted
        elif have != wanted:
            raise SetupConflict(
                f"search attribute {key.name} exists as {IndexedValueType.Name(have)} but paytide "
                f"needs {IndexedValueType.Name(wanted)}; remove or rename it on the cluster first"
            )
        else:
            say(f"  {key.name}: already registered")
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=client.namespace, search_attributes=missing)
        )
        for name in missing:
            say(f"  {name}: registered")
    return sorted(missing)
