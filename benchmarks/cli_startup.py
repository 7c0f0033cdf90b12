"""Start-up time of the ``msgin5g`` CLI: a tree against another (issue 11 item 6).

Runs each command ``--runs`` times in a fresh interpreter per source tree (the
``src`` directory put first on ``PYTHONPATH``), interleaved so that machine load
hits both alike, and prints the best and median wall time plus the number of
modules of the server stack the command imported. Loopback-free: nothing is
sent; ``ue send --help`` is what a device user pays before any traffic.

    python benchmarks/cli_startup.py --before /work/main/src --after src

Figures (2-core machine under other load, 15 runs, best / median):

    command              before           after
    --help               1.10 / 1.27 s    0.07 / 0.08 s
    ue send --help       1.11 / 1.28 s    0.07 / 0.08 s
    import device path   (msgin5g.client) 0.24-0.34 s: the library itself
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

_HEAVY = ("fastapi", "starlette", "pydantic", "httpx", "granian", "hypercorn")
_PROBE = """
import json, sys
from msgin5g.cli import main
try:
    main(json.loads(sys.argv[1]))
except SystemExit:
    pass
heavy = [m for m in sys.modules if m.partition(".")[0] in json.loads(sys.argv[2])]
sys.stderr.write(str(len(heavy)))
"""

COMMANDS = (["--help"], ["ue", "send", "--help"], ["--version"])


def _once(src: str, argv: list[str]) -> tuple[float, int]:
    env = {**os.environ, "PYTHONPATH": src}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(argv), json.dumps(_HEAVY)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    elapsed = time.perf_counter() - start
    heavy = int(done.stderr.strip().splitlines()[-1]) if done.stderr.strip() else -1
    return elapsed, heavy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="src directory of the tree to compare with")
    parser.add_argument("--after", default="src", help="src directory (default src)")
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    trees = [("after", os.path.abspath(args.after))]
    if args.before:
        trees.insert(0, ("before", os.path.abspath(args.before)))
    for argv in COMMANDS:
        times: dict[str, list[float]] = {name: [] for name, _ in trees}
        heavy: dict[str, int] = {}
        for _ in range(min(max(args.runs, 1), 100)):
            for name, src in trees:
                elapsed, count = _once(src, argv)
                times[name].append(elapsed)
                heavy[name] = count
        for name, _ in trees:
            best, median = min(times[name]), statistics.median(times[name])
            print(
                f"{' '.join(argv):<18} {name:<6} best {best:.3f} s  "
                f"median {median:.3f} s  server-stack modules {heavy[name]}"
            )


if __name__ == "__main__":
    main()
