"""The probing benchmark runs, and its fast path and references agree (tiny size; no timing)."""

from __future__ import annotations

from benchmarks import bench_probes


def test_bench_probes_quick_run_agrees_with_the_references(tmp_path, capsys):
    out = tmp_path / "probes.json"
    result = bench_probes.main(["--quick", "--json", str(out)])
    rows = {r["case"]: r for r in result["rows"]}
    assert sorted(rows) == ["linear", "mlp"]
    assert rows["linear"]["max_rel_dev"] < 1e-8  # the same model as scikit-learn's RidgeCV
    assert rows["mlp"]["max_rel_dev"] < 1e-3  # float32 training, batched vs one at a time
    assert out.exists() and "| LinearProbe.fit_stack |" in capsys.readouterr().out
