"""Hyperparameter sweeps where every trial really trains: Optuna studies over DAF's PPO trainer.

Each trial builds a DAFTrainingConfig from the sweep's fixed `training` overrides plus the sampled
hyperparameters, trains it from scratch (or from the sweep's warm-start weights), reports intermediate
evaluations of the in-memory policy to the pruner, and is scored by evaluating its final checkpoint on
`episodes_per_trial` seeded episodes per mission (mean or IQM of the episode rewards pooled over missions).

Storage and resume:
- The study lives in Optuna RDB storage: `config.storage` (any SQLAlchemy URL) or, by default, SQLite at
  `<output_dir>/sweeps/<name>/study.db`; trial runs live under `<output_dir>/sweeps/<name>/checkpoints/`.
- Running the same sweep again continues it: finished trials (COMPLETE, PRUNED, FAIL) are never re-run and
  only `total_trials() - finished` more trials run. Settings that change what a trial's value means
  (policy, missions, search space, budgets, objective, seed, ...) must match the stored study.
- With `max_agent_steps` (a compute budget) a trial starts only while its full budget still fits beside the
  agent-steps finished trials trained and the full budgets of trials running now; so the sweep never trains
  more than the budget, however many trials pruning cuts short. Raising the budget and running the sweep again
  continues it.
- A trial whose process died (a killed worker, a lost machine) is marked FAIL (user attr `interrupted`), does
  not count as finished, and is re-run as a new trial with the same parameters and the same run id, so its
  training resumes from the run's last checkpoint. Death is noticed at once for a process of the same machine
  (the trial records `worker` = host:pid) and otherwise after 30 s without the trial's heartbeat (Optuna's
  heartbeat, every 5 s); a trial whose process keeps dying is given up after 3 re-runs.

Distribution (Optuna's ask/tell): the sweep run asks the study for each trial and starts it through a
`TrialStarter`: the sweep flow starts each as a Prefect task run on the configured task runner (threads,
processes, or a Dask cluster across machines); `run_sweep` alone runs trials in this process, or in up to
`max_parallel_jobs` spawned worker processes. At most `max_parallel_jobs` trials run at once per sweep run, each
with `cpu_count // max_parallel_jobs` torch threads on the machine that runs it, reporting intermediate values to
the shared study from wherever it runs (pruning works across machines). Several sweep runs (flow runs, machines)
may drive one study at once: asking is serialised by a lock in the study's database (PostgreSQL advisory lock,
MySQL GET_LOCK, a file lock for SQLite), so together they run `total_trials()` trials and never one grid point
twice. PostgreSQL is the storage for several machines; SQLite (60 s busy timeout) is for one.

The public API is below; the implementation lives in private modules, one idea each (as in Optuna's own package):
`_validation` (checks before any compute), `_search` (sampled values, samplers, pruners), `_trial` (one trial's
config, pruning reports and score), `_study` (the stored study: location, fingerprint, resuming, budget),
`_driver` (ask/tell: trials started here, in worker processes or by a TrialStarter; progress), `_locking` (the
study's lock for asking), `_results` (the result and its JSON file),
`_plots` (the PNG plots), `_run` (run_sweep, which ties them together), `_errors` (SweepError).
"""

from daf.sweeps._driver import TrialStarter
from daf.sweeps._errors import SweepError
from daf.sweeps._results import BestConfig, SweepResult
from daf.sweeps._run import run_sweep
from daf.sweeps._search import startup_trials
from daf.sweeps._study import storage_url
from daf.sweeps._trial import TrialTicket, run_trial
from daf.sweeps._validation import validate_sweep

__all__ = [
    "BestConfig",
    "SweepError",
    "SweepResult",
    "TrialStarter",
    "TrialTicket",
    "run_sweep",
    "run_trial",
    "startup_trials",
    "storage_url",
    "validate_sweep",
]
