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
  continues it. (Parallel workers check it independently: two starting at the same instant can overshoot by
  one trial budget.)
- A trial still RUNNING when its process died is marked FAIL (user attr `interrupted`), does not count as
  finished, and is re-run as a new trial with the same parameters and the same run id, so its training
  resumes from the run's last checkpoint. This is safe because a lock file in the sweep directory allows one
  `run_sweep` per sweep directory at a time: while we hold it, a RUNNING trial cannot belong to a live process.
  (With a storage shared by several machines, run each sweep name from one machine only.)

Parallelism: up to `max_parallel_jobs` spawned worker processes each load the study from storage and run
their share of the trials; each trial's torch uses `cpu_count // max_parallel_jobs` threads. SQLite handles
this for sweep-sized trial counts (writes are rare and short; a 60 s busy timeout absorbs contention); use a
server database for many workers.

The public API is below; the implementation lives in private modules, one idea each (as in Optuna's own package):
`_validation` (checks before any compute), `_search` (sampled values, samplers, pruners), `_trial` (one trial's
config, pruning reports and score), `_study` (the stored study: location, fingerprint, resuming, budget),
`_workers` (trials in this process or in worker processes, progress), `_results` (the result and its JSON file),
`_plots` (the PNG plots), `_run` (run_sweep, which ties them together), `_errors` (SweepError).
"""

from daf.sweeps._errors import SweepError
from daf.sweeps._results import BestConfig, SweepResult
from daf.sweeps._run import run_sweep
from daf.sweeps._search import startup_trials
from daf.sweeps._study import storage_url
from daf.sweeps._validation import validate_sweep

__all__ = [
    "BestConfig",
    "SweepError",
    "SweepResult",
    "run_sweep",
    "startup_trials",
    "storage_url",
    "validate_sweep",
]
