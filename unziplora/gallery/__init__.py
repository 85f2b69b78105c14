"""``unzip gallery``: the registry as a static, self-contained site (light: no torch).

::

    from unziplora.gallery import build_gallery
    report = build_gallery(registry.list(), Path("site"), images_dir=Path("out"))

Pages: :mod:`.pages`; building, incremental reuse and the atomic swap: :mod:`.build`;
generated images found by their PNG text chunks: :mod:`.images`.
"""

from __future__ import annotations

from unziplora.gallery.build import BuildReport, build_gallery, default_output

__all__ = ["BuildReport", "build_gallery", "default_output"]
