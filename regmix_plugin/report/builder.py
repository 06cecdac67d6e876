"""A small report builder: headings, paragraphs, tables and PNG figures, written as markdown and HTML.

Reusable by every stage (fit, scaling, the demo): build a :class:`Report`, add sections, call ``write``.
Figures are matplotlib figures saved as PNG next to the report (Agg backend: no display needed).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from regmix_plugin.io import atomic_write_bytes, atomic_write_text
from regmix_plugin.markdown_table import markdown_table
from regmix_plugin.report.html import markdown_to_html


def new_figure(width: float = 6.0, height: float = 4.0):
    """A matplotlib figure on the Agg backend (safe on headless machines and in threads)."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110)


def save_figure(fig, path: str | os.PathLike) -> Path:
    """``fig`` as a PNG at ``path``, written atomically (a report never points at half a file)."""
    import io

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return atomic_write_bytes(path, buf.getvalue())


class Report:
    def __init__(self, title: str, out_dir: str | os.PathLike) -> None:
        self.title = title
        self.out_dir = Path(out_dir)
        self._blocks: list[tuple[str, Any]] = []

    def add_heading(self, text: str, level: int = 2) -> "Report":
        self._blocks.append(("heading", (text, level)))
        return self

    def add_paragraph(self, text: str) -> "Report":
        self._blocks.append(("paragraph", text))
        return self

    def add_table(self, rows: Sequence[dict], columns: Sequence[str] | None = None, floatfmt: str = "{:.4g}") -> "Report":
        columns = list(columns or (rows[0].keys() if rows else []))
        cells = [[floatfmt.format(r.get(c)) if isinstance(r.get(c), float) else str(r.get(c, "")) for c in columns] for r in rows]
        self._blocks.append(("table", (columns, cells)))
        return self

    def add_figure(self, fig, name: str, caption: str = "") -> "Report":
        """Save ``fig`` as ``<out_dir>/<name>.png`` and reference it."""
        save_figure(fig, self.out_dir / f"{name}.png")
        self._blocks.append(("figure", (f"{name}.png", caption)))
        return self

    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for kind, val in self._blocks:
            if kind == "heading":
                out += ["#" * val[1] + " " + val[0], ""]
            elif kind == "paragraph":
                out += [val, ""]
            elif kind == "table":
                out += [markdown_table(*val), ""]
            elif kind == "figure":
                out += [f"![{val[1]}]({val[0]})", "", f"*{val[1]}*" if val[1] else "", ""]
        return "\n".join(out)

    def html(self) -> str:
        return markdown_to_html(self.markdown(), self.title)

    def write(self, md_name: str = "report.md", html_name: str = "report.html") -> tuple[Path, Path]:
        md = atomic_write_text(self.out_dir / md_name, self.markdown())
        ht = atomic_write_text(self.out_dir / html_name, self.html())
        return md, ht
