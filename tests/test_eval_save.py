"""A saved evaluation without models: fabricated scores written with save_evaluation, then read by list and the gallery."""

from __future__ import annotations

import json
import math

from PIL import Image

from tests.registry_helpers import make_entry
from tests.test_registry_cli import reg  # noqa: F401 - the registry fixture
from unziplora.eval.run import Evaluation, ProbeImage
from unziplora.eval.save import save_evaluation
from unziplora.registry import Registry

RUN = {"seed": 0, "num": 1, "steps": 1, "probes": 2, "clip": "c", "dino": "d"}


def _evaluate(registry: Registry, entry_id: str, subject: float, leak: float) -> None:
    scores = {"content_dino": subject, "style_clip_i": 0.5, "style_leak_into_content": leak, "recon_dino": math.nan}
    images = [
        ProbeImage("content", "a cat", 0, Image.new("RGB", (64, 64)), {"content_dino": subject}),
        ProbeImage("style", "a boat", 1000, Image.new("RGB", (64, 64)), {"style_clip_i": 0.5}),
    ]
    save_evaluation(registry, Evaluation(entry_id, scores, images), RUN)


def test_list_sorts_and_shows_saved_scores(cli, reg: Registry) -> None:  # noqa: F811
    low, high, plain = (make_entry(reg, s, "ink").id for s in ("cat", "dog", "owl"))
    _evaluate(reg, low, 0.2, 0.3)
    _evaluate(reg, high, 0.9, -0.1)
    by_subject = cli("list", "--sort", "subject-fidelity", "-q")
    assert by_subject.stdout.split() == [high, low, plain]  # best first, the unevaluated entry last
    assert cli("list", "--sort", "leakage", "-q").stdout.split() == [high, low, plain]  # lowest leak first
    assert cli("list", "--sort", "subject-fidelity", "--reverse", "-q").stdout.split() == [low, high, plain]
    table = cli("list", "--sort", "subject-fidelity").stdout.splitlines()
    assert table[0].split()[-3:] == ["SUBJECT-FIDELITY", "STYLE-FIDELITY", "LEAKAGE"]
    assert table[1].split()[-3:] == ["0.900", "0.500", "-0.100"] and table[3].split()[-3:] == ["-", "-", "-"]
    records = {r["id"]: r for r in json.loads(cli("list", "--json").stdout)}
    assert records[high]["evaluation"]["scores"]["content_dino"] == 0.9
    assert records[high]["evaluation"]["scores"]["recon_dino"] is None  # NaN is stored as null
    assert "evaluation" not in records[plain]
    assert set(records[high]["files"]) >= {"eval.json", "eval.png"}
    with Image.open(reg.get(high).path / "eval.png") as sheet:  # two probes, one image each: 2 rows of 256 px
        strip = 21 + 2 * 4 + 1 * (21 + 2)  # two label lines: the probe, then its one score
        assert sheet.size == (256 + 2 * 4, 2 * (256 + strip) + 3 * 4)
    shown = cli("show", high, "--verify")
    assert shown.exit_code == 0 and "verify:      OK (6 files, " in shown.stdout
    assert "evaluation:  seed 0, num 1, steps 1, probes 2, clip c, dino d, created " in shown.stdout
    assert "\n  content_dino: 0.9\n" in shown.stdout and "\n  recon_dino:  -\n" in shown.stdout
    from unziplora.gallery.fields import scores

    assert scores(reg.get(high).record) == {"subject-fidelity": "0.900", "style-fidelity": "0.500", "leakage": "-0.100"}
    assert "SUBJECT-FIDELITY" not in cli("list", "--filter", "owl").stdout  # no column when nothing listed has scores


def test_update_refuses_a_damaged_entry_and_bad_names(reg: Registry) -> None:  # noqa: F811
    import pytest

    from unziplora.errors import DamagedEntryError, RegistryError

    entry = make_entry(reg, "cat", "ink")
    with pytest.raises(RegistryError, match="not a file name an entry update may write"):
        reg.add_files(entry.id, {"entry.json": b"{}"}, {})
    (entry.path / "content.safetensors").write_bytes(b"x")
    with pytest.raises(DamagedEntryError, match="content.safetensors is truncated"):
        _evaluate(reg, entry.id, 0.5, 0.0)
    assert "eval.json" not in json.loads((entry.path / "entry.json").read_text())["files"]


UPDATER = r"""
import sys
from unziplora.registry import Registry
Registry.from_settings().add_files(sys.argv[1], {"eval.json": sys.argv[2].encode()}, {"evaluation": {"scores": {}}})
"""


def test_killed_update_leaves_entry_json_as_it_was(cli, reg: Registry) -> None:  # noqa: F811
    import os
    import subprocess
    import sys

    from tests.test_registry_crash import _kill_at

    entry = make_entry(reg, "cat", "ink")
    before = (entry.path / "entry.json").read_bytes()
    env = {k: v for k, v in os.environ.items() if k != "UNZIPLORA_TEST_PAUSE"} | {
        "UNZIPLORA_TEST_PAUSE": "update-payload"
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", UPDATER, entry.id, "new"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _kill_at(proc, "update-payload")  # eval.json renamed into place, entry.json not yet rewritten
    assert (entry.path / "entry.json").read_bytes() == before  # never a half-written or stale-merged entry.json
    assert not [p.name for p in entry.path.iterdir() if p.name.startswith(".")]  # no temporary file left
    assert cli("show", entry.id, "--verify").exit_code == 0  # the unrecorded eval.json is not part of the entry
    reg.add_files(entry.id, {"eval.json": b"again"}, {})  # the lock died with the writer
    assert (entry.path / "eval.json").read_bytes() == b"again" and cli("show", entry.id, "--verify").exit_code == 0


def test_sheet_captions_show_what_tells_the_probes_apart() -> None:
    from unziplora.eval.save import probe_caption

    assert probe_caption("style", "a lighthouse in pencil sketch style") == "style: a lighthouse"
    assert probe_caption("content", "A monadikos cat on a beach") == "content: …cat on a beach"
    assert probe_caption("combined", "A monadikos cat in the snow in sketch style").endswith("in the snow")
