#!/usr/bin/env bash
# One-time setup: Debian packages Open3D needs for headless rendering, the virtual environment .venv at the repo
# root, the exact torch that works on this machine (CPU build), then this package with its dev and viz extras.
# Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
VENV=.venv
APT_PKGS="libusb-1.0-0 libgl1 libegl1 libgomp1 libvulkan1 mesa-vulkan-drivers"

missing_apt=""
for p in $APT_PKGS; do
  dpkg -s "$p" >/dev/null 2>&1 || missing_apt="$missing_apt $p"
done
if [ -n "$missing_apt" ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "[setup] installing Debian packages:$missing_apt"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing_apt
  else
    echo "[setup] warning: apt-get not found; Open3D rendering may need:$missing_apt" >&2
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
# torch first, pinned: on this machine pip resolves it to the CPU wheel on disk. GPU users who install the
# package into their own environment keep their torch (setup.py asks only for torch>=2.1).
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "[setup] installing torch==${TORCH_VERSION:-2.13.0}"
  "$PY" -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
fi
# The exact Open3D build verified headless here; setup.py itself only asks for a loose range.
if [ "$(uname -m)" = "x86_64" ] && ! "$PY" -c "import open3d" >/dev/null 2>&1; then
  "$PY" -m pip install -q "open3d-cpu==0.20.0" || echo "[setup] warning: open3d-cpu not installed; rendering tests will fail" >&2
fi
echo "[setup] installing pointclora[dev,viz]"
# Hold torch at the version installed above: the dev extra's timm needs torchvision, whose newest release would
# otherwise make pip replace this CPU torch with another (CUDA) build.
TORCH_NOW=$("$PY" -c "import torch; print(torch.__version__.split('+')[0])")
"$PY" -m pip install -q -e ".[dev,viz]" "torch==$TORCH_NOW"
"$PY" -c "import pointclora, torch; print(f'[setup] pointclora {pointclora.__version__}, torch {torch.__version__}')"
