"""Reports: the comparison report (HTML, JSON, Markdown) built from daf.stats results, and the training report."""

from daf.reports.html import ReportPaths, render_html, render_markdown_summary, write_report
from daf.reports.training import render_training_html, write_training_report

__all__ = [
    "ReportPaths",
    "render_html",
    "render_markdown_summary",
    "render_training_html",
    "write_report",
    "write_training_report",
]
