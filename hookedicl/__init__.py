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
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import baselines, evaluation, models, tasks
from .evaluation import evaluate, icl_regression_score
from .models import HookedICLModel, ModelSpec, build_model, list_architectures
from .pretrained import export_pretrained, list_pretrained, load_pretrained, pretrained_card
from .tasks import list_tasks, make_task
from .training import Run, TrainConfig, train

__all__ = [
    "HookedICLModel", "ModelSpec", "Run", "TrainConfig", "__version__", "baselines", "build_model", "evaluate",
    "evaluation", "export_pretrained", "icl_regression_score", "list_architectures", "list_pretrained", "list_tasks",
    "load_pretrained", "make_task", "models", "pretrained_card", "tasks", "train",
]
