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
from typing import Callable

import numpy as np
import sklearn
import torch
from sklearn.linear_model import Ridge as SkRidge
from sklearn.neighbors import KNeighborsRegressor

import hookedicl.baselines as B

from ._machine import cpu_model, n_cpus


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


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=1280)
    ap.add_argument("--dims", type=int, default=20)
    ap.add_argument("--points", type=int, default=41)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads for this run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cases", type=str, default=",".join(CASES),
                    help=f"comma-separated subset of {','.join(CASES)}")
    ap.add_argument("--json", type=str, default=None, help="also write the results here")
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

    from threadpoolctl import threadpool_limits

    rows = []
    for label, pred, ref_label, ref in cases:
        t_torch, t_ref, c_torch, c_ref = [], [], [], []
        dev = 0.0
        for r in range(args.repeats):
            order = ("torch", "ref") if r % 2 == 0 else ("ref", "torch")
            for which in order:
                if which == "torch":
                    t, c, out_t = timed(lambda: pred.predict(xs, ys))
                    t_torch.append(t)
                    c_torch.append(c)
                else:
                    with threadpool_limits(limits=1):
                        t, c, out_r = timed(lambda: ref(xn, yn))
                    t_ref.append(t)
                    c_ref.append(c)
            diff = np.abs(out_t.double().numpy() - out_r)
            dev = max(dev, float((diff / np.maximum(np.abs(out_r), 1.0)).max()))
        med_t, med_r = statistics.median(t_torch), statistics.median(t_ref)
        cpu_t, cpu_r = statistics.median(c_torch), statistics.median(c_ref)
        rows.append({
            "predictor": label, "reference": ref_label,
            "torch_median_s": med_t, "torch_min_s": min(t_torch), "torch_cpu_median_s": cpu_t,
            "ref_median_s": med_r, "ref_min_s": min(t_ref), "ref_cpu_median_s": cpu_r,
            "speedup": med_r / med_t, "speedup_cpu": cpu_r / cpu_t, "max_rel_dev": dev,
        })
        print(f"  {label:14s} vs {ref_label:28s} torch {med_t * 1e3:8.1f} ms   "
              f"loop {med_r:7.2f} s   x{med_r / med_t:7.1f} (cpu x{cpu_r / cpu_t:7.1f})   "
              f"max rel dev {dev:.1e}", flush=True)

    info["loadavg_end"] = os.getloadavg()
    result = {"config": vars(args), "machine": info, "rows": rows}
    print()
    print(f"{args.prompts} prompts, d = {args.dims}, {args.points} points "
          f"({args.prompts * (args.points - 1)} prefix fits per loop), {args.repeats} interleaved "
          f"repeats, torch threads = {info['torch_threads']}")
    print(f"machine: nproc = {info['nproc']}, CPU = {info['cpu_model']}, load average "
          f"{info['loadavg_start'][0]:.1f} -> {info['loadavg_end'][0]:.1f}; torch {info['torch']}, "
          f"numpy {info['numpy']}, scikit-learn {info['sklearn']}; "
          f"native pools {', '.join(info['native_thread_pools'])}")
    print()
    print("| predictor | per-prefix reference loop | batched torch, median wall (CPU) "
          "| loop, median wall (CPU) | speed-up wall (CPU) | max rel. deviation |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['predictor']} | {row['reference']} "
              f"| {row['torch_median_s'] * 1e3:.0f} ms ({row['torch_cpu_median_s'] * 1e3:.0f} ms) "
              f"| {row['ref_median_s']:.2f} s ({row['ref_cpu_median_s']:.2f} s) "
              f"| {row['speedup']:.0f}× ({row['speedup_cpu']:.0f}×) | {row['max_rel_dev']:.1e} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    return result


if __name__ == "__main__":
    main()
