#!/usr/bin/env bash
# Set up (first run only) and open napari with the gap-filling widget and a real Landsat 7 SLC-off scene.
# Without a display, napari would run invisibly: say so, and offer --screenshot (saves a picture, exits).
set -euo pipefail
cd "$(dirname "$0")/.."

screenshot=""
for arg in "$@"; do
  case "$arg" in
    --screenshot|--screenshot=*) screenshot=yes ;;
    -h|--help) screenshot=yes ;;  # help needs no display either
  esac
done
if [ -z "${DISPLAY:-}" ] && [ -z "${WAYLAND_DISPLAY:-}" ] && [ -z "$screenshot" ]; then
  cat >&2 <<'MSG'
demo.sh: there is no display (DISPLAY and WAYLAND_DISPLAY are unset), so napari would run in a virtual
screen nobody can see. Either
  * save a picture of the viewer instead, under Xvfb (installed by scripts/setup.sh when run as root):
        bash scripts/demo.sh --screenshot demo.png [--sample sf_bay] [--steps simulate,run,grid]
  * or run it where there is a screen: a desktop session, `ssh -X` (X forwarding), or a VNC server on an
    Xvfb display (e.g. `Xvfb :1 & x11vnc -display :1`, then `DISPLAY=:1 bash scripts/demo.sh`).
MSG
  exit 2
fi
bash scripts/setup.sh
exec bash scripts/with_display.sh .venv/bin/python -m napari_convnp.demo "$@"
