"""The live dashboard in a real browser: Debian's Chromium, driven by Playwright (no browser
download), watching its counters move as real payments go through the stack."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright, expect
from temporalio.testing import WorkflowEnvironment

from paytide.api_keys import Role
from tests.integration.stack import Stack, issue_api_key, running_stack

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
HAVE_CHROMIUM = Path(CHROMIUM).is_file()
# CI installs Chromium (.ci/run) and sets this: there, a missing browser fails the test.
REQUIRE_BROWSER = os.environ.get("PAYTIDE_REQUIRE_BROWSER") == "1"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not HAVE_CHROMIUM:
        message = f"no Chromium at {CHROMIUM} (apt-get install -y chromium)"
        if REQUIRE_BROWSER:
            pytest.fail(message + "; PAYTIDE_REQUIRE_BROWSER=1 makes that a failure")
        pytest.skip(message)
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def stack(dev_env: WorkflowEnvironment, empty_database_url: str) -> AsyncIterator[Stack]:
    # The dashboard counts every merchant's payments of the last 15 minutes: a ledger of its own
    # keeps the session's other tests out of the numbers. A large amount (>= 10,000 major
    # units) alone scores 75: it waits in review.
    async with running_stack(
        dev_env.client, empty_database_url, risk_large_amount_weight=75
    ) as running:
        yield running


async def test_dashboard_counts_live_payments(
    browser: Browser, stack: Stack, tmp_path: Path
) -> None:
    """The page refuses a merchant's key, takes an operator's, and its succeeded, failed,
    success-rate, latency, open-review and gateway numbers follow real payments without a
    reload; the numbers link to Temporal Web UI lists."""
    operator_key = issue_api_key(stack.engine, "dashboard-operator", Role.OPERATOR)
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    await page.goto(f"{stack.settings.effective_api_url}/dashboard")
    await expect(page.locator("#status")).to_have_text("not connected")

    # A merchant's key is refused and forgotten; the form comes back with the reason.
    await page.fill("#key", stack.api_key)
    await page.click("button[type=submit]")
    await expect(page.locator("#status")).to_contain_text("operator")
    await expect(page.locator("#connect")).to_be_visible()

    await page.fill("#key", operator_key)
    await page.click("button[type=submit]")
    await expect(page.locator("#board")).to_be_visible()
    await expect(page.locator("#status")).to_contain_text("live")
    await expect(page.locator("#succeeded")).to_have_text("0")
    await expect(page.locator("#failed")).to_have_text("0")
    await expect(page.locator("#open_reviews")).to_have_text("0")
    await expect(page.locator("#success_rate")).to_have_text("\u2013")  # no payment: a dash
    await expect(page.locator("#failed").locator("..")).not_to_have_class(re.compile("alert"))

    for _ in range(3):
        created = await stack.pay()
        assert created.status_code == 201, created.text
        await stack.wait_final(created.json()["id"])
    declined = await stack.pay(payment_method="pm_sandbox_decline")
    assert declined.status_code == 201, declined.text
    review = await stack.pay(amount=2_000_000)
    assert review.json()["status"] == "in_review", review.text

    # No reload: the page's own polling picks the payments up.
    await expect(page.locator("#succeeded")).to_have_text("3", timeout=15_000)
    await expect(page.locator("#failed")).to_have_text("1", timeout=15_000)
    await expect(page.locator("#success_rate")).to_have_text("75.0 %")
    await expect(page.locator("#open_reviews")).to_have_text("1", timeout=15_000)
    await expect(page.locator("#p50")).to_have_text(re.compile(r"^\d+ ms$"))
    await expect(page.locator("#p95")).to_have_text(re.compile(r"^\d+ ms$"))
    await expect(page.locator("tr[data-gateway=sandbox] td")).to_have_text(
        ["sandbox", "4", "3", "1", "75.0 %"]
    )
    # Problem tiles are coloured exactly while their number is not zero.
    await expect(page.locator("#failed").locator("..")).to_have_class(re.compile(r"\balert\b"))
    await expect(page.locator("#open_reviews").locator("..")).to_have_class(re.compile("notice"))
    coloured = await page.evaluate(
        """() => [...document.querySelectorAll("[data-when-positive]")].map((box) => [
            Number(box.querySelector("a").textContent) > 0,
            box.classList.contains(box.dataset.whenPositive)])"""
    )
    assert len(coloured) == 5
    assert all(positive == lit for positive, lit in coloured), coloured

    succeeded_link = await page.locator("#succeeded").get_attribute("href")
    assert succeeded_link is not None
    assert succeeded_link.startswith(stack.settings.effective_temporal_ui_url)
    assert "PaymentStatus%3D%22succeeded%22" in succeeded_link
    review_link = await page.locator("#open_reviews").get_attribute("href")
    assert review_link is not None and "in_review" in review_link

    screenshot = tmp_path / "dashboard.png"
    await page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.stat().st_size > 10_000
    print(f"dashboard screenshot: {screenshot}")
    await page.close()
