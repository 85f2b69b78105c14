"""The gallery in a real headless Chromium from file://: cards, loaded images, links, escaping, a screenshot.

Chromium runs as a plain subprocess (``--dump-dom`` / ``--screenshot``): a copy of each page gets
a small script that records what the browser rendered into the DOM, which ``--dump-dom`` prints.
CI installs Debian's ``chromium`` (see .ci/run).
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from gallery_helpers import HOSTILE, make_gallery_entry
from PIL import Image

from unziplora.generate.pngmeta import save_png
from unziplora.registry import Registry

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")

PROBE = """<script>window.addEventListener('load', function () {
  var r = {title: document.title,
    cards: Array.from(document.querySelectorAll('[data-entry]')).map(function (c) { return c.dataset.entry; }),
    images: Array.from(document.images).map(function (i) { return {src: i.src, w: i.naturalWidth, done: i.complete}; }),
    links: Array.from(document.querySelectorAll('a[href]')).map(function (a) { return a.href; }),
    text: document.body.innerText};
  var p = document.createElement('pre'); p.id = 'probe'; p.textContent = JSON.stringify(r); document.body.appendChild(p);
});</script>"""


def _chromium(tmp_path: Path, *args: str) -> str:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=5000",
    ]
    done = subprocess.run([CHROMIUM, *flags, *args], check=False, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _rendered(page: Path, tmp_path: Path) -> dict:
    """What Chromium rendered for ``page``: probed from a copy beside it (same relative links)."""
    probe = page.with_name("probe-" + page.name)
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    dom = _chromium(tmp_path, "--dump-dom", probe.as_uri())
    probe.unlink()
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.DOTALL)
    assert found, dom[-2000:]
    return json.loads(html.unescape(found.group(1)))


def _check_links(result: dict) -> None:
    for link in result["links"]:
        url = urlparse(link)
        assert url.scheme == "file", link
        assert Path(unquote(url.path)).is_file(), f"broken link {link}"


def test_gallery_in_chromium(cli, isolated_env: Path, tmp_path: Path) -> None:
    reg = Registry(isolated_env)
    cat = make_gallery_entry(
        reg,
        "cat",
        "pencil sketch",
        samples=True,
        prompts={"combined": HOSTILE, "content": "a sks cat", "style": "in pencil sketch style"},
    )
    rose = make_gallery_entry(reg, "rose", "pop art", color=(30, 160, 90))
    made = tmp_path / "made"
    made.mkdir()
    save_png(
        Image.new("RGB", (24, 16), (250, 200, 0)),
        made / "beach.png",
        {
            "prompts": {"prompt": HOSTILE},
            "entries": {"content": cat.id, "style": rose.id},
            "scales": {"content": 1.0, "style": 0.8},
            "seed": 3,
        },
    )
    assert cli("gallery", "--images", str(made)).exit_code == 0
    site = isolated_env / "gallery"

    index = _rendered(site / "index.html", tmp_path)
    assert sorted(index["cards"]) == sorted([cat.id, rose.id])
    assert len(index["images"]) == 4  # a source thumbnail and a preview sheet per card
    assert all(i["done"] and i["w"] > 0 for i in index["images"]), index["images"]
    _check_links(index)

    page = _rendered(site / "e" / cat.id / "index.html", tmp_path)
    assert page["title"] != "pwned" and HOSTILE in page["text"]  # the prompt is shown as text, not run
    assert len(page["images"]) == 2 and all(i["w"] > 0 for i in page["images"])
    _check_links(page)

    generated = _rendered(site / "images.html", tmp_path)
    assert (
        [i["w"] for i in generated["images"]] == [24] and HOSTILE in generated["text"] and generated["title"] != "pwned"
    )
    assert f"style: {rose.id} (scale 0.8)" in generated["text"] and "seed" in generated["text"]
    _check_links(generated)

    shot = tmp_path / "index.png"
    _chromium(
        tmp_path, f"--screenshot={shot}", "--window-size=1100,520", "--hide-scrollbars", (site / "index.html").as_uri()
    )
    with Image.open(shot) as img:
        colours = img.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 50  # not a blank page
