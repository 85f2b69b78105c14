"""HTML of the gallery: index cards, one page per entry, the generated-images page.

Everything that came from a user (names, prompts, words, file names, PNG text) goes through
:func:`esc`; links to files use names we chose (``e/<id>/...``), and ids are slugs the registry
validated, escaped and URL-quoted all the same.
"""

from __future__ import annotations

import html
import shlex
from typing import Any
from urllib.parse import quote

from unziplora.gallery.fields import human_bytes, scores, setting, short_base, show_rows

CSS = """
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;background:#f3f4f6;color:#1f2937}
header{background:#1f2937;color:#f9fafb;padding:14px 24px;display:flex;gap:24px;align-items:baseline}
header h1{font-size:20px;margin:0}header a{color:#93c5fd}
main{padding:20px 24px;max-width:1400px;margin:auto}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(380px,1fr));gap:18px}
.card{background:#fff;border-radius:10px;box-shadow:0 1px 3px rgba(0,0,0,.12);overflow:hidden;display:flex;flex-direction:column}
.card a.title{display:block;font-weight:600;font-size:16px;color:#1d4ed8;text-decoration:none;padding:10px 12px 0}
.thumbs{display:flex;gap:6px;padding:10px 12px;align-items:center;background:#fafafa}
.thumbs img{image-rendering:pixelated;border-radius:4px}
.thumbs .src{width:90px;height:90px;object-fit:cover;background:#e5e7eb}
.thumbs .sheet{flex:1;min-width:0;height:90px;object-fit:contain;object-position:left}
.meta{padding:4px 12px 12px;font-size:13px}
.meta dl{display:grid;grid-template-columns:auto 1fr;gap:1px 10px;margin:6px 0 0}
.meta dt{color:#6b7280}.meta dd{margin:0;overflow-wrap:anywhere}
.tag{display:inline-block;font-size:11px;padding:1px 7px;border-radius:9px;background:#e0e7ff;color:#3730a3;margin-right:4px}
.damaged{background:#fee2e2;color:#991b1b;font-weight:600}
table{border-collapse:collapse;background:#fff;width:100%}
td,th{border-bottom:1px solid #e5e7eb;padding:5px 8px;text-align:left;vertical-align:top;overflow-wrap:anywhere}
th{color:#6b7280;font-weight:500;white-space:nowrap}
th.i{padding-left:28px}
section{margin:0 0 26px}h2{font-size:17px;margin:0 0 8px}
pre{background:#111827;color:#e5e7eb;padding:8px 10px;border-radius:6px;overflow-x:auto;margin:4px 0;white-space:pre-wrap}
.cmd{display:flex;gap:8px;align-items:flex-start}.cmd pre{flex:1}
button{font:inherit;font-size:12px;padding:4px 8px;cursor:pointer}
.sheets img{max-width:100%;image-rendering:pixelated;border:1px solid #e5e7eb;background:#fff;min-width:256px}
.images .card img{width:100%;height:auto;image-rendering:pixelated}
.empty{color:#6b7280}
"""

# The page works without it: the commands are plain text in <pre>.
COPY_JS = """
document.querySelectorAll('button[data-copy]').forEach(function(b){b.addEventListener('click',function(){
var t=document.getElementById(b.dataset.copy).textContent;
if(navigator.clipboard){navigator.clipboard.writeText(t).then(function(){b.textContent='copied';});}
else{var r=document.createRange();r.selectNodeContents(document.getElementById(b.dataset.copy));
var s=getSelection();s.removeAllRanges();s.addRange(r);document.execCommand('copy');b.textContent='copied';}});});
"""


def page_css() -> str:
    return CSS.lstrip()


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def url(path: str) -> str:
    return esc(quote(path))


def page(title: str, body: str, *, root: str = "", script: bool = False) -> str:
    nav = f'<a href="{root}index.html">entries</a> <a href="{root}images.html">images</a>'
    js = f"<script>{COPY_JS}</script>" if script else ""
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">'
        f'<title>{esc(title)}</title><link rel="stylesheet" href="{root}style.css"></head>'
        f"<body><header><h1>{esc(title)}</h1><nav>{nav}</nav></header><main>{body}</main>{js}</body></html>\n"
    )


def _dl(pairs: list[tuple[str, str]]) -> str:
    return "<dl>" + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in pairs) + "</dl>"


def card(entry: Any, images: dict[str, str], age: str) -> str:
    """One index card; ``images`` maps role (source, preview) to a site-relative path."""
    r = entry.record
    link = f"e/{entry.id}/index.html"
    thumbs = ""
    if "source" in images:
        thumbs += f'<img class="src" src="{url(images["source"])}" alt="source">'
    if "preview" in images:
        thumbs += f'<img class="sheet" src="{url(images["preview"])}" alt="content | style | combined">'
    if not thumbs:
        thumbs = '<span class="empty">no images</span>'
    imported = "imported" if r.get("imported") or r.get("kind") == "imported" else "trained"
    tags = f'<span class="tag">{esc(imported)}</span>'
    if entry.damaged:
        tags += f'<span class="tag damaged" title="{esc(entry.damaged)}">DAMAGED</span>'
    pairs = [
        ("subject", entry.subject or "-"),
        ("style", entry.style or "-"),
        ("base", short_base(r)),
        ("rank", setting(r, "rank", "settings")),
        ("steps", setting(r, "steps", "figures", "settings")),
        ("age", age),
    ]
    pairs += [(k, v) for k, v in scores(r).items()]
    return (
        f'<article class="card" data-entry="{esc(entry.id)}"><a class="title" href="{url(link)}">{esc(entry.name)}</a>'
        f'<div class="thumbs">{thumbs}</div><div class="meta">{tags}{_dl(pairs)}</div></article>'
    )


def index_page(cards: list[str], total: int, shown: int) -> str:
    count = f"{shown} entr{'y' if shown == 1 else 'ies'}" + (f" of {total}" if shown != total else "")
    grid = f'<div class="grid">{"".join(cards)}</div>' if cards else '<p class="empty">No entries.</p>'
    return page("unziplora gallery", f"<p>{esc(count)}</p>{grid}")


def commands(entry: Any) -> list[tuple[str, str]]:
    """The exact commands that use this entry."""
    q = shlex.quote(entry.id)
    return [
        ("compose", f"unzip compose 'on a beach' --content {q} --style {q}"),
        ("compose (subject only)", f"unzip compose 'on a beach' --content {q}"),
        ("restyle", f"unzip restyle --style {q} --subject 'a lighthouse'"),
        ("export", f"unzip export {q} --part both"),
        ("show", f"unzip show {q}"),
    ]


def entry_page(entry: Any, images: list[tuple[str, str]], files: list[tuple[str, int, str]]) -> str:
    """The ``show`` page; ``images`` are (label, site path relative to the site root)."""
    rows = []
    for key, value, indent in show_rows(entry):
        if indent:
            rows.append(f'<tr><th class="i">{esc(key)}</th><td>{esc(value)}</td></tr>')
        else:
            rows.append(f"<tr><th>{esc(key)}</th><td>{esc(value)}</td></tr>")
    body = [f'<section><h2>Fields</h2><table class="fields">{"".join(rows)}</table></section>']
    if images:
        sheets = "".join(
            f'<figure><figcaption>{esc(label)}</figcaption><img src="{url("../../" + p)}" alt="{esc(label)}"></figure>'
            for label, p in images
        )
        body.append(f'<section class="sheets"><h2>Preview and samples</h2>{sheets}</section>')
    file_rows = "".join(
        f"<tr><td>{esc(n)}</td><td>{esc(human_bytes(b))}</td><td><code>{esc(h)}</code></td></tr>" for n, b, h in files
    )
    body.append(
        f"<section><h2>Files</h2><table><tr><th>file</th><th>size</th><th>sha256</th></tr>{file_rows}</table></section>"
    )
    cmds = "".join(
        f'<div class="cmd"><pre id="cmd{i}">{esc(text)}</pre><button type="button" data-copy="cmd{i}">copy</button></div>'
        for i, (_, text) in enumerate(commands(entry))
    )
    body.append(f"<section><h2>Commands</h2>{cmds}</section>")
    return page(entry.name, "".join(body), root="../../", script=True)


def images_page(items: list[dict[str, Any]], folder: str | None, known: set[str]) -> str:
    """Generated images: ``items`` have ``src`` (site path), ``name`` and ``meta`` (the PNG record)."""
    if folder is None:
        return page(
            "generated images",
            '<p class="empty">No folder given; build with --images DIR to list generated images here.</p>',
        )
    cards = []
    for item in items:
        meta = item["meta"]
        prompts = meta.get("prompts") if isinstance(meta.get("prompts"), dict) else {}
        entries = meta.get("entries") if isinstance(meta.get("entries"), dict) else {}
        scales = meta.get("scales") if isinstance(meta.get("scales"), dict) else {}
        links = []
        for part in ("content", "style"):
            eid = entries.get(part)
            if eid:
                label = f"{part}: {eid} (scale {scales.get(part, 1.0)})"
                links.append(
                    f'<a href="{url(f"e/{eid}/index.html")}">{esc(label)}</a>' if str(eid) in known else esc(label)
                )
        pairs = [(k, str(v)) for k, v in prompts.items() if v]
        pairs += [
            (k, str(meta[k])) for k in ("seed", "steps", "sampler", "guidance", "negative") if meta.get(k) is not None
        ]
        cards.append(
            f'<article class="card" data-image="{esc(item["name"])}"><img src="{url(item["src"])}" alt="{esc(item["name"])}">'
            f'<div class="meta"><strong>{esc(item["name"])}</strong><br>{"<br>".join(links)}{_dl(pairs)}</div></article>'
        )
    grid = (
        f'<div class="grid images">{"".join(cards)}</div>'
        if cards
        else '<p class="empty">No images with unziplora records.</p>'
    )
    return page("generated images", f"<p>From {esc(folder)}: {len(items)} image(s).</p>{grid}")
