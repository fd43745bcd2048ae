"""`paytide dev` as a user runs it: the whole stack up, a demo payment, a clean Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.ports import free_port

STARTUP_SECONDS = 150


def _descendants(pid: int) -> set[int]:
    """Every process whose ancestry leads to ``pid``, read from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces; fields after its closing parenthesis are fixed.
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        found.update(children)
        frontier.extend(children)
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited; it only waits to be reaped by its parent.
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@dataclass
class DevRun:
    process: subprocess.Popen[str]
    env: dict[str, str]
    output: list[str]

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.env['PAYTIDE_API_PORT']}"

    def read_until(self, pattern: str) -> re.Match[str]:
        deadline = time.monotonic() + STARTUP_SECONDS
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                pytest.fail("paytide dev exited early:\n" + "".join(self.output))
            self.output.append(line)
            match = re.search(pattern, line)
            if match:
                return match
        pytest.fail(f"no line matching {pattern!r}:\n" + "".join(self.output))


def dev_env(state_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYTIDE_")}
    env.update(
        {
            "PAYTIDE_STATE_DIR": str(state_dir),
            "PAYTIDE_TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
            "PAYTIDE_TEMPORAL_UI_PORT": str(free_port()),
            "PAYTIDE_API_PORT": str(free_port()),
            "PAYTIDE_SANDBOX_PORT": str(free_port()),
            "PAYTIDE_WORKER_METRICS_PORT": str(free_port()),
            "PAYTIDE_DEV_SMTP_PORT": str(free_port()),
            "PAYTIDE_LOG_FORMAT": "json",
        }
    )
    return env


@contextmanager
def paytide_dev(env: dict[str, str], *args: str) -> Iterator[DevRun]:
    process = subprocess.Popen(
        [sys.executable, "-m", "paytide", "dev", *args],
        env=env,
        # The common default: files created without an explicit mode would be world-readable.
        umask=0o022,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield DevRun(process=process, env=env, output=[])
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def _stop(run: DevRun) -> set[int]:
    """Ctrl-C the supervisor; return the processes it had started."""
    children = _descendants(run.process.pid)
    assert children, "paytide dev should have child processes"
    run.process.send_signal(signal.SIGINT)
    assert run.process.wait(timeout=30) == 0
    return children


def test_dev_brings_up_the_stack_takes_a_payment_and_stops_cleanly(tmp_path: Path) -> None:
    """The README's first command: ready, a demo key, demo payment succeeds (and the worker's
    /metrics counts it), no orphans, every state file readable by its owner only."""
    env = dev_env(tmp_path / "state")
    with paytide_dev(env) as run:
        run.read_until(r"paytide is up")
        mail = Path(run.read_until(r"receipts\s+(\S+)/\*\.eml").group(1))
        assert mail == tmp_path / "state" / "mail"
        api_key = run.read_until(r"API key\s+(pt_test_\w+)").group(1)
        auth = {"Authorization": f"Bearer {api_key}"}
        ready = httpx.get(f"{run.api}/readyz", timeout=5)
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"ready": True}
        ui = httpx.get(f"http://127.0.0.1:{env['PAYTIDE_TEMPORAL_UI_PORT']}/", timeout=5)
        assert ui.status_code == 200
        found = run.read_until(r"GET /payments/(pay_\w+) -> status=(\w+)")
        payment_id, status = found.group(1), found.group(2)
        assert status == "succeeded", "".join(run.output)
        # The demo payment carries a customer email: its receipt lands in the sink's folder.
        deadline = time.monotonic() + 30
        while not list(mail.glob("*.eml")) and time.monotonic() < deadline:
            time.sleep(0.2)
        receipts = [path.read_text() for path in mail.glob("*.eml")]
        assert len(receipts) == 1 and "42.00 USD" in receipts[0], "".join(run.output)
        # The Web UI's own API lists payments by the PaymentStatus search attribute.
        listed = httpx.get(
            f"http://127.0.0.1:{env['PAYTIDE_TEMPORAL_UI_PORT']}/api/v1/namespaces/default/workflows",
            params={"query": "PaymentStatus='succeeded'"},
            timeout=10,
        )
        assert listed.status_code == 200
        executions = listed.json()["executions"]
        assert executions and all(e["type"]["name"] == "PaymentWorkflow" for e in executions)
        # The worker process serves its own series and the Temporal SDK's on one port.
        scraped = httpx.get(
            f"http://127.0.0.1:{env['PAYTIDE_WORKER_METRICS_PORT']}/metrics", timeout=10
        ).text
        succeeded = [
            sample.value
            for family in text_string_to_metric_families(scraped)
            for sample in family.samples
            if sample.name == "paytide_payments_final_total"
            and sample.labels
            == {
                "status": "succeeded",
                "gateway": "sandbox",
                "currency": "USD",
                "failure_code": "none",
            }
        ]
        assert succeeded == [1.0], scraped[:2000]
        assert "temporal_workflow_task_schedule_to_start_latency_bucket" in scraped
        children = _stop(run)

    time.sleep(0.5)
    assert not [pid for pid in children if _alive(pid)]
    assert (tmp_path / "state" / "temporal.db").exists()
    # Ledger, Temporal's database, logs, demo key, receipts: the owner's only (finding 12).
    state = tmp_path / "state"
    written = [state, *state.rglob("*")]
    for name in ("ledger.db", "temporal.db", "demo_api_key", "logs/api.log", "mail"):
        assert state / name in written, name
    assert [str(path) for path in written if path.stat().st_mode & 0o077] == []

    # Payments survive a restart: the same state folder brings the payment back.
    with paytide_dev(env, "--no-demo") as again:
        again.read_until(r"paytide is up")
        # The demo merchant and its key are created once per state folder, not per start.
        assert again.read_until(r"API key\s+(pt_test_\w+)").group(1) == api_key
        payment = httpx.get(f"{again.api}/payments/{payment_id}", headers=auth, timeout=5).json()
        assert payment["status"] == "succeeded"
        assert httpx.get(f"{again.api}/payments/{payment_id}", timeout=5).status_code == 401
        temporal = subprocess.run(
            [
                str(Path(sys.executable).parent / "temporal"),
                "workflow",
                "list",
                "--address",
                env["PAYTIDE_TEMPORAL_ADDRESS"],
                "--query",
                "PaymentStatus='succeeded'",
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        assert "PaymentWorkflow" in temporal.stdout
        _stop(again)


def test_dev_names_the_variable_when_a_port_is_taken(tmp_path: Path) -> None:
    """A busy API port is reported by name with the variable that changes it; nothing starts."""
    env = dev_env(tmp_path / "state")
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", int(env["PAYTIDE_API_PORT"])))
        blocker.listen()
        result = subprocess.run(
            [sys.executable, "-m", "paytide", "dev"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert "PAYTIDE_API_PORT" in result.stdout
    assert f"port {env['PAYTIDE_API_PORT']}" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "state" / "temporal.db").exists()
