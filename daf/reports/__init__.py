"""Comparison reports (HTML, JSON, Markdown) built from daf.stats results."""

from daf.reports.html import ReportPaths, render_html, render_markdown_summary, write_report

__all__ = ["ReportPaths", "render_html", "render_markdown_summary", "write_report"]
