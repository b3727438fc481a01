"""Error-curve figure and atomic saving."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from hookedicl.evaluation import ZERO, EvalResult, error_curve
from hookedicl.viz import plot_error_curves, save_figure


@pytest.fixture
def curves():
    rng = np.random.default_rng(0)
    base = rng.exponential(size=(60, 9))
    df = error_curve({"model": base * 0.5, "least_squares": base * 0.1, ZERO: base}, n_bootstrap=50)
    return df


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def test_plot_returns_figure_with_one_line_per_predictor(curves):
    from matplotlib.figure import Figure

    fig = plot_error_curves(curves, title="linear regression")
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    lines = ax.get_lines()
    assert len(lines) == 3
    np.testing.assert_allclose(lines[0].get_xdata(), np.arange(9))
    np.testing.assert_allclose(lines[0].get_ydata(), curves[curves.predictor == "model"]["mean"])
    assert len(ax.collections) == 3  # one CI band each
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["model", "least_squares", ZERO]
    assert "in-context examples" in ax.get_xlabel()
    assert "error" in ax.get_ylabel()
    assert ax.get_title() == "linear regression"


def test_plot_single_curve_on_given_axes_and_from_eval_result():
    import matplotlib.pyplot as plt

    err = np.random.default_rng(1).exponential(size=(20, 5))
    fig, ax = plt.subplots()
    out = plot_error_curves(error_curve(err, n_bootstrap=20), ax=ax)
    assert out is fig and len(ax.get_lines()) == 1 and ax.get_legend() is None

    res = EvalResult(errors={ZERO: err, "a": err * 0.3, "b": err * 0.2}, y_second_moment=1.5, task="t")
    fig2 = plot_error_curves(res)
    assert len(fig2.axes[0].get_lines()) == 3
    np.testing.assert_allclose(fig2.axes[0].get_lines()[2].get_ydata(), err.mean(0) / 1.5)


def test_plot_bad_input():
    with pytest.raises(ValueError, match="missing column"):
        plot_error_curves(error_curve(np.ones((3, 2)), n_bootstrap=5).drop(columns="ci_low"))
    with pytest.raises(ValueError, match="data must be"):
        plot_error_curves([1, 2, 3])


def test_save_figure_writes_png_and_svg_atomically(curves, tmp_path):
    fig = plot_error_curves(curves)
    target = tmp_path / "report" / "error_curves"
    paths = save_figure(fig, target)
    assert paths == [target.with_name("error_curves.png"), target.with_name("error_curves.svg")]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in paths[1].read_text()
    assert sorted(p.name for p in target.parent.iterdir()) == ["error_curves.png", "error_curves.svg"]
    umask = os.umask(0)
    os.umask(umask)
    assert paths[0].stat().st_mode & 0o777 == 0o666 & ~umask

    # a failing format leaves neither a partial file nor a temporary one; existing files survive
    before = paths[0].read_bytes()
    with pytest.raises(ValueError):
        save_figure(fig, target, formats=("png", "not_a_format"))
    assert sorted(p.name for p in target.parent.iterdir()) == ["error_curves.png", "error_curves.svg"]
    assert paths[0].stat().st_size > 0 and len(before) > 0
    with pytest.raises(ValueError, match="formats"):
        save_figure(fig, target, formats=())


_REPO = Path(__file__).resolve().parents[1]

# Import ``hookedicl.viz`` in a fresh interpreter without running the top-level package
# ``__init__`` (which loads the models), so that only the figure code decides the backend.
_PRELUDE = f"""
import sys, types
pkg = types.ModuleType("hookedicl")
pkg.__path__ = [{str(_REPO / "hookedicl")!r}]
sys.modules["hookedicl"] = pkg
"""

_PLOT = """
import pandas as pd
from hookedicl.viz import plot_error_curves
plot_error_curves(pd.DataFrame({"k": [0, 1], "mean": [1.0, 0.5], "ci_low": [0.9, 0.4], "ci_high": [1.1, 0.6]}))
import matplotlib
print(matplotlib.get_backend())
"""


def _run(code: str, env_extra: dict[str, str] | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    env.update(env_extra or {})
    out = subprocess.run(
        [sys.executable, "-c", _PRELUDE + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        cwd=_REPO,
    )
    return out.stdout.strip().splitlines()[-1]


def test_backend_agg_when_none_chosen_and_kept_otherwise():
    # importing the package selects no backend; the first plot picks Agg
    code = "import hookedicl.viz, matplotlib\nassert matplotlib.get_backend(auto_select=False) is None\n"
    assert _run(code + _PLOT).lower() == "agg"
    # a backend chosen beforehand (environment) is left alone
    assert _run(_PLOT, {"MPLBACKEND": "pdf"}).lower() == "pdf"


def test_backend_left_alone_when_pyplot_is_already_imported(curves):
    import matplotlib
    import matplotlib.pyplot as plt

    previous = matplotlib.get_backend()
    plt.switch_backend("svg")
    try:
        plot_error_curves(curves)
        assert matplotlib.get_backend().lower() == "svg"
    finally:
        plt.close("all")
        plt.switch_backend(previous)


def test_palette_option(curves):
    import matplotlib.colors as mcolors

    fig = plot_error_curves(curves, palette=["red", "green", "blue"])
    got = [mcolors.to_hex(line.get_color()) for line in fig.axes[0].get_lines()]
    assert got == ["#ff0000", "#008000", "#0000ff"]
