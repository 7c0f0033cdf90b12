"""Start-up time of the ``msgin5g`` CLI: a tree against another (issue 11 item 6).

Runs each command ``--runs`` times in a fresh interpreter per source tree (the
``src`` directory put first on ``PYTHONPATH``), interleaved so that machine load
hits both alike, and prints the best and median wall time plus the number of
modules of the server stack the command imported. Loopback-free: nothing is
sent; ``ue send --help`` is what a device user pays before any traffic.

    python benchmarks/cli_startup.py --before /work/main/src --after src

Figures (2-core machine, load average ~3.3 from other work, 10 runs; "before"
is f631c61, where --version did not exist yet and exits 2 after the imports):

    command           before: best / median   after: best / median   server modules
    --help            0.97 / 1.36 s           0.088 / 0.116 s        133 -> 0
    ue send --help    1.18 / 1.41 s           0.085 / 0.110 s        133 -> 0
    --version         1.18 / 1.39 s           0.114 / 0.183 s        133 -> 0

``python -X importtime``: ``msgin5g.cli.main`` 1.018 s -> 0.053 s cumulative;
the whole ``ue send`` path (``cli.main`` + ``cli.device``, i.e. the device
library) 0.33 s under the same load, wall 0.41 s against 1.35 s before.
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
