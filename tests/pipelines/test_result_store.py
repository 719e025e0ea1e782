"""A run's outputs in a result store (daf.result_store): copied to a real S3-compatible server on 127.0.0.1 (moto's
`moto_server`, a separate process), the report reachable over HTTP through its signed link, checkpoints with their
sha256, and a store that cannot be written failing only its own stage."""

from __future__ import annotations

import hashlib
import json
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import stack

from daf.orchestrators import daf_run_comparison_pipeline, daf_run_training_pipeline
from daf.results import PipelineResult
from tests.pipelines.test_flows import artifacts, small_training

BUCKET = "daf-results"


@pytest.fixture(scope="module")
def s3() -> Iterator[stack.S3Server]:
    directory = Path(tempfile.mkdtemp(prefix="daf-s3-"))
    server = stack.start_s3(directory)
    server.create_bucket(BUCKET)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in server.env.items():  # the provider's own environment, as a user sets it
            patch.setenv(key, value)
        yield server
    server.stop()


def read_stored(url: str) -> bytes:
    import fsspec

    with fsspec.open(url, "rb") as fh:
        return fh.read()


@pytest.fixture(scope="module")
def stored_training(s3, tmp_path_factory) -> PipelineResult:
    """A short training run whose outputs went to the store."""
    result = daf_run_training_pipeline(
        policy_class_path="mlp",
        missions=["training_facility_1"],
        num_training_steps=1024,
        eval_missions=[],
        **small_training(tmp_path_factory.mktemp("weights")),
        result_store=f"s3://{BUCKET}/weights",
    )
    assert result.status == "success", result.errors
    return result


@pytest.fixture(scope="module")
def stored_weights(stored_training) -> tuple[str, Path]:
    """The trained checkpoint's URL in the store (with the .sha256 the store writes) and the local file."""
    files = stored_training.outputs["stored"]["files"]
    (url,) = [u for name, u in files.items() if name.endswith("/policy.pt")]
    return url, Path(stored_training.outputs["final_checkpoint"])


def compare_two(tmp_path: Path, result_store: str) -> PipelineResult:
    return daf_run_comparison_pipeline(
        policies=["baseline", "random"],
        missions=["training_facility_1"],
        episodes_per_mission=2,
        output_dir=str(tmp_path),
        result_store=result_store,
    )


def test_comparison_outputs_are_stored_and_the_report_link_opens_over_http(s3, tmp_path):
    result = compare_two(tmp_path, f"s3://{BUCKET}/team")
    assert result.status == "success", result.errors
    assert result.stages_completed[-1] == "result_storage"
    run_dir = Path(result.outputs["run_dir"])
    stored = result.outputs["stored"]
    assert stored["run"] == f"s3://{BUCKET}/team/{run_dir.name}"
    for name in ("report/report.html", "report/report.json", "report/summary.md"):
        assert read_stored(stored["files"][name]) == (run_dir / name).read_bytes()
    # The result is stored last, saying where everything is, and equal to the local one.
    local = (run_dir / "pipeline_result.json").read_bytes()
    assert read_stored(f"{stored['run']}/pipeline_result.json") == local
    assert json.loads(local)["outputs"]["stored"] == stored
    # The UI's report link is a signed HTTP URL of the stored report, not a file:// path.
    (link,) = [text for text in artifacts(result)["markdown"] if "HTML report" in text]
    url = link[link.index("](") + 2 : -1]
    assert url.startswith(f"{s3.endpoint}/{BUCKET}/team/{run_dir.name}/report/report.html?"), url
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"] == "text/html"
        assert response.read() == (run_dir / "report" / "report.html").read_bytes()
    # Credentials never reach the outputs.
    assert s3.env["AWS_SECRET_ACCESS_KEY"] not in local.decode() and s3.env["AWS_SECRET_ACCESS_KEY"] not in url


def test_training_stores_its_checkpoint_with_the_sha256_of_the_weights(stored_training):
    result = stored_training
    checkpoint = Path(result.outputs["final_checkpoint"])
    assert checkpoint.is_absolute()
    files = result.outputs["stored"]["files"]
    name = f"checkpoints/{checkpoint.parent.parent.parent.name}/{checkpoint.parent.name}/{checkpoint.name}"
    assert read_stored(files[name]) == checkpoint.read_bytes()
    digest = read_stored(files[name] + ".sha256").decode().split()[0]
    assert digest == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert any(key.startswith("report/") for key in files)


def test_a_file_store_keeps_the_run_in_another_folder(tmp_path):
    """file:///abs/path: a shared disk (NFS, a mounted bucket); the report link is the stored file's file:// URI."""
    store = tmp_path / "shared disk"
    result = compare_two(tmp_path / "local", store.as_uri())
    assert result.status == "success", result.errors
    run_dir = Path(result.outputs["run_dir"])
    stored = store / run_dir.name
    assert result.outputs["stored"]["run"] == f"{store.as_uri()}/{run_dir.name}"
    for name in ("pipeline_result.json", "report/report.html", "report/report.json", "report/summary.md"):
        assert (stored / name).read_bytes() == (run_dir / name).read_bytes(), name
    (link,) = [text for text in artifacts(result)["markdown"] if "HTML report" in text]
    assert link.endswith(f"]({(stored / 'report' / 'report.html').as_uri()})"), link


def test_a_store_that_cannot_be_written_fails_its_stage_and_keeps_the_local_outputs(s3, tmp_path):
    result = compare_two(tmp_path, "s3://no-such-bucket-for-daf/team")
    assert result.status == "partial" and result.stages_failed == ["result_storage"], result.errors
    (error,) = result.errors
    assert error.startswith("result_storage: ResultStoreError: result_store s3://no-such-bucket-for-daf/team: ")
    assert "bucket does not exist" in error
    run_dir = Path(result.outputs["run_dir"])
    assert "stored" not in result.outputs
    assert json.loads((run_dir / "pipeline_result.json").read_text())["status"] == "partial"
    assert Path(result.outputs["report_html"]).read_bytes().startswith(b"<!DOCTYPE html>")


def test_a_policy_loads_from_a_url_checked_against_its_recorded_sha256(s3, stored_weights, tmp_path):
    from mettagrid.policy.policy import PolicySpec

    url, local = stored_weights
    result = daf_run_comparison_pipeline(
        policies=[PolicySpec(class_path="mlp", data_path=url), PolicySpec(class_path="random")],
        missions=["training_facility_1"],
        episodes_per_mission=2,
        output_dir=str(tmp_path),
    )
    assert result.status == "success", result.errors
    assert result.stages_completed[:2] == ["policy_fetch", "environment_validation"]
    fetched = Path(result.outputs["fetched"][url])
    assert fetched.read_bytes() == local.read_bytes()
    assert fetched.parent.name == hashlib.sha256(local.read_bytes()).hexdigest()  # content-addressed
    # The same weights, evaluated from the URL and from the local file, score the same episodes the same.
    again = daf_run_comparison_pipeline(
        policies=[PolicySpec(class_path="mlp", data_path=str(local)), PolicySpec(class_path="random")],
        missions=["training_facility_1"], episodes_per_mission=2, output_dir=str(tmp_path), use_cache=False,
    )  # fmt: skip
    rewards = [
        [e["rewards"] for e in r.outputs["evaluation_results"] if e["policy"] != "random"] for r in (result, again)
    ]
    assert rewards[0] == rewards[1]
    # A warm start from the URL: training's policy_data_path is fetched the same way.
    warm = daf_run_training_pipeline(
        policy_class_path="mlp", missions=["training_facility_1"], num_training_steps=512, eval_missions=[],
        policy_data_path=url, **small_training(tmp_path / "warm"),
    )  # fmt: skip
    assert warm.status == "success", warm.errors
    assert Path(warm.outputs["fetched"][url]).read_bytes() == local.read_bytes()


def test_weights_that_differ_from_their_record_are_refused_before_compute(s3, stored_weights, tmp_path):
    import fsspec

    url, local = stored_weights
    tampered = url.replace("/weights/", "/tampered/")
    fs = fsspec.filesystem("s3")
    fs.pipe_file(tampered, local.read_bytes()[:-1] + b"x")
    fs.pipe_file(tampered + ".sha256", read_stored(url + ".sha256"))
    unrecorded = url.replace("/weights/", "/unrecorded/")
    fs.pipe_file(unrecorded, local.read_bytes())
    digest = hashlib.sha256(local.read_bytes()).hexdigest()
    for data_path, message in (
        (tampered, "is not the recorded"),
        (unrecorded, "no recorded sha256"),
        (f"{unrecorded}#sha256={'0' * 64}", "is not the recorded"),
        (f"s3://{BUCKET}/nowhere/policy.pt#sha256={digest}", "not found"),
        (f"s3://{BUCKET}/weights/..#sha256={digest}", "does not name a file"),
    ):
        result = daf_run_comparison_pipeline(
            policies=[{"class_path": "mlp", "data_path": data_path}], missions=["training_facility_1"],
            episodes_per_mission=1, output_dir=str(tmp_path),
        )  # fmt: skip
        assert result.status == "failed" and result.stages_failed == ["policy_fetch"], result.errors
        assert message in result.errors[0] and "ResultStoreError" in result.errors[0], result.errors
        assert not list((tmp_path / "fetched").rglob("*.pt")), "nothing unverified is kept"
    # With the right digest in the URL, weights stored without a record load.
    result = daf_run_comparison_pipeline(
        policies=[{"class_path": "mlp", "data_path": f"{unrecorded}#sha256={digest}"}],
        missions=["training_facility_1"], episodes_per_mission=1, output_dir=str(tmp_path),
    )  # fmt: skip
    assert result.status == "success", result.errors


@pytest.mark.parametrize(
    "url, message",
    [
        ("http://example.org/x", "a result store is a URL with one of"),
        ("memory://results", "a result store is a URL with one of"),
        ("s3://key:secret@bucket/p", "must not carry credentials"),
        ("s3:///prefix", "name the bucket"),
        ("file://relative/path", "absolute path"),
        ("s3://bucket/p?versionId=1", "no query or fragment"),
        ("s3://bucket/p\x1b[2J", "control characters"),
        ("s3://bucket/p::zip://inner", "not a chain of file systems"),
    ],
)
def test_a_bad_store_url_is_refused_before_any_stage(url, message, tmp_path):
    result = daf_run_comparison_pipeline(
        policies=["baseline"], missions=["training_facility_1"], episodes_per_mission=1, output_dir=str(tmp_path),
        result_store=url,
    )  # fmt: skip
    assert result.status == "failed" and result.error_kind == "invalid_input", result.errors
    assert "result_store" in result.errors[0] and message in result.errors[0], result.errors
    assert not list(tmp_path.iterdir())  # nothing written


def test_the_cli_stores_a_run_and_says_where(s3, tmp_path):
    import subprocess
    import sys

    daf = Path(sys.executable).parent / "daf"
    command = [str(daf), "compare", "--policy", "baseline", "--policy", "random", "--mission", "training_facility_1"]
    options = ["--episodes", "2", "--output-dir", str(tmp_path), "--set", f"result_store=s3://{BUCKET}/cli"]
    proc = subprocess.run([*command, *options], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert f"stored in: s3://{BUCKET}/cli/{run_dir.name}" in proc.stdout, proc.stdout[-3000:]
    assert (
        read_stored(f"s3://{BUCKET}/cli/{run_dir.name}/pipeline_result.json")
        == (run_dir / "pipeline_result.json").read_bytes()
    )
