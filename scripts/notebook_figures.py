"""Regenerate docs/figures/nb0X_*.png by executing the notebooks as committed (default parameters).

    python scripts/notebook_figures.py                    # every notebook
    python scripts/notebook_figures.py 02_activation_patching

Each notebook runs top to bottom with only `figure_dir` set, so the figure is exactly what the
notebook draws; the executed copies (with outputs) go to runs/notebooks/ for inspection.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str]) -> int:
    from hookedicl.publish import count_image_outputs, execute_notebook

    notebooks = sorted((REPO / "notebooks").glob("*.ipynb"))
    if argv:
        unknown = [a for a in argv if not (REPO / "notebooks" / f"{a}.ipynb").is_file()]
        if unknown:
            raise SystemExit(f"unknown notebook(s) {unknown}; available: {[p.stem for p in notebooks]}")
        notebooks = [REPO / "notebooks" / f"{a}.ipynb" for a in argv]
    out = REPO / "runs" / "notebooks"
    for nb_path in notebooks:
        t0 = time.perf_counter()
        nb = execute_notebook(nb_path, {"figure_dir": str(REPO / "docs" / "figures")}, out / nb_path.name,
                              timeout=1800, cwd=out.parent, env={"OMP_NUM_THREADS": "1"})
        print(f"{nb_path.stem}: {count_image_outputs(nb)} figures, {time.perf_counter() - t0:.0f} s -> {out / nb_path.name}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
