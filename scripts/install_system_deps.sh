#!/usr/bin/env bash
# System packages napari needs to render headless (Xvfb, xcb, OpenGL via Mesa). Debian/Ubuntu.
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends xvfb xauth libxcb-icccm4 libxcb-image0 libxcb-keysyms1 \
  libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 \
  libxkbcommon-x11-0 libdbus-1-3 libfontconfig1 libgl1 libegl1 libglib2.0-0 >/dev/null
