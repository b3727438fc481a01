"""Side-by-side performance measurements of hookedicl (results in BENCHMARKS.md).

`python -m benchmarks.run [--quick]` runs every `bench_*` module; each module also runs on its own
(`python -m benchmarks.bench_models --help`).
"""
