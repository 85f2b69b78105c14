"""``unzip gallery`` through the real CLI: files on disk, escaping, incremental rebuild, atomic swap."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from gallery_helpers import HOSTILE, make_gallery_entry
from PIL import Image

from unziplora.generate.pngmeta import save_png
from unziplora.registry import Registry


@pytest.fixture
def reg(isolated_env: Path) -> Registry:
    return Registry(isolated_env)


def _build(cli, *args: str) -> dict:
    result = cli("gallery", "--json", *args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def test_site_files_and_fields(cli, reg: Registry, isolated_env: Path) -> None:
    a = make_gallery_entry(reg, "cat", "pencil sketch", samples=True, evaluation={"scores": {"content_dino": 0.31}})
    b = make_gallery_entry(reg, "rose", "pop art", kind="imported", imported=True)
    out = _build(cli)
    site = isolated_env / "gallery"  # the documented default: gallery/ inside the registry
    assert out["path"] == str(site) and out["entries"] == 2
    index = (site / "index.html").read_text()
    for e in (a, b):
        assert f'data-entry="{e.id}"' in index
        assert (site / "e" / e.id / "preview.png").read_bytes() == (e.path / "preview.png").read_bytes()
        assert (site / "e" / e.id / "source.png").is_file()
    assert "imported" in index and "trained" in index and "subject-fidelity" in index and "0.310" in index
    page = (site / "e" / a.id / "index.html").read_text()
    for needle in (
        "pencil sketch",
        "learning_rate",
        "final_loss",
        "sources",
        "content.safetensors",
        a.files["content.safetensors"]["sha256"],
        "previews/0002.png",
        f"unzip compose &#x27;on a beach&#x27; --content {a.id} --style {a.id}",
        f"unzip export {a.id}",
    ):
        assert needle in page, needle
    assert (site / "e" / a.id / "previews" / "0002.png").is_file()


def test_filter_and_output_option(cli, reg: Registry, tmp_path: Path) -> None:
    make_gallery_entry(reg, "cat", "pencil sketch")
    dog = make_gallery_entry(reg, "dog", "watercolor")
    out = _build(cli, "-o", str(tmp_path / "site"), "--filter", "water")
    assert out["entries"] == 1
    index = (tmp_path / "site" / "index.html").read_text()
    assert f'data-entry="{dog.id}"' in index and index.count('class="card"') == 1 and "1 entry of 2" in index


def test_hostile_text_is_escaped(cli, reg: Registry, tmp_path: Path) -> None:
    entry = make_gallery_entry(
        reg, "cat", "pencil sketch", prompts={"combined": HOSTILE, "content": "a", "style": "b"}, note=HOSTILE
    )
    images = tmp_path / "out"
    images.mkdir()
    save_png(
        Image.new("RGB", (8, 8), "red"),
        images / "x.png",
        {"prompts": {"prompt": HOSTILE}, "entries": {"content": entry.id}, "seed": 7},
    )
    _build(cli, "--images", str(images))
    site = reg.root / "gallery"
    for page in (site / "e" / entry.id / "index.html", site / "images.html"):
        html = page.read_text()
        assert "<script>document" not in html and "<b>bold" not in html
        assert "&lt;script&gt;document.title=&#x27;pwned&#x27;&lt;/script&gt; &quot;double&quot;" in html
    assert f'href="e/{entry.id}/index.html"' in (site / "images.html").read_text()


def test_rebuild_is_incremental(cli, reg: Registry) -> None:
    a = make_gallery_entry(reg, "cat", "pencil sketch")
    first = _build(cli)
    site = reg.root / "gallery"
    page, preview = site / "e" / a.id / "index.html", site / "e" / a.id / "preview.png"
    before = (page.stat().st_ino, page.stat().st_mtime_ns, preview.stat().st_ino)
    make_gallery_entry(reg, "dog", "watercolor")
    second = _build(cli)
    assert (page.stat().st_ino, page.stat().st_mtime_ns, preview.stat().st_ino) == before  # not rewritten
    # written now: the new entry's page, source, preview, and the index; the rest is linked.
    assert second["written"] == 4 and second["kept"] == first["written"] - 1
    assert _build(cli)["written"] <= 1  # at most the index (its ages) changes


def test_swap_is_atomic_and_failure_keeps_old_site(cli, reg: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    make_gallery_entry(reg, "cat", "pencil sketch")
    _build(cli)
    site = reg.root / "gallery"
    old_index = (site / "index.html").read_text()
    make_gallery_entry(reg, "dog", "watercolor")
    from unziplora.gallery import pages

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pages, "index_page", boom)
    assert cli("gallery").exit_code == 1
    assert (site / "index.html").read_text() == old_index  # the old site, whole
    assert sorted(p.name for p in reg.root.iterdir() if "gallery" in p.name) == [
        "gallery"
    ]  # no half-built sibling left


def test_refuses_to_replace_a_foreign_folder(cli, reg: Registry, tmp_path: Path) -> None:
    make_gallery_entry(reg)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "thesis.tex").write_text("keep me")
    result = cli("gallery", "-o", str(tmp_path / "docs"))
    assert result.exit_code == 1
    assert (
        result.stderr.strip()
        == f"error: gallery output {tmp_path / 'docs'} is a folder that is not a gallery; pick another -o DIR (it would be replaced)"
    )
    assert (tmp_path / "docs" / "thesis.tex").read_text() == "keep me"


def test_open_uses_webbrowser(cli, reg: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    import webbrowser

    make_gallery_entry(reg)
    opened = []
    monkeypatch.setattr(webbrowser, "open", lambda u: opened.append(u) or True)
    assert cli("gallery", "--open").exit_code == 0
    assert opened == [(reg.root / "gallery" / "index.html").as_uri()]


def test_gallery_imports_no_torch() -> None:
    code = "import sys, unziplora_cli.commands.gallery, unziplora.gallery.build; assert 'torch' not in sys.modules"
    subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the one-step exchange is Linux's renameat2")
def test_site_never_disappears_during_rebuilds(cli, reg: Registry) -> None:
    import threading

    make_gallery_entry(reg)
    _build(cli)
    index = reg.root / "gallery" / "index.html"
    missing, stop = [], threading.Event()

    def watch() -> None:
        while not stop.is_set():
            if not index.is_file():
                missing.append(1)

    watcher = threading.Thread(target=watch)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # let the watcher run between any two steps of the swap
    watcher.start()
    try:
        for _ in range(20):
            _build(cli)
    finally:
        stop.set()
        watcher.join()
        sys.setswitchinterval(interval)
    assert not missing
    assert index.read_text().count('class="card"') == 1


def test_damaged_entry_is_marked(cli, reg: Registry) -> None:
    entry = make_gallery_entry(reg)
    (entry.path / "style.safetensors").write_bytes(b"short")
    _build(cli)
    site = reg.root / "gallery"
    assert 'class="tag damaged"' in (site / "index.html").read_text()
    assert "DAMAGED: style.safetensors is truncated" in (site / "e" / entry.id / "index.html").read_text()
