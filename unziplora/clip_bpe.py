"""CLIP's byte-level BPE tokenizer files (``vocab.json`` + ``merges.txt``), written locally.

Both SDXL tokenizers (CLIP-L's and OpenCLIP bigG's) use the same vocabulary: 256 byte symbols,
the same 256 with the word-final ``</w>``, one symbol per merge (48,894 merges) and the two
special tokens, 49,408 in all. The vocabulary is a pure function of the merge list, so only the
merges are shipped (gzip, about 200 KB; see ``sdxl_config/LICENSE-clip-bpe.txt``) and
``vocab.json`` is rebuilt from them in CLIP's order. Light: no torch.
"""

from __future__ import annotations

import gzip
import json
from importlib.resources import files
from pathlib import Path

MERGES_FILE = "clip_bpe_merges.txt.gz"
START_OF_TEXT = "<|startoftext|>"
END_OF_TEXT = "<|endoftext|>"
# The number of merges CLIP's tokenizer takes from bpe_simple_vocab_16e6 (49152 - 256 - 2).
CLIP_MERGES = 48_894
CLIP_VOCAB_SIZE = 2 * 256 + CLIP_MERGES + 2


def byte_chars() -> list[str]:
    """The 256 printable stand-ins CLIP's byte-level BPE uses for the bytes 0..255, in CLIP's order."""
    printable = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


def shipped_merges() -> list[str]:
    """CLIP's merge rules (``"a b"`` per rule, in priority order) from the package data."""
    raw = (files("unziplora") / "sdxl_config" / MERGES_FILE).read_bytes()
    merges = gzip.decompress(raw).decode("utf-8").splitlines()
    if len(merges) != CLIP_MERGES:
        raise ValueError(f"{MERGES_FILE} holds {len(merges)} merges, expected {CLIP_MERGES}; the package is damaged")
    return merges


def vocabulary(merges: list[str]) -> dict[str, int]:
    """CLIP's token ids for ``merges``: bytes, word-final bytes, merged symbols, then the specials."""
    chars = byte_chars()
    symbols = chars + [c + "</w>" for c in chars] + [m.replace(" ", "") for m in merges]
    symbols += [START_OF_TEXT, END_OF_TEXT]
    return {symbol: i for i, symbol in enumerate(symbols)}


def write_tokenizer_files(folder: Path, merges: list[str]) -> None:
    """``vocab.json`` and ``merges.txt`` as transformers' ``CLIPTokenizer`` reads them."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocabulary(merges), ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(m + "\n" for m in merges), encoding="utf-8")
