"""``python -m bench.bare_worker``: the baseline's worker, set up as paytide's worker is.

Same client (payload encryption codec), same workflow runner, default worker options and a
32-thread pool for the synchronous local activities; runs until SIGTERM.
"""

from __future__ import annotations

import asyncio
import signal
from concurrent.futures import ThreadPoolExecutor

from temporalio.worker import Worker

from bench.bare import TASK_QUEUE, BareWorkflow, call, record
from paytide.settings import Settings
from paytide.temporal import connect
from worker.assemble import workflow_runner


async def run() -> None:
    settings = Settings()
    client = await connect(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    with ThreadPoolExecutor(max_workers=32, thread_name_prefix="activity") as executor:
        worker = Worker(
            client,
            task_queue=TASK_QUEUE,
            workflows=[BareWorkflow],
            workflow_runner=workflow_runner(settings),
            activities=[record, call],
            activity_executor=executor,
        )
        async with worker:
            print("bare worker polling", flush=True)
            await stop.wait()


if __name__ == "__main__":
    asyncio.run(run())
