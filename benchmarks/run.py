"""Run every benchmark module (`benchmarks/bench_*.py`) in turn; `make bench` calls this.

    python -m benchmarks.run [--quick] [--only NAME[,NAME...]] [--list]

Each module's `main(argv)` is called in this process, one after the other, with `--quick` forwarded
when given (a smoke run at tiny sizes). A module whose `main` has no `--quick` option is listed in
`QUICK_ARGS` with the arguments that make it quick instead. The intra-op thread count is restored
after each module (modules set their own). A module that fails is reported and the others still
run; the exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import time
import traceback
from pathlib import Path

#: Modules whose `main()` does not accept `--quick`: the arguments used for a quick run instead.
QUICK_ARGS: dict[str, list[str]] = {
    "bench_baselines": ["--prompts", "64", "--repeats", "1"],
}


def modules() -> list[str]:
    here = Path(__file__).resolve().parent
    return sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="forward --quick: tiny sizes, a smoke run")
    ap.add_argument("--only", type=str, default=None, help="comma-separated module names (e.g. bench_models)")
    ap.add_argument("--list", action="store_true", help="list the benchmark modules and exit")
    args = ap.parse_args(argv)

    names = modules()
    if args.list:
        print("\n".join(names))
        return 0
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in names]
        if unknown:
            ap.error(f"unknown module(s) {', '.join(unknown)}; available: {', '.join(names)}")
        names = [n for n in names if n in wanted]

    import torch

    threads = torch.get_num_threads()
    failed: list[str] = []
    t_all = time.perf_counter()
    for name in names:
        sub_argv = (QUICK_ARGS.get(name, ["--quick"]) if args.quick else [])
        print(f"\n===== benchmarks.{name} {' '.join(sub_argv)} =====\n", flush=True)
        t0 = time.perf_counter()
        try:
            importlib.import_module(f"benchmarks.{name}").main(sub_argv)
        except SystemExit as e:  # argparse errors
            if e.code not in (0, None):
                failed.append(name)
                print(f"benchmarks.{name} exited with status {e.code}", file=sys.stderr, flush=True)
        except Exception:
            failed.append(name)
            traceback.print_exc()
        finally:
            torch.set_num_threads(threads)
        print(f"\n(benchmarks.{name}: {time.perf_counter() - t0:.0f} s)", flush=True)
    print(f"\nall benchmarks: {time.perf_counter() - t_all:.0f} s"
          + (f"; FAILED: {', '.join(failed)}" if failed else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
