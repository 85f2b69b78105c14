"""Evaluation of a decomposition (issue 16): the scores, computed from image and text embeddings."""
