#!/usr/bin/env bash
# Set up everything on a fresh machine: system libraries for Qt/OpenGL under Xvfb (Debian/Ubuntu,
# when run as root), a virtual environment in .venv, torch, and the plugin with its test tools.
# A second run is quick: the editable install is redone only when setup.cfg or pyproject.toml changed
# (a stamp in .venv records their hash) or the package no longer imports.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v xvfb-run >/dev/null 2>&1 && [ -z "${DISPLAY:-}" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Xvfb, Mesa and Qt's X11 libraries (apt-get)…"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xvfb xauth libgl1-mesa-dri libegl1 \
      libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 \
      libxcb-xinerama0 libxcb-xinput0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 libdbus-1-3 >/dev/null
  else
    echo "warning: no display and no xvfb-run; install Xvfb (see README) to run the GUI headless" >&2
  fi
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
PY=.venv/bin/python
if ! "$PY" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('torch') is None)" 2>/dev/null; then
  # First, and pinned: an unpinned torch would pull a multi-GB CUDA build where a CPU wheel is at hand.
  "$PY" -m pip install -q torch==2.13.0
fi
STAMP=.venv/.napari-convnp-install
want="$(cat setup.cfg pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null)" = "$want" ] && "$PY" -c "import napari_convnp.scene" 2>/dev/null; then
  echo "napari-convnp is installed and up to date in .venv (setup.cfg and pyproject.toml unchanged)"
else
  "$PY" -m pip install -q -e ".[qt,testing]"
  echo "$want" > "$STAMP"
fi
