#!/usr/bin/env bash
# Set up (first run only) and run the whole test suite, GUI tests included (headless under Xvfb).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec bash scripts/with_display.sh .venv/bin/python -m pytest "$@"
