"""One module per command group; each exposes ``register(app)``. All must stay light at import."""
