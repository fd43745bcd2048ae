"""Retry policies the workflows share, so a ledger write or a notification retries the same way
whichever workflow runs it."""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

# The ledger is ours: keep trying rather than lose a record. An outage stalls, never drops.
LEDGER_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200), maximum_interval=timedelta(seconds=10)
)
# A merchant notification or an operator alert: a few tries with backoff, then it is recorded as
# failed (and re-drivable); it never changes the outcome of what it reports.
NOTIFY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=5,
)
