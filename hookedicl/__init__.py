"""hookedicl: mechanistic analysis of in-context learning.

    import hookedicl as hi
    model = hi.build_model("gpt2", n_dims=5, d_model=64, n_layers=4, n_heads=2)
    preds = model(xs, ys)                       # (batch, n_points)
    preds, cache = model.run_with_cache(xs, ys)
"""

from __future__ import annotations

__version__ = "0.1.0"

from .models import HookedICLModel, ModelSpec, build_model, list_architectures

__all__ = ["HookedICLModel", "ModelSpec", "build_model", "list_architectures", "__version__"]
