"""Recorded PaymentWorkflow histories replay with the current code; a changed workflow does not.

Replaying needs no Temporal server. The histories come from ``python -m tests.histories.record``
(see tests/histories/README.md).
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from temporalio import workflow

# The sandbox re-imports this module for ChangedPaymentWorkflow: pass the rest through.
with workflow.unsafe.imports_passed_through():
    from paytide.operator import load_history_file, replay_histories
    from tests.histories.record import AFTER_ADMISSION, BRANCHES, REFUND_AND_DISPUTE
    from workflows.contract import PaymentInput, PaymentView, RiskAssessment
    from workflows.payment import RECORD_WITH_NEIGHBOURS, PaymentWorkflow

ROOT = Path(__file__).parents[2]
HISTORIES = ROOT / "tests" / "histories"


@workflow.defn(name="PaymentWorkflow")
class ChangedPaymentWorkflow(PaymentWorkflow):
    """PaymentWorkflow as a careless edit would leave it: an activity added before the rest,
    with no ``workflow.patched`` guard."""

    @workflow.run
    async def run(self, input: PaymentInput) -> PaymentView:
        await workflow.execute_activity(
            "audit_payment", input.request.payment_id, start_to_close_timeout=timedelta(seconds=5)
        )
        return await super().run(input)


# Histories recorded before payments were admitted in one local activity: running payments of
# that age must keep replaying, which is what the `workflow.patched` guard is for.
BEFORE_ADMISSION = HISTORIES / "before_admission"
# The same for payments started before `charging` and the waiting status were written by the
# admission and the charge activity (decision 38).
BEFORE_NEIGHBOURS = HISTORIES / "before_neighbours"


def current() -> list[Path]:
    return sorted(HISTORIES.glob("*.json"))


@workflow.defn(name="PaymentWorkflow")
class AlwaysAdmitsInOneStep(PaymentWorkflow):
    """PaymentWorkflow with the admission change but without its ``workflow.patched`` guard."""

    @workflow.run
    async def run(self, input: PaymentInput) -> PaymentView:
        return await super().run(input)

    async def _admission(self) -> RiskAssessment:
        return await self._admit()


@workflow.defn(name="PaymentWorkflow")
class AlwaysRecordsWithNeighbours(PaymentWorkflow):
    """PaymentWorkflow with decision 38 but without its ``workflow.patched`` guard."""

    @workflow.run
    async def run(self, input: PaymentInput) -> PaymentView:
        return await super().run(input)

    def _records_with_neighbours(self) -> bool:
        return True


def recorded() -> list[Path]:
    return (
        current()
        + sorted(BEFORE_NEIGHBOURS.glob("*.json"))
        + sorted(BEFORE_ADMISSION.glob("*.json"))
    )


def test_every_branch_has_a_recorded_history() -> None:
    """Each branch the recorder knows (payment, refund, dispute) has its JSON file, so none is
    silently left out."""
    assert sorted(path.stem for path in current()) == sorted([*BRANCHES, *REFUND_AND_DISPUTE])


def test_histories_from_before_the_admission_patch_are_kept() -> None:
    """Every branch also has a history from before the patch, and only the new ones carry it."""
    assert sorted(path.stem for path in BEFORE_ADMISSION.glob("*.json")) == sorted(
        set(BRANCHES) - AFTER_ADMISSION
    )
    # A patch is a marker named core_patch (its id is inside an encoded payload).
    marker = '"markerName": "core_patch"'
    assert all(marker in (HISTORIES / f"{branch}.json").read_text() for branch in BRANCHES)
    assert not any(marker in path.read_text() for path in BEFORE_ADMISSION.glob("*.json"))


def test_histories_from_before_the_neighbours_patch_are_kept() -> None:
    """Every payment branch has a history from before decision 38; only the new ones carry its
    patch marker."""
    assert sorted(path.stem for path in BEFORE_NEIGHBOURS.glob("*.json")) == sorted(BRANCHES)
    # The patch id sits base64-encoded in the marker's payload.
    patch_id = base64.b64encode(
        json.dumps({"id": RECORD_WITH_NEIGHBOURS}, separators=(",", ":")).encode()
    ).decode()[:40]
    assert all(patch_id in (HISTORIES / f"{branch}.json").read_text() for branch in BRANCHES)
    assert not any(patch_id in path.read_text() for path in BEFORE_NEIGHBOURS.glob("*.json"))


async def test_histories_from_before_neighbours_do_not_replay_without_the_guard() -> None:
    """Without its guard, decision 38 breaks payments that were running when it shipped."""
    history = load_history_file(BEFORE_NEIGHBOURS / "ok.json")
    report = await replay_histories([history], [AlwaysRecordsWithNeighbours])
    assert not report.ok
    [failure] = report.failures
    assert failure.workflow_id == "ok"


async def test_old_histories_do_not_replay_without_the_patch_guard() -> None:
    """The guard is load-bearing: code that always admits in one step breaks old payments."""
    history = load_history_file(BEFORE_ADMISSION / "ok.json")
    report = await replay_histories([history], [AlwaysAdmitsInOneStep])
    assert not report.ok
    [failure] = report.failures
    assert failure.workflow_id == "ok"


async def test_recorded_histories_replay_with_the_current_workflow() -> None:
    """Every recorded history replays without a non-determinism error on the worker's workflows."""
    histories = [load_history_file(path) for path in recorded()]
    report = await replay_histories(histories)

    assert report.failures == []
    assert report.replayed == len(histories) > 0


async def test_an_unguarded_change_fails_replay_and_names_the_workflow() -> None:
    """A workflow that schedules a new activity first cannot replay; the report says which."""
    # A history whose first command is an ordinary one (newer ones open with the patch marker,
    # and the SDK names no event for a marker mismatch).
    history = load_history_file(BEFORE_ADMISSION / "ok.json")
    report = await replay_histories([history], [ChangedPaymentWorkflow])

    assert not report.ok
    [failure] = report.failures
    assert failure.workflow_id == history.workflow_id == "ok"
    assert failure.run_id == history.run_id
    assert "nondetermin" in failure.reason.lower()
    assert failure.event_id is not None  # the history event the new code disagreed with
    assert "1 of 1 histories do not replay" in report.summary()


def test_replay_command_accepts_the_recorded_histories() -> None:
    """``paytide replay tests/histories/*.json`` exits 0 and says all were deterministic."""
    files = [str(path) for path in recorded()]
    done = subprocess.run(
        [sys.executable, "-m", "paytide", "replay", *files],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    assert f"{len(files)} histories replayed, all deterministic" in done.stdout


def test_replay_command_fails_on_a_history_the_code_cannot_reproduce(tmp_path: Path) -> None:
    """A history whose first activity has another type makes the command exit 1, naming it."""
    exported = json.loads((HISTORIES / "ok.json").read_text())
    first = next(
        event["activityTaskScheduledEventAttributes"]
        for event in exported["events"]
        if "activityTaskScheduledEventAttributes" in event
    )
    renamed = first["activityType"]["name"] + "_v0"
    first["activityType"]["name"] = renamed
    tampered = tmp_path / "payment-tampered.json"
    tampered.write_text(json.dumps(exported))

    done = subprocess.run(
        [sys.executable, "-m", "paytide", "replay", str(tampered)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )

    assert done.returncode == 1, done.stdout + done.stderr
    assert "payment-tampered" in done.stdout
    assert renamed in done.stdout
    assert "at event" in done.stdout
