#!/bin/sh
# A CLI that keeps its own conversation: answers with the session it resumed (or "none")
# and the prompt, then finishes with a session id named after the prompt's first word.
prompt=$(cat)
resumed="none"
if [ "$2" = "--resume" ]; then
    resumed="$3"
fi
word=${prompt%% *}
printf '{"type":"result","subtype":"success","is_error":false,"result":"resumed %s: %s","session_id":"sess-%s"}\n' "$resumed" "$prompt" "$word"
