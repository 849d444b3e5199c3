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
    """Tests that step envs without a Trainer run numpy's BLAS as every btcli process does
    (runtime.configure_torch): on one thread, which a 2-core CI machine needs (see there)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):
        yield
