"""The analysis registry: a task's own analyses land in the summary and tensors; one that does not apply never runs."""

from __future__ import annotations

import pytest
import torch

from lit_interp.analysis import run_analysis
from lit_interp.analysis.registry import Analysis, head_fragment, layer_fragment, merge, per_head
from lit_interp.tasks.base import Stream
from lit_interp.tasks.bos_ints import BosIntsModule

from .conftest import tiny_task


class BosIntsWithItsOwnAnalyses(BosIntsModule):
    """A user's task: one analysis that applies, one that does not (and would fail if run), one expensive."""

    def analyses(self) -> list[Analysis]:
        def logit_norm(context):
            assert torch.get_float32_matmul_precision() == "highest"  # no TF32 inside analysis
            norm = context.output.norm(dim=-1).mean()
            return {"my_task": {"logit_norm": norm.item()}}, {"my_task_logits": context.output[0]}

        def never(context):
            raise AssertionError("an analysis that does not apply must not run")

        def costly(context):
            return {"my_task_costly": {"value": 1.0}}, {}

        return [
            Analysis("logit_norm", logit_norm),
            Analysis("vector_only", never, applies=lambda context: not context.token_task),
            Analysis("costly", costly, expensive=True),
        ]


def test_a_task_adds_its_own_analyzes_without_editing_the_snapshot_code():
    _, data = tiny_task("bos_ints_attn_only")
    module = BosIntsWithItsOwnAnalyses(d_model=16, d_head=16)
    torch.set_float32_matmul_precision("high")
    try:
        summary, tensors = run_analysis(module, data, step=3, probe_batch_size=8, hook_mean_ablation=False)
    finally:
        torch.set_float32_matmul_precision("highest")
    batch = data.make_batch(Stream.PROBE, 0, 8)
    assert summary["my_task"]["logit_norm"] == pytest.approx(module.model(batch).norm(dim=-1).mean().item(), rel=1e-5)
    torch.testing.assert_close(tensors["my_task_logits"], module.model(batch)[0])
    assert summary["my_task_costly"] == {"value": 1.0}
    cheap, _ = run_analysis(module, data, step=3, probe_batch_size=8, hook_mean_ablation=False, expensive=False)
    assert "my_task_costly" not in cheap and "my_task" in cheap


def test_fragments_merge_per_head_and_per_layer_and_refuse_a_repeated_key():
    summary = merge(head_fragment({"a": torch.tensor([[1.0, 2.0]])}), head_fragment({"b": torch.tensor([[3.0, 4.0]])}))
    assert summary == {"heads": {"L0H0": {"a": 1.0, "b": 3.0}, "L0H1": {"a": 2.0, "b": 4.0}}}
    merge(summary, layer_fragment({"c": [5.0, 6.0]}))
    assert summary["layers"] == {"0": {"c": 5.0}, "1": {"c": 6.0}}
    with pytest.raises(KeyError, match="'a'"):
        merge(summary, head_fragment({"a": torch.tensor([[0.0, 0.0]])}))
    assert list(per_head("ov", torch.zeros(2, 3, 4, 4))) == [
        "ov.L0H0",
        "ov.L0H1",
        "ov.L0H2",
        "ov.L1H0",
        "ov.L1H1",
        "ov.L1H2",
    ]
