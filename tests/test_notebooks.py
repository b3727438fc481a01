"""The exploration notebooks in notebooks/: committed without outputs, parameterised, and each one
executes top to bottom on CPU (with tiny parameters here; with its defaults under `-m slow`)
without a cell raising, producing figures and saving its headline figure when asked."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from hookedicl.publish import count_image_outputs, execute_notebook, notebook_parameters

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"

# name -> (tiny parameters, minimum number of figures in the executed notebook)
CASES: dict[str, tuple[dict, int]] = {
    "01_quickstart": ({"train_steps": 16, "n_prompts": 32}, 3),
    "02_activation_patching": ({"n_prompts": 12}, 4),
    "03_probing_and_matching": ({"n_prompts": 48, "train_steps": 24, "capture_every": 8}, 3),
    "04_mamba_internals": ({"n_prompts": 24}, 4),
    "05_architecture_comparison": ({"n_prompts": 24}, 6),
}
COMMON = ("seed", "threads", "figure_dir")
KERNEL_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(str(NOTEBOOKS / f"{name}.ipynb"), as_version=4)


def test_every_notebook_is_covered():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_committed_without_outputs_and_parameterised(name):
    nb = _read(name)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code), f"{name} has stored outputs"
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{name} needs exactly one cell tagged 'parameters'"
    params = notebook_parameters(nb)
    assert set(COMMON) | set(CASES[name][0]) <= set(params), params
    source = "\n".join(c.source for c in code)
    assert "hi.load_pretrained(" in source  # the public API, not private helpers
    assert "plotly" not in source and "circuitsvis" not in source  # figures need nothing beyond matplotlib/seaborn
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")


@pytest.mark.parametrize("name", sorted(CASES))
def test_notebook_runs_with_tiny_parameters(name, tmp_path):
    params, min_figures = CASES[name]
    figures = tmp_path / "figures"
    nb = execute_notebook(NOTEBOOKS / f"{name}.ipynb", {**params, "figure_dir": str(figures)},
                          tmp_path / f"{name}.ipynb", timeout=300, cwd=tmp_path, env=KERNEL_ENV)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    # no warnings or progress bars in the executed outputs
    stderr = [o.text for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.output_type == "stream" and o.name == "stderr"]
    assert stderr == []
    assert count_image_outputs(nb) >= min_figures
    saved = sorted(figures.glob(f"nb{name[:2]}_*.png"))
    assert len(saved) == 1 and saved[0].stat().st_size > 10_000, saved


def test_docs_have_one_generated_figure_per_notebook():
    for name in CASES:
        found = sorted((REPO / "docs" / "figures").glob(f"nb{name[:2]}_*.png"))
        assert len(found) == 1, (name, found)
        assert found[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_notebook_runs_with_default_parameters(name, tmp_path):
    """What a newcomer runs in JupyterLab: the notebook exactly as committed."""
    nb = execute_notebook(NOTEBOOKS / f"{name}.ipynb", {}, tmp_path / f"{name}.ipynb", timeout=900, cwd=tmp_path,
                          env=KERNEL_ENV)
    assert count_image_outputs(nb) >= CASES[name][1]
