import json
from html.parser import HTMLParser

import numpy as np
import pytest

from daf.reports import ReportPaths, render_markdown_summary, write_report
from daf.stats import compare_scores

EVIL = "<script>alert(1)</script>"
VOID = {"meta", "img", "br", "hr", "link", "input", "col", "area", "base", "source", "wbr"}
# Elements whose end tag HTML lets you omit; the template closes them anyway, so we still check them.


class StrictParser(HTMLParser):
    """html.parser plus a tag-balance check (HTMLParser alone accepts almost anything)."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.img_srcs: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.img_srcs.append(dict(attrs).get("src", ""))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}>, open: {self.stack[-3:]}"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture(scope="module")
def stats():
    rng = np.random.default_rng(0)
    missions = ["mission_alpha", "mission_beta"]
    means = {"good_policy": 2.0, "ok_policy": 0.5, EVIL: 0.0}
    scores = {p: {m: rng.normal(mu, 1.0, 15).tolist() for m in missions} for p, mu in means.items()}
    return compare_scores(scores, n_resamples=100)


@pytest.fixture(scope="module")
def metadata():
    return {
        "policies": [{"name": "good_policy", "class_path": "daf.policies.scripted.Greedy", "data_path": None}],
        "missions": ["mission_alpha", "mission_beta"],
        "episodes_per_mission": 15,
        "seed": 0,
        "versions": {"daf": "0.1.0", "python": "3.11"},
        "created_at": "2025-01-01T00:00:00+00:00",
        "note": EVIL,
    }


@pytest.fixture(scope="module")
def report(tmp_path_factory, stats, metadata):
    out = tmp_path_factory.mktemp("report") / "nested"
    return write_report(stats, metadata, out, title=f"Report {EVIL}")


def test_writes_all_three_files_atomically(report):
    assert isinstance(report, ReportPaths)
    assert report.html.name == "report.html" and report.json.name == "report.json"
    assert report.markdown.name == "summary.md"
    assert sorted(p.name for p in report.html.parent.iterdir()) == ["report.html", "report.json", "summary.md"]


def test_html_parses_and_contains_everything(report, stats):
    html = report.html.read_text(encoding="utf-8")
    parser = StrictParser()
    parser.feed(html)
    parser.close()
    assert parser.stack == []
    text = "".join(parser.text)
    for name in [*stats.policies, *stats.missions]:
        assert name in text  # after un-escaping, the names are shown as text
    assert "good_policy" in html and "mission_beta" in html
    assert html.count("data:image/png;base64,") >= 4
    assert sum(src.startswith("data:image/png;base64,") for src in parser.img_srcs) >= 4
    assert "daf.policies.scripted.Greedy" in html and "2025-01-01T00:00:00+00:00" in html
    # Self-contained: no external resources.
    assert "<link" not in html and 'src="http' not in html


def test_untrusted_names_are_escaped(report):
    html = report.html.read_text(encoding="utf-8")
    md = report.markdown.read_text(encoding="utf-8")
    assert EVIL not in html
    assert "&lt;script&gt;" in html
    assert EVIL not in md
    assert "&lt;script&gt;" in md


def test_report_json_round_trips(report, stats, metadata):
    with report.json.open(encoding="utf-8") as fh:
        data = json.load(fh)
    assert data["metadata"] == metadata
    assert data["statistics"] == stats.to_dict()
    assert data["statistics"]["policies"] == stats.policies
    # A report can be re-rendered from its own JSON.
    md = render_markdown_summary(data["statistics"])
    assert md == render_markdown_summary(stats)


def test_markdown_summary_lists_leaderboard_and_significant_differences(stats):
    md = render_markdown_summary(stats)
    assert "| Rank | Policy |" in md
    # "_" is escaped so names like _x_ are not rendered as emphasis.
    assert md.index(r"good\_policy") < md.index(r"ok\_policy")  # leaderboard order
    assert "## Significant differences" in md
    assert r"**good\_policy** > **&lt;script&gt;alert(1)&lt;/script&gt;** (aggregate)" in md


def test_markdown_escapes_table_breaking_names():
    res = compare_scores({"a|b": {"m": [1.0, 2.0]}, "c": {"m": [1.0, 2.5]}}, n_resamples=10)
    md = render_markdown_summary(res)
    assert r"a\|b" in md and "a|b" not in md.replace(r"a\|b", "")


def test_accepts_dict_minimal_metadata_and_single_policy(tmp_path):
    res = compare_scores({"solo $x$": {"m": [0.0, 0.0, 0.0]}}, n_resamples=10)
    paths = write_report(res.to_dict(), {}, tmp_path)
    html = paths.html.read_text(encoding="utf-8")
    StrictParser().feed(html)
    assert "solo $x$" in html and "all zero" in html
    assert html.count("data:image/png;base64,") >= 3
    # Rewriting over an existing report replaces it cleanly.
    write_report(res, {"seed": 3}, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "report.json", "summary.md"]
    assert json.loads(paths.json.read_text())["metadata"] == {"seed": 3}


def _metrics(updates: int = 12) -> list[dict]:
    return [
        {"step": 4096 * (i + 1), "episode_reward": 10.0 + 5 * i, "episodes": 4, "policy_loss": -0.01,
         "value_loss": 1.0 / (i + 1), "entropy": 1.6 - 0.05 * i, "approx_kl": 0.01, "clipfrac": 0.1}
        for i in range(updates)
    ]  # fmt: skip


def _chromium(*args: str) -> str:
    import shutil
    import subprocess

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium not installed: run scripts/install_test_services.sh (as root)"
    out = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000", *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_the_learning_curves_of_trained_policies_render_in_chromium(tmp_path, stats, metadata):
    import html as html_lib
    import re

    paths = write_report(
        stats, metadata, tmp_path / "r", training_metrics={EVIL: _metrics(), "good_policy": _metrics(3)}
    )
    page = paths.html.read_text(encoding="utf-8")
    parser = StrictParser()
    parser.feed(page)
    assert parser.stack == []
    dom = _chromium("--dump-dom", paths.html.resolve().as_uri())
    figure = r'<figure class="learning-curve">\s*<figcaption>(.*?)</figcaption>\s*<img alt="(.*?)" src="(data:[^"]+)"'
    figures = re.findall(figure, dom)
    assert [html_lib.unescape(caption) for caption, _, _ in figures] == [EVIL, "good_policy"]  # shown as typed
    assert "<script>alert" not in dom
    # Chromium decodes each figure: a page holding only that image reports its size once it has loaded.
    for _, _, uri in figures:
        probe = tmp_path / "probe.html"
        probe.write_text(
            f'<img id="i" src="{uri}"><script>const i = document.getElementById("i");'
            'i.onload = () => { document.body.dataset.size = i.naturalWidth + "x" + i.naturalHeight; };</script>'
        )
        size = re.search(r'data-size="(\d+)x(\d+)"', _chromium("--dump-dom", probe.resolve().as_uri()))
        assert size and int(size.group(1)) > 800 and int(size.group(2)) > 400, size


def test_the_training_report_renders_in_chromium(tmp_path):
    import html as html_lib
    import re

    from daf.reports import write_training_report

    training = {
        "run_id": EVIL, "class_path": "daf.policies.neural.MLPPolicy", "global_step": 49152, "resumed_from_step": 0,
        "wall_time_s": 12.5, "agent_steps_per_second": 3932.2, "episodes_finished": 40, "final_mean_reward": 65.0,
        "final_checkpoint": "/runs/x/policy.pt", "metrics_path": "/runs/x/metrics.jsonl",
        "tensorboard_dir": "/runs/x/tensorboard",
    }  # fmt: skip
    config = {"missions": ["mission_alpha"], "seed": 3, "learning_rate": 0.001}
    evaluations = [{"mission": "mission_alpha", "rewards": [1.0, 2.0, 4.0, 5.0]}]
    path = write_training_report(training, _metrics(), config, evaluations, tmp_path / "r")
    parser = StrictParser()
    parser.feed(path.read_text(encoding="utf-8"))
    assert parser.stack == []
    dom = _chromium("--dump-dom", path.resolve().as_uri())
    assert "<script>alert" not in dom
    (caption,) = re.findall(r'<figure class="learning-curve">\s*<figcaption>(.*?)</figcaption>', dom)
    assert html_lib.unescape(caption) == EVIL
    row = re.search(r"<td>mission_alpha</td><td class=\"num\">4</td><td class=\"num\">3.000</td>", dom)
    assert row, dom[-3000:]
    assert "<code>0.001</code>" in dom and "49,152" in dom


@pytest.mark.parametrize(
    "url, linked",
    [("http://prefect.example:4200/runs/flow-run/1234", True), ("javascript:alert(1)", False), (None, False)],
)
def test_the_report_names_its_flow_run_and_the_daf_source(tmp_path, stats, metadata, url, linked):
    from daf.content import daf_source

    provenance = {"flow_run": {"name": f"brave-{EVIL}", "id": "1234", "url": url}, "daf_source": daf_source()}
    paths = write_report(stats, {**metadata, **provenance}, tmp_path / "r")
    html = paths.html.read_text(encoding="utf-8")
    parser = StrictParser()
    parser.feed(html)
    text = " ".join(" ".join(parser.text).split())
    assert f"Prefect flow run brave-{EVIL} 1234" in text and EVIL not in html
    assert (f'<a href="{url}">' in html) is linked and "javascript:" not in html
    source = daf_source()
    # This test runs in a git checkout: the commit is named, and the digest of the source that ran always is.
    assert source["git_commit"] and f"git commit {source['git_commit']}" in text
    assert f"source sha256 {source['source_digest']}" in text
    # The pairwise interval says what it is an interval of.
    assert f"{stats.confidence_level:.0%} CI of P(A > B)" in text


def test_the_invalid_actions_warning_renders_in_chromium(tmp_path, stats, metadata):
    import html as html_lib
    import re

    flagged = {**metadata, "invalid_actions": {EVIL: {"mission_alpha": 120, "mission_beta": 7}}}
    paths = write_report(stats, flagged, tmp_path / "r")
    dom = _chromium("--dump-dom", paths.html.resolve().as_uri())
    (warning,) = re.findall(r'<p class="warning">(.*?)</p>', dom, re.S)
    assert html_lib.unescape(" ".join(warning.split())) == (
        f"{EVIL} chose actions that are no action of the mission (120 on mission_alpha, 7 on mission_beta): "
        "mettagrid steps on without them, so its rewards do not measure a working policy."
    )
    assert "<script>alert" not in dom
    assert "**Warning:** &lt;script&gt;alert(1)&lt;/script&gt; chose" in paths.markdown.read_text()
    assert "invalid_actions" not in re.sub(r"<p class=\"warning\">.*?</p>", "", dom, flags=re.S)  # not in meta rows
