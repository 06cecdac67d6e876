"""The one HTML writer: every report's markdown (the report builder's and the demo's) becomes a standalone
HTML page here.

It reads the subset of markdown this project writes: headings, paragraphs, GitHub tables, images on a line
of their own, bullet and numbered lists, fenced code, and inline ``code``, **bold**, *italics* and links.
Text is HTML-escaped, so a title such as ``Demo <report>`` shows as written. A full markdown library would
pass raw HTML through instead, and would be one more dependency for four constructs.
"""

from __future__ import annotations

import html
import re

_STYLE = ("body{font-family:sans-serif;max-width:60em;margin:auto}table{border-collapse:collapse}"
          "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}img{max-width:100%}"
          "pre{background:#f6f6f6;padding:6px;overflow-x:auto}")
_HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
_IMAGE = re.compile(r"^!\[(.*?)\]\((\S+?)\)$")
_BULLET = re.compile(r"^[-*]\s+")
_NUMBER = re.compile(r"^\d+\.\s+")


def _attr(text: str) -> str:
    return html.escape(text, quote=True)


def _inline(text: str) -> str:
    t = html.escape(text, quote=False)
    t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
    t = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", t)
    t = re.sub(r"(?<![\w*])\*(?=\S)(.+?)(?<=\S)\*(?![\w*])", r"<em>\1</em>", t)
    # The text is escaped already; only a quote could still end the attribute.
    return re.sub(r"\[([^\]]+)\]\(([^)\s]+)\)", lambda m: f"<a href='{m.group(2).replace(chr(39), '&#x27;')}'>{m.group(1)}</a>", t)


def _cells(row: str) -> list[str]:
    return [c.strip() for c in row.strip().strip("|").split("|")]


def _table(rows: list[str]) -> str:
    body = [r for r in rows[1:] if not re.fullmatch(r"\|?(\s*:?-+:?\s*\|)+\s*:?-*:?\s*", r.strip())]
    out = ["<table><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in _cells(rows[0])) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in _cells(r)) + "</tr>" for r in body]
    return "\n".join(out + ["</table>"])


def _list(lines: list[str], i: int, marker: re.Pattern, tag: str) -> tuple[str, int]:
    items: list[str] = []
    while i < len(lines) and marker.match(lines[i].strip()):
        items.append(marker.sub("", lines[i].strip(), count=1))
        i += 1
        # An indented line that starts no new item continues the item above.
        while i < len(lines) and lines[i].startswith(" ") and lines[i].strip() and not marker.match(lines[i].strip()):
            items[-1] += " " + lines[i].strip()
            i += 1
    return f"<{tag}>" + "".join(f"<li>{_inline(x)}</li>" for x in items) + f"</{tag}>", i


def markdown_to_html(md: str, title: str) -> str:
    """A standalone HTML page of the markdown ``md``, titled ``title``."""
    lines = md.split("\n")
    out: list[str] = []
    para: list[str] = []

    def flush() -> None:
        if para:
            out.append("<p>" + _inline(" ".join(para)) + "</p>")
            para.clear()

    i = 0
    while i < len(lines):
        s = lines[i].strip()
        if s.startswith("```"):
            flush()
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith("```"):
                j += 1
            out.append("<pre><code>" + html.escape("\n".join(lines[i + 1:j])) + "</code></pre>")
            i = j + 1
        elif not s:
            flush()
            i += 1
        elif m := _HEADING.match(s):
            flush()
            n = len(m.group(1))
            out.append(f"<h{n}>{_inline(m.group(2))}</h{n}>")
            i += 1
        elif s.startswith("|"):
            flush()
            j = i
            while j < len(lines) and lines[j].strip().startswith("|"):
                j += 1
            out.append(_table([x.strip() for x in lines[i:j]]))
            i = j
        elif m := _IMAGE.match(s):
            flush()
            out.append(f"<figure><img src='{_attr(m.group(2))}' alt='{_attr(m.group(1))}'></figure>")
            i += 1
        elif _BULLET.match(s) or _NUMBER.match(s):
            flush()
            block, i = _list(lines, i, *((_BULLET, "ul") if _BULLET.match(s) else (_NUMBER, "ol")))
            out.append(block)
        else:
            para.append(s)
            i += 1
    flush()
    head = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body>")
    return "\n".join([head, *out, "</body></html>"])
