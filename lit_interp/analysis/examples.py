"""Single examples (seeds 002, 003, 004): top-k next-token predictions, and attention with a layer mean-ablated."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from transformer_lens import HookedTransformer

from lit_interp.analysis.losses import Task
from lit_interp.analysis.patterns import attention_pattern


@dataclass(frozen=True)
class TopKPredictions:
    """The k likeliest outputs at every position of every sequence, and where each position's target ranks.

    `target_rank` is 0 when the target is the top prediction, NaN where a position has no target
    (`targets` < 0); `target_logit` and `target_prob` likewise.
    """

    tokens: Int[torch.Tensor, "batch pos k"]
    logits: Float[torch.Tensor, "batch pos k"]
    probs: Float[torch.Tensor, "batch pos k"]
    target_rank: Float[torch.Tensor, "batch pos"] | None = None
    target_logit: Float[torch.Tensor, "batch pos"] | None = None
    target_prob: Float[torch.Tensor, "batch pos"] | None = None

    def format(self, sequence: int = 0, inputs: Int[torch.Tensor, "batch pos"] | None = None) -> str:
        """One sequence as text, like TransformerLens's `test_prompt`: per position the target's rank and the top k."""
        lines = []
        for pos in range(self.tokens.shape[1]):
            head = f"pos {pos}" + (f" (input {int(inputs[sequence, pos])})" if inputs is not None else "")
            if self.target_rank is not None and not torch.isnan(self.target_rank[sequence, pos]):
                head += (
                    f": target rank {int(self.target_rank[sequence, pos])}, "
                    f"logit {self.target_logit[sequence, pos]:.2f}, prob {self.target_prob[sequence, pos]:.2%}"
                )
            lines.append(head)
            for rank, (token, logit, prob) in enumerate(
                zip(self.tokens[sequence, pos], self.logits[sequence, pos], self.probs[sequence, pos])
            ):
                lines.append(f"  top {rank}: {int(token)}  logit {logit:.2f}  prob {prob:.2%}")
        return "\n".join(lines)


def top_k_from_logits(
    logits: Float[torch.Tensor, "batch pos d_vocab"], k: int = 10, targets: Int[torch.Tensor, "batch pos"] | None = None
) -> TopKPredictions:
    """`TopKPredictions` of a model's output logits; `targets` gives each position's answer (< 0: none)."""
    k = min(k, logits.shape[-1])
    logits = logits.float()
    probs = logits.softmax(-1)
    top_logits, top_tokens = logits.topk(k, dim=-1)
    top_probs = probs.gather(-1, top_tokens)
    if targets is None:
        return TopKPredictions(top_tokens, top_logits, top_probs)
    has_target = targets >= 0
    index = targets.clamp(min=0)[..., None]
    target_logit = logits.gather(-1, index)[..., 0]
    target_rank = (logits > target_logit[..., None]).sum(-1).float()  # ties rank the target first
    target_prob = probs.gather(-1, index)[..., 0]
    nan = torch.tensor(torch.nan, device=logits.device)
    return TopKPredictions(
        top_tokens,
        top_logits,
        top_probs,
        torch.where(has_target, target_rank, nan),
        torch.where(has_target, target_logit, nan),
        torch.where(has_target, target_prob, nan),
    )


def top_k_predictions(
    model: HookedTransformer,
    tokens: Int[torch.Tensor, "batch pos"] | Int[torch.Tensor, " pos"],
    k: int = 10,
    targets: Int[torch.Tensor, "batch pos"] | Int[torch.Tensor, " pos"] | None = None,
) -> TopKPredictions:
    """Seed 003's `test_prompt` for models without a tokenizer: run `tokens`, the top k outputs per position.

    ```python
    tokens = run.probe_batch(1)
    targets = torch.full_like(tokens, -1)
    targets[:, 1:] = run.module.targets(tokens)  # position p's answer
    print(top_k_predictions(run.model, tokens, 5, targets).format(0, tokens))
    ```
    """
    if tokens.ndim == 1:
        tokens = tokens[None]
        targets = None if targets is None else targets[None]
    with torch.no_grad():
        logits = model(tokens.to(model.W_E.device))
    return top_k_from_logits(logits, k, None if targets is None else targets.to(logits.device))


def targets_by_position(task: Task, batch: torch.Tensor) -> Int[torch.Tensor, "batch pos"]:
    """A token task's targets aligned with the model's positions, -1 before `first_target_pos`."""
    targets = task.targets(batch)
    first = task.hparams.first_target_pos
    padding = torch.full((targets.shape[0], first), -1, dtype=targets.dtype, device=targets.device)
    return torch.cat([padding, targets], dim=1)


def attention_with_layer_mean_ablated(
    model: HookedTransformer, task: Task, batch: torch.Tensor, layer: int
) -> tuple[float, Float[torch.Tensor, "batch layer head query_pos key_pos"]]:
    """The task's loss and every layer's attention patterns with layer `layer`'s `hook_z` replaced by its batch mean.

    Seed 002 ablates its layer 1 this way and looks at what the later layers then attend to. The
    loss equals the hook sweep's `blocks.{layer}.attn.hook_z` entry.
    """

    def mean_ablate(z: torch.Tensor, hook) -> torch.Tensor:
        return z.mean(0, keepdim=True).expand_as(z)

    with model.hooks(fwd_hooks=[(f"blocks.{layer}.attn.hook_z", mean_ablate)]):
        output, cache = model.run_with_cache(
            task.model_input(batch), names_filter=lambda name: name.endswith(("hook_pattern", "hook_attn_scores"))
        )
    patterns = torch.stack([attention_pattern(cache, index) for index in range(model.cfg.n_layers)], dim=1)
    return task.loss(output, batch).item(), patterns
