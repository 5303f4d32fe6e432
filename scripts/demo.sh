#!/usr/bin/env bash
# Set up (first run only) and open napari with the gap-filling widget and a real Landsat 7 SLC-off scene.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec bash scripts/with_display.sh .venv/bin/python -m napari_convnp.demo "$@"
