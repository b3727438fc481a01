"""Entry point of a local pool process: `python -m hookedicl.sweep.poolworker IN_FD OUT_FD`.

Reads `PointJob`s from IN_FD, runs `execute_point`, writes each record to OUT_FD; `None` (or the
parent closing the pipe) ends it. Started by `hookedicl.sweep.executors.LocalExecutor`.
"""

from __future__ import annotations

import sys
from multiprocessing.connection import Connection


def main(in_fd: int, out_fd: int) -> None:
    import torch

    from .worker import execute_point

    torch.set_num_threads(1)  # until a job's config sets its own thread count
    jobs, records = Connection(in_fd, writable=False), Connection(out_fd, readable=False)
    while True:
        try:
            job = jobs.recv()
        except EOFError:
            break
        if job is None:
            break
        records.send(execute_point(job))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python -m hookedicl.sweep.poolworker IN_FD OUT_FD")
    main(int(sys.argv[1]), int(sys.argv[2]))
