"""Hydra's Optuna sweeper, resumable: `hparams_search=optuna` keeps its study in SQLite
under the sweep directory, and the same command with `hydra.sweep.dir=<that directory>`
continues an interrupted search instead of starting over. (Hydra takes sweepers from the
`hydra_plugins` namespace package only, hence this directory.)

The plugin itself loads an existing study (load_if_exists) but then runs n_trials more and
numbers its jobs from 0 again, which would overwrite the earlier jobs' directories. Here the
search runs until the study holds n_trials finished trials, and new jobs are numbered after
the ones already in the study.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper

log = logging.getLogger(__name__)


class ResumableOptunaSweeper(OptunaSweeper):
    def sweep(self, arguments: list[str]) -> None:
        import optuna  # here, not at import: Hydra imports every plugin module at start-up
        from optuna.trial import TrialState

        impl = self.sweeper
        storage = impl.storage
        if storage and storage.startswith("sqlite:///"):
            # SQLite does not create the directory of its file
            Path(storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        trials = []
        if storage:
            try:
                study = optuna.load_study(study_name=impl.study_name, storage=storage)
                trials = study.get_trials(deepcopy=False)
            except KeyError:  # no study of that name yet
                trials = []
        finished_states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        finished = sum(t.state in finished_states for t in trials)
        if trials:
            log.info(
                f"continuing study {impl.study_name!r}: {finished} of {impl.n_trials} trials "
                f"finished, {len(trials) - finished} interrupted"
            )
        impl.n_trials = max(0, impl.n_trials - finished)
        impl.job_idx = len(trials)  # after every job directory the study has used
        return super().sweep(arguments)
