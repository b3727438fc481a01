"""Tiny pretrained checkpoints shipped with the package.

Each checkpoint is a sub-folder of this package holding

    model.safetensors   fp32 weights; the `ModelSpec` as JSON in the safetensors metadata
    card.json           name, description, the full training config, parameter count, training
                        steps and seconds, the measured ICL score (with its 95% bootstrap CI), the
                        evaluation summary it came from, and the sha256 of model.safetensors
    metrics.jsonl       the training log (loss, learning rate, least-squares loss per log step)

They are trained by `scripts/train_pretrained.py` from the configs in `hookedicl/pretrained/configs/`
(anyone can re-run it; it rewrites these folders).

    import hookedicl as hi
    from hookedicl.pretrained import export_pretrained, pretrained_card
    hi.list_pretrained()                         # ['gpt2-linreg-d5', 'hybrid-linreg-d5', ...]
    model = hi.load_pretrained("gpt2-linreg-d5") # HookedICLModel in eval mode, checksum verified
    card = pretrained_card("gpt2-linreg-d5")     # PretrainedCard: .icl_score, .train_config, ...
    run = export_pretrained("gpt2-linreg-d5", "runs/gpt2")   # an ordinary run directory

`hookedicl pretrained` lists them; `hookedicl pretrained --export NAME DIR` writes the run
directory, which `hookedicl eval/analyze/report` accept like any trained run.
"""

from .shipped import (
    CARD, CARD_VERSION, METRICS, WEIGHTS, PretrainedCard, PretrainedIntegrityError, export_pretrained,
    list_pretrained, load_pretrained, package_run, pretrained_card, train_seconds_from_metrics,
)

__all__ = [
    "PretrainedCard", "PretrainedIntegrityError", "export_pretrained", "list_pretrained", "load_pretrained",
    "package_run", "pretrained_card", "train_seconds_from_metrics",
]
