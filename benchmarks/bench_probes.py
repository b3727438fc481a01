"""Probing: the batched torch fast path (`fit_stack`) vs fitting one scikit-learn model per
(layer, position), on the same synthetic activations.

    python -m benchmarks.bench_probes [--prompts 1024] [--layers 13] [--positions 40]
                                      [--features 256] [--targets 20] [--repeats 3]
                                      [--threads 1] [--cases linear,mlp] [--json PATH] [--quick]

The shape is that of `hookedicl.analysis.probe.probe` on a 12-layer, d_model = 256 model with 40
in-context points: 13 residual sites × 40 x-token positions, 1024 prompts (768 train / 256
held out), a 20-dimensional target (e.g. ŵ_OLS). Activations are a planted linear map of the
target plus noise. Cases:

* ``linear``: `LinearProbe().fit_stack` (one SVD per problem, leave-one-out λ for the whole stack
  in torch) vs scikit-learn `RidgeCV(alphas)` fitted on the standardised features of each
  (layer, position) in a Python loop — the same model (the deviation column checks it).
* ``mlp``: `MLPProbe().fit_stack` (all positions of a layer trained as one batched problem) vs
  `MLPProbe().fit` once per (layer, position): the estimator path, one probe at a time.

Each side fits on the train prompts and predicts the held-out ones; the two sides alternate
(the order flips on every repeat) and median wall and process CPU times are reported with the
largest deviation of the held-out predictions, relative to max(|reference|, 1). `--threads` sets
torch's intra-op threads and limits the native pools (OpenBLAS / OpenMP, via threadpoolctl) for
both sides alike. `--quick`: a smoke run at tiny sizes.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np
import torch
from sklearn.linear_model import RidgeCV
from sklearn.preprocessing import StandardScaler

from hookedicl.analysis.probe import LinearProbe, MLPProbe

from ._machine import add_run_args, markdown_table, result_of, summary, write_json
from .bench_baselines import interleaved, machine, rel_dev

QUICK = {"prompts": 64, "layers": 2, "positions": 3, "features": 12, "targets": 3, "repeats": 1}


def activations(layers: int, positions: int, prompts: int, features: int, targets: int, seed: int
                ) -> tuple[list[np.ndarray], np.ndarray]:
    """Per layer `(positions, prompts, features)` float64 and the target `(positions, prompts,
    targets)`: a different planted linear map of the target per (layer, position), plus noise."""
    rng = np.random.default_rng(seed)
    Y = rng.normal(size=(positions, prompts, targets))
    acts = []
    for _ in range(layers):
        A = rng.normal(size=(positions, targets, features)) / np.sqrt(targets)
        acts.append(Y @ A + rng.normal(size=(positions, prompts, features)) * rng.uniform(0.1, 2.0))
    return acts, Y


def fast(probe: LinearProbe | MLPProbe) -> Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """The fast path: every position of a layer in one `fit_stack`."""
    def run(X: np.ndarray, Y: np.ndarray, X_test: np.ndarray) -> np.ndarray:
        return np.stack([est.predict(x) for est, x in zip(probe.fit_stack(X, Y), X_test)])
    return run


def loop_ridgecv(alphas: tuple[float, ...]) -> Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """scikit-learn `RidgeCV` on standardised features, one fit per position."""
    def run(X: np.ndarray, Y: np.ndarray, X_test: np.ndarray) -> np.ndarray:
        out = []
        for x, y, xt in zip(X, Y, X_test):
            scaler = StandardScaler().fit(x)
            out.append(RidgeCV(alphas=alphas).fit(scaler.transform(x), y).predict(scaler.transform(xt)))
        return np.stack(out)
    return run


def loop_estimator(probe: MLPProbe) -> Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """The scikit-learn estimator path: one `fit` per position."""
    def run(X: np.ndarray, Y: np.ndarray, X_test: np.ndarray) -> np.ndarray:
        return np.stack([probe.fit(x, y).predict(xt) for x, y, xt in zip(X, Y, X_test)])
    return run


CASES = {
    # key: (fast path label, fast path, reference label, reference)
    "linear": ("LinearProbe.fit_stack", fast(LinearProbe()), "sklearn RidgeCV per (layer, position)",
               loop_ridgecv(LinearProbe().alphas)),
    "mlp": ("MLPProbe.fit_stack", fast(MLPProbe()), "MLPProbe.fit per (layer, position)", loop_estimator(MLPProbe())),
}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=13)
    ap.add_argument("--positions", type=int, default=40)
    ap.add_argument("--features", type=int, default=256)
    ap.add_argument("--targets", type=int, default=20)
    ap.add_argument("--test-frac", type=float, default=0.25)
    add_run_args(ap, list(CASES))
    ap.add_argument("--quick", action="store_true", help=f"a smoke run at tiny sizes: {QUICK}")
    args = ap.parse_args(argv)
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, v)
    names = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = sorted(set(names) - set(CASES))
    if unknown or not names:
        ap.error(f"unknown case(s) {unknown or names}; choose from {list(CASES)}")
    for k in ("prompts", "layers", "positions", "features", "targets", "repeats", "threads"):
        if getattr(args, k) < 1:
            ap.error(f"--{k} must be >= 1, got {getattr(args, k)}")
    n_test = int(round(args.test_frac * args.prompts))
    if not 0 < n_test < args.prompts - 1:
        ap.error(f"--test-frac {args.test_frac} leaves no train or no test prompts out of {args.prompts}")

    torch.set_num_threads(args.threads)
    acts, Y = activations(args.layers, args.positions, args.prompts, args.features, args.targets, args.seed)
    train, test = slice(n_test, None), slice(0, n_test)
    info = machine()

    rows = []
    for name in names:
        label, fast_fn, ref_label, ref_fn = CASES[name]
        fast_fn(acts[0][:1, :16, :4], Y[:1, :16], acts[0][:1, :4, :4])  # warm-up (library loading)
        stats, out_fast, out_ref = interleaved(
            lambda: [fast_fn(X[:, train], Y[:, train], X[:, test]) for X in acts],
            lambda: [ref_fn(X[:, train], Y[:, train], X[:, test]) for X in acts],
            args.repeats, limits=(args.threads, args.threads),
        )
        dev = max(rel_dev(a, b) for a, b in zip(out_fast, out_ref))
        rows.append({"case": name, "fast_path": label, "reference": ref_label, **stats, "max_rel_dev": dev})
        print(f"  {name}: {label} x{stats['speedup']:.1f} vs {ref_label} (max rel dev {dev:.1e})", flush=True)

    result = result_of(args, info, rows)
    print()
    print(f"{args.layers} layers × {args.positions} positions = {args.layers * args.positions} probes per case, "
          f"{args.prompts - n_test} train / {n_test} test prompts, {args.features} features, {args.targets} "
          f"targets, {args.repeats} interleaved repeats, torch threads = {info['torch_threads']}")
    print(summary(info))
    print()
    print(markdown_table(
        ["fast path", "reference", "fast path, median wall (CPU)", "reference, median wall (CPU)",
         "speed-up wall (CPU)", "max rel. deviation"],
        [[row["fast_path"], row["reference"], f"{row['fast_median_s']:.2f} s ({row['fast_cpu_median_s']:.2f} s)",
          f"{row['ref_median_s']:.2f} s ({row['ref_cpu_median_s']:.2f} s)",
          f"{row['speedup']:.1f}× ({row['speedup_cpu']:.1f}×)", f"{row['max_rel_dev']:.1e}"] for row in rows],
    ))
    return write_json(result, args.json)

if __name__ == "__main__":
    main()
