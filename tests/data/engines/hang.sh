#!/bin/sh
# Never finishes and leaves a grandchild behind: only killing the process group stops both.
# Writes both pids to $OUTPOST_FIXTURE_DIR, then says it is ready.
sleep 30 &
printf '%s\n' "$!" > "$OUTPOST_FIXTURE_DIR/grandchild"
printf '%s\n' "$$" > "$OUTPOST_FIXTURE_DIR/leader"
printf '%s\n' '{"type":"fixture_ready"}'
sleep 30
