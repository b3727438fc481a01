"""Analyses comparing a model's internals with reference predictors.

Each module holds one analysis with a Python function returning a tidy DataFrame and an
`analyze_run(run, ...) -> (DataFrame, Figure)` used by `hookedicl analyze RUN --what ...`:

  lens       readout lens: decode every residual layer with the final norm + read-out
  match      predictor matching: SPD, ILWD, prediction difference, sensitivity cosine
  order      order sensitivity of the query prediction under permuted demonstrations
  summaries  attention mass to x vs y tokens; Mamba Δ statistics and the SSM's effective attention
  probe      linear / MLP probes for w, Xᵀy, w_OLS, w_ridge, w_GD per layer and position
  ablate     zero / mean / resample ablation of heads, slots, the Mamba state, residual directions
  patch      activation patching between clean and corrupted prompts

and, outside the `analyze_run` registry (CLI: `hookedicl merge`, `hookedicl sae`):

  merge      slerp / linear merging of two runs into a new run directory
  sae        sparse autoencoders (TopK, L1-ReLU); sae_eval: FVU, L0, dead fraction, splicing;
             sae_run: an SAE on one hook of a run
  features   matching SAE features across models, feature flow, correlations with task quantities
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

ANALYSES: tuple[str, ...] = ("lens", "match", "order", "summaries", "probe", "ablate", "patch")


def analyze_run(run: Any, what: str, *, out_dir: str | Path | None = None, n_prompts: int = 256, seed: int = 0, **kw: Any):
    """Run analysis `what` on `run`; writes `<out_dir or RUN/analysis>/<what>.csv` and `.png`/`.svg`.

    Returns the DataFrame.
    """
    from ..io import atomic_write_text
    from ..layout import ANALYSIS, output_set
    from ..training import Run
    from ..viz import save_figure
    from ..viz._backend import pyplot

    if what not in ANALYSES:
        raise ValueError(f"unknown analysis {what!r}; valid: {', '.join(ANALYSES)}")
    run = Run.of(run)
    module = importlib.import_module(f"{__name__}.{what}")
    df, fig = module.analyze_run(run, n_prompts=n_prompts, seed=seed, **kw)
    root, sub = (Path(out_dir).parent, Path(out_dir).name) if out_dir is not None else (run.path, ANALYSIS)
    try:
        with output_set(root, sub) as stage:  # the table and its figures together, or nothing
            atomic_write_text(stage / f"{what}.csv", df.to_csv(index=False))
            if fig is not None:
                save_figure(fig, stage / what)
    finally:
        if fig is not None:
            pyplot().close(fig)
    return df


# ------------------------------------------------------------------ the public analysis namespace
# Every analysis under one unambiguous name (`hi.analysis.<name>`). Two functions share their
# module's name and are exported under a longer one: `match.match` as `match_predictors`,
# `probe.probe` as `probe_model` (the modules stay reachable as `hi.analysis.match` / `.probe`).
from ..models.sites import POSITION_NAMES, PositionSpec, Site, token_positions  # noqa: E402, F401
from .ablate import ABLATION_KINDS, ablation_curve, ablation_sweep, sites_of  # noqa: E402, F401
from .features import cosine_matrix, feature_flow, flow_counts, match_features, merge_origins, task_correlations  # noqa: E402, F401
from .interventions import KINDS, Intervention, intervened_predictions, intervention_hooks, prepare  # noqa: E402, F401
from .lens import lens_match, lens_predictions, readout_lens  # noqa: E402, F401
from .match import Reference, best_match, ilwd, implicit_weights, line_search_lr, query_gradients, sensitivity, spd  # noqa: E402, F401
from .match import match as match_predictors  # noqa: E402, F401
from .merge import lerp_tensors, merge_models, merge_runs, merge_state_dicts, slerp_tensors  # noqa: E402, F401
from .order import order_sensitivity, permuted_prompts  # noqa: E402, F401
from .patch import PromptPairs, make_pairs, patch_examples, patch_sweep, patched_predictions  # noqa: E402, F401
from .probe import LinearProbe, MLPProbe, Target, probe_activations, probe_over_training  # noqa: E402, F401
from .probe import probe as probe_model  # noqa: E402, F401
from .sae import SAEConfig, SparseAutoencoder, load_sae, save_sae, train_sae  # noqa: E402, F401
from .sae_eval import collect_activations, run_activations, sae_metrics, splice_effect, spliced_predictions  # noqa: E402, F401
from .sae_run import train_run_sae  # noqa: E402, F401
from .summaries import attention_mass, dt_stats, ssm_attention, ssm_attention_mass, ssm_effective_attention, summarize  # noqa: E402, F401

__all__ = [
    "ABLATION_KINDS", "ANALYSES", "Intervention", "KINDS", "LinearProbe", "MLPProbe", "POSITION_NAMES", "PositionSpec",
    "PromptPairs", "Reference", "SAEConfig", "Site", "SparseAutoencoder", "Target", "ablation_curve", "ablation_sweep",
    "analyze_run", "attention_mass", "best_match", "collect_activations", "cosine_matrix", "dt_stats", "feature_flow",
    "flow_counts", "ilwd", "implicit_weights", "intervened_predictions", "intervention_hooks", "lens_match",
    "lens_predictions", "lerp_tensors", "line_search_lr", "load_sae", "make_pairs", "match_features",
    "match_predictors", "merge_models", "merge_origins", "merge_runs", "merge_state_dicts", "order_sensitivity",
    "patch_examples", "patch_sweep", "patched_predictions", "permuted_prompts", "prepare", "probe_activations",
    "probe_model", "probe_over_training", "query_gradients", "readout_lens", "run_activations", "sae_metrics",
    "save_sae", "sensitivity", "sites_of", "slerp_tensors", "spd", "splice_effect", "spliced_predictions",
    "ssm_attention", "ssm_attention_mass", "ssm_effective_attention", "summarize", "task_correlations",
    "token_positions", "train_run_sae", "train_sae",
]
