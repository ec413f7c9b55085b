"""OptunaPruning: the callback a pruned sweep adds to each trial's fit, reporting val/loss to its Optuna trial."""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback
from typing_extensions import override


class OptunaPruning(Callback):
    """Reports `monitor` after each validation; stops training (cleanly, checkpoint and snapshot written)
    when Optuna's median pruner calls the trial hopeless, and marks it with the user attr `pruned_at_step`."""

    def __init__(self, storage: str, study_name: str, trial_number: int, monitor: str = "val/loss"):
        super().__init__()
        self.storage = storage
        self.study_name = study_name
        self.trial_number = trial_number
        self.monitor = monitor
        self._trial = None

    def trial(self):
        if self._trial is None:
            import optuna

            from lit_interp.optuna_storage import open_storage, trial_handle

            study = optuna.load_study(
                study_name=self.study_name, storage=open_storage(self.storage), pruner=optuna.pruners.MedianPruner()
            )
            self._trial = trial_handle(study, self.trial_number)
        return self._trial

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if trainer.sanity_checking or value is None or not trainer.is_global_zero:
            return
        trial = self.trial()
        trial.report(float(value), trainer.global_step)
        if trial.should_prune():
            trial.set_user_attr("pruned_at_step", trainer.global_step)
            trainer.should_stop = True
