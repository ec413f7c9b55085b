"""Direct attribution of heads, MLPs and embeddings to the correct output, the logit lens, and backup heads (seed 003).

These read the real forward pass (a cache of the model as trained); the unembedding they project
onto is the processed copy's, `processed_copy(model).W_U`, which carries ln_final's scale.
"""

from __future__ import annotations

import einops
import torch
from jaxtyping import Float, Int
from transformer_lens import ActivationCache, HookedTransformer

from lit_interp.analysis.losses import Task

Targets = Int[torch.Tensor, "batch pos"] | Float[torch.Tensor, "batch pos d_vocab"]


def correct_direction(
    W_U: Float[torch.Tensor, "d_model d_vocab"], targets: Targets
) -> Float[torch.Tensor, "batch pos d_model"]:
    """The residual direction raising the correct output: correct minus mean logit, or W_U times the target vector."""
    if targets.is_floating_point():
        return einops.einsum(W_U, targets, "d_model d_vocab, batch pos d_vocab -> batch pos d_model")
    centred = W_U - W_U.mean(-1, keepdim=True)
    return einops.rearrange(centred[:, targets], "d_model batch pos -> batch pos d_model")


def project(
    stack: Float[torch.Tensor, "component batch pos d_model"], direction: torch.Tensor
) -> Float[torch.Tensor, "component pos"]:
    """Each component's batch-mean projection onto the correct direction."""
    return (
        einops.einsum(stack, direction, "component batch pos d_model, batch pos d_model -> component pos")
        / stack.shape[1]
    )


def stack_head_results(
    cache: ActivationCache, first_pos: int = 0
) -> Float[torch.Tensor, "component batch pos d_model"]:
    """Each head's output (without b_O) at positions first_pos.., stacked in `all_head_labels()` order.

    What `cache.stack_head_results(pos_slice=slice(first_pos, None))` returns, by one einsum per
    layer: TransformerLens forms a [batch pos head d_head d_model] product before summing, hundreds of
    MB and seconds per snapshot at the recurrence config's sizes.
    """
    model = cache.model
    results = [
        einops.einsum(cache["z", layer][:, first_pos:], model.blocks[layer].attn.W_O, "b p h k, h k d -> h b p d")
        for layer in range(model.cfg.n_layers)
    ]
    return torch.cat(results)


def direct_attribution(
    cache: ActivationCache, W_U: Float[torch.Tensor, "d_model d_vocab"], targets: Targets, first_target_pos: int
) -> Float[torch.Tensor, "layer head target_pos"]:
    """Each head's direct effect on the correct output at positions first_target_pos.., averaged over the batch.

    Each head's output (without b_O) through ln_final's cached scale (`cache.apply_ln_to_stack`),
    onto the correct minus the mean logit (tokens, seed 003) or onto W_U times the target vector (seed 002).
    `W_U` must carry ln_final's weight: pass `processed_copy(model).W_U`.
    """
    cfg = cache.model.cfg
    stack = cache.apply_ln_to_stack(
        stack_head_results(cache, first_target_pos), pos_slice=slice(first_target_pos, None)
    )
    attribution = project(stack, correct_direction(W_U, targets))
    return attribution.reshape(cfg.n_layers, cfg.n_heads, -1)


def component_direct_attribution(
    cache: ActivationCache, W_U: Float[torch.Tensor, "d_model d_vocab"], targets: Targets, first_target_pos: int
) -> tuple[Float[torch.Tensor, "component target_pos"], list[str]]:
    """Direct effect of every component on the correct output at positions first_target_pos.. (batch mean), and labels.

    Components: embed, pos_embed (where the cache has it), each MLP `mlp{l}`, each head `L{l}H{h}`
    (in `direct_attribution`'s order), and `attn_bias` (every b_O). They sum to the correct-minus-mean
    logit (tokens) or to the output's projection on the target vector, less the unembedding bias
    (ln_final's bias folded in). `W_U` must carry ln_final's weight: pass `processed_copy(model).W_U`.
    """
    cfg = cache.model.cfg
    positions = slice(first_target_pos, None)
    embeds_and_mlps, labels = cache.decompose_resid(mode="mlp", pos_slice=positions, return_labels=True)
    heads, head_labels = stack_head_results(cache, first_target_pos), cache.model.all_head_labels()
    biases = sum(cache.model.blocks[layer].attn.b_O for layer in range(cfg.n_layers))
    bias = torch.broadcast_to(biases, embeds_and_mlps.shape[1:])[None]
    stack = cache.apply_ln_to_stack(torch.cat([embeds_and_mlps, heads, bias]), pos_slice=positions)
    labels = [f"mlp{label.split('_')[0]}" if label.endswith("_mlp_out") else label for label in labels]
    return project(stack, correct_direction(W_U, targets)), labels + head_labels + ["attn_bias"]


def logit_lens(
    model: HookedTransformer, task: Task, batch: torch.Tensor, cache: ActivationCache
) -> dict[str, list[float]]:
    """The task's loss (and accuracy, for tokens) reading the output from the residual stream entering each block.

    Entry l reads `resid_pre` of block l through ln_final (its own statistics) and the unembedding;
    the last entry reads the final residual stream, which is the model's own output.
    """
    first = task.hparams.first_target_pos
    targets = task.targets(batch)
    result: dict[str, list[float]] = {"loss": []} | ({} if targets.is_floating_point() else {"acc": []})
    for residual in cache.accumulated_resid(layer=None, incl_mid=False):
        normalised = residual if model.cfg.normalization_type is None else model.ln_final(residual)
        output = model.unembed(normalised)
        result["loss"].append(task.loss(output, batch).item())
        if "acc" in result:
            result["acc"].append((output[:, first:].argmax(-1) == targets).float().mean().item())
    return result


def backup_heads(
    model: HookedTransformer,
    task: Task,
    batch: torch.Tensor,
    W_U: torch.Tensor,
    clean: Float[torch.Tensor, "layer head"],
) -> tuple[tuple[int, int], Float[torch.Tensor, "layer head"], float]:
    """Zero the head with the largest direct attribution `clean` and recompute every head's attribution (seed 003).

    `clean` is `direct_attribution(...).mean(-1)` on the clean run. Returns the ablated (layer, head),
    each head's change in direct attribution (ablated run minus clean run, each through its own
    ln_final scale), and the task's loss in the ablated run. A head whose attribution rises when
    another is removed is a backup head.
    """
    (layer, head), output, ablated_cache = run_with_top_head_zeroed(model, task, batch, clean)
    ablated = direct_attribution(ablated_cache, W_U, task.targets(batch), task.hparams.first_target_pos).mean(-1)
    return (layer, head), ablated - clean, task.loss(output, batch).item()


def run_with_top_head_zeroed(
    model: HookedTransformer, task: Task, batch: torch.Tensor, scores: Float[torch.Tensor, "layer head"]
) -> tuple[tuple[int, int], torch.Tensor, ActivationCache]:
    """The head with the highest score (NaN never), and the model's output and cache with its `hook_z` zeroed at
    every position."""
    layer, head = divmod(int(scores.flatten().nan_to_num(float("-inf")).argmax()), model.cfg.n_heads)

    def ablate(z: torch.Tensor, hook) -> torch.Tensor:
        z = z.clone()
        z[:, :, head] = 0.0
        return z

    with model.hooks(fwd_hooks=[(f"blocks.{layer}.attn.hook_z", ablate)]):
        output, cache = model.run_with_cache(task.model_input(batch))
    return (layer, head), output, cache


def outside_subspace_fraction(
    cache: ActivationCache, basis: Float[torch.Tensor, "d_model rank"]
) -> dict[str, Float[torch.Tensor, " layer"]]:
    """Fraction of each layer's attention and MLP output norm² outside a subspace, such as the embedding's (seed 002).

    A layer writing outside the embedding subspace carries something other than (a mix of) the inputs.
    """
    cfg = cache.model.cfg
    kinds = ["attn_out"] + ([] if cfg.attn_only else ["mlp_out"])
    fractions = {}
    for kind in kinds:
        values = []
        for layer in range(cfg.n_layers):
            out = cache[kind, layer]
            inside = (out @ basis) @ basis.T
            values.append(((out - inside).pow(2).sum() / out.pow(2).sum()).item())
        fractions[kind] = torch.tensor(values)
    return fractions


def outside_subspace_ratio(
    vectors: Float[torch.Tensor, "... d_model"], basis: Float[torch.Tensor, "d_model rank"]
) -> float:
    """Mean over vectors of |x - P x| / |x|, P the projection onto `basis`'s span (seed 002's statistic).

    Unlike `outside_subspace_fraction`, every vector weighs alike whatever its norm; zero vectors are
    left out, and none left gives NaN.
    """
    vectors = vectors.reshape(-1, vectors.shape[-1])
    norms = vectors.norm(dim=-1)
    outside = (vectors - (vectors @ basis) @ basis.T).norm(dim=-1)
    kept = norms > 0
    return (outside[kept] / norms[kept]).mean().item() if kept.any() else float("nan")


def block_outside_subspace_ratios(
    cache: ActivationCache, basis: Float[torch.Tensor, "d_model rank"], centre: bool
) -> list[float]:
    """`outside_subspace_ratio` of each block's output (`resid_post - resid_pre`, every sequence and position).

    Seed 002 reads the processed model, whose residual stream is the real one less its mean over d_model
    when the processed copy centres the writing weights: pass `centre=centres_writing_weights(cfg)` and
    the processed `W_E`'s basis to get its number from the real cache.
    """
    ratios = []
    for layer in range(cache.model.cfg.n_layers):
        block_out = cache["resid_post", layer] - cache["resid_pre", layer]
        if centre:
            block_out = block_out - block_out.mean(-1, keepdim=True)
        ratios.append(outside_subspace_ratio(block_out, basis))
    return ratios
