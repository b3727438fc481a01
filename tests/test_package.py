"""The package as a user gets it: a lazy top-level import, the command line's entry points
(`--version`, `-h`, `python -m hookedicl`), the LICENSE, and a wheel that carries the analysis
notebooks, so `hookedicl publish` runs from a wheel installed outside the repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import hookedicl as hi

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformer_lens", "pandas", "matplotlib", "sklearn")


def _python(code: str, *, cwd: Path = REPO, pythonpath: Path = REPO, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _hookedicl(*args: str, cwd: Path = REPO, pythonpath: Path = REPO, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(pythonpath), "OMP_NUM_THREADS": "1", "COLUMNS": "120"}
    return subprocess.run([sys.executable, "-m", "hookedicl", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


# ----------------------------------------------------------------------------------- lazy import
def test_import_and_help_load_no_heavy_dependency():
    code = (
        "import sys, json\n"
        "import hookedicl\n"
        "after_import = sorted(m for m in %r if m in sys.modules)\n"
        "from typer.testing import CliRunner\n"
        "from hookedicl.cli import app\n"
        "res = CliRunner().invoke(app, ['--help'])\n"
        "assert res.exit_code == 0, res.output\n"
        "after_help = sorted(m for m in %r if m in sys.modules)\n"
        "print(json.dumps([after_import, after_help]))\n"
    ) % (HEAVY, HEAVY)
    res = _python(code)
    assert res.returncode == 0, res.stderr
    after_import, after_help = json.loads(res.stdout.strip().splitlines()[-1])
    assert after_import == [] and after_help == []


def test_every_public_name_resolves_to_its_module_attribute():
    import importlib

    import hookedicl.analysis
    import hookedicl.evaluation
    import hookedicl.models
    import hookedicl.pretrained
    import hookedicl.tasks
    import hookedicl.training

    expected = {
        "HookedICLModel": hookedicl.models.HookedICLModel, "ModelSpec": hookedicl.models.ModelSpec,
        "build_model": hookedicl.models.build_model, "list_architectures": hookedicl.models.list_architectures,
        "Run": hookedicl.training.Run, "TrainConfig": hookedicl.training.TrainConfig, "train": hookedicl.training.train,
        "evaluate": hookedicl.evaluation.evaluate, "icl_regression_score": hookedicl.evaluation.icl_regression_score,
        "export_pretrained": hookedicl.pretrained.export_pretrained, "list_pretrained": hookedicl.pretrained.list_pretrained,
        "load_pretrained": hookedicl.pretrained.load_pretrained, "pretrained_card": hookedicl.pretrained.pretrained_card,
        "list_tasks": hookedicl.tasks.list_tasks, "make_task": hookedicl.tasks.make_task,
        "analysis": hookedicl.analysis, "baselines": importlib.import_module("hookedicl.baselines"),
        "evaluation": hookedicl.evaluation, "models": hookedicl.models, "tasks": hookedicl.tasks,
        "__version__": hi.__version__,
    }
    assert set(hi.__all__) == set(expected)
    for name, obj in expected.items():
        assert getattr(hi, name) is obj, name
    assert set(hi.__all__) <= set(dir(hi))
    assert hi.analysis.ANALYSES and hi.baselines.get("least_squares") is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        hi.nope  # noqa: B018
    from hookedicl import build_model  # `from` imports go through the same lookup

    assert build_model is hookedicl.models.build_model


# ----------------------------------------------------------------------------- command line entry
def test_version_short_help_and_python_m():
    res = _hookedicl("--version")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"hookedicl {hi.__version__}"
    short, long = _hookedicl("-h"), _hookedicl("--help")
    assert short.returncode == long.returncode == 0
    assert short.stdout == long.stdout and "publish" in short.stdout and "Usage: hookedicl" in short.stdout
    sub = _hookedicl("eval", "-h")
    assert sub.returncode == 0 and "--n-prompts" in sub.stdout


def test_license_is_the_declared_one():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert meta["license"] == "MIT" and meta["license-files"] == ["LICENSE"]
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License") and "WITHOUT WARRANTY OF ANY KIND" in text


# --------------------------------------------------------------------------------------- wheel
def _build_wheel(tmp: Path) -> Path:
    """A wheel of the repository, built from a copy (nothing is written into the checkout)."""
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "hookedicl", src / "hookedicl", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    res = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w",
         str(tmp / "dist"), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr
    (wheel,) = (tmp / "dist").glob("hookedicl-*.whl")
    return wheel


def test_wheel_installed_outside_the_repo_publishes(tmp_path):
    import zipfile

    wheel = _build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    shipped = sorted(p.name for p in (REPO / "hookedicl" / "publish" / "analyses").glob("*.ipynb"))
    assert shipped and all(f"hookedicl/publish/analyses/{n}" in names for n in shipped)
    assert any(n.endswith("licenses/LICENSE") for n in names)
    assert not any("__pycache__" in n for n in names)
    metadata = zipfile.ZipFile(wheel).read(f"hookedicl-{hi.__version__}.dist-info/METADATA").decode()
    assert f"\nVersion: {hi.__version__}\n" in metadata and "\nLicense-Expression: MIT\n" in metadata

    target = tmp_path / "site"
    res = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(target), str(wheel)],
        capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stderr
    outside = tmp_path / "elsewhere"  # no analyses/ folder, no checkout in sight
    outside.mkdir()

    where = _python("import hookedicl.publish as p; print(p.__file__); print(p.analyses_dir())",
                    cwd=outside, pythonpath=target)
    assert where.returncode == 0, where.stderr
    module, folder = where.stdout.split()
    assert Path(module).is_relative_to(target) and Path(folder) == target / "hookedicl" / "publish" / "analyses"

    run = outside / "run"
    res = _hookedicl("pretrained", "--export", "gpt2-linreg-d5", str(run), cwd=outside, pythonpath=target)
    assert res.returncode == 0, res.stderr
    res = _hookedicl("publish", "run_summary", "--run", str(run), "--out", str(outside / "pub"),
                     "-p", "threads=1", "-p", "n_prompts=32", cwd=outside, pythonpath=target, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    manifest = json.loads((outside / "pub" / "publish.json").read_text())
    assert Path(manifest["notebook"]) == target / "hookedicl" / "publish" / "analyses" / "run_summary.ipynb"
    assert {"run_summary.html", "run_summary.ipynb", "error_curves.png", "icl_scores.csv"} <= set(manifest["files"])
