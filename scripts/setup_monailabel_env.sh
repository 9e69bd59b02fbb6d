#!/usr/bin/env bash
# Build (or bring up to date) a separate virtual environment with MONAI Label 0.8.5 and this plugin, CPU torch kept.
#
#   bash scripts/setup_monailabel_env.sh [VENV]      # default VENV: .venv-monailabel in the repository root
#   VENV/bin/python -m pytest -m monailabel          # the MONAI Label tests
#   VENV/bin/monailabel start_server ...             # MONAI Label itself (see bundles/la/docs/README.md)
#
# Why not `pip install monailabel`: its requirements pull torchvision, whose PyPI build replaces torch 2.13.0+cpu by a
# multi-GB CUDA torch 2.14 and downgrades numpy to 1.x (pydicom-seg pins numpy<2). So this script installs, in order:
#   1. torch==2.13.0 (the CPU wheel; install the build you need first if you have a GPU),
#   2. this plugin with its own requirements and the test extra (pip install -e ".[test]"),
#   3. monailabel==0.8.5, torchvision==0.28.0 (torch 2.13's release) and pydicom-seg==0.4.1 without their dependencies,
#   4. the packages MONAI Label's server, bundle app and bundle tasks import (scripts/monailabel_env/requirements.txt),
#      with torch and numpy held at the versions of steps 1-2,
#   5. scripts/monailabel_env/torchvision_without_ops.py, loaded at start-up by a .pth file, so that torchvision
#      imports although its CUDA-built operators cannot load beside CPU torch (read that file for the details),
# then checks that the MONAI Label modules import and that torch and numpy were not replaced.
# Running it again only checks and fills in what is missing (pip skips what is installed).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
VENV=${1:-.venv-monailabel}
HERE="$REPO/scripts/monailabel_env"
start=$(date +%s)
step() { echo "[setup_monailabel_env $(( $(date +%s) - start ))s] $*"; }
# pip, quiet; the resolver's notes that monailabel's left-out requirements are missing are expected and not shown
pip_q() {
    local out status=0
    out=$("$VENV/bin/python" -m pip install -q "$@" 2>&1) || status=$?
    echo "$out" | grep -v -e "^WARNING: Location" -e "^monailabel 0.8.5 requires" -e "^pydicom-seg 0.4.1 requires" \
        -e "^ERROR: pip's dependency resolver does not" -e "^$" || true
    return $status
}

if [ ! -x "$VENV/bin/python" ]; then
    step "creating the virtual environment $VENV"
    python3 -m venv "$VENV"
else
    step "using the existing virtual environment $VENV"
fi
step "1/5 torch==2.13.0 (CPU build)"
pip_q torch==2.13.0
step "2/5 this plugin and its requirements: pip install -e \".[test]\""
pip_q -e "$REPO[test]"
pins="$VENV/monailabel-pins.txt"
"$VENV/bin/python" -c "import numpy, torch; print(f'torch=={torch.__version__}'); print(f'numpy=={numpy.__version__}')" > "$pins"
step "holding $(tr '\n' ' ' < "$pins")"
step "3/5 monailabel==0.8.5 torchvision==0.28.0 pydicom-seg==0.4.1, without their dependencies"
pip_q --no-deps monailabel==0.8.5 torchvision==0.28.0 pydicom-seg==0.4.1
step "4/5 MONAI Label's run-time packages (scripts/monailabel_env/requirements.txt)"
pip_q -c "$pins" -r "$HERE/requirements.txt"
step "5/5 torchvision without its compiled operators (scripts/monailabel_env/torchvision_without_ops.py)"
site=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
cp "$HERE/torchvision_without_ops.py" "$site/_semiseg_torchvision_without_ops.py"
echo "import _semiseg_torchvision_without_ops" > "$site/semiseg_torchvision_without_ops.pth"

step "checking the environment"
"$VENV/bin/python" - "$pins" <<'EOF'
import sys
import warnings

warnings.simplefilter("ignore")
import monailabel
import monailabel.app  # the server (FastAPI app, endpoints, datastores)
import monailabel.main  # the `monailabel` command
import numpy
import torch
from monailabel.tasks.infer.bundle import BundleInferTask  # noqa: F401
from monailabel.tasks.train.bundle import BundleTrainTask  # noqa: F401

import semiseg

pins = dict(line.strip().split("==") for line in open(sys.argv[1]) if line.strip())
found = {"torch": torch.__version__, "numpy": numpy.__version__}
if found != pins:
    sys.exit(f"torch/numpy were replaced: expected {pins}, found {found}")
print(f"monailabel {monailabel.__version__}, torch {torch.__version__}, numpy {numpy.__version__}, semiseg from {semiseg.__file__}")
EOF
step "done: $VENV ($(du -sh "$VENV" | cut -f1)); run the tests with: $VENV/bin/python -m pytest -m monailabel"
