"""Durable state in SQLite (WAL): job queue, dedupe keys, tokens and other state, known users.

Every statement runs on one dedicated thread that owns the connection. Write operations
submitted while a commit is in progress are grouped into the next transaction, so N concurrent
``await store.enqueue(...)`` calls cost one fsync, and each call returns only after the commit
that holds its row (``synchronous=FULL``).

A store file is owned by one daemon: :meth:`Store.open` with ``exclusive=True`` takes an
advisory ``flock`` on ``<path>.lock`` and refuses to start when another process holds it.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import orjson

T = TypeVar("T")

JobState = Literal["ready", "inflight", "done", "failed", "dead", "ignored"]
STATES: tuple[JobState, ...] = ("ready", "inflight", "done", "failed", "dead", "ignored")
FINISHED: tuple[JobState, ...] = ("done", "failed", "ignored")

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id          INTEGER PRIMARY KEY,
    kind        TEXT    NOT NULL,
    state       TEXT    NOT NULL DEFAULT 'ready',
    payload     BLOB    NOT NULL,
    progress    BLOB,
    dedupe_key  TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_at     REAL    NOT NULL,
    created_at  REAL    NOT NULL,
    updated_at  REAL    NOT NULL,
    last_error  TEXT
);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (kind, state, next_at);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, updated_at);
CREATE TABLE IF NOT EXISTS dedupe (
    key        TEXT PRIMARY KEY,
    job_id     INTEGER,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dedupe_expiry ON dedupe (expires_at);
CREATE TABLE IF NOT EXISTS kv (
    key        TEXT PRIMARY KEY,
    value      BLOB NOT NULL,
    updated_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS users (
    user_id        TEXT PRIMARY KEY,
    follower       INTEGER,
    last_interaction INTEGER,
    phone          TEXT,
    user_id_by_app TEXT,
    uploaded_at    REAL,
    uploaded_state BLOB,
    source         TEXT,
    updated_at     REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sent_messages (
    message_id TEXT PRIMARY KEY,
    job_id     INTEGER,
    created_at REAL NOT NULL
) WITHOUT ROWID;
"""


class StoreError(RuntimeError):
    """The store cannot be used."""


class StoreLockedError(StoreError):
    """Another process owns this store."""


@dataclass(frozen=True)
class NewJob:
    kind: str
    payload: Any
    dedupe_key: str | None = None
    dedupe_window_s: float | None = None
    delay_s: float = 0.0
    state: JobState = "ready"
    note: str | None = None


@dataclass
class Job:
    id: int
    kind: str
    state: str
    payload: Any
    progress: Any
    dedupe_key: str | None
    attempts: int
    next_at: float
    created_at: float
    updated_at: float
    last_error: str | None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> "Job":
        return cls(
            id=row[0],
            kind=row[1],
            state=row[2],
            payload=orjson.loads(row[3]),
            progress=orjson.loads(row[4]) if row[4] is not None else None,
            dedupe_key=row[5],
            attempts=row[6],
            next_at=row[7],
            created_at=row[8],
            updated_at=row[9],
            last_error=row[10],
        )


_JOB_COLUMNS = "id, kind, state, payload, progress, dedupe_key, attempts, next_at, created_at, updated_at, last_error"


@dataclass
class Outcome:
    """How a claimed job ends (or is rescheduled)."""

    state: JobState
    delay_s: float = 0.0
    error: str | None = None
    progress: Any = None
    follow_ups: Sequence[NewJob] = ()
    sent_message_id: str | None = None
    keep_attempt: bool = True

    @classmethod
    def done(cls, **kw: Any) -> "Outcome":
        return cls("done", **kw)

    @classmethod
    def retry(cls, delay_s: float, error: str, **kw: Any) -> "Outcome":
        return cls("ready", delay_s=delay_s, error=error, **kw)

    @classmethod
    def failed(cls, error: str, **kw: Any) -> "Outcome":
        return cls("failed", error=error, **kw)

    @classmethod
    def dead(cls, error: str, **kw: Any) -> "Outcome":
        return cls("dead", error=error, **kw)


@dataclass
class _Op:
    fn: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    notify: tuple[str, ...] = ()
    # Isolated operations run in a savepoint so that a failing one does not undo its
    # neighbours in the group; plain inserts skip it (they only fail when the commit does).
    isolated: bool = True


_STOP = object()


@dataclass
class StoreStats:
    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    taken_at: float = 0.0

    def backlog(self) -> int:
        return sum(n for (_, state), n in self.counts.items() if state in ("ready", "inflight"))

    def by_state(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for (_, state), n in self.counts.items():
            out[state] = out.get(state, 0) + n
        return out


class Store:
    """The daemon's durable state. Create with ``await Store.open(path)``."""

    def __init__(self, path: str, *, clock: Callable[[], float] = time.time, max_group: int = 512) -> None:
        self.path = path
        self.clock = clock
        self.max_group = max_group
        self._q: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock_fd: int | None = None
        self._events: dict[str, asyncio.Event] = {}
        self._closed = False
        self._stats_cache: StoreStats | None = None
        self._activity: dict[asyncio.AbstractEventLoop, asyncio.Event] = {}
        # Enqueues issued in the same event-loop iteration travel to the store thread as one op.
        self._enq_pending: list[tuple[Sequence[NewJob], list[bytes], asyncio.Future[list[int | None]]]] = []
        self._enq_scheduled = False
        self.recovered = 0
        self.commits = 0

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    async def open(
        cls,
        path: str,
        *,
        exclusive: bool = True,
        clock: Callable[[], float] = time.time,
        max_group: int = 512,
        recover: bool | None = None,
    ) -> "Store":
        """Open (creating if needed). ``exclusive`` takes the single-owner lock.

        In-flight jobs left by a crash are made ready again when the owner opens the store.
        """
        store = cls(path, clock=clock, max_group=max_group)
        parent = Path(path).parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the state directory {parent}: {exc.strerror}") from None
        if exclusive:
            store._take_lock()
        ready = threading.Event()
        errors: list[BaseException] = []
        store._thread = threading.Thread(
            target=store._run, args=(ready, errors), name="zalo-bridge-store", daemon=True
        )
        store._thread.start()
        await asyncio.get_running_loop().run_in_executor(None, ready.wait)
        if errors:
            store._release_lock()
            raise StoreError(f"cannot open the state store {path}: {errors[0]}") from errors[0]
        if recover if recover is not None else exclusive:
            store.recovered = await store.run(store._recover)
        return store

    def _take_lock(self) -> None:
        lock_path = f"{self.path}.lock"
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            finally:
                os.close(fd)
            raise StoreLockedError(
                f"state store {self.path} is in use by another zalo-bridge process (pid {holder}); "
                "stop that process or point [store].path at another file"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            finally:
                os.close(self._lock_fd)
                self._lock_fd = None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._q.put(_STOP)
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
        self._release_lock()

    # ------------------------------------------------------------------ the store thread

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA foreign_keys=ON")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(f"store schema {version} is newer than this zalo-bridge ({SCHEMA_VERSION})")
        conn.executescript(_SCHEMA)
        conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        return conn

    def _run(self, ready: threading.Event, errors: list[BaseException]) -> None:
        try:
            conn = self._connect()
        except BaseException as exc:  # reported to open()
            errors.append(exc)
            ready.set()
            return
        ready.set()
        try:
            while True:
                item = self._q.get()
                if item is _STOP:
                    break
                batch: list[_Op] = [item]
                stop = False
                while len(batch) < self.max_group:
                    try:
                        nxt = self._q.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is _STOP:
                        stop = True
                        break
                    batch.append(nxt)
                self._execute(conn, batch)
                if stop:
                    break
        finally:
            conn.close()

    def _execute(self, conn: sqlite3.Connection, batch: list[_Op]) -> None:
        results: list[tuple[_Op, bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op in batch:
                if not op.isolated:
                    results.append((op, True, op.fn(conn)))
                    continue
                # A savepoint per operation: one failing operation does not undo the others.
                conn.execute("SAVEPOINT op")
                try:
                    value = op.fn(conn)
                except Exception as exc:
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    results.append((op, False, exc))
                else:
                    conn.execute("RELEASE op")
                    results.append((op, True, value))
            conn.execute("COMMIT")
            self.commits += 1
        except Exception as exc:  # the commit itself failed (disk full, I/O error)
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            err = StoreError(f"state store commit failed: {exc}")
            results = [(op, False, err) for op in batch]
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Op, bool, Any]]] = {}
        for r in results:
            by_loop.setdefault(r[0].loop, []).append(r)
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(self._resolve, items)
            except RuntimeError:  # loop closed: nobody is waiting any more
                pass

    @property
    def activity(self) -> asyncio.Event:
        """Set after every commit (tests and tools wait on it instead of sleeping)."""
        loop = asyncio.get_running_loop()
        ev = self._activity.get(loop)
        if ev is None:
            ev = self._activity[loop] = asyncio.Event()
        return ev

    def _resolve(self, items: list[tuple[_Op, bool, Any]]) -> None:
        ev = self._activity.get(asyncio.get_running_loop())
        if ev is not None:
            ev.set()
        kinds: set[str] = set()
        for op, ok, value in items:
            if op.future.done():
                continue
            if ok:
                op.future.set_result(value)
                kinds.update(op.notify)
            else:
                op.future.set_exception(value)
        for kind in kinds:
            self._event(kind).set()

    async def run(self, fn: Callable[[sqlite3.Connection], T], *, notify: Iterable[str] = (), isolated: bool = True) -> T:
        """Run ``fn(conn)`` on the store thread inside a (grouped) transaction."""
        if self._closed:
            raise StoreError("the state store is closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._q.put(_Op(fn, fut, loop, tuple(notify), isolated))
        return await fut

    # ------------------------------------------------------------------ wake-ups

    def _event(self, kind: str) -> asyncio.Event:
        ev = self._events.get(kind)
        if ev is None:
            ev = self._events[kind] = asyncio.Event()
        return ev

    async def wait_for_any(self, kinds: Sequence[str], timeout: float) -> None:
        """Sleep until a job of any of ``kinds`` is enqueued or ``timeout`` elapses."""
        waits = [asyncio.ensure_future(self.wait_for_work(k, timeout)) for k in kinds]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def wait_for_work(self, kind: str, timeout: float) -> None:
        """Sleep until a job of ``kind`` is enqueued or ``timeout`` elapses."""
        ev = self._event(kind)
        if ev.is_set():
            ev.clear()
            return
        try:
            await asyncio.wait_for(ev.wait(), timeout=max(0.0, timeout))
        except TimeoutError:
            pass
        ev.clear()

    # ------------------------------------------------------------------ jobs

    def _insert(self, conn: sqlite3.Connection, now: float, job: NewJob, blob: bytes | None = None) -> int | None:
        if job.dedupe_key is not None:
            row = conn.execute("SELECT expires_at FROM dedupe WHERE key = ?", (job.dedupe_key,)).fetchone()
            if row is not None and row[0] > now:
                return None
        next_at = now + job.delay_s
        cur = conn.execute(
            "INSERT INTO jobs (kind, state, payload, dedupe_key, attempts, next_at, created_at, updated_at, last_error)"
            " VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?)",
            (job.kind, job.state, blob if blob is not None else orjson.dumps(job.payload), job.dedupe_key, next_at, now, now, job.note),
        )
        job_id = cur.lastrowid
        if job.dedupe_key is not None:
            window = job.dedupe_window_s if job.dedupe_window_s is not None else 86400.0
            conn.execute(
                "INSERT OR REPLACE INTO dedupe (key, job_id, expires_at) VALUES (?, ?, ?)",
                (job.dedupe_key, job_id, now + window),
            )
        return job_id

    async def enqueue(
        self,
        kind: str,
        payload: Any,
        *,
        dedupe_key: str | None = None,
        dedupe_window_s: float | None = None,
        delay_s: float = 0.0,
        state: JobState = "ready",
        note: str | None = None,
    ) -> int | None:
        """Store a job durably. Returns its id, or None when the dedupe key was seen in its window."""
        (job_id,) = await self.enqueue_many(
            [NewJob(kind, payload, dedupe_key, dedupe_window_s, delay_s, state, note)]
        )
        return job_id

    async def enqueue_many(self, jobs: Sequence[NewJob]) -> list[int | None]:
        """Store several jobs in one transaction (all or nothing); returns after the commit."""
        if self._closed:
            raise StoreError("the state store is closed")
        # Serialise here: a payload that cannot be stored fails its own caller, not the group.
        blobs = [orjson.dumps(j.payload) for j in jobs]
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[int | None]] = loop.create_future()
        self._enq_pending.append((jobs, blobs, fut))
        if not self._enq_scheduled:
            self._enq_scheduled = True
            loop.call_soon(self._flush_enqueues, loop)
        return await fut

    def _flush_enqueues(self, loop: asyncio.AbstractEventLoop) -> None:
        self._enq_scheduled = False
        batch, self._enq_pending = self._enq_pending, []
        if not batch:
            return

        def op(conn: sqlite3.Connection) -> list[list[int | None]]:
            now = self.clock()
            return [[self._insert(conn, now, j, b) for j, b in zip(jobs, blobs)] for jobs, blobs, _ in batch]

        outer: asyncio.Future[list[list[int | None]]] = loop.create_future()

        def deliver(f: asyncio.Future[list[list[int | None]]]) -> None:
            exc = f.exception()
            results = f.result() if exc is None else [None] * len(batch)
            for (_, _, fut), ids in zip(batch, results):
                if fut.done():  # the request went away; its rows are committed all the same
                    continue
                if exc is not None:
                    fut.set_exception(exc)
                else:
                    fut.set_result(ids)

        outer.add_done_callback(deliver)
        kinds = tuple({j.kind for jobs, _, _ in batch for j in jobs if j.state == "ready"})
        if self._closed:
            outer.set_exception(StoreError("the state store is closed"))
            return
        self._q.put(_Op(op, outer, loop, kinds, isolated=False))

    async def claim(self, kind: str, limit: int) -> list[Job]:
        """Take up to ``limit`` due ready jobs of ``kind``; they become in flight."""
        if limit <= 0:
            return []

        def op(conn: sqlite3.Connection) -> list[Job]:
            now = self.clock()
            rows = conn.execute(
                f"UPDATE jobs SET state = 'inflight', attempts = attempts + 1, updated_at = ?"
                f" WHERE id IN (SELECT id FROM jobs WHERE kind = ? AND state = 'ready' AND next_at <= ?"
                f" ORDER BY next_at, id LIMIT ?) RETURNING {_JOB_COLUMNS}",
                (now, kind, now, limit),
            ).fetchall()
            jobs = [Job.from_row(r) for r in rows]
            jobs.sort(key=lambda j: (j.next_at, j.id))
            return jobs

        return await self.run(op)

    async def next_due(self, kind: str) -> float | None:
        """When the earliest ready job of ``kind`` becomes due (epoch seconds), if any."""

        def op(conn: sqlite3.Connection) -> float | None:
            row = conn.execute(
                "SELECT min(next_at) FROM jobs WHERE kind = ? AND state = 'ready'", (kind,)
            ).fetchone()
            return row[0]

        return await self.run(op)

    def _settle_one(self, conn: sqlite3.Connection, now: float, job_id: int, out: Outcome) -> None:
        progress = orjson.dumps(out.progress) if out.progress is not None else None
        if out.state == "ready":
            conn.execute(
                "UPDATE jobs SET state = 'ready', next_at = ?, updated_at = ?, last_error = ?,"
                " progress = coalesce(?, progress),"
                " attempts = CASE WHEN ? THEN attempts ELSE max(attempts - 1, 0) END"
                " WHERE id = ? AND state = 'inflight'",
                (now + out.delay_s, now, out.error, progress, out.keep_attempt, job_id),
            )
        else:
            conn.execute(
                "UPDATE jobs SET state = ?, updated_at = ?, last_error = ?, progress = coalesce(?, progress)"
                " WHERE id = ? AND state = 'inflight'",
                (out.state, now, out.error, progress, job_id),
            )
        for follow in out.follow_ups:
            self._insert(conn, now, follow)
        if out.sent_message_id:
            conn.execute(
                "INSERT OR IGNORE INTO sent_messages (message_id, job_id, created_at) VALUES (?, ?, ?)",
                (out.sent_message_id, job_id, now),
            )

    async def settle(self, job_id: int, outcome: Outcome) -> None:
        await self.settle_many([(job_id, outcome)])

    async def settle_many(
        self, items: Sequence[tuple[int, Outcome]], *, users: Sequence[dict[str, Any]] = ()
    ) -> None:
        """Record outcomes of claimed jobs, with follow-up jobs and user updates, atomically."""

        def op(conn: sqlite3.Connection) -> None:
            now = self.clock()
            plain_done: list[int] = []
            for job_id, out in items:
                if out.state == "done" and out.progress is None and not out.follow_ups and not out.sent_message_id and out.error is None:
                    plain_done.append(job_id)
                else:
                    self._settle_one(conn, now, job_id, out)
            for i in range(0, len(plain_done), 500):
                chunk = plain_done[i : i + 500]
                conn.execute(
                    f"UPDATE jobs SET state = 'done', updated_at = ?, last_error = NULL"
                    f" WHERE state = 'inflight' AND id IN ({','.join('?' * len(chunk))})",
                    (now, *chunk),
                )
            if users:
                self._upsert_users(conn, now, users)

        kinds = {f.kind for _, o in items for f in o.follow_ups if f.state == "ready"}
        await self.run(op, notify=kinds)

    async def release(self, job_ids: Sequence[int]) -> None:
        """Give claimed jobs back untouched (shutdown): ready again, attempt not counted."""
        if not job_ids:
            return

        def op(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "UPDATE jobs SET state = 'ready', attempts = max(attempts - 1, 0) WHERE id = ? AND state = 'inflight'",
                [(i,) for i in job_ids],
            )

        await self.run(op)

    def _recover(self, conn: sqlite3.Connection) -> int:
        cur = conn.execute(
            "UPDATE jobs SET state = 'ready', updated_at = ?, last_error = coalesce(last_error, 'recovered after restart')"
            " WHERE state = 'inflight'",
            (self.clock(),),
        )
        return cur.rowcount

    async def get_job(self, job_id: int) -> Job | None:
        def op(conn: sqlite3.Connection) -> Job | None:
            row = conn.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
            return Job.from_row(row) if row else None

        return await self.run(op)

    async def jobs(self, *, kind: str | None = None, state: str | None = None, limit: int = 1000) -> list[Job]:
        def op(conn: sqlite3.Connection) -> list[Job]:
            where, args = [], []
            if kind is not None:
                where.append("kind = ?")
                args.append(kind)
            if state is not None:
                where.append("state = ?")
                args.append(state)
            sql = f"SELECT {_JOB_COLUMNS} FROM jobs"
            if where:
                sql += " WHERE " + " AND ".join(where)
            sql += " ORDER BY id LIMIT ?"
            return [Job.from_row(r) for r in conn.execute(sql, (*args, limit)).fetchall()]

        return await self.run(op)

    async def retry_dead(self, ids: Sequence[int] | None = None) -> int:
        """Make dead jobs ready again (all of them when ``ids`` is None). Attempts restart at 0."""

        def op(conn: sqlite3.Connection) -> int:
            now = self.clock()
            if ids is None:
                cur = conn.execute(
                    "UPDATE jobs SET state = 'ready', attempts = 0, next_at = ?, updated_at = ? WHERE state = 'dead'",
                    (now, now),
                )
                return cur.rowcount
            n = 0
            for i in ids:
                n += conn.execute(
                    "UPDATE jobs SET state = 'ready', attempts = 0, next_at = ?, updated_at = ?"
                    " WHERE id = ? AND state = 'dead'",
                    (now, now, i),
                ).rowcount
            return n

        n = await self.run(op)
        for ev in self._events.values():
            ev.set()
        return n

    async def stats(self, max_age_s: float = 0.0) -> StoreStats:
        """Job counts by (kind, state); cached for ``max_age_s`` seconds."""
        cached = self._stats_cache
        if cached is not None and time.monotonic() - cached.taken_at <= max_age_s:
            return cached

        def op(conn: sqlite3.Connection) -> dict[tuple[str, str], int]:
            rows = conn.execute("SELECT kind, state, count(*) FROM jobs GROUP BY kind, state").fetchall()
            return {(k, s): n for k, s, n in rows}

        stats = StoreStats(await self.run(op), time.monotonic())
        self._stats_cache = stats
        return stats

    async def prune(self, retention_s: float) -> int:
        """Delete finished jobs older than ``retention_s`` and expired dedupe keys."""

        def op(conn: sqlite3.Connection) -> int:
            now = self.clock()
            n = 0
            for state in FINISHED:
                n += conn.execute(
                    "DELETE FROM jobs WHERE state = ? AND updated_at < ?", (state, now - retention_s)
                ).rowcount
            conn.execute("DELETE FROM dedupe WHERE expires_at < ?", (now,))
            conn.execute("DELETE FROM sent_messages WHERE created_at < ?", (now - max(retention_s, 86400.0),))
            return n

        return await self.run(op)

    async def check_writable(self) -> None:
        """A real write + commit: fails when the disk or file is not writable."""

        def op(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO kv (key, value, updated_at) VALUES ('health', ?, ?)",
                (b"ok", self.clock()),
            )

        await self.run(op)

    # ------------------------------------------------------------------ key/value state

    async def kv_get(self, key: str) -> Any:
        def op(conn: sqlite3.Connection) -> Any:
            row = conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
            return orjson.loads(row[0]) if row else None

        return await self.run(op)

    async def kv_put(self, key: str, value: Any) -> None:
        def op(conn: sqlite3.Connection) -> None:
            self._kv_put(conn, key, value)

        await self.run(op)

    def _kv_put(self, conn: sqlite3.Connection, key: str, value: Any) -> None:
        conn.execute(
            "INSERT OR REPLACE INTO kv (key, value, updated_at) VALUES (?, ?, ?)",
            (key, orjson.dumps(value), self.clock()),
        )

    async def kv_delete(self, key: str) -> None:
        await self.run(lambda conn: conn.execute("DELETE FROM kv WHERE key = ?", (key,)) and None)

    async def kv_take(self, key: str) -> Any:
        """Read and delete in one transaction (single-use values such as OAuth state)."""

        def op(conn: sqlite3.Connection) -> Any:
            row = conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
            if row is None:
                return None
            conn.execute("DELETE FROM kv WHERE key = ?", (key,))
            return orjson.loads(row[0])

        return await self.run(op)

    # ------------------------------------------------------------------ users and sent messages

    async def sent_messages(self, message_ids: Sequence[str]) -> set[str]:
        """Which of these Zalo message ids the daemon itself sent."""

        def op(conn: sqlite3.Connection) -> set[str]:
            out: set[str] = set()
            for i in range(0, len(message_ids), 500):
                chunk = list(message_ids[i : i + 500])
                marks = ",".join("?" * len(chunk))
                out.update(
                    r[0] for r in conn.execute(f"SELECT message_id FROM sent_messages WHERE message_id IN ({marks})", chunk)
                )
            return out

        return await self.run(op) if message_ids else set()

    async def get_users(self, user_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        def op(conn: sqlite3.Connection) -> dict[str, dict[str, Any]]:
            out: dict[str, dict[str, Any]] = {}
            for i in range(0, len(user_ids), 500):
                chunk = user_ids[i : i + 500]
                marks = ",".join("?" * len(chunk))
                for row in conn.execute(
                    "SELECT user_id, follower, last_interaction, phone, user_id_by_app, uploaded_at, uploaded_state,"
                    f" source FROM users WHERE user_id IN ({marks})",
                    chunk,
                ):
                    out[row[0]] = {
                        "follower": None if row[1] is None else bool(row[1]),
                        "last_interaction": row[2],
                        "phone": row[3],
                        "user_id_by_app": row[4],
                        "uploaded_at": row[5],
                        "uploaded_state": orjson.loads(row[6]) if row[6] else None,
                        "source": row[7],
                    }
            return out

        return await self.run(op)

    def _upsert_users(self, conn: sqlite3.Connection, now: float, users: Sequence[dict[str, Any]]) -> None:
        conn.executemany(
            "INSERT INTO users (user_id, follower, last_interaction, phone, user_id_by_app, uploaded_at,"
            " uploaded_state, source, updated_at) VALUES (:user_id, :follower, :last_interaction, :phone,"
            " :user_id_by_app, :uploaded_at, :uploaded_state, :source, :now)"
            " ON CONFLICT(user_id) DO UPDATE SET"
            " follower = coalesce(excluded.follower, follower),"
            " last_interaction = max(coalesce(excluded.last_interaction, 0), coalesce(last_interaction, 0)),"
            " phone = coalesce(excluded.phone, phone),"
            " user_id_by_app = coalesce(excluded.user_id_by_app, user_id_by_app),"
            " uploaded_at = coalesce(excluded.uploaded_at, uploaded_at),"
            " uploaded_state = coalesce(excluded.uploaded_state, uploaded_state),"
            " source = coalesce(source, excluded.source),"
            " updated_at = :now",
            [
                {
                    "user_id": u["user_id"],
                    "follower": None if u.get("follower") is None else int(bool(u["follower"])),
                    "last_interaction": u.get("last_interaction"),
                    "phone": u.get("phone"),
                    "user_id_by_app": u.get("user_id_by_app"),
                    "uploaded_at": u.get("uploaded_at"),
                    "uploaded_state": orjson.dumps(u["uploaded_state"]) if u.get("uploaded_state") else None,
                    "source": u.get("source"),
                    "now": now,
                }
                for u in users
            ],
        )
