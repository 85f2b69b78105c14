"""Crash safety and concurrency, with real processes.

A writer is SIGKILLed while it hangs at a named point (``UNZIPLORA_TEST_PAUSE``) of creating or
removing an entry; ``unzip list`` must then show exactly the entries from before (or after) that
operation, never a partial one, and the next writer must clean up and carry on.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from registry_helpers import make_entry

from unziplora.registry import Registry

WRITER = r"""
import os, sys
from unziplora.registry import Registry
reg = Registry.from_settings()
if sys.argv[1] == "create":
    with reg.new_entry(subject=sys.argv[2], style="crash test") as st:
        for name in ("content.safetensors", "style.safetensors", "masks.safetensors", "source.png"):
            st.path(name).write_bytes(os.urandom(200_000))
        st.record = {"settings": {"rank": 4}, "figures": {"steps": 1}}
    print(st.id, flush=True)
else:
    reg.remove(sys.argv[2:])
"""


def _spawn(args: list[str], pause: str | None) -> subprocess.Popen[str]:
    env = dict(os.environ)
    env.pop("UNZIPLORA_TEST_PAUSE", None)
    if pause:
        env["UNZIPLORA_TEST_PAUSE"] = pause
    return subprocess.Popen(
        [sys.executable, "-c", WRITER, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _kill_at(proc: subprocess.Popen[str], point: str, timeout: float = 30.0) -> None:
    """Wait until the writer announces ``point``, then SIGKILL it."""
    deadline = time.monotonic() + timeout
    seen = ""
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 0.1)
        if ready:
            line = proc.stderr.readline()
            if not line:
                break
            seen += line
            if line.strip() == f"unziplora-test-pause: {point}":
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
                assert proc.returncode == -signal.SIGKILL
                return
    proc.kill()
    pytest.fail(f"writer never reached {point!r}: {seen}")


def _listed(cli) -> list[str]:
    result = cli("list", "-q")
    assert result.exit_code == 0 and "damaged" not in result.stderr, result.stderr
    return result.stdout.split()


@pytest.fixture
def reg(isolated_env: Path) -> Registry:
    registry = Registry.from_settings()
    make_entry(registry, "before", "one")
    make_entry(registry, "before", "two")
    return registry


@pytest.mark.parametrize(
    ("point", "appears"),
    [
        ("staged", False),
        ("after-payload", False),
        ("before-commit", False),
        ("commit-locked", False),
        ("after-commit", True),
    ],
)
def test_create_killed_leaves_before_or_after(cli, reg: Registry, point: str, appears: bool) -> None:
    before = _listed(cli)
    _kill_at(_spawn(["create", "victim"], point), point)
    after = _listed(cli)
    new = sorted(set(after) - set(before))
    assert set(before) <= set(after) and len(new) == (1 if appears else 0)
    if appears:
        assert new[0].startswith("victim-crash-test-") and reg.get(new[0]).verify() == []
    # The next writer is not blocked by the dead one's lock, and sweeps its staging folder.
    survivor = make_entry(reg, "next", "writer")
    assert not list(reg.tmp_dir.iterdir())
    assert sorted(_listed(cli)) == sorted(after + [survivor.id])
    assert all(e.damaged is None for e in reg.list())


@pytest.mark.parametrize(("point", "removed"), [("rm-locked", False), ("rm-after-rename", True)])
def test_remove_killed_leaves_before_or_after(cli, reg: Registry, point: str, removed: bool) -> None:
    before = _listed(cli)
    victim = before[0]
    _kill_at(_spawn(["remove", victim], point), point)
    after = _listed(cli)
    assert after == ([i for i in before if i != victim] if removed else before)
    make_entry(reg, "next", "writer")  # sweeps .trash
    assert not list(reg.trash_dir.iterdir()) and not list(reg.tmp_dir.iterdir())


def test_killed_writer_seen_by_a_real_unzip_list(reg: Registry) -> None:
    before = sorted(e.id for e in reg.list())
    _kill_at(_spawn(["create", "victim"], "before-commit"), "before-commit")
    unzip = str(Path(sys.executable).with_name("unzip"))
    out = subprocess.run([unzip, "list", "-q"], capture_output=True, text=True, env=os.environ.copy(), check=True)
    assert sorted(out.stdout.split()) == before and out.stderr == ""


def test_eight_concurrent_writers(cli, reg: Registry) -> None:
    before = set(_listed(cli))
    procs = [_spawn(["create", "same"], None) for _ in range(8)]  # same subject: ids collide unless locked
    outputs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    made = {out.strip() for out, _ in outputs}
    assert len(made) == 8
    assert set(_listed(cli)) == before | made
    assert all(reg.get(i).verify() == [] for i in made)
    assert not list(reg.tmp_dir.iterdir())


def test_readers_during_writes_and_removals_never_see_damage(reg: Registry, tmp_path: Path) -> None:
    """A reader racing writers and removers sees each entry whole or not at all (never 'missing' payloads)."""
    stop = tmp_path / "stop"
    reader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import pathlib, sys\n"
                "from unziplora.registry import Registry\n"
                "reg = Registry.from_settings()\n"
                "stop, rounds = pathlib.Path(sys.argv[1]), 0\n"
                "print('ready', flush=True)\n"
                "while not stop.exists():\n"
                "    bad = [(e.id, e.damaged) for e in reg.list() if e.damaged]\n"
                "    assert not bad, bad\n"
                "    rounds += 1\n"
                "print(rounds)\n"
            ),
            str(stop),
        ],
        env=os.environ.copy(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert reader.stdout is not None and reader.stdout.readline() == "ready\n"
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline and reader.poll() is None:
        reg.remove([make_entry(reg, "race", "x").id for _ in range(3)])
    stop.touch()
    out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, err
    assert int(out) > 3  # the reader really listed while entries came and went
