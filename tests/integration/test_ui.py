"""What a person sees in the Prefect UI, rendered by headless Chromium (Debian's package, installed by
scripts/install_test_services.sh): the DOM after the UI's JavaScript has run, not the API's JSON."""

from __future__ import annotations

import html
import re
import shutil
import subprocess

import stack

HOSTILE = "<img src=x onerror=alert(1)> *bold* a_b"


def rendered_dom(url: str) -> str:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium not installed: run scripts/install_test_services.sh (as root)"
    out = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=15000", "--dump-dom", url],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_leaderboard_shows_user_strings_as_typed_and_rounded_figures(runs, worker, stack_dir):
    out = stack_dir / "ui-out"
    config = {
        "policies": [{"class_path": "baseline"}, {"class_path": "random", "name": HOSTILE}],
        "missions": ["training_facility_1"],
        "episodes_per_mission": 3,
        "device": "cpu",
        "output_dir": str(out),
    }
    flow_run_id = runs.create("comparison/comparison-local", {"config": config})
    run = runs.wait_final(flow_run_id, timeout=120, worker=worker)
    assert run.state.is_completed(), run.state

    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterType

    flt = ArtifactFilter(
        flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]), type=ArtifactFilterType(any_=["table"])
    )
    with runs.client() as client:
        (table,) = client.read_artifacts(artifact_filter=flt)
    ui = runs.server.api_url.removesuffix("/api")
    dom = stack.wait_for(
        lambda: (d := rendered_dom(f"{ui}/artifacts/artifact/{table.id}")) and "artifact-data-table" in d and d,
        timeout=120, what="the UI to render the leaderboard table",
    )  # fmt: skip
    cells = re.findall(r'<td class="p-table-data[^"]*">(.*?)</td>', dom)
    texts = [html.unescape(re.sub(r"<[^>]+>", "", c)) for c in cells]
    assert HOSTILE in texts, texts  # shown exactly as typed ...
    assert not any("<img" in c or "p-sanitize-html" in c for c in cells)  # ... and never rendered as HTML
    assert any(re.fullmatch(r"\[\d+\.\d{3}, \d+\.\d{3}\]", t) for t in texts), texts  # rounded CI bounds


def test_custom_run_form_lists_the_config_in_its_own_order_with_descriptions(runs):
    """On the PostgreSQL-backed server (jsonb reorders a schema's keys), the custom-run form lists the config's fields
    as the config defines them, pipeline fields first, each with its description as written; missions are a
    choice of the known names."""
    from daf.config import DAFBenchmarkConfig, DAFConfig
    from daf.missions import list_missions

    with runs.client() as client:
        deployment = client.read_deployment_by_name("benchmark/benchmark-local")
    ui = runs.server.api_url.removesuffix("/api")
    dom = stack.wait_for(
        lambda: (d := rendered_dom(f"{ui}/deployments/deployment/{deployment.id}/run")) and "Cache Expir" in d and d,
        timeout=120, what="the UI to render the custom-run form",
    )  # fmt: skip
    properties = DAFBenchmarkConfig.model_json_schema()["properties"]
    expected = sorted(properties, key=lambda name: properties[name]["position"])
    titles = {properties[name]["title"]: name for name in expected}
    labels = [label.removesuffix(" (Optional)") for label in re.findall(r'form-property__label">(.*?)</span>', dom)]
    assert [titles[label] for label in labels if label in titles] == expected
    shared = list(DAFConfig.model_fields)  # where and how a run runs: after the pipeline's own fields
    assert expected[:3] == ["policies", "missions", "episodes_per_mission"] and expected[-len(shared) :] == shared

    text = " ".join(html.unescape(re.sub(r"<[^>]+>", "", dom)).split())
    for name in expected:
        description = " ".join(properties[name]["description"].replace("`", "").split())
        assert description in text, f"{name}: {description!r} not shown"
    # The missions field (the first multiple choice) offers exactly the known missions.
    selects = re.findall(r"<select multiple[^>]*>(.*?)</select>", dom)
    assert selects and re.findall(r'value="([^"]+)"', selects[0]) == list_missions(), selects


def test_the_report_link_of_a_stored_run_opens_from_the_ui(runs, worker, stack_dir):
    """A run on a worker stores its outputs in object storage (a real S3-compatible server on 127.0.0.1); the UI's
    report artifact links a signed HTTP URL, which a browser opens from the UI's page: the report itself."""
    s3 = stack.start_s3(stack_dir / "s3")
    try:
        s3.create_bucket("daf-ui-results")
        config = {
            "policies": [{"class_path": "baseline"}, {"class_path": "random"}],
            "missions": ["training_facility_1"],
            "episodes_per_mission": 2,
            "device": "cpu",
            "output_dir": str(stack_dir / "stored-out"),
            "result_store": "s3://daf-ui-results/nightly",
            "report_title": "Stored comparison",
        }
        # The provider's credentials and endpoint reach the flow-run process as the worker's environment would.
        flow_run_id = runs.create("comparison/comparison-local", {"config": config}, job_variables={"env": s3.env})
        run = runs.wait_final(flow_run_id, timeout=180, worker=worker)
        assert run.state.is_completed() and run.state.name == "Completed", run.state

        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterType

        flt = ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]), type=ArtifactFilterType(any_=["markdown"])
        )
        with runs.client() as client:
            (link,) = [a for a in client.read_artifacts(artifact_filter=flt) if "HTML report" in (a.data or "")]
        ui = runs.server.api_url.removesuffix("/api")
        dom = stack.wait_for(
            lambda: (d := rendered_dom(f"{ui}/artifacts/artifact/{link.id}")) and s3.endpoint in d and d,
            timeout=120, what="the UI to render the report link",
        )  # fmt: skip
        (href,) = {html.unescape(h) for h in re.findall(rf'href="({re.escape(s3.endpoint)}/[^"]+)"', dom)}
        assert "/daf-ui-results/nightly/comparison-" in href and "Signature=" in href, href
        report = rendered_dom(href)
        assert "<title>Stored comparison</title>" in report, report[:2000]
        assert "<th>Aggregate mean</th>" in report  # the leaderboard
        # It names its flow run, linked to the run's page in this server's UI.
        assert f'<a href="{ui}/runs/flow-run/{flow_run_id}">{run.name}</a>' in report
        assert re.search(r"<td>baseline</td>", report) and re.search(r"<td>random</td>", report)
    finally:
        s3.stop()
