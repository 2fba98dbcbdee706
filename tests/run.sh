#!/usr/bin/env bash
# The test command: installs what the tests need on a fresh Debian machine, then runs them.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v cc >/dev/null || need+=(build-essential)
command -v curl >/dev/null || need+=(curl)
# The service tests: systemd-analyze and systemd-socket-activate; mDNS runs in a network
# namespace made with ip (iproute2); the packaging tests parse scripts with sh.
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v systemd-socket-activate >/dev/null || need+=(systemd)
command -v ip >/dev/null || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update && apt-get install -y "${need[@]}"
  else
    sudo apt-get update && sudo apt-get install -y "${need[@]}"
  fi
fi

cargo test "$@"
