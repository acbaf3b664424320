"""``python -m benchmarks.accuracy``: the benchmark's command line, and each run's worker process (``--worker JOB``).

:func:`benchmarks.report.run_worker` starts every run as ``python -m benchmarks.accuracy --worker JOB``, which lands
here too: :func:`~benchmarks.accuracy.cli.main` runs that one job instead of the benchmark.
"""

import sys

from benchmarks.accuracy.cli import main

if __name__ == "__main__":
    sys.exit(main())
