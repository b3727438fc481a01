"""Progress bars: shown on a terminal or when asked, never when stderr is not a terminal (unless
asked), never with HOOKEDICL_PROGRESS=0 or `hookedicl --quiet`, never in an executed notebook, and
never tqdm's "IProgress not found" warning in a kernel without ipywidgets."""

from __future__ import annotations

import importlib.util
import io
import os
import sys

import nbformat
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import hookedicl as hi
from hookedicl.cli import app
from hookedicl.progress import ENV, progress_bar, progress_enabled

runner = CliRunner()


@pytest.fixture
def not_a_tty(monkeypatch, capsys):
    """stderr is captured (not a terminal, as in a log or CI); no HOOKEDICL_PROGRESS set.
    Returns a function giving the stderr written so far."""
    monkeypatch.delenv(ENV, raising=False)
    assert not sys.stderr.isatty()
    written: list[str] = []

    def stderr() -> str:
        written.append(capsys.readouterr().err)
        return "".join(written)

    return stderr


def test_rules(not_a_tty, monkeypatch):
    assert progress_enabled() is False  # not a terminal, not a kernel
    assert progress_enabled(True) is True and progress_enabled(False) is False
    monkeypatch.setenv(ENV, "1")
    assert progress_enabled() is True and progress_enabled(False) is False
    monkeypatch.setenv(ENV, "0")
    assert progress_enabled(True) is False  # the switch wins over a caller's True
    monkeypatch.setenv(ENV, "yes")
    with pytest.raises(ValueError, match=r"\$HOOKEDICL_PROGRESS must be 0 or 1, got 'yes'"):
        progress_enabled()


def test_terminal_shows_the_bar(monkeypatch):
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv(ENV, raising=False)
    err = Tty()
    monkeypatch.setattr(sys, "stderr", err)
    for _ in progress_bar(range(7), desc="work"):
        pass
    assert "work: 100%" in err.getvalue() and "7/7" in err.getvalue()


def test_evaluate_bar_follows_the_rules_and_changes_nothing(not_a_tty, monkeypatch):
    task = hi.make_task("linear_regression", n_dims=3)
    ls = hi.baselines.get("least_squares")
    quiet = hi.evaluate({"ls": ls}, task, n_prompts=40, n_points=6, batch_size=16)
    assert not_a_tty() == ""
    shown = hi.evaluate({"ls": ls}, task, n_prompts=40, n_points=6, batch_size=16, progress=True)
    assert "eval: 100%" in not_a_tty() and "40/40" in not_a_tty()
    np.testing.assert_array_equal(quiet.errors["ls"], shown.errors["ls"])
    before = not_a_tty()
    monkeypatch.setenv(ENV, "0")
    hi.evaluate({"ls": ls}, task, n_prompts=40, n_points=6, batch_size=16, progress=True)
    assert not_a_tty() == before


def test_sae_and_merge_bars(not_a_tty, monkeypatch):
    from hookedicl.analysis.merge import merge_state_dicts
    from hookedicl.analysis.sae import train_sae

    monkeypatch.setenv(ENV, "1")
    train_sae(torch.randn(64, 8, generator=torch.Generator().manual_seed(0)), d_sae=16, k=2, steps=5, batch_size=16)
    a = {"w": torch.ones(3, 3), "b": torch.zeros(3)}
    merge_state_dicts(a, {k: v + 1 for k, v in a.items()}, 0.5)
    text = not_a_tty()
    assert "sae: 100%" in text and "5/5" in text
    assert "merge (slerp): 100%" in text and "2/2" in text


def test_cli_quiet_flag(tmp_path, monkeypatch):
    run = hi.export_pretrained("gpt2-linreg-d5", tmp_path / "run")
    monkeypatch.setenv(ENV, "1")  # bars asked for, although CliRunner's stderr is no terminal
    shown = runner.invoke(app, ["eval", str(run.path), "--n-prompts", "32"])
    assert shown.exit_code == 0, shown.output
    assert "eval: 100%" in shown.output and "ICL score vs" in shown.output
    quiet = runner.invoke(app, ["--quiet", "eval", str(run.path), "--n-prompts", "32"])
    assert quiet.exit_code == 0, quiet.output
    assert "eval:" not in quiet.output and "ICL score vs" in quiet.output
    assert os.environ[ENV] == "1"  # restored after the command


def _notebook(path, source: str):
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell(source))
    nbformat.write(nb, str(path))
    return path


def test_notebook_bars_without_the_ipywidgets_warning(tmp_path):
    """`import hookedicl` in a kernel quiets tqdm.auto's warning (a library import would raise it);
    an executed notebook holds no bar unless the caller asks; asked, the bar is plain text without
    ipywidgets."""
    from hookedicl.publish import execute_notebook

    src = (
        "import hookedicl\n"
        "from tqdm.auto import tqdm as auto_tqdm  # what huggingface_hub does on import\n"
        "from hookedicl.progress import progress_bar\n"
        "for _ in progress_bar(range(5), desc='cells'):\n"
        "    pass\n"
    )
    nb_path = _notebook(tmp_path / "bars.ipynb", src)
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(hi.__file__).rsplit(os.sep, 2)[0], os.environ.get("PYTHONPATH")]))}

    def outputs(nb):
        return [o for c in nb.cells for o in c.get("outputs", [])]

    quiet = execute_notebook(nb_path, {}, tmp_path / "quiet.ipynb", timeout=120, env=env)
    assert outputs(quiet) == []  # no warning, no bar
    shown = execute_notebook(nb_path, {}, tmp_path / "shown.ipynb", timeout=120, env={**env, ENV: "1"})
    text = "".join(o.get("text", "") + str(o.get("data", {})) for o in outputs(shown))
    assert "IProgress" not in text and "Warning" not in text
    if importlib.util.find_spec("ipywidgets") is None:
        assert "cells: 100%" in text and "5/5" in text
    else:  # a widget
        assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs(shown))
