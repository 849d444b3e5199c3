import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def run_btcli(*args: str, timeout: float = 300, check: bool = False) -> subprocess.CompletedProcess:
    """Run the CLI in a fresh process, as a user's shell script would."""
    env = dict(os.environ, PYTHONPATH=str(REPO), COLUMNS="200")
    proc = subprocess.run([sys.executable, "-m", "btcli", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)
    if check and proc.returncode != 0:
        raise AssertionError(f"btcli {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


@pytest.fixture
def btcli():
    return run_btcli


@pytest.fixture(autouse=True, scope="session")
def _numpy_blas_on_one_thread():
    """The test process runs as every btcli training process does (btcli.process.configure_process,
    which the Trainer no longer calls itself): numpy's BLAS on one thread, which a 2-core CI
    machine needs (see runtime.configure_torch), torch on the one thread the tests' configs ask
    for, malloc tuned."""
    import torch
    from threadpoolctl import threadpool_limits

    from btcli.runtime import tune_malloc

    tune_malloc()
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1, user_api="blas"):
        yield
    torch.set_num_threads(before)
