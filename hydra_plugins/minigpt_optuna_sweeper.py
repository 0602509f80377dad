"""Hydra's Optuna sweeper, resumable: `hparams_search=optuna` keeps its study in SQLite
under the sweep directory, and the same command with `hydra.sweep.dir=<that directory>`
continues an interrupted search instead of starting over. (Hydra takes sweepers from the
`hydra_plugins` namespace package only, hence this directory.)

The plugin itself loads an existing study (load_if_exists) but then runs n_trials more and
numbers its jobs from 0 again, which would overwrite the earlier jobs' directories. Here the
search runs until the study holds n_trials finished trials, and new jobs are numbered after
the ones already in the study.

A trial that bad input stops (minigpt.commands.console.JobFailed: say, a sampled width that the head
count does not divide) is recorded as failed and the search goes on; any other error stops
it. A failed trial counts as finished.
"""

from __future__ import annotations

import logging
from pathlib import Path

from hydra.errors import CompactHydraException
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper

log = logging.getLogger(__name__)


class ResumableOptunaSweeper(OptunaSweeper):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.n_trials = self.sweeper.n_trials  # finished trials the study is to reach

    def sweep(self, arguments: list[str]) -> None:
        from minigpt.commands.console import JobFailed

        first = True
        while True:
            try:
                return self.sweep_remaining(arguments, report=first)
            except JobFailed as failed:  # the plugin has marked the trial failed
                log.warning(f"trial {self.sweeper.job_idx - 1} failed ({failed}): going on")
            first = False

    def sweep_remaining(self, arguments: list[str], report: bool) -> None:
        """Runs the trials still missing to reach n_trials finished ones."""
        import optuna  # here, not at import: Hydra imports every plugin module at start-up
        from optuna.trial import TrialState

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # Hydra's log says the same
        impl = self.sweeper
        if impl.storage is None:  # one study across the retries after failed trials
            impl.storage = optuna.storages.InMemoryStorage()
        storage = impl.storage
        if isinstance(storage, str) and storage.startswith("sqlite:///"):
            # SQLite does not create the directory of its file
            Path(storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        try:
            study = optuna.load_study(study_name=impl.study_name, storage=storage)
            trials = study.get_trials(deepcopy=False)
        except KeyError:  # no study of that name yet
            trials = []
        finished_states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        finished = sum(t.state in finished_states for t in trials)
        if trials and report:
            log.info(
                f"continuing study {impl.study_name!r}: {finished} of {self.n_trials} trials "
                f"finished, {len(trials) - finished} interrupted"
            )
        impl.n_trials = max(0, self.n_trials - finished)
        impl.job_idx = len(trials)  # after every job directory the study has used
        complete = any(t.state == TrialState.COMPLETE for t in trials)
        if impl.n_trials == 0 and not complete:
            raise CompactHydraException(
                f"error: all {finished} trials failed: see their metrics.json for why"
            )
        return super().sweep(arguments)
