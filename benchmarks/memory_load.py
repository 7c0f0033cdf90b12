"""Probe: server memory while many UEs saturate it (issue 10 item 15).

``--ues`` simulated UEs (one UDP socket each, in ``--workers`` generator
processes) register and then each sends ``MSG`` to the next UE in a closed loop
for ``--seconds`` (the load of ``benchmarks/p2p.py``). This process samples the
server's RSS every ``--every`` seconds and prints it, so the curve shows whether
the caches that grow with traffic level off. Loopback only, bounded in time;
the server runs in its own process on a fresh SQLite file.

Run: ``python benchmarks/memory_load.py --ues 2000 --seconds 240``. Pass
``--set delivery.dedup_max_bytes=...`` (repeatable) to try other bounds. Not a
test.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from common import free_port, provision_bench, rss_kib, start_server
from p2p import run_load


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ues", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--every", type=float, default=10.0, help="RSS sample period")
    parser.add_argument(
        "--set", action="append", default=[], help="server setting section.key=value"
    )
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="msgin5g-mem-"))
    db = tmp / "mem.db"
    provision_bench(f"sqlite:///{db}", args.ues, "ue-")
    port = free_port()
    extra = [x for s in args.set for x in ("--set", s)]
    server = start_server(port, db, *extra)
    print(
        f"memory probe: {os.cpu_count()} cores, {args.ues} UEs, {args.seconds:.0f} s, "
        f"{args.workers} generator processes, settings {args.set or 'defaults'}"
    )
    result: dict[str, Any] = {}
    try:
        time.sleep(0.5)
        print(f"  t=   0 s  RSS {rss_kib(server.pid) / 1024:7.1f} MiB (idle)")
        start = time.monotonic()
        done = threading.Event()
        peak = [0]

        def sample() -> None:  # RSS in a thread; the load forks from the main one
            while not done.wait(args.every):
                rss = rss_kib(server.pid)
                peak[0] = max(peak[0], rss)
                print(
                    f"  t={time.monotonic() - start:4.0f} s  RSS {rss / 1024:7.1f} MiB",
                    flush=True,
                )

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            result.update(run_load(port, args.ues, args.workers, args.seconds))
        finally:
            done.set()
            sampler.join()
        peak[0] = max(peak[0], rss_kib(server.pid))
        print(
            f"load: {result.get('msgs_per_s', 0):,.0f} msgs/s end to end, "
            f"{result.get('received', 0):,} delivered; peak RSS {peak[0] / 1024:.1f} MiB "
            f"= {peak[0] / args.ues:,.0f} KiB per UE"
        )
    finally:
        server.terminate()
        server.wait(20)


if __name__ == "__main__":
    main()
