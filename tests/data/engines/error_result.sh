#!/bin/sh
# Reports an error in its result event and exits with 1, as Claude Code does.
printf 'retrying after 429\n' >&2
printf '%s\n' '{"type":"result","subtype":"error_during_execution","is_error":true,"result":"rate limited","session_id":"sess-err"}'
exit 1
