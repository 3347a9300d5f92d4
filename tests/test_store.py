"""The durable store: grouped commits, dedupe, crash recovery, single owner, SIGKILL durability."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.store import NewJob, Outcome, Store, StoreLockedError

from .conftest import ROOT


async def test_enqueue_claim_settle(tmp_path: Path) -> None:
    store = await Store.open(str(tmp_path / "s.db"))
    try:
        a = await store.enqueue("k", {"n": 1})
        b = await store.enqueue("k", {"n": 2}, delay_s=3600)
        jobs = await store.claim("k", 10)
        assert [j.id for j in jobs] == [a]  # b is not due yet
        assert jobs[0].state == "inflight" and jobs[0].attempts == 1 and jobs[0].payload == {"n": 1}
        await store.settle(a, Outcome.retry(0.0, "try again", progress={"done": ["x"]}))
        again = await store.claim("k", 10)
        assert [j.id for j in again] == [a] and again[0].attempts == 2 and again[0].progress == {"done": ["x"]}
        await store.settle(a, Outcome.dead("broken"))
        dead = await store.jobs(state="dead")
        assert [(j.id, j.last_error) for j in dead] == [(a, "broken")]
        assert await store.retry_dead([a]) == 1
        assert (await store.get_job(a)).state == "ready"
        assert (await store.get_job(b)).state == "ready"
        stats = await store.stats()
        assert stats.counts[("k", "ready")] == 2 and stats.backlog() == 2
    finally:
        await store.close()


async def test_dedupe_window(tmp_path: Path) -> None:
    now = [1000.0]
    store = await Store.open(str(tmp_path / "s.db"), clock=lambda: now[0])
    try:
        assert await store.enqueue("k", {}, dedupe_key="x", dedupe_window_s=60) is not None
        assert await store.enqueue("k", {}, dedupe_key="x", dedupe_window_s=60) is None
        now[0] += 61
        assert await store.enqueue("k", {}, dedupe_key="x", dedupe_window_s=60) is not None
        assert len(await store.jobs(kind="k")) == 2
    finally:
        await store.close()


async def test_follow_ups_commit_with_the_outcome(tmp_path: Path) -> None:
    store = await Store.open(str(tmp_path / "s.db"))
    try:
        jid = await store.enqueue("send", {})
        (job,) = await store.claim("send", 1)
        await store.settle(job.id, Outcome.done(follow_ups=[NewJob("report", {"r": 1})], sent_message_id="m1"))
        assert [j.payload for j in await store.jobs(kind="report")] == [{"r": 1}]
        assert await store.sent_messages(["m1", "m2"]) == {"m1"}
        assert (await store.get_job(jid)).state == "done"
    finally:
        await store.close()


async def test_failing_operation_does_not_undo_its_neighbours(tmp_path: Path) -> None:
    store = await Store.open(str(tmp_path / "s.db"))
    try:
        def bad(conn):  # noqa: ANN001
            conn.execute("INSERT INTO nope VALUES (1)")

        results = await asyncio.gather(store.enqueue("k", {}), store.run(bad), store.enqueue("k", {}), return_exceptions=True)
        assert isinstance(results[1], Exception)
        assert len(await store.jobs(kind="k")) == 2
    finally:
        await store.close()


async def test_an_unstorable_payload_fails_only_its_own_enqueue(tmp_path: Path) -> None:
    store = await Store.open(str(tmp_path / "s.db"))
    try:
        results = await asyncio.gather(store.enqueue("k", {"ok": 1}), store.enqueue("k", {"bad": object()}),
                                       store.enqueue("k", {"ok": 2}), return_exceptions=True)
        assert isinstance(results[1], TypeError)
        assert [j.payload for j in await store.jobs(kind="k")] == [{"ok": 1}, {"ok": 2}]
    finally:
        await store.close()


async def test_concurrent_enqueues_share_commits(tmp_path: Path) -> None:
    store = await Store.open(str(tmp_path / "s.db"))
    try:
        before = store.commits
        ids = await asyncio.gather(*(store.enqueue("k", {"i": i}) for i in range(200)))
        assert len(set(ids)) == 200
        assert store.commits - before < 100  # grouped: far fewer commits than enqueues
    finally:
        await store.close()


async def test_inflight_jobs_become_ready_after_a_crash(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    store = await Store.open(path)
    await store.enqueue("k", {"a": 1})
    claimed = await store.claim("k", 1)
    assert claimed[0].state == "inflight"
    await store.close()  # as if the process died holding the job
    store = await Store.open(path)
    try:
        assert store.recovered == 1
        again = await store.claim("k", 1)
        assert [j.payload for j in again] == [{"a": 1}]
    finally:
        await store.close()


async def test_second_owner_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    store = await Store.open(path)
    try:
        with pytest.raises(StoreLockedError, match=rf"in use by another zalo-bridge process \(pid {os.getpid()}\)"):
            await Store.open(path)
        # Read-only tools (queue stats) may still open it without the lock.
        reader = await Store.open(path, exclusive=False)
        await reader.close()
    finally:
        await store.close()
    again = await Store.open(path)  # the lock is released on close
    await again.close()


def test_second_daemon_process_refuses_to_start(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import asyncio,sys\nfrom daemon.store import Store\n"
            f"async def m():\n s=await Store.open({str(db)!r})\n print('locked',flush=True)\n await asyncio.sleep(60)\n"
            "asyncio.run(m())"
        )],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        cfg = tmp_path / "c.toml"
        cfg.write_text(f'[zalo]\napp_id = "1"\noa_id = "2"\n[store]\npath = "{db}"\n[server]\nport = 0\n')
        env = {**os.environ, "ZALO_APP_SECRET": "a", "ZALO_OA_SECRET_KEY": "b", "CLEVERTAP_ACCOUNT_ID": "c",
               "CLEVERTAP_PASSCODE": "d", "CLEVERTAP_WEBHOOK_USER": "e", "CLEVERTAP_WEBHOOK_PASSWORD": "f"}
        second = subprocess.run([sys.executable, "-m", "daemon", "run", "--config", str(cfg)], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=60)
        assert second.returncode == 3
        assert f"in use by another zalo-bridge process (pid {holder.pid})" in second.stderr
    finally:
        holder.kill()
        holder.wait()


WRITER = """
import asyncio, sys
from daemon.store import Store
async def main():
    store = await Store.open(sys.argv[1])
    n = 0
    async def one(i):
        await store.enqueue("k", {"i": i}, dedupe_key=f"key-{i}")
        print(i, flush=True)   # acknowledged: the commit is done
    i = 0
    while True:
        await asyncio.gather(*(one(i + j) for j in range(8)))
        i += 8
asyncio.run(main())
"""


def test_acknowledged_jobs_survive_sigkill(tmp_path: Path) -> None:
    db = str(tmp_path / "s.db")
    proc = subprocess.Popen([sys.executable, "-c", WRITER, db], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    acked: list[int] = []
    try:
        for line in proc.stdout:
            acked.append(int(line))
            if len(acked) >= 400:
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        acked.extend(int(x) for x in proc.stdout.read().split())  # printed before the kill landed
    finally:
        if proc.poll() is None:
            proc.kill()

    async def check() -> None:
        store = await Store.open(db)
        try:
            stored = {j.payload["i"] for j in await store.jobs(kind="k", limit=10**6)}
        finally:
            await store.close()
        missing = set(acked) - stored
        assert not missing, f"{len(missing)} acknowledged jobs lost"

    asyncio.run(check())


async def test_kv_take_is_single_use(tmp_path: Path) -> None:
    store = await Store.open(str(tmp_path / "s.db"))
    try:
        await store.kv_put("oauth_state:x", {"v": 1})
        assert await store.kv_take("oauth_state:x") == {"v": 1}
        assert await store.kv_take("oauth_state:x") is None
    finally:
        await store.close()


async def test_release_returns_jobs_without_counting_the_attempt(tmp_path: Path) -> None:
    store = await Store.open(str(tmp_path / "s.db"))
    try:
        jid = await store.enqueue("k", {})
        await store.claim("k", 1)
        await store.release([jid])
        job = await store.get_job(jid)
        assert job.state == "ready" and job.attempts == 0
    finally:
        await store.close()


async def test_prune_keeps_dead_and_unfinished_jobs(tmp_path: Path) -> None:
    now = [1000.0]
    store = await Store.open(str(tmp_path / "s.db"), clock=lambda: now[0])
    try:
        ids = [await store.enqueue("k", {"i": i}, dedupe_key=f"d{i}", dedupe_window_s=10) for i in range(3)]
        jobs = await store.claim("k", 2)
        await store.settle(jobs[0].id, Outcome.done())
        await store.settle(jobs[1].id, Outcome.dead("x"))
        now[0] += 100
        assert await store.prune(50) == 1
        remaining = {j.id: j.state for j in await store.jobs()}
        assert remaining == {ids[1]: "dead", ids[2]: "ready"}
    finally:
        await store.close()
