"""The kill test as a report: SIGKILL the daemon 3 times under mixed load, count everything.

    .venv/bin/python benchmarks/killtest.py [--events 3000] [--recipients 1000] [--kills 5]

Same scenario as tests/reliability (tests/reliability/scenarios.py), with bigger numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from daemon.sim import CleverTapSim, ZaloSim, serve  # noqa: E402
from tests.reliability.scenarios import kill_under_load, summary_json  # noqa: E402


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=3000)
    ap.add_argument("--recipients", type=int, default=1000)
    ap.add_argument("--kills", type=int, default=5)
    args = ap.parse_args()
    zsim, csim = ZaloSim(), CleverTapSim()
    zr, zurl = await serve(zsim.app())
    cr, curl = await serve(csim.app())
    with tempfile.TemporaryDirectory() as tmp:
        result = await kill_under_load(Path(tmp), zsim, csim, zurl, curl, events=args.events, recipients=args.recipients,
                                       kills=args.kills, interval_s=1.0, event_rate=400.0, send_rate=200.0)
    await zr.cleanup()
    await cr.cleanup()
    print(summary_json(result))


if __name__ == "__main__":
    asyncio.run(main())
