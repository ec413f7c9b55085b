"""What each head score and report section means, for table tooltips and notes (thresholds: lit_interp.formation)."""

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
    "ov_eigen_score": "Sum of the eigenvalues of the full OV circuit W_E W_OV W_U (input to output, direct path) over "
    "the sum of their absolute values: +1 all positive, the head copies the input it attends to; -1 it suppresses it.",
    "ov_residual_eigen_score": "Seed 002's score: the same ratio for W_OV alone, in d_model space (+1: every "
    "eigenvalue positive), counting residual directions that no input is embedded in.",
    "qk_eigen_score": "Sum of the eigenvalues of W_QK alone (d_model space, seed 002) over the sum of their absolute "
    "values: +1 all positive, as for a query attending to keys along its own residual direction.",
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
    "bos_attention_trend": "Rank correlation of the attention paid to BOS with query position (-1: falls at every "
    "later position); blank when the profile is flat.",
    "fixed_position_attention": "The largest share of all queries' attention (from position 1 on) paid to one key "
    "position: ~1 for a head that always attends there.",
    "fixed_position": "The key position holding fixed_position_attention.",
    "qk_diagonal_contrast": "Score a query token gives a key holding the same token minus other tokens, through the "
    "embeddings alone (W_E W_QK W_E^T, attention-score units): negative avoids its own token.",
    "kq_recency": "Rank correlation of the K+Q-composition score term with key position, averaged over queries: +1 "
    "scores more recent keys higher.",
    "rotary_k_similarity": "Mean cosine similarity of the head's keys between different positions, before rotary "
    "(rotary models): ~1 when k is constant.",
    "rotary_qk_offset": "The relative offset at which the rotated mean query and key score highest (0: the query's own "
    "position, 1: the previous one).",
    "ov_large_entry_fraction": "Fraction of W_OV's d_model x d_model entries larger than 0.05 in absolute value.",
    "even_offset_attention_negative_c": "On sequences with c < 0: mean attention to keys 2, 4, ... positions back "
    "(the checkerboard of oscillating recurrences).",
    "even_offset_attention_positive_c": "On sequences with c > 0: mean attention to keys 2, 4, ... positions back.",
    "logit_difference_attribution": "The head's direct effect on the logit difference (correct minus best incorrect "
    "logit), through the final norm, averaged over target positions.",
    "logit_difference_share": "logit_difference_attribution as a share of the clean logit difference.",
    "qk_identity_loss": "Probe loss with this head's W_QK replaced by a low-rank identity (W_K = pinv(W_Q)^T, W_Q "
    "random).",
    "kept_alone_loss": "Probe loss with every other head of this head's layer zeroed (their W_V and W_O).",
    "logit_difference_patching_score": "Share of the clean last-position logit difference restored by patching this "
    "head's clean output into the corrupted run (1: all of it).",
    "backup_logit_difference_change": "Change in the head's logit-difference attribution when the head with the "
    "largest one is ablated: positive for a backup head.",
}

LAYERS = {
    "logit_lens_loss": "Task loss reading the output from resid_pre of block l (the last row: the final residual "
    "stream, equal to the probe loss) through ln_final and the unembedding.",
    "logit_lens_acc": "The same, accuracy.",
    "attn_direct_attribution": "Sum of the layer's heads' direct_attribution.",
    "mlp_direct_attribution": "The layer's MLP output's direct attribution.",
    "dead_neuron_fraction": "Fraction of the layer's neurons never positive on the probe batch.",
    "attn_out_outside_embedding_fraction": "Share of the attention output's squared norm (pooled over batch and "
    "positions) outside the row space of the raw W_E.",
    "mlp_out_outside_embedding_fraction": "Share of the MLP output's squared norm (pooled) outside the row space of "
    "the raw W_E.",
    "block_out_outside_embedding_ratio": "Seed 002's statistic: mean over vectors of |x - Px| / |x|, x the block's "
    "output, P onto the row space of the processed W_E.",
    "probe_c_r2": "5-fold cross-validated R² of a ridge probe from the last position's residual stream to c.",
    "probe_c_shuffled_r2": "The same probe fitted to c shuffled across sequences: what a probe reads from nothing.",
    "probe_d_r2": "5-fold cross-validated R² of a ridge probe from the last position's residual stream to d.",
    "probe_d_shuffled_r2": "The same probe fitted to d shuffled across sequences: what a probe reads from nothing.",
    "summed_ov_slope": "Mean slope of the line through each unit probe input's entries and those of "
    "ln_final(x W_E sum_h W_OV) W_U.",
    "summed_ov_r2": "R² of that line.",
    "summed_ov_slope_random": "The same slope on random unit vectors (entries uniform in [0, 1) before scaling).",
    "summed_ov_r2_random": "R² of that line on the random vectors.",
    "layer_qk_identity_loss": "Probe loss with every head of the layer's W_QK replaced by a low-rank identity.",
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
