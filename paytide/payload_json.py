"""JSON payloads through pydantic, with one validator per type for the whole process.

The SDK builds a payload converter per workflow run, so a cache inside the converter (as in
``temporalio.contrib.pydantic``) is rebuilt for every payment and each type's validator is built
again: slower than the SDK's default. The validators here live as long as the process.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import TypeAdapter
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import PydanticJSONPlainPayloadConverter
from temporalio.converter import (
    CompositePayloadConverter,
    DefaultPayloadConverter,
    JSONPlainPayloadConverter,
)


@functools.lru_cache(maxsize=1024)
def _validator(hint: Any) -> TypeAdapter[Any]:
    return TypeAdapter(hint)


class _ProcessWideJSON(PydanticJSONPlainPayloadConverter):
    def from_payload(self, payload: Payload, type_hint: type | None = None) -> Any:
        hint: Any = type_hint if type_hint is not None else Any
        try:
            hash(hint)
        except TypeError:
            return TypeAdapter(hint).validate_json(payload.data)
        return _validator(hint).validate_json(payload.data)


class PaytidePayloadConverter(CompositePayloadConverter):
    """The SDK's default converters, with JSON done by pydantic."""

    def __init__(self) -> None:
        json = _ProcessWideJSON()
        super().__init__(
            *(
                json if isinstance(c, JSONPlainPayloadConverter) else c
                for c in DefaultPayloadConverter.default_encoding_payload_converters
            )
        )
