"""hookedicl: mechanistic analysis of in-context learning.

    import hookedicl as hi
    model = hi.build_model("gpt2", n_dims=5, d_model=64, n_layers=4, n_heads=2)
    task = hi.make_task("linear_regression", n_dims=5)
    batch = task.sample(batch_size=64, n_points=11)
    preds = model(batch.xs, batch.ys)                       # (batch, n_points)
    preds, cache = model.run_with_cache(batch.xs, batch.ys)
    hi.baselines.get("least_squares").predict(batch.xs, batch.ys)
    model = hi.load_pretrained("gpt2-linreg-d5")             # shipped tiny checkpoints: hi.list_pretrained()
    run = hi.train("config.yaml")

The names below are resolved on first use (PEP 562), so `import hookedicl` (and the command
line's `--help`) does not import torch or TransformerLens; `hi.build_model` imports them then.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from .progress import quiet_missing_widgets as _quiet_missing_widgets

_quiet_missing_widgets()  # no tqdm "IProgress not found" warning in notebooks without ipywidgets

# public name -> (module relative to this package, attribute; None: the module itself)
_LAZY: dict[str, tuple[str, str | None]] = {
    "analysis": (".analysis", None),
    "baselines": (".baselines", None),
    "evaluation": (".evaluation", None),
    "models": (".models", None),
    "tasks": (".tasks", None),
    "pretrained": (".pretrained", None),
    "publish": (".publish", None),
    "sweep": (".sweep", None),
    "training": (".training", None),
    "viz": (".viz", None),
    "evaluate": (".evaluation", "evaluate"),
    "icl_regression_score": (".evaluation", "icl_regression_score"),
    "HookedICLModel": (".models", "HookedICLModel"),
    "ModelSpec": (".models", "ModelSpec"),
    "build_model": (".models", "build_model"),
    "list_architectures": (".models", "list_architectures"),
    "export_pretrained": (".pretrained", "export_pretrained"),
    "list_pretrained": (".pretrained", "list_pretrained"),
    "load_pretrained": (".pretrained", "load_pretrained"),
    "pretrained_card": (".pretrained", "pretrained_card"),
    "list_tasks": (".tasks", "list_tasks"),
    "make_task": (".tasks", "make_task"),
    "Run": (".training", "Run"),
    "TrainConfig": (".training", "TrainConfig"),
    "train": (".training", "train"),
}

__all__ = [
    "HookedICLModel", "ModelSpec", "Run", "TrainConfig", "__version__", "analysis", "baselines", "build_model",
    "evaluate", "evaluation", "export_pretrained", "icl_regression_score", "list_architectures", "list_pretrained",
    "list_tasks", "load_pretrained", "make_task", "models", "pretrained_card", "tasks", "train",
]

if TYPE_CHECKING:  # what the lazy names are, for type checkers and editors
    from . import analysis, baselines, evaluation, models, tasks
    from .evaluation import evaluate, icl_regression_score
    from .models import HookedICLModel, ModelSpec, build_model, list_architectures
    from .pretrained import export_pretrained, list_pretrained, load_pretrained, pretrained_card
    from .tasks import list_tasks, make_task
    from .training import Run, TrainConfig, train


def __getattr__(name: str) -> Any:
    try:
        module, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'hookedicl' has no attribute {name!r}") from None
    obj = importlib.import_module(module, __name__)
    value = obj if attr is None else getattr(obj, attr)
    globals()[name] = value  # resolved once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
