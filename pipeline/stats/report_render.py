"""Writing report sections out: one self-contained HTML page, or Markdown.

The HTML is one file: CSS inline, plots as base64 PNG from matplotlib's Agg backend,
no external URL, so it opens offline and can be mailed around. Markdown gets the same
tables; plots live in the HTML only.
"""
from __future__ import annotations

import base64
import html
import io

from pipeline.stats.report_blocks import LANG_NAMES, Details, Figure, Side, Table, lang_color


def figure_png(fig_spec: Figure) -> str:
    """The figure as a base64 PNG. A bare ``matplotlib.figure.Figure`` renders with Agg and never
    touches pyplot's global state or a display."""
    import matplotlib
    from matplotlib.figure import Figure as MplFigure

    # Labels hold user text (categories, paths: a YouTube title holds "$5 and $10"): drawn as
    # written, never parsed as mathtext, which fails on text such as "$\frac{$".
    with matplotlib.rc_context({"text.parse_math": False}):
        fig = MplFigure(figsize=fig_spec.size, dpi=100, layout="constrained")
        fig_spec.draw(fig)
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


# ---------------------------------------------------------------- HTML

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",sans-serif;color:#212529;margin:0;background:#f8f9fa}
main{max-width:1120px;margin:0 auto;padding:24px 28px 60px;background:#fff}
h1{font-size:26px;margin:8px 0 4px}h2{font-size:19px;margin:34px 0 10px;padding-top:10px;border-top:1px solid #dee2e6}
nav{font-size:13px;line-height:1.7;margin:10px 0 0}nav a{margin-right:10px;color:#1c7ed6;text-decoration:none}
nav div{margin:2px 0}nav b{display:inline-block;min-width:150px;font-weight:600;color:#495057}
nav a.empty{color:#adb5bd}
section>details>summary{cursor:pointer;list-style-position:outside}section>details>summary h2{display:inline}
section>details{margin:30px 0 0;padding-top:10px;border-top:1px solid #dee2e6}
section>details>summary h2{border:0;margin:0;padding:0}
details.more{margin:6px 0 10px}details.more>summary{cursor:pointer;font-size:13px;color:#1c7ed6}
.lang{display:inline-block;padding:0 5px;border-radius:3px;color:#fff;font-weight:600;font-size:12px}
.seg td.text{max-width:300px}
table{border-collapse:collapse;margin:10px 0 6px;font-size:13px;font-variant-numeric:tabular-nums}
th,td{padding:4px 9px;border-bottom:1px solid #e9ecef;text-align:left;vertical-align:top}
th{background:#f1f3f5;font-weight:600;border-bottom:2px solid #ced4da}
th.group{text-align:center;border-bottom:1px solid #ced4da;background:#e9ecef}
th.group+th.group,.gstart{border-left:1px solid #ced4da}
tr:nth-child(even) td{background:#fafbfc}td.num,th.num{text-align:right;white-space:nowrap}
caption{caption-side:bottom;text-align:left;font-size:12px;color:#6c757d;padding-top:4px}
figure{margin:12px 0 18px}figure img{max-width:100%;height:auto;border:1px solid #f1f3f5}
figcaption{font-size:12px;color:#6c757d}
.note{font-size:13.5px;line-height:1.5;margin:8px 0;max-width:960px}
.warning,.error{font-size:13.5px;padding:7px 11px;border-radius:4px;margin:6px 0;max-width:1020px}
.warning{background:#fff9db;border-left:4px solid #f59f00}.error{background:#fff5f5;border-left:4px solid #e03131}
.tablewrap{overflow-x:auto}
.side{display:flex;gap:24px;align-items:flex-start}.side figure{margin-top:10px;flex:1 1 0;min-width:0}
.side>.tablewrap{flex:none}@media (max-width:700px){.side{flex-wrap:wrap}}
"""

# Marks the page once every image has decoded (read back by the headless-browser test).
SCRIPT = """
(function(){
  function check(){
    var imgs=document.images, ok=0;
    for(var i=0;i<imgs.length;i++){ if(imgs[i].complete && imgs[i].naturalWidth>0){ ok++; } }
    document.body.setAttribute("data-images-total", String(imgs.length));
    document.body.setAttribute("data-images-decoded", String(ok));
    document.body.setAttribute("data-page-height", String(document.documentElement.scrollHeight));
  }
  check();
  window.addEventListener("load", check);
})();
"""


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _cell(value) -> str:
    """A cell's HTML: a language label (``en (English)``) gets its chip in the language's colour."""
    text = str(value)
    code = text.split(" ", 1)[0]
    if isinstance(value, str) and (text == code or text[len(code):].startswith(" (")) and code in LANG_NAMES:
        return (f'<span class="lang" data-lang="{_e(code)}" style="background:{lang_color(code)}">{_e(code)}</span>'
                + _e(text[len(code):]))
    return _e(text)


def _table_html(t: Table) -> str:
    starts, col = set(), 0
    for _, span in t.groups[:-1]:
        col += span
        starts.add(col)  # a rule between column groups

    def cls(i):
        names = (["num"] if i in t.numeric else []) + (["gstart"] if i in starts else [])
        return f' class="{" ".join(names)}"' if names else ""

    head = "".join(f"<th{cls(i)}>{_e(c)}</th>" for i, c in enumerate(t.columns))
    body = "".join("<tr>" + "".join(f"<td{cls(i)}>{_cell(v)}</td>" for i, v in enumerate(row)) + "</tr>"
                   for row in t.rows)
    cap = f"<caption>{_e(t.caption)}</caption>" if t.caption else ""
    groups = ""
    if t.groups:
        groups = "<tr>" + "".join(f'<th colspan="{span}" class="group">{_e(label)}</th>' for label, span in t.groups) + "</tr>"
    return (f'<div class="tablewrap"><table>{cap}<thead>{groups}<tr>{head}</tr></thead><tbody>{body}</tbody>'
            "</table></div>")


def _block_html(block) -> str:
    if isinstance(block, Details):
        return (f'<details class="more"><summary>{_e(block.summary)}</summary>'
                + "".join(map(_block_html, block.blocks)) + "</details>")
    if isinstance(block, Side):
        return '<div class="side">' + "".join(map(_block_html, block.blocks)) + "</div>"
    if isinstance(block, Table):
        return _table_html(block)
    if isinstance(block, Figure):
        png = figure_png(block)
        return (f'<figure><img alt="{_e(block.caption)}" src="data:image/png;base64,{png}">'
                f"<figcaption>{_e(block.caption)}</figcaption></figure>")
    cls = "note" if block.level == "note" else block.level
    prefix = {"warning": "Warning: ", "error": "Error: "}.get(block.level, "")
    return f'<p class="{cls}">{_e(prefix + block.text)}</p>'


def _nav(secs: list) -> str:
    """The contents: one line per directory (the whole dataset first), its sections as short links."""
    groups: dict = {}
    for s in secs:
        groups.setdefault(s.group, []).append(s)
    lines = []
    for group, members in groups.items():
        links = "".join(f'<a href="#{_e(s.anchor)}"{"" if s.has_data else " class=empty"}>'
                        f"{_e(s.short or s.title)}</a>" for s in members)
        lines.append(f"<div><b>{_e(group or 'dataset')}</b>{links}</div>")
    return "".join(lines)


def _section_html(s) -> str:
    """A section folds under its title; it starts open when it has data."""
    return (f'<section id="{_e(s.anchor)}" data-has-data="{str(s.has_data).lower()}">'
            f'<details{" open" if s.has_data else ""}><summary><h2>{_e(s.title)}</h2></summary>'
            + "".join(map(_block_html, s.blocks)) + "</details></section>")


def page_html(secs: list) -> str:
    """The sections as one HTML page, with the contents at the top."""
    body = "".join(map(_section_html, secs))
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
            "<link rel=\"icon\" href=\"data:,\">"
            f"<title>Multi-HowTo100M dataset report</title><style>{CSS}</style></head>"
            f"<body><main><h1>Multi-HowTo100M dataset report</h1><nav>{_nav(secs)}</nav>{body}</main>"
            f"<script>{SCRIPT}</script></body></html>\n")


# ---------------------------------------------------------------- Markdown

def _md(text) -> str:
    """Text as Markdown shows it literally: user text (titles, categories, errors) may hold HTML,
    which a Markdown viewer would otherwise render or run."""
    return html.escape(str(text), quote=False)


def _md_cell(v) -> str:
    return _md(v).replace("|", "\\|").replace("\n", " ")


def _block_md(block) -> str:
    if isinstance(block, Details):
        return f"_{_md_cell(block.summary)}:_\n\n" + "\n".join(map(_block_md, block.blocks))
    if isinstance(block, Side):
        return "\n".join(map(_block_md, block.blocks))
    if isinstance(block, Table):
        columns = list(block.columns)
        if block.groups:  # Markdown has one header row: prefix each column with its group
            labels = [label for label, span in block.groups for _ in range(span)]
            columns = [f"{g} {c}".strip() for g, c in zip(labels, columns)]
        head = "| " + " | ".join(_md_cell(c) or " " for c in columns) + " |"
        sep = "|" + "|".join("---:" if i in block.numeric else "---" for i in range(len(block.columns))) + "|"
        rows = ["| " + " | ".join(_md_cell(v) for v in r) + " |" for r in block.rows]
        cap = f"\n_{_md_cell(block.caption)}_\n" if block.caption else ""
        return "\n".join([head, sep, *rows]) + "\n" + cap
    if isinstance(block, Figure):
        return f"_Plot in report.html: {_md_cell(block.caption)}_\n"
    prefix = {"warning": "**Warning:** ", "error": "**Error:** "}.get(block.level, "")
    return f"{prefix}{_md(block.text)}\n"


def page_markdown(secs: list) -> str:
    """The sections as Markdown: the same tables and notes, each plot named by its caption."""
    parts = ["# Multi-HowTo100M dataset report\n"]
    for s in secs:
        parts.append(f"## {_md_cell(s.title)}\n")
        parts += [_block_md(b) for b in s.blocks]
    return "\n".join(parts)
