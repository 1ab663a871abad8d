#!/usr/bin/env bash
# The one install entry point (README, Makefile, CI and docker/Dockerfile all call it).
#
# Creates a virtual environment (VENV, default .venv) with torch 2.14.1 + torchvision 0.29.1,
# onedl-mmcv 2.3.6 compiled with its ops (C++20), the onedl-* toolboxes, panopticapi-lite and
# vitzoo itself (editable, with the test and deploy extras). The mmcv wheel is built once and cached in
# VITZOO_WHEEL_CACHE (default ~/.cache/vitzoo/wheels); later installs reuse it.
set -euo pipefail

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH_VERSION=2.14.1
TORCHVISION_VERSION=0.29.1
MMCV_VERSION=2.3.6
WHEEL_CACHE=${VITZOO_WHEEL_CACHE:-$HOME/.cache/vitzoo/wheels}
cd "$(dirname "$0")/.."

start=$(date +%s)
log() { echo "[install +$(( $(date +%s) - start ))s] $*"; }

# A full venv is 6.7 GB (measured with df), 5.5 GB of it torch's CUDA build; the 8 GB leave room for
# the test suite's temporary files. With less free, pip stops half way with "No space left on device"
# and leaves a venv without torch, so check before starting.
need_mb=${VITZOO_INSTALL_NEED_MB:-8000}
if ! { [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import torch" 2>/dev/null; }; then
    dir=$VENV
    until [ -d "$dir" ]; do dir=$(dirname "$dir"); done
    free_mb=$(( $(df -Pk "$dir" | awk 'NR == 2 {print $4}') / 1024 ))
    if [ "$free_mb" -lt "$need_mb" ]; then
        echo "[install] ERROR: $free_mb MB free on the file system of $dir; the venv $VENV needs about" \
            "$need_mb MB (torch's CUDA build alone is 5.5 GB). Free some space or set VENV to a" \
            "folder on a larger disk." >&2
        exit 1
    fi
fi

if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
# pip's own failures stop the install (its "WARNING: Location" lines are noise and are dropped).
quiet_pip() {
    if ! "$VENV/bin/python" -m pip "$1" --disable-pip-version-check -q "${@:2}" 2>&1 \
            | { grep -v "^WARNING: Location" || true; }; then
        echo "[install] ERROR: pip $* failed (its message is above)." >&2
        exit 1
    fi
}
pip_install() { quiet_pip install "$@"; }

pip_install --upgrade pip setuptools wheel
log "torch $TORCH_VERSION, torchvision $TORCHVISION_VERSION"
pip_install "torch==$TORCH_VERSION" "torchvision==$TORCHVISION_VERSION"

tag=$("$VENV/bin/python" -c "import sys, torch; print(f'torch{torch.__version__.split(\"+\")[0]}-cp{sys.version_info[0]}{sys.version_info[1]}')")
wheel_dir="$WHEEL_CACHE/$tag"
wheel=$(ls "$wheel_dir"/onedl_mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n 1 || true)
if [ -z "$wheel" ]; then
    log "building onedl-mmcv $MMCV_VERSION with its ops (C++20); this takes about 20 minutes on 2 cores"
    build=$(mktemp -d)
    quiet_pip download --no-deps --no-binary :all: "onedl-mmcv==$MMCV_VERSION" -d "$build"
    tar xzf "$build"/onedl_mmcv-"$MMCV_VERSION".tar.gz -C "$build"
    # torch >= 2.10 headers need C++20; onedl-mmcv's setup.py asks for C++14/17.
    sed -i -E 's/-std=c\+\+1[47]/-std=c++20/g' "$build/onedl_mmcv-$MMCV_VERSION/setup.py"
    mkdir -p "$wheel_dir"
    # --no-build-isolation: the build must see torch, or it silently skips the ops.
    "$VENV/bin/python" -m pip wheel --disable-pip-version-check --no-build-isolation --no-deps \
        -w "$build/wheel" "$build/onedl_mmcv-$MMCV_VERSION"
    mv "$build"/wheel/onedl_mmcv-*.whl "$wheel_dir/"
    rm -rf "$build"
    wheel=$(ls "$wheel_dir"/onedl_mmcv-"$MMCV_VERSION"-*.whl | head -n 1)
else
    log "reusing the cached $wheel"
fi
log "onedl-mmcv, the onedl-* toolboxes, panopticapi-lite, vitzoo"
pip_install "$wheel"
pip_install -r requirements/mminstall.txt
pip_install --no-deps -r requirements/optional.txt
pip_install -e ".[tests,deploy]"  # deploy: onnx, onnxscript, onnxruntime for the export tests

if ! "$VENV/bin/python" -c "import mmcv.ops; from mmcv.ops import nms, RoIAlign" 2>/dev/null; then
    echo "[install] ERROR: mmcv is installed without its compiled ops (import mmcv.ops fails)." >&2
    echo "[install] Remove $wheel and run tools/install.sh again." >&2
    exit 1
fi
"$VENV/bin/python" -c "import torch, mmcv, mmengine, mmpretrain, mmdet, mmseg, vitzoo; \
print('[install] ok: torch', torch.__version__, 'mmcv', mmcv.__version__, 'mmengine', mmengine.__version__, \
'mmpretrain', mmpretrain.__version__, 'mmdet', mmdet.__version__, 'mmseg', mmseg.__version__, 'vitzoo', vitzoo.__version__)"
log "done"
