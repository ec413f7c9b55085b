"""The head label `L{layer}H{head}` (TransformerLens's `all_head_labels()` spelling): written and parsed here only."""

from __future__ import annotations

import re

HEAD_LABEL = re.compile(r"L(?P<layer>\d+)H(?P<head>\d+)")
# A per-head tensor of a snapshot: `<group>.L{layer}H{head}`, e.g. `ov_circuit.L0H1`.
PER_HEAD_TENSOR = re.compile(r"(?P<group>.+)\.L(?P<layer>\d+)H(?P<head>\d+)")


def head_label(layer: int, head: int) -> str:
    return f"L{layer}H{head}"


def head_labels(n_layers: int, n_heads: int) -> list[str]:
    """Every head's label, layer by layer (the order of `[layer head]` tensors flattened)."""
    return [head_label(layer, head) for layer in range(n_layers) for head in range(n_heads)]


def parse_head_label(label: str) -> tuple[int, int] | None:
    """(layer, head) of `L{layer}H{head}`, or None for anything else."""
    match = HEAD_LABEL.fullmatch(label)
    return (int(match["layer"]), int(match["head"])) if match else None


def layer_label(layer: int) -> str:
    """A layer in a scalar tag or an axis, `L{layer}`."""
    return f"L{layer}"
