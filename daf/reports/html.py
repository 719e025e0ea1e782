"""Write the comparison report: self-contained HTML, JSON and a Markdown summary."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from daf.files import atomic_write_text
from daf.reports.plots import all_plots, learning_curve_png
from daf.stats import ComparisonStatistics
from daf.text import printable

TEMPLATE_DIR = Path(__file__).parent / "templates"
KNOWN_METADATA = (
    "invalid_actions",
    "policies",
    "missions",
    "episodes_per_mission",
    "seed",
    "versions",
    "created_at",
    "daf_source",
    "flow_run",
)


@dataclass(frozen=True)
class ReportPaths:
    html: Path
    json: Path
    markdown: Path


def _as_stats(statistics: ComparisonStatistics | dict) -> ComparisonStatistics:
    return statistics if isinstance(statistics, ComparisonStatistics) else ComparisonStatistics.from_dict(statistics)


# ---------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------


def fmt_num(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{float(v):.{digits}g}" if abs(float(v)) >= 1e4 else f"{float(v):.{digits}f}"


def fmt_p(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float) and math.isnan(v):
        return "not estimable"  # a test with one episode on a side (daf.stats.welch_p)
    return "<0.001" if v < 0.001 else f"{v:.3f}"


def fmt_ci(lo: Any, hi: Any, digits: int = 3) -> str:
    if lo is None or hi is None or (isinstance(lo, float) and math.isnan(lo)):
        return "—"
    return f"[{fmt_num(lo, digits)}, {fmt_num(hi, digits)}]"


def _json_value(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, default=str)


# ---------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------


def template_environment() -> Environment:
    # autoescape=True unconditionally: every policy/mission name and metadata value is untrusted text.
    # FileSystemLoader relative to this file works from a source tree and an installed wheel alike
    # (the template is package data).
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATE_DIR)),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(num=fmt_num, p=fmt_p, jsonv=_json_value)
    env.globals.update(ci=fmt_ci)
    return env


# Percentile-bootstrap intervals of a mean cover less than their level with few episodes: of a nominal 95%, 86-91% at
# 10 episodes, 89-93% at 20 and 94-95% at 50 on mission-like reward distributions (bench/ci_coverage.py, 1000
# experiments per cell). Below this, the report says so.
FEW_EPISODES = 50


def versus_next(leaderboard: list) -> list[str]:
    """The "better than next?" column, worded to agree with the ranks: a pair the corrected test separates can
    still share a rank (a noisy policy between them is separated from neither), and then it is not "better"."""
    texts = []
    for cur, nxt in zip(leaderboard, [*leaderboard[1:], None]):
        p_adj = f"p_adj {fmt_p(cur.p_corrected_vs_next)}"
        if nxt is None:
            texts.append("—")
        elif cur.significantly_better_than_next:
            texts.append(f"yes ({p_adj})")
        elif cur.rank == nxt.rank:
            texts.append(f"no: same rank ({p_adj})")
        else:
            texts.append(f"no ({p_adj})")
    return texts


def ci_method_note(stats: ComparisonStatistics) -> str:
    """How the report's intervals were made, and a warning when there are too few episodes for them."""
    note = (
        f"{stats.confidence_level:.0%} CIs: percentile bootstrap of the mean ({stats.n_resamples} resamples), "
        "stratified by mission for the aggregate; undefined (—) with one episode."
    )
    fewest = min((m.n for m in stats.per_mission), default=0)
    if fewest < FEW_EPISODES:
        note += (
            f" Warning: with {fewest} episode(s) per mission these intervals cover the true mean less often than "
            f"{stats.confidence_level:.0%} (bench/ci_coverage.py); use {FEW_EPISODES} or more before relying on them."
        )
    return note


def flow_run_link(reference: Any) -> dict[str, Any]:
    """The flow run a report came from, its link kept only when it is an HTTP(S) URL (the metadata is data: a
    `javascript:` URL must not become a link)."""
    if not isinstance(reference, dict):
        return {}
    url = reference.get("url")
    return {**reference, "url": url if isinstance(url, str) and url.startswith(("http://", "https://")) else None}


def render_html(
    statistics: ComparisonStatistics | dict,
    metadata: dict,
    title: str = "DAF comparison report",
    training_metrics: dict[str, list[dict]] | None = None,
) -> str:
    """`training_metrics`: for each policy the pipeline trained, its run's per-update records (learning curves)."""
    stats = _as_stats(statistics)
    metadata = dict(metadata or {})
    template = template_environment().get_template("report.html.j2")
    return template.render(
        title=title,
        stats=stats,
        meta=metadata,
        meta_policies=metadata.get("policies") if isinstance(metadata.get("policies"), list) else [],
        meta_versions=metadata.get("versions") if isinstance(metadata.get("versions"), dict) else {},
        meta_other={k: v for k, v in metadata.items() if k not in KNOWN_METADATA},
        invalid_actions=metadata.get("invalid_actions") if isinstance(metadata.get("invalid_actions"), dict) else {},
        daf_source=metadata.get("daf_source") if isinstance(metadata.get("daf_source"), dict) else {},
        flow_run=flow_run_link(metadata.get("flow_run")),
        agg_rank={e.policy: e for e in stats.leaderboard},
        agg={a.policy: a for a in stats.aggregate},
        plots=all_plots(stats),
        learning={name: learning_curve_png(rows, name) for name, rows in (training_metrics or {}).items()},
        ci_note=ci_method_note(stats),
        vs_next=dict(zip((e.policy for e in stats.leaderboard), versus_next(stats.leaderboard))),
    )


# ---------------------------------------------------------------------------
# Markdown
# ---------------------------------------------------------------------------

_MD_ESCAPES = {
    "&": "&amp;",
    "<": "&lt;",
    ">": "&gt;",
    "|": r"\|",
    "`": r"\`",
    "*": r"\*",
    "_": r"\_",
    "[": r"\[",
    "]": r"\]",
    "\\": "\\\\",
    "\n": " ",
    "\r": " ",
}


def md_escape(text: Any) -> str:
    """Neutralise HTML and the Markdown characters that could break a table or make links, and show control
    characters rather than pass them to whoever prints the summary (daf.text)."""
    return "".join(_MD_ESCAPES.get(ch, ch) for ch in printable(str(text)))


def render_markdown_summary(
    statistics: ComparisonStatistics | dict, invalid_actions: dict[str, dict[str, int]] | None = None
) -> str:
    """`invalid_actions`: daf.comparison.invalid_actions of the evaluations, each a warning above the leaderboard."""
    stats = _as_stats(statistics)
    warnings = [
        f"**Warning:** {md_escape(policy)} chose actions that are no action of the mission ("
        + ", ".join(f"{n} on {md_escape(m)}" for m, n in per_mission.items())
        + "): mettagrid steps on without them, so its rewards do not measure a working policy."
        for policy, per_mission in (invalid_actions or {}).items()
    ]
    method = {"holm": "Holm–Bonferroni", "bh": "Benjamini–Hochberg"}.get(stats.correction, stats.correction)
    lines = [
        *(line for w in warnings for line in (w, "")),
        "## Leaderboard",
        "",
        f"Aggregate = mean of per-mission means; {stats.confidence_level:.0%} stratified bootstrap CI. "
        f"Policies share a rank unless the {method}-corrected test (alpha = {stats.alpha:g}) separates them.",
        "",
        ci_method_note(stats),
        "",
        "| Rank | Policy | Mean | CI | Better than next? |",
        "|---:|---|---:|---|---|",
    ]
    for e, nxt in zip(stats.leaderboard, versus_next(stats.leaderboard)):
        lines.append(
            f"| {e.rank} | {md_escape(e.policy)} | {fmt_num(e.mean)} | {fmt_ci(e.ci_low, e.ci_high)} | {nxt} |"
        )

    lines += ["", "## Significant differences", ""]
    sig = [p for p in stats.pairwise if p.significant]
    if not sig:
        lines.append(f"None after {method} correction at alpha = {stats.alpha:g}.")
    for p in sig:
        better, worse = (p.policy_a, p.policy_b) if p.mean_difference > 0 else (p.policy_b, p.policy_a)
        scope = "aggregate" if p.mission is None else f"mission {md_escape(p.mission)}"
        pi = p.prob_improvement if better == p.policy_a else 1.0 - p.prob_improvement
        lines.append(
            f"- **{md_escape(better)}** > **{md_escape(worse)}** ({scope}): "
            f"Δmean {fmt_num(abs(p.mean_difference))}, P(improvement) {fmt_num(pi, 2)}, p_adj {fmt_p(p.p_corrected)}"
        )
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------


def write_report(
    statistics: ComparisonStatistics | dict,
    metadata: dict,
    output_dir: str | Path,
    title: str = "DAF comparison report",
    training_metrics: dict[str, list[dict]] | None = None,
) -> ReportPaths:
    """Write report.html, report.json and summary.md into output_dir (created if needed); the HTML shows the
    learning curves of `training_metrics` (render_html)."""
    stats = _as_stats(statistics)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = ReportPaths(html=out / "report.html", json=out / "report.json", markdown=out / "summary.md")

    payload = {"title": title, "metadata": metadata or {}, "statistics": stats.to_dict()}
    # allow_nan=False: to_dict() already maps NaN to None; metadata oddities (Path, datetime) become strings.
    json_text = json.dumps(payload, indent=2, allow_nan=False, default=str)

    atomic_write_text(paths.html, render_html(stats, metadata, title, training_metrics))
    atomic_write_text(paths.json, json_text + "\n")
    summary = render_markdown_summary(stats, (metadata or {}).get("invalid_actions"))
    atomic_write_text(paths.markdown, f"# {md_escape(title)}\n\n" + summary)
    return paths
