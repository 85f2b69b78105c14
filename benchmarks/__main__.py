"""``python -m benchmarks [--size tiny|medium|sdxl] [--quick] [--json]``: see :mod:`benchmarks.run`."""

from benchmarks.run import main

if __name__ == "__main__":
    main()
