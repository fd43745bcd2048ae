"""Retry policies the workflows share, so a ledger write or a notification retries the same way
whichever workflow runs it. Every policy has a limit: a step that can never succeed ends
visibly, it never loops (docs/operations.md, "A step that cannot succeed")."""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

# The ledger is ours: keep trying rather than lose a record, through a database restart or
# failover (seconds to minutes) and a maintenance window, about an hour in all: 0.2 s doubling to
# 10 s, then every 10 s (longer when each try waits out its 10 s timeout). Past that a human must
# look anyway, so the step ends visibly (the payment workflow: needs_attention and an operator
# alert). A write the database refuses outright (LedgerRejected, activities/ledger_errors.py) is
# not retried at all.
LEDGER_RETRY_ATTEMPTS = 360
LEDGER_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=LEDGER_RETRY_ATTEMPTS,
)
# A merchant notification or an operator alert: a few tries with backoff, then it is recorded as
# failed (and re-drivable); it never changes the outcome of what it reports.
NOTIFY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=5,
)
