#!/usr/bin/env bash
# CI job: btcli on the lowest gymnasium, ale-py and minigrid that pyproject.toml allows
# (constraints/lowest.txt, with CI's torch), in a second virtual environment, running the tests
# that exercise those libraries: the environment contract of every backend, exact resumes
# (which pickle MiniGrid and ALE states) and a short transfer end to end. About 2 minutes after
# a one-time install.
#   bash scripts/check_lowest.sh            # makes or reuses .venv-lowest
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${BTCLI_LOWEST_VENV:-.venv-lowest}
BTCLI_VENV=$venv BTCLI_EXTRAS=test BTCLI_CONSTRAINTS="constraints/ci.txt constraints/lowest.txt" \
  bash scripts/setup.sh --install-only
# The pins must be what got installed (a venv reused from an older pin would test something else).
"$venv/bin/python" - <<'PY'
import re, sys
from importlib.metadata import version
bad = []
for line in open("constraints/lowest.txt"):
    m = re.match(r"\s*([A-Za-z0-9_.-]+)==(\S+)", line)
    if m and version(m[1]) != m[2]:
        bad.append(f"{m[1]} {version(m[1])} (pinned {m[2]})")
if bad:
    sys.exit("check_lowest: error: installed " + ", ".join(bad) + "; remove the venv and rerun")
print("check_lowest: " + ", ".join(f"{n} {version(n)}" for n in ("gymnasium", "ale-py", "minigrid", "torch")))
PY
"$venv/bin/python" -m pytest -p no:cacheprovider tests/test_envs.py tests/test_lowest_versions.py \
  "tests/test_training.py::test_minigrid_resume_with_replay_is_exact" \
  "tests/test_training.py::test_atari_gym_backend_resume_with_replay_is_exact" \
  "tests/test_transfer.py::test_bt_flies_the_frozen_pretrained_policy_and_logs_it"
