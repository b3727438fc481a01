"""Executors: run `execute_point` for every job and hand each record to a callback.

* `LocalExecutor(workers=1)`: in this process, one point after another.
* `LocalExecutor(workers=N)`: a pool of N worker processes (fresh interpreters, reused across points). A
  worker that dies (killed, out of memory, crashed) fails only the point it was running; it is
  replaced and the sweep goes on.
* `RayExecutor(address=None)`: one Ray task per point with the point's declared `num_cpus` /
  `num_gpus`; joins the cluster at `address` (e.g. "auto" or "ray://host:10001") or starts a
  local Ray instance. Needs the `ray` extra (`pip install 'hookedicl[ray]'`). A task that raises
  or whose worker dies fails only its point.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection, wait
from typing import Any, Protocol

from .worker import PointJob, execute_point, failure_record

OnResult = Callable[[dict[str, Any]], None]


class Executor(Protocol):
    def run(self, jobs: Sequence[PointJob], on_result: OnResult) -> None:
        """Execute every job; call `on_result(record)` once per job as it finishes."""


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def auto_workers(jobs: Sequence[Any]) -> int:
    """Pool size that fits the machine: cores // (most CPUs any job declares), at least 1 and at
    most one per job. `jobs`: `PointJob`s or `SweepPoint`s (anything with `num_cpus`)."""
    need = max((j.num_cpus for j in jobs), default=1.0)
    return max(1, min(len(jobs) or 1, int(available_cores() // max(need, 1.0))))


class LocalExecutor:
    """Sequential (`workers=1`, in this process) or a pool of `workers` processes on this machine."""

    def __init__(self, workers: int = 1) -> None:
        if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
            raise ValueError(f"workers must be a positive integer, got {workers!r}")
        self.workers = workers

    def run(self, jobs: Sequence[PointJob], on_result: OnResult) -> None:
        if self.workers == 1:
            for job in jobs:
                on_result(execute_point(job))
        elif jobs:
            _Pool(min(self.workers, len(jobs))).run(list(jobs), on_result)


class _Worker:
    """A pool process (`python -m hookedicl.sweep.poolworker`) and the two pipes to it.

    A fresh interpreter rather than multiprocessing's spawn: it never re-runs the caller's
    `__main__` script, so `run_sweep` works from scripts without a `__main__` guard."""

    def __init__(self) -> None:
        import subprocess
        import sys
        from pathlib import Path

        from_parent, to_child = os.pipe()  # (read end, write end)
        from_child, to_parent = os.pipe()
        root = str(Path(__file__).resolve().parents[2])  # the directory holding the package
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hookedicl.sweep.poolworker", str(from_parent), str(to_parent)],
            pass_fds=(from_parent, to_parent), env=env,
        )
        os.close(from_parent)
        os.close(to_parent)
        self.send = Connection(to_child, readable=False)
        self.recv = Connection(from_child, writable=False)
        self.job: PointJob | None = None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, kill: bool = False) -> None:
        if kill and self.alive():
            self.proc.kill()
        try:
            self.send.send(None)
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except Exception:  # noqa: BLE001 - TimeoutExpired: make sure it ends
            self.proc.kill()
            self.proc.wait()
        self.send.close()
        self.recv.close()


class _Pool:
    def __init__(self, size: int) -> None:
        self.size = size

    def run(self, jobs: list[PointJob], on_result: OnResult) -> None:
        queue = list(reversed(jobs))
        workers = [_Worker() for _ in range(self.size)]
        try:
            while queue or any(w.job for w in workers):
                for i, w in enumerate(workers):
                    if w.job is None and queue:
                        if not w.alive():  # died while idle
                            w.stop()
                            w = workers[i] = _Worker()
                        w.job = queue.pop()
                        try:
                            w.send.send(w.job)
                        except OSError:
                            pass  # it died just now: its closed pipe reports below
                ready = wait([w.recv for w in workers if w.job is not None])
                for i, w in enumerate(workers):
                    if w.job is None or w.recv not in ready:
                        continue
                    job, w.job = w.job, None
                    try:
                        record = w.recv.recv()
                    except (EOFError, OSError):
                        code = w.proc.wait()
                        record = failure_record(
                            job, f"worker process exited with code {code} while running this point "
                            "(killed, out of memory or crashed)", pid=w.proc.pid, host=socket.gethostname(),
                        )
                        w.stop()
                        workers[i] = _Worker()
                    on_result(record)
        finally:
            for w in workers:
                w.stop(kill=w.job is not None)


class RayExecutor:
    """One Ray task per point, with the point's declared CPU/GPU resources.

    `address`: an existing cluster to join ("auto", "ray://host:10001", "host:6379"); None joins
    the Ray instance this process already initialised, or starts a local one (`num_cpus` caps its
    CPUs) and shuts it down afterwards. Run directories must be on storage every node can reach.
    """

    def __init__(self, address: str | None = None, num_cpus: int | None = None) -> None:
        if num_cpus is not None and (not isinstance(num_cpus, int) or num_cpus < 1):
            raise ValueError(f"num_cpus must be a positive integer, got {num_cpus!r}")
        self.address = address
        self.num_cpus = num_cpus

    def run(self, jobs: Sequence[PointJob], on_result: OnResult) -> None:
        try:
            import ray
        except ImportError:
            raise ValueError("the ray executor needs Ray: pip install 'hookedicl[ray]'") from None
        started = False
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": True}
            if self.address is not None:
                kwargs["address"] = self.address
                unreachable = _unreachable(self.address)
                if unreachable:  # Ray itself would retry for minutes
                    raise ValueError(ray_connection_error(self.address, unreachable, ray.__version__))
            elif self.num_cpus is not None:
                kwargs["num_cpus"] = self.num_cpus
            try:
                ray.init(**kwargs)
            except Exception as e:  # noqa: BLE001 - ConnectionError, AuthenticationError, RuntimeError, ...
                raise ValueError(ray_connection_error(self.address, e, ray.__version__)) from None
            started = True
        try:
            task = ray.remote(execute_point)
            pending = {
                task.options(num_cpus=j.num_cpus, num_gpus=j.num_gpus, max_retries=0, name=f"hookedicl-sweep:{j.point}")
                .remote(j): j
                for j in jobs
            }
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    job = pending.pop(ref)
                    try:
                        record = ray.get(ref)
                    except Exception as e:  # noqa: BLE001 - RayTaskError, WorkerCrashedError, OOM, ...
                        record = failure_record(job, f"ray task failed: {type(e).__name__}: {e}")
                    on_result(record)
        finally:
            if started:
                ray.shutdown()


def _unreachable(address: str, timeout: float = 5.0) -> str | None:
    """Why no TCP connection opens to the host:port of a Ray `address` ("host:port" or
    "ray://host:port"); None when one opens, or when the address names no port ("auto", "local")."""
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        return None
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        return f"nothing accepts connections at {hostport} ({e.strerror or type(e).__name__})"
    return None


def ray_connection_error(address: str | None, error: BaseException | str, ray_version: str = "") -> str:
    """One line: what failed when joining (or starting) a Ray cluster, and what to try."""
    what = f"could not connect to the Ray cluster at {address!r}" if address else "could not start a local Ray instance"
    if isinstance(error, BaseException):
        full = str(getattr(error, "message", "") or error).strip()  # AuthenticationError: without its long help
        text = full.splitlines()[0] if full else ""
        cause = f"{type(error).__name__}: {text}" if text else type(error).__name__
    else:
        cause = error
    cause = cause if len(cause) <= 200 else cause[:197] + "..."
    auth = any(w in cause.lower() for w in ("auth", "token", "unauthenticated", "permission denied"))
    tries = []
    if auth:
        tries.append(
            "the cluster uses Ray's token authentication: make its token available here (RAY_AUTH_MODE=token with "
            "RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token), or on a trusted network restart the head "
            "with RAY_AUTH_MODE=disabled"
        )
    if address:
        tries.append(
            "check the address (`ray status` on the head prints it; 'auto' joins a head started on this machine "
            "with `ray start --head`)"
        )
        if not auth:
            tries.append("if the head rejects the connection, set RAY_AUTH_MODE as the head has it (token or disabled)")
        if ray_version:
            tries.append(f"use the head's Ray version (here {ray_version})")
    else:
        tries.append("start a head yourself (docs/sweeps.md: a local cluster) and pass --address, or use --executor local")
    return f"{what}: {cause}; try: " + "; ".join(tries)


def make_executor(name: str, *, workers: int = 1, address: str | None = None, num_cpus: int | None = None) -> Executor:
    """`local` (with `workers`) or `ray` (with `address` / `num_cpus`)."""
    if name == "local":
        if address is not None or num_cpus is not None:
            raise ValueError(f"--{'address' if address is not None else 'ray-cpus'} only applies to the ray executor")
        return LocalExecutor(workers)
    if name == "ray":
        return RayExecutor(address, num_cpus)
    raise ValueError(f"unknown executor {name!r}; choose 'local' or 'ray'")
