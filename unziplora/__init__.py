"""unziplora: split one image into a content LoRA and a style LoRA on SDXL (UnZipLoRA).

This package is the library: everything a notebook needs (train, load an entry, generate,
export) is a plain function here. It imports nothing heavy at import time; torch, diffusers and
transformers load inside the functions that need them.
"""

__version__ = "0.1.0"
