#!/bin/sh
# Records how many runs overlap: each run holds a marker file in $OUTPOST_FIXTURE_DIR/running
# while it works, and appends the number of markers it sees to $OUTPOST_FIXTURE_DIR/seen.
cat >/dev/null
dir="$OUTPOST_FIXTURE_DIR"
mkdir -p "$dir/running"
touch "$dir/running/$$"
ls "$dir/running" | wc -l >> "$dir/seen"
sleep 0.2
ls "$dir/running" | wc -l >> "$dir/seen"
rm -f "$dir/running/$$"
printf '%s\n' '{"type":"result","subtype":"success","is_error":false,"result":"done","session_id":"overlap"}'
