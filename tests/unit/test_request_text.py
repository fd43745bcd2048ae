"""Free text at the edge: one character rule (paytide/text.py), carried by every request string."""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import pytest
from pydantic import BaseModel, ValidationError

import api.app  # noqa: F401 - imports every module that defines a request model
from api.schemas import PRINTABLE, CreatePayment, Strict
from paytide.text import refused_character

pytestmark = pytest.mark.unit

REFUSED = ["\x00", "\x01", "\t", "\n", "\r", "\x1b", "\x1f", "\x7f", "\x80", "\x85", "\x9f"]
REFUSED += ["\u2028", "\u2029", "\ud800", "\udfff"]
ALLOWED = ["order 77", "Café Noël", "東京", "a\u00a0b", "pay 🙂", "~!@#$%^&*()[]{}<>\"'\\"]


@pytest.mark.parametrize("char", REFUSED, ids=lambda c: f"U+{ord(c):04X}")
def test_refused_characters_are_named_with_their_position(char: str) -> None:
    """C0, DEL, C1, U+2028/9 and lone surrogates are refused, named by code point and index."""
    assert refused_character(f"ab{char}c") == f"U+{ord(char):04X} at position 2"


@pytest.mark.parametrize("value", ALLOWED)
def test_printable_text_in_any_script_is_allowed(value: str) -> None:
    """Letters of any script, symbols, emoji and no-break spaces are ordinary text."""
    assert refused_character(value) is None


def _request_models() -> list[type[BaseModel]]:
    """Every request body schema: the subclasses of ``Strict`` (response models are others)."""
    found: list[type[BaseModel]] = []
    pending: list[type[BaseModel]] = [Strict]
    while pending:
        for model in pending.pop().__subclasses__():
            pending.append(model)
            found.append(model)
    return found


def _unguarded(annotation: Any, metadata: list[Any], where: str) -> Iterator[str]:
    """Every place under ``annotation`` where a str is accepted without PRINTABLE."""
    if get_origin(annotation) is Annotated:
        base, *extra = get_args(annotation)
        yield from _unguarded(base, [*metadata, *extra], where)
    elif annotation is str:
        if PRINTABLE not in metadata:
            yield where
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        for name, field in annotation.model_fields.items():
            yield from _unguarded(field.annotation, list(field.metadata), f"{where}.{name}")
    elif get_origin(annotation) in (Union, types.UnionType, dict, list, tuple, set, frozenset):
        for index, arg in enumerate(get_args(annotation)):
            yield from _unguarded(arg, [], f"{where}[{index}]")
    elif get_origin(annotation) is Literal or annotation in (typing.Any, object):
        return


def test_every_string_of_every_request_model_refuses_control_characters() -> None:
    """Each str a request model accepts (fields, nested models, metadata keys and values)
    carries PRINTABLE, so a new field cannot forget the rule."""
    models = _request_models()
    assert len(models) >= 8 and CreatePayment in models
    unguarded = [where for model in models for where in _unguarded(model, [], model.__name__)]
    assert unguarded == []


def test_a_refused_character_is_the_invalid_characters_error_of_its_field() -> None:
    """A NUL in an identifier is invalid_characters (checked before the pattern), and a metadata
    value's error names its key."""
    body = {
        "amount": 100,
        "currency": "USD",
        "customer_id": "cus\x00",
        "payment_method": "pm_x",
        "order_id": "o",
        "metadata": {"note": "a\u2028b"},
    }
    with pytest.raises(ValidationError) as raised:
        CreatePayment.model_validate(body)
    errors = {(".".join(map(str, e["loc"])), e["type"]) for e in raised.value.errors()}
    assert errors == {
        ("customer_id", "invalid_characters"),
        ("metadata.note", "invalid_characters"),
    }
