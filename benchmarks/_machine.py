"""What every benchmark reports about the machine it ran on."""

from __future__ import annotations

import argparse
import json
import os


def cpu_model() -> str:
    """The CPU's model string from /proc/cpuinfo ("unknown" where there is none)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def n_cpus() -> int | None:
    """CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def summary(info: dict) -> str:
    """One line on the machine from `bench_baselines.machine()`: CPUs, load, library versions."""
    pools = info.get("native_thread_pools")
    return (f"machine: nproc = {info['nproc']}, CPU = {info['cpu_model']}, load average "
            f"{info['loadavg_start'][0]:.1f} -> {info['loadavg_end'][0]:.1f}; torch {info['torch']}, "
            f"numpy {info['numpy']}, scikit-learn {info['sklearn']}"
            + (f"; native pools {', '.join(pools)}" if pools else ""))


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table from a header and rows of already formatted cells."""
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def write_json(result: dict, path: str | None) -> dict:
    """Write `result` to `path` (when given) as indented JSON and return it."""
    if path:
        with open(path, "w") as fh:
            json.dump(result, fh, indent=2)
    return result


def add_run_args(ap: argparse.ArgumentParser, cases: list[str]) -> None:
    """The options the side-by-side benchmarks share: repeats, threads, seed, cases, json."""
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads for this run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cases", type=str, default=",".join(cases), help=f"comma-separated subset of {','.join(cases)}")
    ap.add_argument("--json", type=str, default=None, help="also write the results here")


def result_of(args: argparse.Namespace, info: dict, rows: list[dict]) -> dict:
    """The JSON-able result of a run: its options, the machine (load average now added), rows."""
    info["loadavg_end"] = os.getloadavg()
    return {"config": vars(args), "machine": info, "rows": rows}
