#!/usr/bin/env bash
# Set up btcli in ./.venv and (unless --install-only) run the quick-start job.
#   bash scripts/setup.sh                 # install, then train + report a small MiniGrid run
#   bash scripts/setup.sh --install-only  # install only (what CI does)
#
# Torch. With an NVIDIA GPU: the default index's build (CUDA on Linux). Without one: the CPU
# build from PyTorch's CPU wheel index (about 190 MB instead of several GB of CUDA libraries);
# where that index cannot be reached, the default index, and the script says which it used
# (and warns if that brought a CUDA build). An existing torch in the venv is kept.
#
# Environment (all optional):
#   BTCLI_TORCH_INDEX  wheel index URL to take torch from (overrides the choice above)
#   BTCLI_CPU_INDEX    where PyTorch's CPU index is (a mirror; default https://download.pytorch.org/whl/cpu)
#   BTCLI_CONSTRAINTS  pip constraints files, space-separated (default: constraints/ci.txt, the
#                      torch version CI tests; empty: the newest versions the package allows)
#   BTCLI_EXTRAS       extras of btcli to install (default: test; CI uses test,ray)
#   BTCLI_VENV         the virtual environment to make or update (default: .venv)
#   PYTHON             the interpreter that makes it (default: python3)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${BTCLI_VENV:-.venv}
EXTRAS=${BTCLI_EXTRAS-test}
CONSTRAINTS=${BTCLI_CONSTRAINTS-constraints/ci.txt}
CPU_INDEX=${BTCLI_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
install_only=0
[ "${1:-}" = "--install-only" ] && install_only=1

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PY=$VENV/bin/python
$PY -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true

pin=()
for file in $CONSTRAINTS; do
  [ -f "$file" ] || { echo "setup: error: constraints file '$file' not found; fix BTCLI_CONSTRAINTS" >&2; exit 2; }
  pin+=(-c "$file")
done

# True when an index answers (PyPI's simple API: <index>/torch/) within 15 s.
reachable() {
  $PY - "$1" <<'EOF' >/dev/null 2>&1
import os, ssl, sys, urllib.request
ca = next((os.environ[k] for k in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE") if os.environ.get(k)), None)
ctx = ssl.create_default_context(cafile=ca)
urllib.request.urlopen(sys.argv[1].rstrip("/") + "/torch/", timeout=15, context=ctx).read(1)
EOF
}

# pip install torch, keeping pip's report of what it downloaded ($report).
report=$(mktemp)
trap 'rm -f "$report"' EXIT
install_torch() {
  $PY -m pip install --quiet --report "$report" "${pin[@]}" "$@" torch
}

# One line: the wheel pip took torch from, and its size.
describe_download() {
  $PY - "$report" <<'EOF'
import json, os, sys, urllib.parse, urllib.request
try:
    items = json.load(open(sys.argv[1])).get("install", [])
except (OSError, ValueError):
    items = []
torch = next((i for i in items if i.get("metadata", {}).get("name", "").lower() == "torch"), None)
if torch is None:
    print("setup: torch was already installed")
    sys.exit()
url = torch.get("download_info", {}).get("url", "")
size = None
parsed = urllib.parse.urlparse(url)
if parsed.scheme == "file":
    size = os.path.getsize(urllib.parse.unquote(parsed.path))
else:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=15) as r:
            size = int(r.headers["Content-Length"])
    except Exception:
        pass
name = urllib.parse.unquote(os.path.basename(parsed.path))
where = "a local file" if parsed.scheme == "file" else parsed.netloc
others = sum(1 for i in items if i.get("metadata", {}).get("name", "").lower().startswith("nvidia-"))
extra = f", plus {others} nvidia-* CUDA packages" if others else ""
print(f"setup: torch wheel {name} from {where}, "
      + (f"{size / 1e6:.1f} MB download" if size else "download size unknown") + extra)
EOF
}

if ! $PY -c "import torch" >/dev/null 2>&1; then
  if [ -n "${BTCLI_TORCH_INDEX:-}" ]; then
    echo "setup: installing torch from BTCLI_TORCH_INDEX=$BTCLI_TORCH_INDEX"
    install_torch --index-url "$BTCLI_TORCH_INDEX"
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: NVIDIA GPU found; installing torch from the default index (CUDA build)"
    install_torch
  elif reachable "$CPU_INDEX" && install_torch --index-url "$CPU_INDEX"; then
    echo "setup: no NVIDIA GPU; installed the CPU build of torch from PyTorch's CPU index ($CPU_INDEX)"
  else
    echo "setup: no NVIDIA GPU, and PyTorch's CPU index ($CPU_INDEX) cannot be reached; installing torch from the default index"
    install_torch
  fi
  describe_download
  if ! $PY -c "import sys, torch; sys.exit(torch.version.cuda is not None and not torch.cuda.is_available())" 2>/dev/null; then
    echo "setup: warning: this is a CUDA build of torch on a machine without a usable GPU (several GB); for the" \
         "CPU build, remove $VENV and rerun with BTCLI_TORCH_INDEX=$CPU_INDEX or another index serving it" >&2
  fi
fi
$PY -m pip install --quiet "${pin[@]}" -e ".${EXTRAS:+[$EXTRAS]}"
$PY -c "import torch, btcli; print(f'setup: btcli {btcli.__version__}, torch {torch.__version__} '
        f'({\"CUDA \" + torch.version.cuda if torch.version.cuda else \"CPU\"} build), cuda available: {torch.cuda.is_available()}')"

if [ "$install_only" = 1 ]; then
  exit 0
fi
# The quick-start job: DQN from scratch on a small MiniGrid task, then its report.
out=runs/quickstart-scratch-s0
if [ -e "$out/summary.json" ]; then
  echo "setup: $out already complete; reporting it"
else
  resume=()
  [ -e "$out/config.yaml" ] && resume=(--resume)
  "$VENV/bin/btcli" transfer --config experiments/quickstart.yaml --out "$out" "${resume[@]}"
fi
"$VENV/bin/btcli" report "$out"
