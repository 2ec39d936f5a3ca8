#!/usr/bin/env bash
# System libraries Kibotos needs besides Python packages, installed once per machine:
#   libosmesa6  offscreen OpenGL for Genesis playback renders on machines without EGL/GPU
#   chromium    headless screenshots of report pages (`kibotos report --html` tests)
# Run by `make install` (and so by `make demo` / `make test`). Needs root or sudo when a
# library is missing; does nothing when everything is present.
set -euo pipefail
missing=()
ldconfig -p 2>/dev/null | grep -q 'libOSMesa\.so' || missing+=(libosmesa6)
command -v chromium >/dev/null || command -v chromium-browser >/dev/null || missing+=(chromium)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "system_deps: please install ${missing[*]} (no apt-get here)" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
echo "system_deps: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
