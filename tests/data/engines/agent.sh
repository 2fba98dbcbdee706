#!/bin/sh
# A well-behaved stream-json agent with noise mixed in: reads the prompt from stdin, then emits
# init, a partial-message event, an unknown event type, lines that are not JSON, an assistant
# message with a text and a tool_use block, stderr noise, and a result.
prompt=$(cat)
printf '%s\n' '{"type":"system","subtype":"init","session_id":"sess-42","model":"fixture-model","tools":["Bash"]}'
printf '%s\n' '{"type":"stream_event","event":{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"you said"}},"session_id":"sess-42"}'
printf '%s\n' '{"type":"fixture_unknown","detail":{"kept":true}}'
printf '%s\n' 'this line is not json'
printf '%s\n' '{"type":"assistant","message":{"content":['
printf '{"type":"assistant","message":{"id":"msg-1","model":"fixture-model","role":"assistant","content":[{"type":"text","text":"you said: %s"},{"type":"tool_use","id":"tool-1","name":"Bash","input":{"command":"ls"}}],"usage":{"input_tokens":3,"output_tokens":4}},"session_id":"sess-42"}\n' "$prompt"
printf 'warning: fixture noise on stderr\n' >&2
printf '{"type":"result","subtype":"success","is_error":false,"result":"you said: %s","session_id":"sess-42","num_turns":2,"total_cost_usd":0.0123,"usage":{"input_tokens":30,"output_tokens":40,"cache_read_input_tokens":5}}\n' "$prompt"
