#!/bin/sh
# Reports how it was started: each argument in brackets, one environment variable and the
# working directory; then finishes with a new session id.
cat >/dev/null
joined=""
for arg in "$@"; do
    joined="$joined[$arg]"
done
printf '{"type":"probe","args":"%s","env":"%s","cwd":"%s"}\n' "$joined" "$OUTPOST_FIXTURE_VALUE" "$(pwd)"
printf '%s\n' '{"type":"result","subtype":"success","is_error":false,"result":"probed","session_id":"sess-next"}'
