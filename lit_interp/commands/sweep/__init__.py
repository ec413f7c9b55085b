"""`python -m lit_interp sweep`: seed studies and hyperparameter searches on Optuna, each trial an ordinary fit.

definition.py checks the command, study.py creates or joins the study and claims trials, workers.py runs each
trial as a child `fit` (heartbeat.py keeps its trials alive in the storage), objective.py reads a finished trial's
value from its run.
"""

from __future__ import annotations

import sys

from lit_interp.commands.arguments import user_errors
from lit_interp.commands.sweep.definition import build_sweep
from lit_interp.commands.sweep.study import check_same_command, existing_definition, start, summarise
from lit_interp.commands.sweep.workers import Worker, warm_up


def main(argv: list[str]) -> None:
    """A user's mistake exits 2 with one line, and nothing is written."""
    import optuna

    with user_errors():
        sweep = build_sweep(argv)
        recorded = existing_definition(sweep)
        if recorded is not None:
            check_same_command(sweep, recorded)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        warm_up(sweep)
        storage, directory_id = start(sweep)
    try:
        with user_errors():
            Worker(sweep, storage, directory_id).run()
    except KeyboardInterrupt:
        print("sweep interrupted: run the same command again to continue it", file=sys.stderr)
        sys.exit(130)
    print(summarise(sweep, storage))
    print(f"tensorboard --logdir {sweep.directory}; report: python -m lit_interp analyze --runs {sweep.directory}")
