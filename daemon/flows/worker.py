"""A worker: claims due jobs of one kind from the store, runs a handler per job, settles it.

Wakes on enqueue (store events), on the earliest retry time, and at least every poll
interval. On stop it takes no new jobs, lets in-flight handlers finish within the timeout,
and gives unfinished jobs back to the store (ready again, attempt not counted).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from .. import logs
from ..metrics import Metrics
from ..retry import backoff_delay
from ..store import Job, Outcome, Store

Handler = Callable[[Job], Awaitable[Outcome]]

log = logs.get_logger("worker")


class Worker:
    def __init__(
        self,
        store: Store,
        kind: str,
        handler: Handler,
        metrics: Metrics,
        *,
        concurrency: int = 8,
        poll_interval_s: float = 5.0,
        error_backoff: tuple[float, float] = (2.0, 600.0),
        max_attempts: int = 10,
    ) -> None:
        self.store = store
        self.kind = kind
        self.handler = handler
        self.metrics = metrics
        self.concurrency = concurrency
        self.poll_interval_s = poll_interval_s
        self.error_backoff = error_backoff
        self.max_attempts = max_attempts
        self._running: dict[int, asyncio.Task[None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"worker-{self.kind}")

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                free = self.concurrency - len(self._running)
                jobs = await self.store.claim(self.kind, free) if free > 0 else []
            except Exception as exc:
                log.error("worker_claim_failed", kind=self.kind, error=repr(exc))
                await self._idle(1.0)
                continue
            for job in jobs:
                task = asyncio.create_task(self._run(job), name=f"job-{self.kind}-{job.id}")
                self._running[job.id] = task
            if jobs:
                continue
            if free <= 0:
                # All slots busy: wait for one to free up.
                await asyncio.wait(list(self._running.values()), return_when=asyncio.FIRST_COMPLETED)
                continue
            due = await self.store.next_due(self.kind)
            wait = self.poll_interval_s if due is None else min(self.poll_interval_s, max(0.0, due - self.store.clock()))
            await self._idle(wait)

    async def _idle(self, seconds: float) -> None:
        stop = asyncio.ensure_future(self._stopping.wait())
        work = asyncio.ensure_future(self.store.wait_for_work(self.kind, seconds))
        try:
            await asyncio.wait({stop, work}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for f in (stop, work):
                if not f.done():
                    f.cancel()

    async def _run(self, job: Job) -> None:
        try:
            try:
                outcome = await self.handler(job)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("job_handler_error", kind=self.kind, job_id=job.id, error=repr(exc))
                if job.attempts >= self.max_attempts:
                    outcome = Outcome.dead(f"handler error: {exc!r}"[:500])
                else:
                    outcome = Outcome.retry(backoff_delay(job.attempts, *self.error_backoff), f"handler error: {exc!r}"[:500])
            await self.store.settle(job.id, outcome)
            self.metrics.jobs_finished.labels(self.kind, outcome.state if outcome.state != "ready" else "retry").inc()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # settling failed (store trouble): the job stays in flight until restart
            log.error("job_settle_failed", kind=self.kind, job_id=job.id, error=repr(exc))
        finally:
            self._running.pop(job.id, None)

    async def stop(self, timeout_s: float) -> None:
        """Stop taking jobs; give in-flight ones ``timeout_s`` to finish, release the rest."""
        self._stopping.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=max(timeout_s, 0.1))
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
        running = dict(self._running)
        if running:
            done, pending = await asyncio.wait(list(running.values()), timeout=timeout_s)
            unfinished = [jid for jid, t in running.items() if t in pending]
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
            if unfinished:
                try:
                    await self.store.release(unfinished)
                except Exception as exc:
                    log.error("job_release_failed", kind=self.kind, error=repr(exc))
                log.warning("worker_stopped_with_unfinished_jobs", kind=self.kind, released=len(unfinished))
