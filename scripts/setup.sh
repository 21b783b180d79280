#!/usr/bin/env bash
# Create ./.venv with CPU-only PyTorch 2.13.0 and pointgeo; safe to re-run.
#   bash scripts/setup.sh        pointgeo with its fast optional backends (extra "fast")
#   bash scripts/setup.sh dev    the same plus the test tools (extra "dev")
#
# torch is installed first and pinned through constraints-cpu.txt, so nothing later can swap it for a CUDA
# build. Where pip is configured with a find-links folder that holds the torch 2.13.0 CPU wheel, that wheel is
# used; elsewhere torch comes from PyTorch's CPU wheel index (override with TORCH_INDEX_URL).
# INSTALLER=pip uses plain pip instead of uv (slower, same result).
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-fast}"
VENV="${VENV:-.venv}"
INSTALLER="${INSTALLER:-uv}"
TORCH_INDEX_URL="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}"
# System libraries Open3D needs (libusb to import it; a Vulkan loader and Mesa's lavapipe for offscreen rendering).
SYSTEM_PKGS=(libusb-1.0-0 libvulkan1 mesa-vulkan-drivers)
missing=()
for pkg in "${SYSTEM_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "note: install the system packages ${missing[*]} (Debian/Ubuntu names) for Open3D's viewer and snapshots" >&2
  fi
fi
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
PY="$VENV/bin/python"

links="${PIP_FIND_LINKS:-$(python3 -m pip config get global.find-links 2>/dev/null || true)}"
TORCH_SRC=(--index-url "$TORCH_INDEX_URL")
for dir in $links; do
  if compgen -G "$dir/torch-2.13.0+cpu-*.whl" >/dev/null; then TORCH_SRC=(--find-links "$dir"); break; fi
done

if [ "$INSTALLER" = uv ]; then
  "$PY" -m pip install -q uv
  UV=("$VENV/bin/uv" pip install -q --compile-bytecode --python "$PY")
  "${UV[@]}" "${TORCH_SRC[@]}" torch==2.13.0
  "${UV[@]}" -c constraints-cpu.txt -e ".[$EXTRAS]"
else
  "$PY" -m pip install -q "${TORCH_SRC[@]}" torch==2.13.0
  "$PY" -m pip install -q -c constraints-cpu.txt -e ".[$EXTRAS]"
fi
"$PY" - <<'PY'
import importlib.metadata as md
import torch
cuda = sorted(d.metadata["Name"] for d in md.distributions()
              if d.metadata["Name"].lower().startswith(("nvidia-", "cuda-")))
print("setup ok: torch", torch.__version__, "| CUDA packages:", cuda or "none")
PY
