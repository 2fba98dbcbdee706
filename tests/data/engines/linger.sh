#!/bin/sh
# Finishes at once but leaves a background process that still holds stdout open.
sleep 30 &
printf '%s\n' "$!" > "$OUTPOST_FIXTURE_DIR/grandchild"
printf '%s\n' '{"type":"result","subtype":"success","is_error":false,"result":"finished","session_id":"sess-bg"}'
