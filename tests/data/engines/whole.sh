#!/bin/sh
# An agent that does not stream: one assistant message with the whole reply, then a result.
cat > /dev/null
printf '%s\n' '{"type":"assistant","message":{"role":"assistant","content":[{"type":"text","text":"The whole reply. In two sentences."}]}}'
printf '%s\n' '{"type":"result","subtype":"success","is_error":false,"result":"The whole reply. In two sentences.","num_turns":1,"total_cost_usd":0.0}'
