"""Policy bundles: build -> validate -> load through mettagrid, and every way a hostile bundle is refused."""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import stat
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import pytest
import torch
from mettagrid.policy.loader import initialize_or_load_policy
from mettagrid.policy.policy import PolicySpec
from mettagrid.policy.policy_env_interface import PolicyEnvInterface
from mettagrid.policy.prepare_policy_spec import load_policy_spec_from_path
from mettagrid.policy.submission import POLICY_SPEC_FILENAME

import daf.packaging as packaging
from daf.evaluation import evaluate
from daf.missions import get_mission
from daf.packaging import (
    PackageValidationError,
    build_package,
    ensure_valid,
    validate_package,
)

MISSION = "training_facility_1"

CUSTOM_MODULE = '''
"""A policy outside DAF: every agent repeats the move named by its weights (noop until weights load)."""
import torch
from mettagrid.policy.policy import AgentPolicy, MultiAgentPolicy
from mettagrid.simulator import Action

MOVES = ["move_north", "move_south", "move_west", "move_east"]


class _Agent(AgentPolicy):
    def __init__(self, parent):
        super().__init__(parent.policy_env_info)
        self._parent = parent

    def step(self, obs):
        return Action(name=self._parent.move)


class EastPolicy(MultiAgentPolicy):
    def __init__(self, policy_env_info, device="cpu", **kwargs):
        super().__init__(policy_env_info, device=device)
        self.move = "noop"

    def agent_policy(self, agent_id):
        return _Agent(self)

    def load_policy_data(self, path):
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.move = MOVES[int(state["direction"])]
'''


class _Payload:
    """Unpickling this runs a shell command: what a malicious checkpoint would carry."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# --- helpers ------------------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep sys.path changes (mettagrid's loader adds bundle roots) in the test, and validation scratch in tmp_path."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    scratch = tmp_path / "scratch" / "tmp"
    scratch.mkdir(parents=True)
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    return scratch


def _purge_mypkg() -> None:
    for name in [n for n in sys.modules if n == "mypkg" or n.startswith("mypkg.")]:
        del sys.modules[name]
    importlib.invalidate_caches()


@pytest.fixture
def custom_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A bundle of mypkg.custom.EastPolicy (source in tmp_path/src) with torch weights and a trainer config."""
    src = tmp_path / "src"
    (src / "mypkg").mkdir(parents=True)
    (src / "mypkg" / "__init__.py").write_text('"""User package."""\n')
    (src / "mypkg" / "custom.py").write_text(CUSTOM_MODULE)
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"direction": torch.tensor(3)}, run / "policy.pt")
    # A config DAF did not write beside the weights: never read into the bundle (it could hold anything).
    (run / "config.json").write_text(json.dumps({"api_token": "secret"}))
    _purge_mypkg()
    monkeypatch.syspath_prepend(str(src))
    spec = PolicySpec(class_path="mypkg.custom.EastPolicy", data_path=str(run / "policy.pt"))
    bundle = build_package(
        spec, tmp_path / "out", name="east", missions=[MISSION], training_config={"lr": 0.001, "steps": 10}
    )
    yield bundle
    _purge_mypkg()


@pytest.fixture
def baseline_bundle(tmp_path: Path) -> Path:
    return build_package(PolicySpec(class_path="baseline"), tmp_path / "out", name="base", missions=[MISSION])


def _digest(data: bytes) -> dict:
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def _rewrite(
    bundle: Path,
    *,
    drop: tuple[str, ...] = (),
    replace: dict[str, bytes] | None = None,
    add: list[tuple[zipfile.ZipInfo | str, bytes]] | None = None,
    rechecksum: bool = False,
) -> Path:
    """A tampered copy of `bundle`; with `rechecksum` the manifest is updated too, as a careful attacker would."""
    replace = replace or {}
    with zipfile.ZipFile(bundle) as zf:
        contents = {n: zf.read(n) for n in zf.namelist() if n not in drop}
    contents.update(replace)
    if rechecksum:
        manifest = json.loads(contents["manifest.json"])
        for name in drop:
            manifest["files"].pop(name, None)
        for name, data in replace.items():
            manifest["files"][name] = _digest(data)
        contents["manifest.json"] = json.dumps(manifest).encode()
    out = bundle.with_name(f"tampered-{bundle.name}")
    with zipfile.ZipFile(out, "w") as zf:
        for name, data in contents.items():
            zf.writestr(name, data)
        for info, data in add or []:
            zf.writestr(info, data)
    return out


def _errors(report) -> str:
    assert not report.ok, report.to_dict()
    return "\n".join(report.errors)


def _check_names(report) -> list[str]:
    return [name for name, _, _ in report.checks]


# --- round trips ------------------------------------------------------------------------------------------------


def test_baseline_round_trip_through_mettagrid_loader(baseline_bundle: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(baseline_bundle) as zf:
        assert sorted(zf.namelist()) == ["manifest.json", "policy_spec.json"]
        spec_json = json.loads(zf.read("policy_spec.json"))
    assert spec_json == {
        "class_path": "daf.policies.scripted.BaselinePolicy",
        "data_path": None,
        "init_kwargs": {},
        "setup_script": None,
    }
    report = ensure_valid(validate_package(baseline_bundle))
    assert report.ok and not report.errors
    assert {"archive", "checksums", "policy_spec", "spec_load", f"load:{MISSION}", f"episode:{MISSION}"} <= set(
        _check_names(report)
    )
    assert report.to_dict()["ok"] is True

    # What a tournament does with the zip: mettagrid's own extraction and loader, no DAF in between.
    spec = load_policy_spec_from_path(baseline_bundle, force_dest=tmp_path / "mettagrid-extract")
    policy = initialize_or_load_policy(PolicyEnvInterface.from_mg_cfg(get_mission(MISSION)), spec)
    assert type(policy).__name__ == "BaselinePolicy"
    result = evaluate(spec, MISSION, episodes=3, seed=42)
    assert len(result.rewards) == 3 and sum(result.rewards) > 0


def test_reward_threshold_is_enforced(baseline_bundle: Path) -> None:
    assert validate_package(baseline_bundle, reward_threshold=1.0, eval_episodes=2).ok
    errors = _errors(validate_package(baseline_bundle, reward_threshold=1e9, eval_episodes=2))
    assert "below threshold" in errors


def test_noop_policy_fails_the_episode_check(tmp_path: Path) -> None:
    bundle = build_package(PolicySpec(class_path="noop"), tmp_path / "out")
    with pytest.raises(PackageValidationError, match="were noops"):
        ensure_valid(validate_package(bundle, missions=[MISSION]))


def test_custom_policy_loads_from_the_bundle_alone(custom_bundle: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(custom_bundle) as zf:
        names = set(zf.namelist())
        manifest = json.loads(zf.read("manifest.json"))
        spec_json = json.loads(zf.read("policy_spec.json"))
    assert {"mypkg/__init__.py", "mypkg/custom.py", "weights/policy.pt", "policy_spec.json"} <= names
    assert spec_json["data_path"] == "weights/policy.pt"
    assert set(manifest["files"]) == names - {"manifest.json"}
    assert manifest["training_config"] == {"lr": 0.001, "steps": 10}
    assert "secret" not in json.dumps(manifest)  # the stray config.json beside the weights stayed out
    assert manifest["missions"] == [MISSION]
    assert manifest["source_checkpoint"] == "policy.pt"  # not the training machine's absolute path
    assert set(manifest["versions"]) == {"daf", "mettagrid", "torch", "python"}

    # Nothing left of the original source: the bundle must carry everything the class needs.
    src = str(tmp_path / "src")
    sys.path[:] = [p for p in sys.path if p != src]
    for path in sorted((tmp_path / "src").rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    _purge_mypkg()
    with pytest.raises(ImportError):
        importlib.import_module("mypkg.custom")

    report = ensure_valid(validate_package(custom_bundle))
    load_message = dict((n, m) for n, _, m in report.checks)[f"load:{MISSION}"]
    assert "the bundle" in load_message
    assert "mypkg" not in sys.modules  # validation does not leave the bundle's modules behind


# --- determinism and atomicity ----------------------------------------------------------------------------------


def test_rebuild_is_byte_identical(custom_bundle: Path, tmp_path: Path) -> None:
    spec = PolicySpec(class_path="mypkg.custom.EastPolicy", data_path=str(tmp_path / "run" / "policy.pt"))
    again = build_package(
        spec, tmp_path / "elsewhere", name="east", missions=[MISSION], training_config={"lr": 0.001, "steps": 10}
    )
    assert again != custom_bundle and again.read_bytes() == custom_bundle.read_bytes()
    manifest = json.loads(zipfile.ZipFile(again).read("manifest.json"))
    assert manifest["created_at_source"] == "checkpoint_mtime"
    for info in zipfile.ZipFile(again).infolist():
        assert info.date_time == (1980, 1, 1, 0, 0, 0)
        assert info.external_attr >> 16 == stat.S_IFREG | 0o644


def test_created_at_comes_from_source_date_epoch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    first = build_package(PolicySpec(class_path="baseline"), tmp_path / "a")
    manifest = json.loads(zipfile.ZipFile(first).read("manifest.json"))
    assert (manifest["created_at"], manifest["created_at_source"]) == ("2023-11-14T22:13:20Z", "SOURCE_DATE_EPOCH")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000001")
    assert build_package(PolicySpec(class_path="baseline"), tmp_path / "b").read_bytes() != first.read_bytes()


def test_interrupted_build_leaves_no_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    good = build_package(PolicySpec(class_path="baseline"), out, name="b")
    before = good.read_bytes()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # as if the process were interrupted mid-write

    monkeypatch.setattr(packaging.build.shutil, "copyfileobj", killed)
    with pytest.raises(KeyboardInterrupt):
        build_package(PolicySpec(class_path="baseline"), out, name="b", missions=[MISSION])
    assert good.read_bytes() == before  # the old bundle is untouched
    assert sorted(p.name for p in out.iterdir()) == ["b.zip"]  # and no temp file is left behind


# --- rejections -------------------------------------------------------------------------------------------------


def _symlink_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("../evil.txt", "path traversal"),
        ("sub/../../evil.txt", "path traversal"),
        ("ABSOLUTE", "absolute path"),
        ("SYMLINK", "symlink entry"),
    ],
)
def test_unsafe_entries_are_refused_before_extraction(
    baseline_bundle: Path, tmp_path: Path, _isolated: Path, entry: str, expected: str
) -> None:
    if entry == "ABSOLUTE":
        info: zipfile.ZipInfo | str = str(tmp_path / "evil.txt")
    elif entry == "SYMLINK":
        info = _symlink_info("evil.txt")
    else:
        info = entry
    target = str(tmp_path / "evil.txt")
    bad = _rewrite(baseline_bundle, add=[(info, target.encode())])
    assert expected in _errors(validate_package(bad))
    # The scratch root sits at tmp_path/scratch/tmp/<fresh>: ../evil.txt would land in tmp_path/scratch/tmp.
    assert not (tmp_path / "evil.txt").exists()
    assert list(_isolated.iterdir()) == []  # the temp extraction dir is gone
    assert not list((tmp_path / "scratch").rglob("evil.txt"))

    # Rejection happens before anything is written, not by cleaning up afterwards.
    root = tmp_path / "direct"
    root.mkdir()
    assert packaging.extract.extract_safely(bad, root, packaging.extract.Limits(1 << 20, 1 << 20, 100))
    assert list(root.iterdir()) == []


def test_size_limits(baseline_bundle: Path) -> None:
    assert "over the 50 limit" in _errors(validate_package(baseline_bundle, max_file_bytes=50))
    assert "in all, over the 200 limit" in _errors(validate_package(baseline_bundle, max_total_bytes=200))


def test_flipped_byte_in_weights_is_named(custom_bundle: Path) -> None:
    data = bytearray(zipfile.ZipFile(custom_bundle).read("weights/policy.pt"))
    data[len(data) // 2] ^= 0xFF
    errors = _errors(validate_package(_rewrite(custom_bundle, replace={"weights/policy.pt": bytes(data)})))
    assert "weights/policy.pt does not match its checksum" in errors


def test_unlisted_file_is_an_error(baseline_bundle: Path) -> None:
    errors = _errors(validate_package(_rewrite(baseline_bundle, add=[("extra.py", b"print('hi')\n")])))
    assert "extra.py is in the bundle but not listed" in errors


def test_missing_policy_spec_is_a_clear_error(baseline_bundle: Path) -> None:
    bad = _rewrite(baseline_bundle, drop=("policy_spec.json",), rechecksum=True)
    errors = _errors(validate_package(bad))
    assert "policy_spec.json is missing" in errors
    with pytest.raises(PackageValidationError, match="policy_spec.json is missing"):
        ensure_valid(validate_package(bad))


def test_setup_script_is_refused(baseline_bundle: Path, tmp_path: Path) -> None:
    marker = tmp_path / "setup-ran"
    spec = json.loads(zipfile.ZipFile(baseline_bundle).read("policy_spec.json"))
    spec["setup_script"] = "setup.py"
    script = f"open({str(marker)!r}, 'w').close()\n".encode()
    replace = {"policy_spec.json": json.dumps(spec).encode(), "setup.py": script}
    errors = _errors(validate_package(_rewrite(baseline_bundle, replace=replace, rechecksum=True)))
    assert "setup_script 'setup.py' is not allowed" in errors
    assert not marker.exists()


def test_pickle_payload_in_weights_never_runs(custom_bundle: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil_path = tmp_path / "evil.pt"
    torch.save({"direction": _Payload(marker)}, evil_path)
    assert b"system" in zipfile.ZipFile(evil_path).read("evil/data.pkl")  # the payload really is in the pickle
    # Checksums updated too: only torch.load(weights_only=True) stands between the bundle and the shell.
    bad = _rewrite(custom_bundle, replace={"weights/policy.pt": evil_path.read_bytes()}, rechecksum=True)
    errors = _errors(validate_package(bad))
    assert "weights/policy.pt refused by torch.load(weights_only=True)" in errors
    assert not marker.exists()


def test_not_a_zip(tmp_path: Path) -> None:
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip at all")
    assert "not a valid zip" in _errors(validate_package(junk))
    assert "is not a file" in _errors(validate_package(tmp_path / "absent.zip"))


def test_trained_lstm_round_trip(tmp_path: Path) -> None:
    from daf.config import DAFTrainingConfig
    from daf.training import train

    trained = train(
        DAFTrainingConfig(
            policy_class_path="lstm",
            missions=[MISSION],
            num_training_steps=4096,
            num_envs=4,
            num_steps=32,
            bptt_horizon=8,
            checkpoint_dir=str(tmp_path / "ckpt"),
            run_id="bundle",
            progress=False,
        )
    )
    spec = PolicySpec(class_path="lstm", data_path=trained.final_checkpoint)
    bundle = build_package(spec, tmp_path / "bundles", name="lstm", missions=[MISSION])
    with zipfile.ZipFile(bundle) as zf:
        spec_json = json.loads(zf.read("policy_spec.json"))
        manifest = json.loads(zf.read("manifest.json"))
        weights = zf.read(spec_json["data_path"])
    assert spec_json["class_path"] == "daf.policies.neural.LSTMPolicy"
    assert weights == Path(trained.final_checkpoint).read_bytes()
    assert manifest["training_config"]["policy_class_path"] == "lstm"  # the run's config.json travels along ...
    assert not {"output_dir", "checkpoint_dir"} & set(manifest["training_config"])  # ... without machine paths
    assert manifest["source_checkpoint"] == f"bundle/checkpoints/{Path(trained.checkpoint_dir).name}/policy.pt"
    assert str(tmp_path) not in json.dumps(manifest)
    assert manifest["files"][spec_json["data_path"]]["sha256"] == hashlib.sha256(weights).hexdigest()
    report = ensure_valid(validate_package(bundle, missions=[MISSION, "assembler_1"]))
    assert {"weights", f"episode:{MISSION}", "episode:assembler_1"} <= set(_check_names(report))

    loaded = load_policy_spec_from_path(bundle, force_dest=tmp_path / "extract")
    policy = initialize_or_load_policy(PolicyEnvInterface.from_mg_cfg(get_mission(MISSION)), loaded)
    expected = torch.load(trained.final_checkpoint, weights_only=True)["state_dict"]
    assert all(torch.equal(policy.network().state_dict()[k], v) for k, v in expected.items())
    result = evaluate(loaded, MISSION, episodes=2, seed=42)
    direct = evaluate(spec, MISSION, episodes=2, seed=42)
    assert result.rewards == direct.rewards  # the bundle behaves exactly like the checkpoint it came from


# ---------------------------------------------------------------- bundles whose code is hostile


def _hostile_bundle(tmp_path: Path, spec: dict, files: dict[str, str], missions: object = None) -> Path:
    """A bundle with a consistent manifest (so only its content is hostile), assembled without importing it."""
    entries = {POLICY_SPEC_FILENAME: json.dumps(spec).encode(), **{k: v.encode() for k, v in files.items()}}
    manifest = {"format": "daf-policy-bundle", "format_version": 1, "missions": missions or [MISSION],
                "files": {name: _digest(data) for name, data in entries.items()}}  # fmt: skip
    path = tmp_path / "hostile.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in {**entries, "manifest.json": json.dumps(manifest).encode()}.items():
            zf.writestr(name, data)
    return path


def test_class_path_that_is_not_a_policy_is_never_called(tmp_path: Path) -> None:
    marker = tmp_path / "RAN"
    spec = {"class_path": "pydoc.pipepager", "data_path": None, "setup_script": None,
            "init_kwargs": {"cmd": f"touch {marker}"}}  # fmt: skip
    report = validate_package(_hostile_bundle(tmp_path, spec, {}))
    assert not report.ok and not marker.exists()
    assert "class_path 'pydoc.pipepager' is function, not a MultiAgentPolicy subclass" in _errors(report)


HOSTILE_MODULE = """
import sys

import daf.packaging.sandbox
from daf.policies.scripted import RandomPolicy

# Patch the checker wherever it runs: as daf.packaging.sandbox, or as __main__ of the checking process.
for module in (daf.packaging.sandbox, sys.modules["__main__"]):
    module._check_reward = lambda *args: ([], "patched: always passes")
{extra}


class Policy(RandomPolicy):
    pass
"""


def _policy_bundle(tmp_path: Path, extra: str = "") -> Path:
    spec = {"class_path": "evil.Policy", "data_path": None, "setup_script": None, "init_kwargs": {}}
    return _hostile_bundle(tmp_path, spec, {"evil/__init__.py": HOSTILE_MODULE.format(extra=extra)})


def test_bundle_code_runs_outside_the_validator_and_cannot_patch_it(tmp_path: Path) -> None:
    import daf.packaging.sandbox

    original = daf.packaging.sandbox._check_reward
    # Inside its own check the patch "works" (code that runs can forge its verdict: daf/packaging/sandbox.py) ...
    assert validate_package(_policy_bundle(tmp_path), reward_threshold=1000.0, eval_episodes=1).ok
    # ... but nothing of it reaches this process or the next validation.
    assert daf.packaging.sandbox._check_reward is original and "evil" not in sys.modules
    honest = build_package(PolicySpec(class_path="random"), tmp_path / "honest")
    assert "below threshold" in _errors(validate_package(honest, reward_threshold=1000.0, eval_episodes=1))


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ("raise SystemExit(3)", "class: class_path 'evil.Policy' cannot be imported: SystemExit: 3"),
        ("import os; os._exit(7)", "sandbox: the checking process ended (exit code 7) before it reported"),
        ("raise KeyboardInterrupt", "KeyboardInterrupt"),
    ],
)
def test_bundle_code_that_exits_is_reported_not_fatal(tmp_path: Path, extra: str, expected: str) -> None:
    report = validate_package(_policy_bundle(tmp_path, extra))
    assert not report.ok and expected in _errors(report)


@pytest.mark.parametrize("value", ["np.iinfo(actions.dtype).max", "-7", "np.iinfo(actions.dtype).min"])
def test_a_policy_that_chooses_no_valid_action_fails_the_episode_check(tmp_path: Path, value: str) -> None:
    """INT_MAX, a negative id, a NaN cast to int: mettagrid steps on without them, so they are not actions."""
    module = (
        "import numpy as np\nfrom daf.policies.scripted import RandomPolicy\n\n\nclass Policy(RandomPolicy):\n"
        f"    def step_batch(self, observations, actions):\n        actions[:] = {value}\n"
    )
    spec = {"class_path": "evil.Policy", "data_path": None, "setup_script": None, "init_kwargs": {}}
    report = validate_package(_hostile_bundle(tmp_path, spec, {"evil/__init__.py": module}))
    assert not report.ok
    assert re.search(r"episode:\S+: 40 of 40 actions in 10 steps were no action of the mission", _errors(report))


def test_bundle_code_that_hangs_is_killed_at_the_time_limit(tmp_path: Path) -> None:
    from daf.packaging.sandbox import run_code_checks

    root = tmp_path / "root"
    (root / "evil").mkdir(parents=True)
    (root / "evil" / "__init__.py").write_text("while True:\n    pass\n")
    (root / POLICY_SPEC_FILENAME).write_text(json.dumps({"class_path": "evil.Policy", "data_path": None}))
    started = time.monotonic()
    containment, check = run_code_checks(root, [MISSION], None, 1, timeout_s=5)  # how it ran, then the verdict
    assert time.monotonic() - started < 20
    assert containment["name"] == "containment" and not containment["errors"]
    assert check["errors"] == ["the bundle's code did not finish within 5 s; killed"]


def test_compiled_files_and_manifest_mission_paths_are_refused(tmp_path: Path) -> None:
    spec = {"class_path": "evil.Policy", "data_path": None, "setup_script": None, "init_kwargs": {}}
    pyc = _hostile_bundle(tmp_path, spec, {"evil/__init__.py": "", "evil/__pycache__/__init__.cpython-311.pyc": "x"})
    assert "compiled code entry 'evil/__pycache__/__init__.cpython-311.pyc'" in _errors(validate_package(pyc))
    for missions, message in (
        (["/etc/huge_map.yaml"], "unknown mission(s) ['/etc/huge_map.yaml']"),
        (7, "missions must be a list of mission names, got int"),
        ("training_facility_1", "missions must be a list of mission names, got str"),
    ):
        bundle = _hostile_bundle(tmp_path, spec, {"evil/__init__.py": ""}, missions=missions)
        assert message in _errors(validate_package(bundle))


def test_building_from_unsafe_or_corrupt_weights_fails_before_a_bundle_is_written(tmp_path: Path) -> None:
    from daf.packaging import PackagingError

    marker = tmp_path / "pwned"
    for name, write in (
        ("corrupt.pt", lambda p: p.write_bytes(b"not a checkpoint")),
        ("payload.pt", lambda p: torch.save({"w": _Payload(marker)}, p)),
    ):
        weights = tmp_path / name
        write(weights)
        with pytest.raises(PackagingError, match=r"refused by torch.load\(weights_only=True\)"):
            build_package(PolicySpec(class_path="lstm", data_path=str(weights)), tmp_path / "out", name="x")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    assert not marker.exists()
