"""The CUDA path: training (in-process and with env workers), resuming, evaluation, packaging validation and a
benchmark flow on `device: cuda`. These need a CUDA GPU, which CI never has: they are skipped there and run by
bench/gpu_check.sh on a GPU machine."""

from __future__ import annotations

import pytest
import torch
from mettagrid.policy.policy import PolicySpec

from daf.config import DAFTrainingConfig
from daf.evaluation import evaluate
from daf.training import train

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU (CI has none; bench/gpu_check.sh runs these on one)"
)

MISSION = "training_facility_1"


def _config(tmp_path, policy: str, **kw) -> DAFTrainingConfig:
    settings = dict(num_envs=8, num_steps=32, bptt_horizon=8, num_training_steps=4096, progress=False)
    settings.update(kw)
    return DAFTrainingConfig(
        policy_class_path=policy, missions=[MISSION], checkpoint_dir=str(tmp_path), device="cuda", **settings
    )


@pytest.mark.parametrize("env_workers,overlap_update", [(0, False), (2, False), (0, True), (2, True)])
@pytest.mark.parametrize("policy", ["mlp", "lstm"])
def test_training_runs_on_the_gpu_and_its_weights_load_anywhere(tmp_path, policy, env_workers, overlap_update):
    devices: list[str] = []
    fraction_before = torch.cuda.get_per_process_memory_fraction(0)
    run_id = f"{policy}-{env_workers}-{overlap_update}"
    result = train(
        _config(tmp_path, policy, num_env_workers=env_workers, overlap_update=overlap_update, run_id=run_id),
        on_update=lambda step, p: devices.append(next(p.network().parameters()).device.type),
    )
    assert result.global_step >= 4096 and set(devices) == {"cuda"}
    assert torch.cuda.get_per_process_memory_fraction(0) == fraction_before  # the run's cap was scoped to it
    weights = torch.load(result.final_checkpoint, weights_only=True, map_location="cpu")["state_dict"]
    assert all(torch.isfinite(w).all() for w in weights.values())
    spec = PolicySpec(class_path=result.class_path, data_path=result.final_checkpoint)
    on_gpu = evaluate(spec, MISSION, episodes=4, seed=3, device="cuda")
    on_cpu = evaluate(spec, MISSION, episodes=4, seed=3, device="cpu")
    assert len(on_gpu.rewards) == len(on_cpu.rewards) == 4
    # Same weights and seeds: the episodes agree unless a near-tie between two actions' probabilities rounds
    # differently on the two devices, which a few steps may show; most episodes must be identical.
    assert sum(a == b for a, b in zip(on_gpu.rewards, on_cpu.rewards)) >= 2, (on_gpu.rewards, on_cpu.rewards)


def test_a_gpu_run_resumes_from_its_checkpoint(tmp_path):
    first = train(_config(tmp_path, "lstm", run_id="resumed", num_training_steps=2048, checkpoint_interval=1024))
    second = train(_config(tmp_path, "lstm", run_id="resumed", num_training_steps=4096, checkpoint_interval=1024))
    assert first.global_step == 2048 and second.resumed_from_step == 2048 and second.global_step == 4096


def test_the_benchmark_flow_trains_on_cuda_and_ships_a_validated_bundle(tmp_path):
    from daf.orchestrators import daf_run_benchmark_pipeline

    result = daf_run_benchmark_pipeline(
        policies=["lstm"],
        missions=[MISSION],
        episodes_per_mission=4,
        training_steps=4096,
        training={"num_envs": 8, "num_steps": 32, "bptt_horizon": 8, "num_env_workers": 2},
        device="cuda",
        create_deployment_package=True,
        output_dir=str(tmp_path / "out"),
    )
    assert result.status == "success", result.errors
    assert result.outputs["package_validation"]["ok"], result.outputs["package_validation"]
