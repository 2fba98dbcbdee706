//! Each engine through the real chat route: command fixtures and an OpenAI-compatible server.

use crate::chat::assert_stream_shape;
use crate::support::*;
use outpost::config::{AgentConfig, EngineSpec};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn command_agent(
    name: &str,
    script: &str,
    dir: Option<&std::path::Path>,
    timeout: Duration,
) -> AgentConfig {
    AgentConfig {
        timeout,
        ..fixture_agent(name, script, dir, 4)
    }
}

#[tokio::test]
async fn command_engine_passes_events_through_and_keeps_one_result() {
    let server = TestServer::with(|c| {
        c.agents = vec![command_agent(
            "cli",
            "agent.sh",
            None,
            Duration::from_secs(30),
        )]
    })
    .await;
    let token = server.admin().await;
    let lines = server
        .post("/api/agents/cli/chat", &token, json!({"message": "ping"}))
        .await
        .lines();
    assert_stream_shape(&lines);
    let types: Vec<&str> = lines.iter().map(|l| l["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "system",
            "stream_event",
            "fixture_unknown",
            "assistant",
            "result"
        ]
    );
    let result = lines.last().unwrap();
    assert_eq!(result["subtype"], "success");
    assert_eq!(result["result"], "you said: ping");
    assert_eq!(result["total_cost_usd"], 0.0123);
    assert_ne!(
        result["session_id"], "sess-42",
        "Outpost's own session id, not the CLI's"
    );
    let execution_id = result["execution_id"].as_str().unwrap();
    let execution = server
        .get(
            &format!("/api/agents/cli/executions/{execution_id}"),
            &token,
        )
        .await
        .json();
    assert_eq!(execution["tool_calls"][0]["name"], "Bash");
    assert_eq!(execution["num_turns"], 2);
}

#[tokio::test]
async fn command_engine_resumes_the_cli_session_on_the_next_turn() {
    let server = TestServer::with(|c| {
        c.agents = vec![command_agent(
            "cli",
            "probe.sh",
            None,
            Duration::from_secs(30),
        )]
    })
    .await;
    let token = server.admin().await;
    let first = server
        .post("/api/agents/cli/chat", &token, json!({"message": "one"}))
        .await
        .lines();
    let probe = first.iter().find(|l| l["type"] == "probe").unwrap();
    assert_eq!(probe["args"], "[-p]");
    let second = server
        .post("/api/agents/cli/chat", &token, json!({"message": "two"}))
        .await
        .lines();
    let probe = second.iter().find(|l| l["type"] == "probe").unwrap();
    assert_eq!(probe["args"], "[-p][--resume][sess-next]");
    // A reset drops the CLI's conversation.
    let reset = server
        .call(
            hyper::Method::DELETE,
            "/api/agents/cli/chat/history",
            Some(&token),
            None,
        )
        .await;
    assert_eq!(reset.status, 200);
    let third = server
        .post("/api/agents/cli/chat", &token, json!({"message": "three"}))
        .await
        .lines();
    let probe = third.iter().find(|l| l["type"] == "probe").unwrap();
    assert_eq!(probe["args"], "[-p]");
}

#[tokio::test]
async fn command_engine_hang_past_the_timeout_fails_the_turn_and_kills_the_group() {
    let fixture_dir = tempfile::tempdir().unwrap();
    let server = TestServer::with(|c| {
        c.agents = vec![command_agent(
            "stuck",
            "hang.sh",
            Some(fixture_dir.path()),
            Duration::from_millis(700),
        )]
    })
    .await;
    let token = server.admin().await;
    let lines = server
        .post(
            "/api/agents/stuck/chat",
            &token,
            json!({"message": "hello?"}),
        )
        .await
        .lines();
    assert_stream_shape(&lines);
    let result = lines.last().unwrap();
    assert_eq!(result["subtype"], "error_timeout");
    assert_eq!(result["is_error"], true);
    let execution_id = result["execution_id"].as_str().unwrap();
    let execution = server
        .get(
            &format!("/api/agents/stuck/executions/{execution_id}"),
            &token,
        )
        .await
        .json();
    assert_eq!(execution["status"], "failed");
    assert_eq!(execution["error"], "timeout");
    assert_eq!(execution["failure"], "timeout");
    for who in ["leader", "grandchild"] {
        let pid = std::fs::read_to_string(fixture_dir.path().join(who)).unwrap();
        let proc_path = format!("/proc/{}/stat", pid.trim());
        eventually(Duration::from_secs(5), || async {
            // Gone, or a zombie awaiting its reaper: either way no longer running.
            let stat = std::fs::read_to_string(&proc_path).unwrap_or_default();
            (stat.is_empty() || stat.contains(") Z ")).then_some(())
        })
        .await;
    }
    // The stored messages say what happened.
    let session_id = result["session_id"].as_str().unwrap();
    let session = server
        .get(
            &format!("/api/agents/stuck/chat/sessions/{session_id}"),
            &token,
        )
        .await
        .json();
    assert_eq!(session["messages"][1]["status"], "failed");
}

#[tokio::test]
async fn command_engine_failure_keeps_stderr_in_the_execution() {
    let server = TestServer::with(|c| {
        c.agents = vec![command_agent(
            "broken",
            "fail.sh",
            None,
            Duration::from_secs(30),
        )]
    })
    .await;
    let token = server.admin().await;
    let lines = server
        .post("/api/agents/broken/chat", &token, json!({"message": "go"}))
        .await
        .lines();
    assert_stream_shape(&lines);
    assert_eq!(lines.last().unwrap()["subtype"], "error_during_execution");
    let execution_id = lines[0]["execution_id"].as_str().unwrap();
    let execution = server
        .get(
            &format!("/api/agents/broken/executions/{execution_id}"),
            &token,
        )
        .await
        .json();
    assert!(
        execution["error"]
            .as_str()
            .unwrap()
            .contains("fatal: no model configured"),
        "{execution}"
    );
}

/// An agent named `name` on the openai engine at `base_url`.
pub(crate) fn openai_agent(name: &str, base_url: String, model: &str) -> AgentConfig {
    AgentConfig {
        engine: EngineSpec::OpenAi {
            base_url,
            model: model.into(),
            api_key: None,
            system_prompt: None,
        },
        ..echo_agent(name, 0, 4)
    }
}

/// A small OpenAI-compatible server: answers every chat completion with an SSE stream that
/// repeats the last user message, and records the request bodies it got.
pub(crate) async fn fake_openai() -> (String, tokio::sync::mpsc::UnboundedReceiver<Value>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
    let (seen_tx, seen) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let seen_tx = seen_tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let body = loop {
                    let n = stream.read(&mut chunk).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length: usize = text[..end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap())
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + length {
                            break serde_json::from_slice::<Value>(&buf[end + 4..end + 4 + length])
                                .unwrap();
                        }
                    }
                };
                let said = body["messages"].as_array().unwrap().last().unwrap()["content"]
                    .as_str()
                    .unwrap()
                    .to_string();
                let _ = seen_tx.send(body);
                let mut events = String::new();
                for word in said.split(' ') {
                    let chunk = json!({"model": "tiny-model", "choices": [{"index": 0, "delta": {"content": format!("{word} ")}}]});
                    events.push_str(&format!("data: {chunk}\n\n"));
                }
                let usage = json!({"model": "tiny-model", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2}});
                events.push_str(&format!("data: {usage}\n\ndata: [DONE]\n\n"));
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    events.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(events.as_bytes()).await;
            });
        }
    });
    (base_url, seen)
}

#[tokio::test]
async fn openai_engine_streams_deltas_and_sends_the_session_history() {
    let (base_url, mut seen) = fake_openai().await;
    let server = TestServer::with(|c| {
        c.agents = vec![AgentConfig {
            engine: EngineSpec::OpenAi {
                base_url,
                model: "tiny-model".into(),
                api_key: None,
                system_prompt: Some("be brief".into()),
            },
            ..echo_agent("llm", 0, 4)
        }]
    })
    .await;
    let token = server.admin().await;
    let lines = server
        .post(
            "/api/agents/llm/chat",
            &token,
            json!({"message": "hello model"}),
        )
        .await
        .lines();
    assert_stream_shape(&lines);
    assert_eq!(lines[0]["model"], "tiny-model");
    let deltas: String = lines
        .iter()
        .filter(|l| l["type"] == "stream_event")
        .map(|l| l["event"]["delta"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(deltas, "hello model ");
    let assistant = lines.iter().find(|l| l["type"] == "assistant").unwrap();
    assert_eq!(assistant["message"]["content"][0]["text"], "hello model ");
    let result = lines.last().unwrap();
    assert_eq!(result["usage"]["input_tokens"], 7);
    assert_eq!(result["usage"]["output_tokens"], 2);
    let first = seen.recv().await.unwrap();
    assert_eq!(first["stream"], true);
    assert_eq!(
        first["messages"][0],
        json!({"role": "system", "content": "be brief"})
    );

    server
        .post("/api/agents/llm/chat", &token, json!({"message": "again"}))
        .await;
    let second = seen.recv().await.unwrap();
    let roles: Vec<&str> = second["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
    assert_eq!(second["messages"][1]["content"], "hello model");
}

#[tokio::test]
async fn openai_engine_unreachable_is_503_for_a_document() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let base_url = format!("http://127.0.0.1:{port}/v1");
    let server = TestServer::with(|c| c.agents = vec![openai_agent("llm", base_url, "m")]).await;
    let token = server.admin().await;
    let reply = server
        .chat_json("llm", &token, json!({"message": "anyone?"}))
        .await;
    reply.assert_error(503, "engine_unavailable");
    assert!(reply.header("retry-after").is_some());
    // The user message is kept, with the failed reply.
    let session_id = reply.json()["session_id"].as_str().unwrap().to_string();
    let session = server
        .get(
            &format!("/api/agents/llm/chat/sessions/{session_id}"),
            &token,
        )
        .await
        .json();
    assert_eq!(session["messages"][0]["content"], "anyone?");
    assert_eq!(session["messages"][1]["status"], "failed");
    let execution_id = reply.json()["execution_id"].as_str().unwrap().to_string();
    let execution = server
        .get(
            &format!("/api/agents/llm/executions/{execution_id}"),
            &token,
        )
        .await
        .json();
    assert_eq!(execution["failure"], "engine_unavailable");
    assert!(execution["error"]
        .as_str()
        .unwrap()
        .starts_with("engine unavailable"));
}
