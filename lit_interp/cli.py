"""`python -m lit_interp SUBCOMMAND`: one table of subcommands is the help and the dispatch; nothing heavy loads."""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass

from lit_interp.startup import startup_done


@dataclass(frozen=True)
class Subcommand:
    help: str
    target: str  # "module:function", imported only when the subcommand runs
    takes_name: bool = False  # the function reads the subcommand's name as argv[0] (LightningCLI does)

    def run(self, name: str, argv: list[str]) -> None:
        module, function = self.target.split(":")
        main = getattr(importlib.import_module(module), function)
        if not self.takes_name:
            startup_done()  # training calls it itself, once its model is built
        main([name, *argv] if self.takes_name else argv)


TRAIN = "lit_interp.commands.train:main"
SUBCOMMANDS = {
    "fit": Subcommand("train a task (no config: previous-token prediction on digit strings)", TRAIN, True),
    "validate": Subcommand(
        "evaluate a checkpoint on the task's validation set (--ckpt_path alone is enough)", TRAIN, True
    ),
    "test": Subcommand("evaluate a checkpoint on the task's test set (--ckpt_path alone is enough)", TRAIN, True),
    "analyze": Subcommand(
        "report on a checkpoint, a run's snapshots or many runs (attention, head scores, circuits, formation)",
        "lit_interp.commands.analyze:main",
    ),
    "sweep": Subcommand(
        "many fits as one Optuna study: seeds (--seeds 0-7) or a search (--space FILE); resumable",
        "lit_interp.commands.sweep:main",
    ),
}
EXAMPLES = """examples:
  python -m lit_interp fit
  python -m lit_interp fit --config configs/bos_ints_attn_only.yaml --trainer.max_steps=3000
  python -m lit_interp fit --config configs/bos_ints_attn_only.yaml --ckpt_path last
  python -m lit_interp fit --trainer.default_root_dir=runs          (runs in runs/lightning_logs/version_N)
  python -m lit_interp validate --ckpt_path FILE.ckpt
  python -m lit_interp analyze --run lightning_logs/version_0
  python -m lit_interp analyze --ckpt_path lightning_logs/version_0/checkpoints/last.ckpt
  python -m lit_interp sweep sweeps/seeds --config configs/bos_ints_attn_only.yaml --seeds 0-7
  python -m lit_interp SUBCOMMAND --help        (every option of a subcommand)
"""


def usage() -> str:
    width = max(map(len, SUBCOMMANDS))
    lines = [f"usage: python -m lit_interp {{{','.join(SUBCOMMANDS)}}} [--help] ...", ""]
    lines += ["Train toy transformers and reverse-engineer them with TransformerLens.", "", "subcommands:"]
    lines += [f"  {name:<{width}}  {subcommand.help}" for name, subcommand in SUBCOMMANDS.items()]
    return "\n".join(lines) + "\n\n" + EXAMPLES


def main(args: list[str] | None = None) -> None:
    argv = sys.argv[1:] if args is None else list(args)
    try:
        if not argv or argv[0] in ("-h", "--help"):
            print(usage(), end="")
            return
        subcommand = SUBCOMMANDS.get(argv[0])
        if subcommand is None:
            print(
                f"lit_interp: error: unknown subcommand {argv[0]!r}; choose {', '.join(SUBCOMMANDS)}", file=sys.stderr
            )
            sys.exit(2)
        subcommand.run(argv[0], argv[1:])
    finally:
        startup_done()
