#!/usr/bin/env bash
# Run a command with a display: the real one if there is one, else a virtual one (Xvfb + Mesa).
if [ -n "${DISPLAY:-}" ] || ! command -v xvfb-run >/dev/null 2>&1; then
  exec "$@"
fi
exec xvfb-run -a -s "-screen 0 1600x1000x24" "$@"
