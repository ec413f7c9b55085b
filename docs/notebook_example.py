from lit_interp import load
from lit_interp.analysis.patterns import mean_attention_patterns, previous_token_scores

run = load("lightning_logs/version_0")  # the run's last checkpoint, rebuilt without its config
tokens = run.probe_batch()  # the probe batch its analysis snapshots used
logits, cache = run.model.run_with_cache(tokens)  # run.model: the trained HookedTransformer
print(cache["pattern", 0][0, 0])  # layer 0, sequence 0, head 0: [query_pos key_pos]
patterns = mean_attention_patterns(cache, run.model.cfg.n_layers)
print(previous_token_scores(patterns))  # [layer head], 1.0 for a perfect previous-token head
scores = run.head_scores()  # every snapshot: one row per (step, head)
print(scores.pivot(index="step", columns="label", values="prev_token_score"))
