"""The OpenAPI document and the router describe the same operations."""

from __future__ import annotations

import pytest

from api.app import ROUTES
from api.auth import is_public
from api.openapi import OPERATIONS, build_spec

pytestmark = pytest.mark.unit


def _routed() -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for route in ROUTES:
        # OPTIONS is the codec's CORS preflight, HEAD is Starlette's shadow of GET.
        methods = (route.methods or set()) - {"OPTIONS", "HEAD"}
        found |= {(method.lower(), route.path) for method in methods}
    return found


def test_every_route_is_in_the_spec_and_every_operation_is_routed() -> None:
    """A route added without its spec entry (or a stale entry) fails here, not in a client."""
    assert {(op.method, op.path) for op in OPERATIONS} == _routed()


def test_every_schema_reference_resolves() -> None:
    """Each $ref in the document names a schema in components."""
    spec = build_spec("test")
    names = set(spec["components"]["schemas"])
    refs: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(spec)
    assert refs
    assert {ref.rsplit("/", 1)[-1] for ref in refs} <= names


def test_links_from_create_point_at_operations_that_exist() -> None:
    """The links on POST /payments name real operation ids, fed by the answer's id."""
    spec = build_spec("test")
    ids = {op["operationId"] for ops in spec["paths"].values() for op in ops.values()}
    links = spec["paths"]["/payments"]["post"]["responses"]["201"]["links"]
    assert {link["operationId"] for link in links.values()} <= ids
    assert {link["parameters"]["payment_id"] for link in links.values()} == {"$response.body#/id"}


def test_operations_without_a_key_are_exactly_the_public_paths() -> None:
    """The spec's keyless operations are the ones the auth middleware lets through."""
    spec = build_spec("test")
    keyless = {
        path for path, ops in spec["paths"].items() for op in ops.values() if "security" not in op
    }
    assert keyless == {op.path for op in OPERATIONS if is_public(op.path)}
    assert all(is_public(op.path) == op.public for op in OPERATIONS)
