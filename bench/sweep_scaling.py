"""Sweep scaling: wall time of the same grid sweep on a Dask cluster of 1 vs 2 workers, side by side.

Each worker count gets a fresh Dask scheduler and that many single-threaded workers on 127.0.0.1 (started here,
tests/integration/stack.py) and a fresh study; the sweep runs through `daf_run_sweep_pipeline` (task_runner "dask",
max_parallel_jobs = workers, parallel stages) against one `prefect server start` started here. The study lives in
PostgreSQL (a throwaway cluster on 127.0.0.1, when Debian's server binaries are installed:
scripts/install_test_services.sh) or in SQLite in the temporary directory (`--storage sqlite`). Before the timed
sweep every worker imports DAF, torch and mettagrid (timed apart): the figure is the sweep, not Python start-up.

Reported per worker count: the sweep's wall time, trials completed, the sum of the trials' own durations (the
`duration_s` attr each trial records), torch threads per trial (each trial's config.json), how many distinct worker
processes trained trials, and the speed-up over the first row.

    python bench/sweep_scaling.py [--quick] [--workers 1 2] [--trials 4] [--steps N] [--storage postgresql|sqlite]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
import stack  # noqa: E402  (the services the integration tests use)

# Four (or eight) grid points: learning rate x entropy coefficient; every trial trains the same budget.
GRIDS = {
    4: {"learning_rate": [0.001, 0.0003], "ent_coef": [0.01, 0.001]},
    8: {"learning_rate": [0.003, 0.001, 0.0003, 0.0001], "ent_coef": [0.01, 0.001]},
}
SIZES = {"quick": {"trials": 4, "steps": 131_072}, "full": {"trials": 8, "steps": 262_144}}


def _warm_worker() -> float:
    """Import what a trial needs, on a Dask worker; seconds it took."""
    started = time.perf_counter()
    import mettagrid  # noqa: F401
    import torch  # noqa: F401

    import daf.tasks.sweeps  # noqa: F401
    import daf.training  # noqa: F401

    return time.perf_counter() - started


def run_once(workers: int, server: stack.PrefectServer, storage: str, directory: Path, args) -> dict:
    """The sweep on a fresh cluster of `workers` Dask workers; its figures."""
    from distributed import Client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from daf.config import DAFSweepConfig
    from daf.orchestrators import daf_run_sweep_pipeline

    address, services = stack.start_dask(directory / f"dask-{workers}", server.env, workers=workers)
    try:
        with Client(address, timeout=10) as client:
            warm = client.run(_warm_worker)
        name = f"scaling-{workers}w"
        cfg = DAFSweepConfig.from_dict(
            {
                "name": name,
                "output_dir": str(directory / f"out-{workers}"),
                "policy_class_path": "mlp",
                "missions": [args.mission],
                "strategy": "grid",
                "search_space": GRIDS[args.trials],
                "num_trials": args.trials,
                "training_steps_per_trial": args.steps,
                "episodes_per_trial": args.episodes,
                "pruner": "none",
                "device": "cpu",
                "seed": 0,
                "storage": storage,
                "task_runner": "dask",
                "dask_address": address,
                "max_parallel_jobs": workers,
            }
        )
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            started = time.perf_counter()
            result = daf_run_sweep_pipeline(config=cfg, parallel_stages=True)
            wall = time.perf_counter() - started
            # Send what Prefect's client still holds (logs, events) while the server is surely up.
            from prefect.events.worker import EventsWorker
            from prefect.logging.handlers import APILogWorker

            APILogWorker.drain_all(timeout=60)
            EventsWorker.drain_all(timeout=60)
    finally:
        for service in services:
            service.stop()
    trials = result.outputs.get("trials") or []
    complete = [t for t in trials if t["state"] == "COMPLETE"]
    threads = set()
    for t in complete:
        config_file = Path(t.get("run_dir") or "/nonexistent") / "config.json"
        if config_file.is_file():
            threads.add(json.loads(config_file.read_text()).get("torch_threads"))
    import optuna

    stored = optuna.load_study(study_name=name, storage=storage).trials
    trained_by = {t.user_attrs.get("worker") for t in stored if t.user_attrs.get("worker")}
    return {
        "workers": workers,
        "status": result.status,
        "errors": result.errors,
        "wall": wall,
        "warm": max(warm.values()),
        "complete": len(complete),
        "trial_s": sum(t.get("duration_s") or 0.0 for t in complete),
        "threads": sorted(threads, key=str),
        "processes": len(trained_by),
    }


def print_table(rows: list[dict], args) -> None:
    base = rows[0]["wall"]
    print(
        f"\n{args.trials} trials x {args.steps:,} agent-steps (mlp, {args.mission}, {args.episodes} episodes each), "
        f"study in {args.storage}, {os.cpu_count()} CPU cores"
    )
    header = f"{'workers':>8}{'wall s':>9}{'complete':>10}{'sum trial s':>13}{'torch thr':>11}{'procs':>7}"
    print(f"{header}{'speed-up':>10}{'import s':>10}  status")
    for r in rows:
        threads = ",".join(str(t) for t in r["threads"]) or "?"
        print(
            f"{r['workers']:>8}{r['wall']:>9.1f}{r['complete']:>10}{r['trial_s']:>13.1f}{threads:>11}"
            f"{r['processes']:>7}{base / r['wall']:>9.2f}x{r['warm']:>10.1f}  {r['status']}"
        )
        for error in r["errors"]:
            print(f"{'':>8}error: {error[:200]}")
    first = rows[0]
    for r in rows[1:]:
        slower = r["trial_s"] / first["trial_s"] if first["trial_s"] else float("nan")
        print(
            f"{r['workers']} vs {first['workers']} worker(s): speed-up {first['wall'] / r['wall']:.2f}x, "
            f"parallel efficiency {first['wall'] / r['wall'] * first['workers'] / r['workers']:.0%}; each trial took "
            f"{slower:.2f}x as long (summed trial seconds)"
        )
    print(
        f"Honestly: on this {os.cpu_count()}-core machine two single-threaded Dask workers can at best approach 2x. "
        "The flow process, the Dask scheduler and the Prefect server share those cores, and torch threads per trial "
        "matter: with 1 worker a trial's PPO update may use every core ('torch thr'), with 2 each trial gets its "
        "share, so every trial runs slower. With a core (or a GPU) per worker, trials do not compete and scale further."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 trials of 131,072 agent-steps (~2-3 min on 2 cores)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Dask worker counts, in order")
    parser.add_argument("--trials", type=int, choices=sorted(GRIDS), default=None)
    parser.add_argument("--steps", type=int, default=None, help="agent-steps per trial")
    parser.add_argument("--episodes", type=int, default=2, help="evaluation episodes per trial")
    parser.add_argument("--mission", default="training_facility_1")
    parser.add_argument(
        "--storage", choices=["postgresql", "sqlite"], default=None, help="default: postgresql if found"
    )
    args = parser.parse_args()
    size = SIZES["quick" if args.quick else "full"]
    args.trials = args.trials or size["trials"]
    args.steps = args.steps or size["steps"]
    if args.storage is None:
        args.storage = "postgresql" if stack.postgres_bin() else "sqlite"

    directory = Path(tempfile.mkdtemp(prefix="daf-sweep-scaling-"))
    directory.chmod(0o755)  # the PostgreSQL cluster runs as `postgres` when this runs as root
    cluster = stack.start_postgres(directory / "pg") if args.storage == "postgresql" else None
    server = None
    rows = []
    try:
        server = stack.start_prefect_server(directory / "server", cluster.url("asyncpg") if cluster else None)
        for workers in args.workers:
            if cluster:
                storage = cluster.create_database(f"study_{workers}w")
            else:
                storage = f"sqlite:///{directory / f'study-{workers}w.db'}"
            rows.append(run_once(workers, server, storage, directory, args))
            print(f"{workers} worker(s): {rows[-1]['wall']:.1f} s, {rows[-1]['complete']} trials complete", flush=True)
    finally:
        if server:
            server.stop()
        if cluster:
            cluster.stop()
        shutil.rmtree(directory, ignore_errors=True)
    print_table(rows, args)


if __name__ == "__main__":
    main()
