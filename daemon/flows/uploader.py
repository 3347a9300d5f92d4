"""The CleverTap uploader: every record that goes to CleverTap passes here, in batches.

Jobs of the upload kinds (``zalo_event``: an inbound Zalo event; ``ct_record``: pre-built
records such as campaign outcomes and backfilled followers) are claimed from the store and
turned into records by a per-kind builder. A batch is sent when it holds ``batch_max``
records or its oldest job has waited ``flush_interval_s``; at most ``max_concurrency`` calls
are in flight. Profile updates of one identity in one batch are merged into one record.

Each job remembers which of its records CleverTap processed (``progress``), so a retry sends
only what is left: processed records are never sent twice (events are not idempotent).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import logs
from ..clevertap.upload import CleverTapClient, UploadOutcome
from ..metrics import Metrics
from ..retry import backoff_delay
from ..store import Job, Outcome, Store

log = logs.get_logger("clevertap.uploader")

@dataclass
class Prepared:
    """A claimed job and the records still to send for it."""

    job: Job
    records: list[tuple[str, dict[str, Any]]]  # (record key, record)
    done_keys: list[str] = field(default_factory=list)  # processed earlier (progress) or skipped
    users: list[dict[str, Any]] = field(default_factory=list)  # users-table updates once done
    note: str | None = None
    final: Outcome | None = None  # settle this way without uploading (e.g. an echo)


Builder = Callable[[Sequence[Job]], Awaitable[list[Prepared]]]


async def build_ct_records(jobs: Sequence[Job]) -> list[Prepared]:
    """``ct_record`` jobs carry their records ready-made."""
    out = []
    for job in jobs:
        done = set((job.progress or {}).get("done", []))
        recs = [(r["key"], r["record"]) for r in job.payload.get("records", []) if r["key"] not in done]
        out.append(Prepared(job, recs, sorted(done), list(job.payload.get("users", []))))
    return out


def _identity_key(record: dict[str, Any]) -> str:
    if "identity" in record:
        return "i:" + str(record["identity"])
    return "o:" + str(record.get("objectId"))


class Uploader:
    def __init__(
        self,
        store: Store,
        client: CleverTapClient,
        metrics: Metrics,
        builders: dict[str, Builder],
        *,
        batch_max: int = 1000,
        flush_interval_s: float = 1.0,
        max_concurrency: int = 4,
        max_attempts: int = 12,
        backoff: tuple[float, float] = (2.0, 600.0),
        poll_interval_s: float = 5.0,
    ) -> None:
        self.store = store
        self.client = client
        self.metrics = metrics
        self.builders = builders
        self.kinds = tuple(builders)
        self.batch_max = batch_max
        self.flush_interval_s = flush_interval_s
        self.max_concurrency = max_concurrency
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.poll_interval_s = poll_interval_s
        self._sem = asyncio.Semaphore(max_concurrency)
        self._rounds: dict[asyncio.Task[None], list[int]] = {}
        self._pending: list[Prepared] = []
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.auth_problem: str | None = None
        self.calls = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="clevertap-uploader")

    @property
    def alive(self) -> bool:
        return self._task is not None and not self._task.done()

    # ------------------------------------------------------------------ batching loop

    def _pending_records(self) -> int:
        return sum(len(p.records) for p in self._pending)

    async def _claim(self) -> int:
        """Claim and prepare jobs until the next batch is full; returns jobs claimed."""
        claimed = 0
        for kind in self.kinds:
            room = self.batch_max - self._pending_records()
            if room <= 0:
                break
            jobs = await self.store.claim(kind, max(1, room // 2))
            if not jobs:
                continue
            claimed += len(jobs)
            try:
                prepared = await self.builders[kind](jobs)
            except Exception as exc:
                log.exception("upload_prepare_failed", kind=kind, error=repr(exc))
                await self.store.settle_many(
                    [(j.id, Outcome.retry(backoff_delay(j.attempts, *self.backoff), f"prepare failed: {exc!r}"[:300])) for j in jobs]
                )
                continue
            settle_now = [p for p in prepared if p.final is not None or not p.records]
            if settle_now:
                await self.store.settle_many(
                    [
                        (p.job.id, p.final or Outcome.done(progress={"done": p.done_keys}, error=p.note))
                        for p in settle_now
                    ],
                    users=[u for p in settle_now if p.final is None or p.final.state == "done" for u in p.users],
                )
                for p in settle_now:
                    self.metrics.jobs_finished.labels(p.job.kind, (p.final.state if p.final else "done")).inc()
            self._pending.extend(p for p in prepared if p.final is None and p.records)
        return claimed

    async def _loop(self) -> None:
        deadline: float | None = None
        while True:
            stopping = self._stopping.is_set()
            claimed = 0
            if not stopping:
                try:
                    claimed = await self._claim()
                except Exception as exc:
                    log.error("upload_claim_failed", error=repr(exc))
                    await asyncio.sleep(1.0)
                    continue
            if self._pending and deadline is None:
                deadline = time.monotonic() + self.flush_interval_s
            full = self._pending_records() >= self.batch_max
            if self._pending and (full or stopping or time.monotonic() >= (deadline or 0)):
                batch = self._take_batch()
                await self._sem.acquire()
                task = asyncio.create_task(self._upload_round(batch), name="clevertap-upload")
                self._rounds[task] = [p.job.id for p in batch]
                task.add_done_callback(lambda t: self._rounds.pop(t, None))
                if not self._pending:
                    deadline = None
                continue
            if stopping:
                return
            if claimed and not full:
                continue  # more may be ready right now: fill the batch first
            if self._pending:
                wait = max(0.0, (deadline or 0) - time.monotonic())
            else:
                wait = await self._next_wait()
            await self._idle(wait)

    async def _next_wait(self) -> float:
        wait = self.poll_interval_s
        for kind in self.kinds:
            due = await self.store.next_due(kind)
            if due is not None:
                wait = min(wait, max(0.0, due - self.store.clock()))
        return wait

    async def _idle(self, seconds: float) -> None:
        stop = asyncio.ensure_future(self._stopping.wait())
        work = asyncio.ensure_future(self.store.wait_for_any(self.kinds, seconds))
        try:
            await asyncio.wait({stop, work}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for f in (stop, work):
                if not f.done():
                    f.cancel()

    def _take_batch(self) -> list[Prepared]:
        batch: list[Prepared] = []
        n = 0
        while self._pending:
            p = self._pending[0]
            if batch and n + len(p.records) > self.batch_max:
                break
            batch.append(self._pending.pop(0))
            n += len(p.records)
        return batch

    # ------------------------------------------------------------------ one round

    def _coalesce(self, batch: list[Prepared]) -> tuple[list[dict[str, Any]], list[list[tuple[int, str]]]]:
        """Merge profile records per identity; returns records and, per record, its owners."""
        records: list[dict[str, Any]] = []
        owners: list[list[tuple[int, str]]] = []
        profile_at: dict[str, int] = {}
        for p in batch:
            for key, rec in p.records:
                if rec.get("type") == "profile":
                    ident = _identity_key(rec)
                    at = profile_at.get(ident)
                    if at is not None:
                        merged = records[at]
                        merged["profileData"] = {**merged["profileData"], **rec["profileData"]}
                        if "ts" in rec:
                            merged["ts"] = max(merged.get("ts", 0), rec["ts"])
                        owners[at].append((p.job.id, key))
                        continue
                    profile_at[ident] = len(records)
                    rec = {**rec, "profileData": dict(rec["profileData"])}
                records.append(rec)
                owners.append([(p.job.id, key)])
        return records, owners

    async def _send(self, records: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
        """Upload records (chunks of batch_max; a 400 on many records is bisected)."""
        results: list[tuple[str, str | None]] = []
        for i in range(0, len(records), self.batch_max):
            chunk = records[i : i + self.batch_max]
            outcome, seconds = await self.client.upload(chunk)
            self.calls += 1
            self._observe(outcome, len(chunk), seconds)
            if outcome.call == "rejected" and len(chunk) > 1:
                half = len(chunk) // 2
                results.extend(await self._send(chunk[:half]))
                results.extend(await self._send(chunk[half:]))
                continue
            results.extend(outcome.records)
        return results

    def _observe(self, outcome: UploadOutcome, n: int, seconds: float) -> None:
        m = self.metrics
        m.upload_records.observe(n)
        m.upload_seconds.observe(seconds)
        m.upload_calls.labels(outcome.call).inc()
        m.upload_record_results.labels("processed").inc(outcome.processed)
        if outcome.failed:
            m.upload_record_results.labels("failed").inc(outcome.failed)
        event = log.info if outcome.call in ("ok",) else log.warning
        event(
            "clevertap_upload",
            result=outcome.call,
            records=n,
            processed=outcome.processed,
            failed=outcome.failed,
            http_status=outcome.http_status,
            latency_ms=round(seconds * 1000, 1),
            detail=outcome.message or None,
            unmatched=outcome.unmatched or None,
        )
        if outcome.call == "auth":
            self.auth_problem = (
                f"CleverTap refused the credentials (HTTP {outcome.http_status}: {outcome.message}); "
                "check CLEVERTAP_ACCOUNT_ID / CLEVERTAP_PASSCODE and that [clevertap].api_base is "
                "your account's region (the dashboard URL's subdomain, e.g. sg1)"
            )
            log.error("clevertap_auth_failed", http_status=outcome.http_status, hint=self.auth_problem)
        elif outcome.call in ("ok", "partial"):
            self.auth_problem = None

    async def _upload_round(self, batch: list[Prepared]) -> None:
        try:
            records, owners = self._coalesce(batch)
            try:
                results = await self._send(records)
            except Exception as exc:  # never lose the jobs: retry them
                log.exception("upload_round_error", error=repr(exc))
                results = [("retry", f"upload error: {exc!r}"[:300])] * len(records)
            per_job: dict[int, dict[str, tuple[str, str | None]]] = {}
            for (status, why), own in zip(results, owners):
                for job_id, key in own:
                    per_job.setdefault(job_id, {})[key] = (status, why)
            auth = self.auth_problem is not None
            settles: list[tuple[int, Outcome]] = []
            users: list[dict[str, Any]] = []
            now = self.store.clock()
            for p in batch:
                outcome = self._job_outcome(p, per_job.get(p.job.id, {}), auth)
                settles.append((p.job.id, outcome))
                if outcome.state == "done":
                    users.extend({**u, "uploaded_at": now} if u.get("mark_uploaded") else u for u in p.users)
                self.metrics.jobs_finished.labels(p.job.kind, outcome.state if outcome.state != "ready" else "retry").inc()
            await self.store.settle_many(settles, users=users)
        finally:
            self._sem.release()

    def _job_outcome(self, p: Prepared, results: dict[str, tuple[str, str | None]], auth: bool) -> Outcome:
        done = list(p.done_keys) + [k for k, (s, _) in results.items() if s == "processed"]
        retry = [(k, why) for k, (s, why) in results.items() if s == "retry"]
        dead = [(k, why) for k, (s, why) in results.items() if s == "dead"]
        progress = {"done": sorted(set(done))}
        attempts = p.job.attempts
        if retry:
            reason = "; ".join(f"{k}: {why}" for k, why in retry)[:500]
            if auth:
                # Credentials/region problem: keep the jobs, do not burn their attempts.
                return Outcome.retry(min(60.0, self.backoff[1]), reason, progress=progress, keep_attempt=False)
            if attempts >= self.max_attempts:
                return Outcome.dead(f"gave up after {attempts} attempts: {reason}", progress=progress)
            return Outcome.retry(backoff_delay(attempts, *self.backoff), reason, progress=progress)
        if dead:
            return Outcome.dead("; ".join(f"{k}: {why}" for k, why in dead)[:500], progress=progress)
        return Outcome.done(error=p.note)

    # ------------------------------------------------------------------ shutdown

    async def stop(self, timeout_s: float) -> None:
        """Flush what is pending, wait for uploads in flight (bounded), release the rest."""
        self._stopping.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout=max(timeout_s, 0.1))
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
        leftovers: list[int] = []
        if self._rounds:
            rounds = dict(self._rounds)
            done, pending = await asyncio.wait(set(rounds), timeout=timeout_s)
            for t in pending:
                t.cancel()
                leftovers.extend(rounds[t])
            await asyncio.gather(*pending, return_exceptions=True)
        leftovers += [p.job.id for p in self._pending]
        self._pending.clear()
        if leftovers:
            await self.store.release(leftovers)
