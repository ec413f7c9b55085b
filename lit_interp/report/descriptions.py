"""What each head score and report section means, for table tooltips and notes; score thresholds for the run report."""

from __future__ import annotations

SCORES = {
    "prev_token_score": "Mean attention from each position to the one just before it (1: a pure previous-token head).",
    "bos_score": "Mean attention that positions >= 1 pay to position 0 (BOS).",
    "duplicate_score": "On a sequence repeated twice: mean attention from the second copy to the same token's first "
    "occurrence.",
    "induction_score": "On a sequence repeated twice: mean attention from the second copy to the token after the same "
    "token's first occurrence.",
    "prefix_matching_score": "On the probe sequences themselves: mean attention from a token to the position after its "
    "one earlier occurrence (Olsson et al.'s prefix matching).",
    "zero_ablation_loss": "Probe loss with this head's output (hook_z) set to zero; compare with the clean probe loss.",
    "mean_ablation_loss": "Probe loss with this head's output (hook_z) replaced by its batch mean at each position.",
    "ov_copying_score": "Fraction of input tokens whose largest logit in the full OV circuit W_E W_OV W_U is the token "
    "itself (1: the head copies).",
    "ov_eigen_score": "Sum of the eigenvalues of W_OV over the sum of their absolute values: +1 copies its input, "
    "-1 suppresses it.",
    "qk_eigen_score": "Sum of the eigenvalues of W_QK over the sum of their absolute values: +1 attends to keys like "
    "the query.",
    "direct_attribution": "The head's direct effect on the correct output (correct minus mean logit, or the target "
    "direction), through the final norm, averaged over target positions.",
    "rotary_q_similarity": "Mean cosine similarity of the head's queries between different positions (rotary models).",
    "attention_entropy": "Mean entropy (nats) of the head's attention distribution: 0 attends to one position.",
    "ov_effective_rank": "The fewest singular values of W_OV that hold 95% of its squared norm.",
    "qk_effective_rank": "The fewest singular values of W_QK that hold 95% of its squared norm.",
    "patching_score": "Share of the clean last-position loss restored by patching this head's clean output into the "
    "corrupted run (1: all of it, 0: none).",
    "backup_attribution_change": "Change in the head's direct attribution when the most important head is ablated: "
    "positive for a backup head.",
}

# A score reaching its threshold from below is marked in the run report: the step where the head forms.
THRESHOLDS = {
    "prev_token_score": 0.5,
    "bos_score": 0.5,
    "duplicate_score": 0.5,
    "induction_score": 0.5,
    "ov_copying_score": 0.5,
    "ov_eigen_score": 0.5,
    "qk_eigen_score": 0.5,
    "patching_score": 0.5,
}

ADVERSARIAL = {
    "clean_loss": "Loss on the probe batch as it is.",
    "repeated_tokens_loss": "Loss when every token sits beside a copy of itself (a, a, b, b, ...).",
    "no_bos_loss": "Loss with BOS replaced by an ordinary token.",
}

TERMS = {
    "direct": "query and key both read the embeddings only",
    "k_comp": "the key reads what earlier heads wrote (K-composition)",
    "q_comp": "the query reads what earlier heads wrote (Q-composition)",
    "kq_comp": "both read what earlier heads wrote",
}
