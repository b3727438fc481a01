"""nnsight adapter: trace-style reads and edits of a `HookedICLModel`'s activations.

Every HookPoint is an `nn.Module`, so under nnsight each hook name is a module path whose
`.output` is the activation at that hook (a HookPoint returns its input unchanged):

    import torch
    import hookedicl as hi
    from hookedicl.interop.nnsight import wrap

    model = hi.build_model("gpt2", n_dims=5, d_model=32, n_layers=2, n_heads=2)
    xs, ys = torch.randn(8, 10, 5), torch.randn(8, 10)
    nn_model = wrap(model)                        # wraps a deep copy; `model` is left alone
    with nn_model.trace(xs, ys):                  # the same positional (or xs=, ys=) args as model(xs, ys)
        z = nn_model.blocks[0].attn.hook_z.output.clone().save()  # read [batch, pos, head, d_head]
        nn_model.blocks[0].attn.hook_z.output[:, :, 1] = 0        # edit in place: zero-ablate head 1
        resid = nn_model.blocks[1].hook_resid_post.output.save()
        out = nn_model.output.save()              # predictions (batch, n_points), after the edit
    # z, resid and out are ordinary tensors here. A value made inside the trace without
    # `.save()` (or `nnsight.save(value)`) is not defined after the block; to collect many,
    # save the container (`acts = nnsight.save([...])`) or fill a list made before the trace.

Replacing instead of editing in place works too: `env.output = new_tensor`. A hook name held in a
string resolves with `nn_model.get("blocks.0.attn.hook_z")` (inside a trace,
`nn_model.get("blocks.0.attn.hook_z.output")` is the live value). `cache =
tracer.cache(modules=[...])` (envoys, or strings "model.<hook name>") records many hooks at once,
after edits; read `cache["model.<hook name>"].output` after the trace.

Several inputs in one forward (e.g. clean and corrupted prompts for activation patching): give
`trace()` no input and one `tracer.invoke(xs, ys)` per prompt set; they are concatenated along
the batch dimension (same n_points required) and each block sees only its own rows. A value
passed from one invoke to another at the same location needs a barrier:

    with nn_model.trace() as tracer:
        barrier = tracer.barrier(2)
        with tracer.invoke(xs_clean, ys_clean):
            z_clean = nn_model.blocks[0].attn.hook_z.output[:, :, 1].clone()
            barrier()
        with tracer.invoke(xs_corrupt, ys_corrupt):
            barrier()
            nn_model.blocks[0].attn.hook_z.output[:, :, 1] = z_clean
            patched = nn_model.output.save()

Pitfalls (nnsight 0.8):
- A trace's body is re-read from its source: it must live in a file, a notebook cell or
  `python -c` — not code piped in on stdin (`WithBlockNotFoundError`).
- Request activations in forward order within one block; asking for an earlier hook after a
  later one raises `OutOfOrderError` ("... was requested but the model already ran past it").
- Some hook points are computed only when a hook is attached to them (see
  `hookedicl.models.hooks.is_hooked`): the norms' `hook_scale` / `hook_normalized`, the
  attention scores and pattern, the Mamba writes and states `hook_ssm_write` / `hook_ssm_state`;
  otherwise a fused kernel runs.
  nnsight attaches no torch hooks, so `wrap` attaches a no-op hook to every hook point by default
  (`materialize=True`): every hook fires, with the same code paths and numbers as
  `run_with_cache`, at the cost of the unfused paths and two `[b, pos, d_inner, d_state]` tensors
  (writes, states) per Mamba layer. `materialize=False` keeps the fast paths of a plain forward; requesting a skipped
  hook then raises `OutOfOrderError`. A list of hook names materialises just those.
- `.save()` keeps a reference, not a copy: an in-place edit made later in the same trace shows
  in a value saved earlier from the same tensor. `.clone()` first to keep the unedited value.
- `import nnsight` patches `torch.Tensor.backward` (ordinary `.backward()` still works; inside
  a trace `with loss.backward():` opens a gradient trace) and mounts `.save` on every object. On
  its own it takes ~2.6-3 s, mostly importing transformers; after `import hookedicl`
  (TransformerLens has loaded transformers already) the extra cost is a few hundredths of a
  second. This module imports nnsight only when one of its functions is called.
- `NNsight(module)` permanently replaces the `forward` of every submodule it wraps, which is why
  `wrap` wraps a deep copy.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import torch

from ..models.model import HookedICLModel

if TYPE_CHECKING:
    import nnsight

__all__ = ["intervened_predictions", "wrap", "zero_ablate_head"]


def _materialize_hook(module: torch.nn.Module, args: Any, output: Any) -> None:
    """A no-op forward hook: its presence makes `is_hooked` true, so the hook point is computed."""
    return None


def _materialize_names(model: HookedICLModel, materialize: bool | Iterable[str]) -> list[str]:
    if materialize is True:
        return list(model.hook_dict)
    if materialize is False:
        return []
    if isinstance(materialize, str):
        raise TypeError("materialize must be a bool or a collection of hook names, not a single string")
    names = list(materialize)
    unknown = [name for name in names if name not in model.hook_dict]
    if unknown:
        raise ValueError(f"unknown hook name(s) in materialize: {', '.join(map(repr, unknown))}")
    return names


def _split_inputs(args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    bound = dict(zip(("xs", "ys"), args))
    bound.update(kwargs)
    extra = set(bound) - {"xs", "ys"}
    if len(args) > 2 or extra or "xs" not in bound or "ys" not in bound:
        raise ValueError(
            f"an invoke takes (xs, ys) like HookedICLModel.forward, got {len(args)} positional "
            f"argument(s) and keywords {sorted(kwargs)}"
        )
    return bound["xs"], bound["ys"]


@functools.cache
def _envoy_class() -> type:
    """`nnsight.NNsight` plus batching of several `tracer.invoke(xs, ys)` along dim 0.

    Built on first use so that nnsight is imported only when the adapter is used.
    """
    import nnsight

    class HookedICLEnvoy(nnsight.NNsight):
        """An `nnsight.NNsight` around a `HookedICLModel` that can batch several invokes."""

        def _batch_size(self, *inputs: Any, **kwargs: Any) -> int:
            xs = inputs[0] if inputs else kwargs.get("xs")
            if xs is None:
                return 0
            return int(xs.shape[0]) if isinstance(xs, torch.Tensor) and xs.ndim > 0 else 1

        def _batch(self, invokes: list[tuple], fn: Any) -> tuple:
            if len(invokes) <= 1:
                return super()._batch(invokes, fn)
            pairs = [_split_inputs(tuple(args), dict(kwargs)) for args, kwargs in invokes]
            n_points = {tuple(xs.shape[1:]) for xs, _ in pairs}
            if len(n_points) != 1:
                raise ValueError(
                    "invokes batched into one forward need xs of the same (n_points, n_dims); got "
                    + ", ".join(str(tuple(xs.shape)) for xs, _ in pairs)
                )
            return (torch.cat([xs for xs, _ in pairs]), torch.cat([ys for _, ys in pairs])), {}

    HookedICLEnvoy.__module__ = __name__
    return HookedICLEnvoy


def wrap(model: HookedICLModel, *, materialize: bool | Iterable[str] = True) -> "nnsight.NNsight":
    """An `nnsight.NNsight` around a deep copy of `model`.

    The copy is wrapped because nnsight permanently replaces the `forward` of every submodule it
    wraps; `model` itself is never modified. The copy is independent: editing the wrapper's
    weights (e.g. `nn_model.blocks[0].attn.out_proj.weight`) does not change `model`, and training
    `model` afterwards does not change the wrapper — wrap again to pick up new weights. The copy
    is reachable as `nn_model._module` and takes as much memory as `model`.

    TransformerLens hooks active on `model` at wrap time (e.g. inside `with model.hooks(...)`)
    are removed from the copy; permanent hooks (`add_hook(..., is_permanent=True)`) are kept.

    `materialize`: which hook points get a no-op torch hook in the copy. Components skip the
    hook points that are computed only on demand (norm scale/normalized, attention
    scores/pattern, Mamba state) unless a hook is attached, and nnsight attaches none, so without
    this those hooks cannot be read or edited. `True` (default): every hook point (same code
    paths as `run_with_cache`); `False`: none (the fused paths of a plain forward); or an iterable
    of hook names, e.g. `["blocks.1.attn.hook_pattern"]`.

    Raises TypeError if `model` is not a `HookedICLModel`, ImportError if nnsight is not
    installed.
    """
    if not isinstance(model, HookedICLModel):
        raise TypeError(f"wrap expects a HookedICLModel, got {type(model).__name__}")
    envoy_class = _envoy_class()  # imports nnsight (ImportError here if it is missing)
    clone = copy.deepcopy(model)
    clone.reset_hooks(including_permanent=False)
    for name in _materialize_names(clone, materialize):
        clone.hook_dict[name].register_forward_hook(_materialize_hook)
    return envoy_class(clone)


def _as_wrapper(model: Any) -> Any:
    if isinstance(model, HookedICLModel):
        return wrap(model, materialize=False)
    if isinstance(getattr(model, "_module", None), HookedICLModel):
        return model
    raise TypeError(f"expected a HookedICLModel or the result of wrap(), got {type(model).__name__}")


def intervened_predictions(model: Any, prompts: Any, interventions: Any, *, calibration: Any = None, seed: int = 0) -> torch.Tensor:
    """Predictions `(batch, n_points)` with `interventions` (`hookedicl.analysis.interventions`:
    a `Site` plus a kind) applied inside one nnsight trace — the same interventions, with the same
    numbers, as `hookedicl.analysis.interventions.intervened_predictions` runs through
    TransformerLens hooks. `model` is a `HookedICLModel` (wrapped afresh, left untouched) or a
    wrapper from `wrap`; `prompts` a `TaskBatch`."""
    from ..analysis.common import as_batch
    from ..analysis.interventions import prepare

    nn_model = _as_wrapper(model)
    base = nn_model._module
    prompts = as_batch(prompts)
    items = prepare(base, interventions, prompts, calibration=calibration, seed=seed)
    order = {name: i for i, name in enumerate(base.hook_dict)}  # nnsight wants forward order
    with nn_model.trace(prompts.xs, prompts.ys):
        for item in sorted(items, key=lambda i: order[i.site.hook]):
            env = nn_model.get(item.site.hook)
            env.output = item.apply(env.output)
        out = nn_model.output.save()
    return out


def zero_ablate_head(model: Any, xs: torch.Tensor, ys: torch.Tensor, layer: int, head: int) -> torch.Tensor:
    """Predictions `(batch, n_points)` with head `head` of block `layer` zero-ablated, via nnsight:
    `intervened_predictions` with `Intervention(Site.head_of(layer, head), "zero")`, i.e.
    `blocks.{layer}.attn.hook_z[:, :, head]` (the head's output before the output projection) set
    to 0 at every position. `model` is a `HookedICLModel` (wrapped afresh on each call, leaving it
    untouched) or a wrapper from `wrap` (reuse one for many calls). Gradients flow unless the
    caller disables them.
    """
    from ..analysis.interventions import Intervention
    from ..models.sites import Site
    from ..tasks import TaskBatch

    nn_model = _as_wrapper(model)
    return intervened_predictions(nn_model, TaskBatch(xs, ys), Intervention(Site.head_of(layer, head), "zero"))
