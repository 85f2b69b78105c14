"""LoRA file formats: kohya/A1111/ComfyUI, diffusers/PEFT, and the official UnZipLoRA output.

Everything here is a pure function over state dicts (``{key: tensor}``) plus two file helpers
(:mod:`unziplora.formats.io`); the CLI's ``unzip export`` / ``unzip import`` are thin wrappers.
Our internal naming is diffusers/PEFT: ``unet.<module>.lora_A.weight`` ``[r, in]`` and
``unet.<module>.lora_B.weight`` ``[out, r]``, scale 1 (see FORMATS.md in the design notes).

Submodules:

* :mod:`.sgm` — diffusers <-> SGM names and kohya key stems (light, no torch);
* :mod:`.metadata` — ``LoraInfo`` and the ss_* / modelspec.* / unziplora.* header keys (light);
* :mod:`.combine` — exact sums, merge folding, rank reduction;
* :mod:`.kohya` — to/from kohya files, kohya's hashes;
* :mod:`.peft` — to diffusers, format detection, reading PEFT and legacy diffusers keys;
* :mod:`.official` — locating and reading an official UnZipLoRA training output;
* :mod:`.io` — atomic safetensors writes, reads.

This ``__init__`` imports nothing, so ``import unziplora.formats`` stays free of torch;
torch and safetensors.torch are imported inside the functions that need them.
"""
