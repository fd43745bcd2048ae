"""docs/security.md lists the security tests by name; every name it gives must exist."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "security.md").read_text()


def _named_tests() -> list[tuple[str, str]]:
    """(file, test) pairs from table cells like `tests/a.py::test_x`, `::test_y`."""
    pairs: list[tuple[str, str]] = []
    for line in DOC.splitlines():
        if not line.startswith("| `tests/"):
            continue
        cell = line.split("|")[1]
        current = ""
        for path, name in re.findall(r"`(tests/[\w/]+\.py)?::(\w+)`", cell):
            current = path or current
            pairs.append((current, name))
    return pairs


def test_every_listed_security_test_exists() -> None:
    """Each file::test in docs/security.md names a test function that is in that file."""
    pairs = _named_tests()
    assert len(pairs) > 50, "the list is shorter than expected: is the table format stale?"
    missing = []
    for path, name in pairs:
        tree = ast.parse((ROOT / path).read_text())
        defined = {
            node.name
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        }
        if name not in defined:
            missing.append(f"{path}::{name}")
    assert missing == []


def test_every_new_security_test_file_is_listed() -> None:
    """Every test in the security-only test files is in the list, so the list stays complete."""
    listed = set(_named_tests())
    files = [
        "tests/integration/test_auth_http.py",
        "tests/integration/test_merchants_cli.py",
        "tests/integration/test_api_key_secrets.py",
        "tests/integration/test_limits_http.py",
        "tests/integration/test_demo_merchant.py",
        "tests/unit/test_rate_limit.py",
        "tests/unit/test_key_cache.py",
        "tests/integration/test_production_start.py",
        "tests/unit/test_production_rules.py",
        "tests/integration/test_state_files.py",
        "tests/integration/test_free_text_http.py",
        "tests/unit/test_request_text.py",
        "tests/integration/test_hostile_json_http.py",
        "tests/unit/test_untrusted_json.py",
        "tests/integration/test_edge_limits_http.py",
        "tests/unit/test_auth_failures.py",
        "tests/integration/test_merchant_isolation_http.py",
        "tests/integration/test_gateway_mismatch_http.py",
        "tests/integration/test_webhook_targets_http.py",
        "tests/unit/test_outbound.py",
        "tests/integration/test_partial_capture_http.py",
        "tests/workflow/test_escalation.py",
        "tests/integration/test_escalation_http.py",
    ]
    unlisted = []
    for path in files:
        tree = ast.parse((ROOT / path).read_text())
        for node in tree.body:
            is_test = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            if is_test and node.name.startswith("test_") and (path, node.name) not in listed:
                unlisted.append(f"{path}::{node.name}")
    assert unlisted == []
