"""Orchestration overhead: one comparison run directly through daf, then through the Prefect flow, then again
through the flow with every task cached. Prints both times, their ratio and the cached re-run's fraction.

Targets: flow / direct <= 1.10 for a workload of about a minute; cached re-run <= 5% of the first flow run.
The Prefect server is started (and warmed with one small run) before anything is timed.

    python bench/orchestration_overhead.py            # ~1 minute workload
    python bench/orchestration_overhead.py --quick    # ~15 s workload
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

POLICIES = [
    "baseline",
    "random",
    "noop",
    {"class_path": "baseline", "name": "baseline-seed2", "init_kwargs": {"seed": 2}},
]
MISSIONS = ["training_facility_1", "training_facility_2", "assembler_1"]


def direct_comparison(policies: list, missions: list[str], episodes_per_mission: int, seed: int, output_dir: str):
    """The comparison pipeline's work done by calling the core directly, with no Prefect: the reference."""
    from daf.comparison import as_entry, compare_evaluations, display_names, report_metadata, to_spec
    from daf.evaluation import evaluate
    from daf.reports import write_report

    entries = [as_entry(p) for p in policies]
    names = display_names(entries)
    evaluations = [
        evaluate(to_spec(entry), mission, episodes_per_mission, seed, policy_name=name)
        for entry, name in zip(entries, names)
        for mission in missions
    ]
    statistics = compare_evaluations(evaluations, seed=seed)
    write_report(statistics, report_metadata(entries, names, missions, episodes_per_mission, seed), output_dir)
    return statistics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="about 15 s of work instead of a minute")
    parser.add_argument("--episodes", type=int, default=None, help="episodes per (policy, mission)")
    args = parser.parse_args()
    episodes = args.episodes or (40 if args.quick else 160)

    home = tempfile.mkdtemp(prefix="daf-bench-")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ["PREFECT_LOCAL_STORAGE_PATH"] = os.path.join(home, "storage")
    from prefect.testing.utilities import prefect_test_harness

    from daf.orchestrators import daf_run_comparison_pipeline

    common = dict(missions=MISSIONS, episodes_per_mission=episodes, seed=7)
    with prefect_test_harness(server_startup_timeout=60):
        warm = daf_run_comparison_pipeline(
            policies=["noop"],
            missions=MISSIONS[:1],
            episodes_per_mission=1,
            output_dir=os.path.join(home, "warm"),
            use_cache=False,
        )
        assert warm.is_success(), warm.errors

        started = time.perf_counter()
        direct = direct_comparison(POLICIES, **common, output_dir=os.path.join(home, "direct"))
        direct_s = time.perf_counter() - started

        started = time.perf_counter()
        flow = daf_run_comparison_pipeline(policies=POLICIES, **common, output_dir=os.path.join(home, "flow"))
        flow_s = time.perf_counter() - started
        assert flow.is_success(), flow.errors

        started = time.perf_counter()
        cached = daf_run_comparison_pipeline(policies=POLICIES, **common, output_dir=os.path.join(home, "cached"))
        cached_s = time.perf_counter() - started
        assert cached.is_success(), cached.errors

    same = direct.to_dict()["aggregate"] == flow.outputs["statistics"]["aggregate"]
    ratio, fraction = flow_s / direct_s, cached_s / flow_s
    print(f"comparison: {len(POLICIES)} policies x {len(MISSIONS)} missions x {episodes} episodes")
    print(f"{'run':<28}{'seconds':>10}")
    print(f"{'direct daf.comparison':<28}{direct_s:>10.2f}")
    print(f"{'Prefect flow':<28}{flow_s:>10.2f}")
    print(f"{'Prefect flow, cached':<28}{cached_s:>10.2f}")
    print(f"flow / direct      = {ratio:.3f}   (target <= 1.10: {'PASS' if ratio <= 1.10 else 'MISS'})")
    print(f"cached / first run = {fraction:.3f}   (target <= 0.05: {'PASS' if fraction <= 0.05 else 'MISS'})")
    print(f"same aggregate statistics through both paths: {same}")
    print(f"flow stage seconds: {flow.outputs['stage_seconds']}")
    print(f"cached stage seconds: {cached.outputs['stage_seconds']}")


if __name__ == "__main__":
    main()
