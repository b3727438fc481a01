"""Batched torch baselines vs per-prefix numpy / scikit-learn loops on the same prompts.

    python -m benchmarks.bench_baselines [--prompts 1280] [--dims 20] [--points 41]
                                         [--repeats 3] [--threads 1] [--json PATH]

For each predictor, the batched torch implementation (every prompt and prefix at once) and a
plain Python loop that fits the reference estimator on each prefix of each prompt are timed on
the same float32 linear-regression prompts, interleaved (the order alternates between repeats),
and the median wall times and their ratio are reported together with the largest deviation of
the torch predictions from the reference. Process CPU times are reported too: on a shared,
loaded machine they are less disturbed by other processes than wall time.

Threads: this script sets torch's intra-op thread count for itself (``--threads``, reported;
the library never changes it). The reference loops run with native thread pools (OpenMP,
OpenBLAS) limited to one thread via threadpoolctl, their fastest setting for fits this small.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from typing import Any, Callable

import numpy as np
import sklearn
import torch
from sklearn.linear_model import Ridge as SkRidge
from sklearn.neighbors import KNeighborsRegressor

import hookedicl.baselines as B

from ._machine import add_run_args, cpu_model, markdown_table, n_cpus, result_of, summary, write_json


def loop_lstsq(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    batch, n, _ = x.shape
    out = np.zeros((batch, n))
    for b in range(batch):
        for i in range(1, n):
            w = np.linalg.lstsq(x[b, :i], y[b, :i], rcond=None)[0]
            out[b, i] = x[b, i] @ w
    return out


def loop_ridge_numpy(alpha: float) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    def run(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        batch, n, d = x.shape
        out = np.zeros((batch, n))
        eye = alpha * np.eye(d)
        for b in range(batch):
            for i in range(1, n):
                xi = x[b, :i]
                w = np.linalg.solve(xi.T @ xi + eye, xi.T @ y[b, :i])
                out[b, i] = x[b, i] @ w
        return out
    return run


def loop_ridge_sklearn(alpha: float) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    def run(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        batch, n, _ = x.shape
        out = np.zeros((batch, n))
        for b in range(batch):
            for i in range(1, n):
                model = SkRidge(alpha=alpha, fit_intercept=False).fit(x[b, :i], y[b, :i])
                out[b, i] = model.predict(x[b, i:i + 1])[0]
        return out
    return run


def loop_gd(steps: int, lr: float) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    def run(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        batch, n, d = x.shape
        out = np.zeros((batch, n))
        for b in range(batch):
            for i in range(1, n):
                xi, yi = x[b, :i], y[b, :i]
                w = np.zeros(d)
                for _ in range(steps):
                    w = w - lr / i * (xi.T @ (xi @ w - yi))
                out[b, i] = x[b, i] @ w
        return out
    return run


def loop_knn(k: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    def run(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        batch, n, _ = x.shape
        out = np.zeros((batch, n))
        for b in range(batch):
            for i in range(1, n):
                model = KNeighborsRegressor(n_neighbors=min(k, i)).fit(x[b, :i], y[b, :i])
                out[b, i] = model.predict(x[b, i:i + 1])[0]
        return out
    return run


CASES = {
    # key: (label, predictor, reference label, reference loop)
    "least_squares": ("least_squares", B.get("least_squares"), "numpy lstsq", loop_lstsq),
    "ridge_numpy": ("ridge α=1", B.get("ridge", alpha=1.0), "numpy solve(XᵀX+αI)",
                    loop_ridge_numpy(1.0)),
    "ridge_sklearn": ("ridge α=1", B.get("ridge", alpha=1.0), "sklearn Ridge",
                      loop_ridge_sklearn(1.0)),
    "gd": ("gd 5 steps", B.get("gd", steps=5, lr=0.2), "numpy GD loop", loop_gd(5, 0.2)),
    "knn": ("knn k=3", B.get("knn", k=3), "sklearn KNeighborsRegressor", loop_knn(3)),
}


def machine() -> dict:
    try:
        from threadpoolctl import threadpool_info
        pools = sorted({f"{p['internal_api']}={p['num_threads']}" for p in threadpool_info()})
    except Exception:  # pragma: no cover - threadpoolctl ships with scikit-learn
        pools = []
    return {
        "nproc": n_cpus(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "sklearn": sklearn.__version__,
        "torch_threads": torch.get_num_threads(),
        "native_thread_pools": pools,
        "loadavg_start": os.getloadavg(),
    }


def timed(fn: Callable[[], object]) -> tuple[float, float, object]:
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, time.process_time() - c0, out


def rel_dev(out: np.ndarray, ref: np.ndarray) -> float:
    """The largest |out - ref| relative to max(|ref|, 1)."""
    return float((np.abs(out - ref) / np.maximum(np.abs(ref), 1.0)).max())


def interleaved(fast: Callable[[], Any], ref: Callable[[], Any], repeats: int, names: tuple[str, str] = ("fast", "ref"),
                limits: tuple[int | None, int | None] = (None, 1)) -> tuple[dict, Any, Any]:
    """Time `fast` and `ref` alternately (the order flips on every repeat), each with native
    thread pools limited to `limits` (None: as they are). Returns the median and min wall and
    the median process CPU seconds of each side (keys prefixed by `names`), the speed-ups of
    `fast` (wall and CPU), and the last outputs of both."""
    from threadpoolctl import threadpool_limits

    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    outs: dict[str, Any] = {}
    sides = dict(zip(names, zip((fast, ref), limits)))
    for r in range(repeats):
        for name in (names if r % 2 == 0 else names[::-1]):
            fn, limit = sides[name]
            with threadpool_limits(limits=limit):
                t, c, outs[name] = timed(fn)
            wall[name].append(t)
            cpu[name].append(c)
    stats = {}
    for n in names:
        stats.update({f"{n}_median_s": statistics.median(wall[n]), f"{n}_min_s": min(wall[n]),
                      f"{n}_cpu_median_s": statistics.median(cpu[n])})
    f, r = names
    stats["speedup"] = stats[f"{r}_median_s"] / stats[f"{f}_median_s"]
    stats["speedup_cpu"] = stats[f"{r}_cpu_median_s"] / max(stats[f"{f}_cpu_median_s"], 1e-9)
    return stats, outs[f], outs[r]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=1280)
    ap.add_argument("--dims", type=int, default=20)
    ap.add_argument("--points", type=int, default=41)
    add_run_args(ap, list(CASES))
    args = ap.parse_args(argv)
    unknown = set(args.cases.split(",")) - set(CASES)
    if unknown:
        ap.error(f"unknown case(s) {sorted(unknown)}; choose from {list(CASES)}")
    cases = [CASES[k] for k in args.cases.split(",")]

    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(args.seed)
    xs = torch.randn(args.prompts, args.points, args.dims, generator=g)
    w = torch.randn(args.prompts, args.dims, generator=g)
    ys = (xs * w[:, None]).sum(-1) + 0.1 * torch.randn(args.prompts, args.points, generator=g)
    xn, yn = xs.double().numpy(), ys.double().numpy()
    info = machine()

    for _, pred, _, _ in cases:  # warm-up (first-call allocation and library loading)
        pred.predict(xs[:8], ys[:8])

    rows = []
    for label, pred, ref_label, ref in cases:
        stats, out_t, out_r = interleaved(lambda: pred.predict(xs, ys), lambda: ref(xn, yn), args.repeats,
                                          names=("torch", "ref"))
        dev = rel_dev(out_t.double().numpy(), out_r)
        rows.append({"predictor": label, "reference": ref_label, **stats, "max_rel_dev": dev})
        med_t, med_r = stats["torch_median_s"], stats["ref_median_s"]
        cpu_t, cpu_r = stats["torch_cpu_median_s"], stats["ref_cpu_median_s"]
        print(f"  {label:14s} vs {ref_label:28s} torch {med_t * 1e3:8.1f} ms   "
              f"loop {med_r:7.2f} s   x{med_r / med_t:7.1f} (cpu x{cpu_r / cpu_t:7.1f})   "
              f"max rel dev {dev:.1e}", flush=True)

    result = result_of(args, info, rows)
    print()
    print(f"{args.prompts} prompts, d = {args.dims}, {args.points} points "
          f"({args.prompts * (args.points - 1)} prefix fits per loop), {args.repeats} interleaved "
          f"repeats, torch threads = {info['torch_threads']}")
    print(summary(info))
    print()
    print(markdown_table(
        ["predictor", "per-prefix reference loop", "batched torch, median wall (CPU)", "loop, median wall (CPU)",
         "speed-up wall (CPU)", "max rel. deviation"],
        [[row["predictor"], row["reference"],
          f"{row['torch_median_s'] * 1e3:.0f} ms ({row['torch_cpu_median_s'] * 1e3:.0f} ms)",
          f"{row['ref_median_s']:.2f} s ({row['ref_cpu_median_s']:.2f} s)",
          f"{row['speedup']:.0f}× ({row['speedup_cpu']:.0f}×)", f"{row['max_rel_dev']:.1e}"] for row in rows],
    ))
    return write_json(result, args.json)

if __name__ == "__main__":
    main()
