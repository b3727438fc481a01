"""Intra-op threads under load: the gpt2 training step at 1 vs 2 threads, on a quiet machine and
next to one busy process (a Python loop spinning on one core: a notebook kernel, a second run).

    python -m benchmarks.bench_threads [--quick] [--steps 20] [--sizes demo,standard]

Sizes: `demo` is `make demo`'s model (4 blocks, d_model 64, 2 heads, d = 5, 11 points, batch 64);
`standard` is the paper's width and depth (12 blocks, d_model 256, 8 heads, d = 20, 41 points) at
batch 8, to keep the loaded case affordable. Per (size, load), the two thread counts alternate step
by step on the same model and batch (`torch.set_num_threads` switched untimed before each step),
after 3 warm-up steps each; reported: median wall ms/step and the ratio to the faster count.
This measures; it changes no default (`hookedicl.training.threads`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import torch

SIZES = {
    "demo": dict(n_layers=4, d_model=64, n_heads=2, n_dims=5, n_points=11, batch=64),
    "standard": dict(n_layers=12, d_model=256, n_heads=8, n_dims=20, n_points=41, batch=8),
}


def busy_process() -> subprocess.Popen:
    """One process keeping one core busy until killed."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def measure(size: str, steps: int) -> dict[int, float]:
    import hookedicl as hi

    s = SIZES[size]
    torch.manual_seed(0)
    model = hi.build_model("gpt2", n_dims=s["n_dims"], d_model=s["d_model"], n_layers=s["n_layers"], n_heads=s["n_heads"])
    opt = torch.optim.AdamW(model.parameters(), 1e-4)
    xs = torch.randn(s["batch"], s["n_points"], s["n_dims"])
    ys = torch.randn(s["batch"], s["n_points"])
    times: dict[int, list[float]] = {1: [], 2: []}
    for i in range(3 + steps):
        for threads in (1, 2):
            torch.set_num_threads(threads)
            t0 = time.perf_counter()
            loss = model(xs, ys, return_type="loss")
            opt.zero_grad()
            loss.backward()
            opt.step()
            if i >= 3:
                times[threads].append(time.perf_counter() - t0)
    return {t: 1000 * statistics.median(v) for t, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 steps of the demo size only (a smoke run)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--sizes", default="demo,standard")
    args = ap.parse_args(argv)
    sizes = ["demo"] if args.quick else [x.strip() for x in args.sizes.split(",") if x.strip()]
    steps = 2 if args.quick else args.steps
    before = os.getloadavg()[0]
    rows = []
    for size in sizes:
        for load in ("quiet", "one busy process"):
            proc = busy_process() if load != "quiet" else None
            try:
                if proc is not None:
                    time.sleep(1.0)
                ms = measure(size, steps)
            finally:
                if proc is not None:
                    proc.kill()
                    proc.wait()
            best = min(ms.values())
            rows.append((size, load, ms[1], ms[2], ms[1] / best, ms[2] / best))
            print(f"{size:9s} {load:17s} 1 thr {ms[1]:8.1f} ms  2 thr {ms[2]:8.1f} ms", file=sys.stderr, flush=True)
    print(f"\nnproc {len(os.sched_getaffinity(0))}, torch {torch.__version__}, {steps} timed steps per cell, "
          f"load average {before:.2f} -> {os.getloadavg()[0]:.2f}\n")
    print("| size | load | 1 thread ms/step | 2 threads ms/step | 1 thread / best | 2 threads / best |")
    print("|---|---|---|---|---|---|")
    for size, load, a, b, ra, rb in rows:
        print(f"| {size} | {load} | {a:.1f} | {b:.1f} | {ra:.2f}× | {rb:.2f}× |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
