"""btcli: Behavior Transfer experiments from the command line."""

import os

# numpy's OpenBLAS threads spin-wait between calls and fight torch's OpenMP threads for the
# cores: on 2 cores an env's small frame-resize matmuls made every conv 5x slower. Our numpy
# work is small per call, so one BLAS thread is right. Must be set before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
