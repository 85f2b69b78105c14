"""The project's benchmarks: ``python -m benchmarks`` runs them all and prints one table.

Every row measures our code and a reference side in the same run, alternating and repeated,
and reports medians; the ratio is always ours / reference. The modules also run on their own
(``python benchmarks/bench_lora_wrapper.py``, ``python -m benchmarks.bench_train``, ...).
Nothing here is installed with the package.
"""
