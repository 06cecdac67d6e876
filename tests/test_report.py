"""The report builder writes markdown and HTML that reference real PNG files."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from fit_helpers import synthetic_runs

from regmix_plugin.report.builder import Report, new_figure
from regmix_plugin.table import write_runs

REPO = Path(__file__).resolve().parents[1]


def test_report_builder_writes_md_and_html(tmp_path):
    fig = new_figure()
    fig.add_subplot(111).plot([0, 1], [1, 0])
    rep = Report("Demo <report>", tmp_path)
    rep.add_heading("Section").add_paragraph("Some text & more").add_table([{"a": 1.23456, "b": "x"}]).add_figure(fig, "line", "A line")
    md, html = rep.write()
    text = md.read_text()
    assert "# Demo <report>" in text and "| a | b |" in text and "| 1.235 | x |" in text and "![A line](line.png)" in text
    h = html.read_text()
    assert "Demo &lt;report&gt;" in h and "<img src='line.png'" in h and "Some text &amp; more" in h
    assert (tmp_path / "line.png").read_bytes()[:4] == b"\x89PNG"


def test_fit_mixture_tool_end_to_end(tmp_path):
    write_runs(synthetic_runs(40), tmp_path / "runs.csv")
    # In-process (the tool is a few lines over the CLI), so the test does not pay a second torch import.
    spec = importlib.util.spec_from_file_location("fit_mixture", REPO / "tools" / "fit_mixture.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    rc = tool.main(["--runs", str(tmp_path / "runs.csv"), "--target", "valid/web/loss", "--predictor", "log-law",
                    "--coverage", "0.8", "--out", str(tmp_path / "fit")])
    assert rc == 0
    assert (tmp_path / "fit" / "regmix.json").is_file()
    prov = json.loads((tmp_path / "fit" / "regmix.json").read_text())["provenance"]
    assert prov["predicted_target_uncertainty"]["interval"]["coverage"] == 0.8  # --coverage reached optimize
    md = (tmp_path / "fit" / "report" / "report.md").read_text()
    for png in ("predicted_vs_actual.png", "weights_vs_prior.png", "interactions.png"):
        assert png in md and (tmp_path / "fit" / "report" / png).is_file()


def test_the_one_html_writer_renders_what_the_reports_write():
    from regmix_plugin.report.html import markdown_to_html

    md = "\n".join([
        "# Title <x> & y", "", "A **bold** claim with `code` and a [link](https://example.org/a?b=1&c=2).",
        "", "| mixture | loss |", "|---|---|", "| regmix | 2.79 |", "| natural | 2.84 |", "",
        "![target loss](target_loss.png)", "", "*target loss by mixture*", "",
        "- first item", "  continues here", "- second", "", "1. one", "2. two", "",
        "```bash", "torchrun -m x --flag <value>", "```", "",
        "## Section", "ρ < 0.8 is weak",
    ])
    h = markdown_to_html(md, "Title <x>")
    assert "<title>Title &lt;x&gt;</title>" in h and "<h1>Title &lt;x&gt; &amp; y</h1>" in h
    assert "<strong>bold</strong>" in h and "<code>code</code>" in h
    assert "<a href='https://example.org/a?b=1&amp;c=2'>link</a>" in h
    assert "<tr><th>mixture</th><th>loss</th></tr>" in h and "<tr><td>regmix</td><td>2.79</td></tr>" in h
    assert "---" not in h  # the separator row is not a table row
    assert "<img src='target_loss.png' alt='target loss'>" in h and "<em>target loss by mixture</em>" in h
    assert "<ul><li>first item continues here</li><li>second</li></ul>" in h and "<ol><li>one</li><li>two</li></ol>" in h
    assert "<pre><code>torchrun -m x --flag &lt;value&gt;</code></pre>" in h
    assert "<h2>Section</h2>" in h and "<p>ρ &lt; 0.8 is weak</p>" in h
