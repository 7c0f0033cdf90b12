"""A stand-in for a ``msgin5g serve`` worker: the supervisor's tests run it instead.

Started as ``python -m tests.unit.server.fake_worker <the worker's options>`` by a
:class:`~msgin5g.server.workers.Supervisor` whose plan names this module. It
reads ``--set cluster.node_id=ID`` and ``--worker-fds S,L`` like a real worker
and talks to the supervisor through the real :class:`WorkerLink`; what it does
is chosen per node id by the JSON object in ``FAKE_WORKER_PLAN``:

* ``serve`` (default): ready, then run until SIGTERM or the lifeline closes;
* ``fail``: report a start-up error (``port taken``, hint ``free it``), exit 1;
* ``die``: exit 3 before reporting anything;
* ``crash``: ready, then exit 7 after 0.2 s (every time);
* ``crash-once``: like ``crash`` on its first start, ``serve`` afterwards;
* ``stubborn``: ready, then ignore SIGTERM.

Each start appends ``<node id> <pid>`` to ``FAKE_WORKER_LOG``.
"""

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

from msgin5g.server.workers import WorkerLink


def _option(argv: list[str], name: str) -> list[str]:
    return [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == name]


async def _run(node: str, mode: str, link: WorkerLink) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    if mode != "stubborn":
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    else:
        loop.add_signal_handler(signal.SIGTERM, lambda: None)
    link.watch_parent(stop)
    if mode == "fail":
        link.fail("port taken", "free it")
        return 1
    if mode == "die":
        return 3
    link.ready(("127.0.0.1", 5683), None)
    if mode == "crash":
        await asyncio.sleep(0.2)
        return 7
    await stop.wait()
    return 0


def main() -> int:
    argv = sys.argv[1:]
    settings = dict(item.partition("=")[::2] for item in _option(argv, "--set"))
    node = settings["cluster.node_id"]
    link = WorkerLink.parse(_option(argv, "--worker-fds")[0])
    plan = json.loads(os.environ.get("FAKE_WORKER_PLAN", "{}"))
    mode = plan.get(node, "serve")
    log = Path(os.environ["FAKE_WORKER_LOG"])
    first = not log.exists() or f"{node} " not in log.read_text()
    with log.open("a") as out:
        out.write(f"{node} {os.getpid()}\n")
    if mode == "crash-once":
        mode = "crash" if first else "serve"
    return asyncio.run(_run(node, mode, link))


if __name__ == "__main__":
    sys.exit(main())
