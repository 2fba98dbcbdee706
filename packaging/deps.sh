#!/usr/bin/env bash
# Installs the system packages that building Outpost needs on a fresh Debian machine:
# a C toolchain, and cmake for libopus (built from source by the opus crate).
set -euo pipefail
need=()
command -v cc >/dev/null || need+=(build-essential)
command -v cmake >/dev/null || need+=(cmake)
command -v pkg-config >/dev/null || need+=(pkg-config)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update && apt-get install -y "${need[@]}"
  else
    sudo apt-get update && sudo apt-get install -y "${need[@]}"
  fi
fi
