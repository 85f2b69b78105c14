"""Training: one or more images in, a content/style registry entry out (ALGORITHM.md 3-6).

Light at import: heavy modules load inside the functions that run training.
"""

from unziplora.train.config import TrainConfig

__all__ = ["TrainConfig"]
