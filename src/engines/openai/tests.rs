//! OpenAI engine tests against a hand-written HTTP/1.1 server on 127.0.0.1 that records the
//! request and answers with byte pieces written one by one.

use super::*;
use crate::engines::{HistoryMessage, Usage};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// How long a test waits for something that should happen at once.
const BOUND: Duration = Duration::from_secs(10);

/// What the fake server received.
#[derive(Debug)]
struct Received {
    /// Request line and headers, headers lowercased.
    head: String,
    body: Value,
}

/// Serves one connection: reads a request, writes `pieces` one write each, then (when
/// `linger`) waits for the client to close. Returns the address and what it received.
async fn serve_once(pieces: Vec<Vec<u8>>, linger: bool) -> (SocketAddr, JoinHandle<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        stream.set_nodelay(true).unwrap();
        let received = read_request(&mut stream).await;
        for piece in pieces {
            stream.write_all(&piece).await.unwrap();
            stream.flush().await.unwrap();
            tokio::task::yield_now().await;
        }
        if linger {
            let mut rest = [0u8; 1024];
            while matches!(stream.read(&mut rest).await, Ok(n) if n > 0) {}
        }
        received
    });
    (addr, server)
}

async fn read_request(stream: &mut TcpStream) -> Received {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = bytes.windows(4).position(|window| window == b"\r\n\r\n") {
            break end + 4;
        }
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the client closed before sending a request");
        bytes.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(bytes[..head_end].to_vec())
        .unwrap()
        .to_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map_or(0, |value| value.trim().parse().unwrap());
    while bytes.len() < head_end + length {
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the client closed in the middle of its request");
        bytes.extend_from_slice(&chunk[..n]);
    }
    let body = serde_json::from_slice(&bytes[head_end..head_end + length]).unwrap();
    Received { head, body }
}

/// A `200` event-stream response in chunked encoding, one HTTP chunk per piece.
fn event_stream(pieces: &[&[u8]]) -> Vec<Vec<u8>> {
    let head =
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
    let mut framed = vec![head.as_bytes().to_vec()];
    for piece in pieces {
        framed.push([format!("{:x}\r\n", piece.len()).as_bytes(), piece, b"\r\n"].concat());
    }
    framed.push(b"0\r\n\r\n".to_vec());
    framed
}

/// A complete response with a fixed length.
fn whole(status: &str, content_type: &str, body: &str) -> Vec<Vec<u8>> {
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    vec![head.into_bytes(), body.as_bytes().to_vec()]
}

fn engine(addr: SocketAddr, api_key: Option<&str>, system_prompt: Option<&str>) -> OpenAi {
    OpenAi::new(
        EngineSpec::OpenAi {
            base_url: format!("http://{addr}/v1/"),
            model: "configured-model".into(),
            api_key: api_key.map(str::to_string),
            system_prompt: system_prompt.map(str::to_string),
        },
        OutboundPolicy::Any,
    )
}

/// Runs one turn to its end (within [`BOUND`]) and returns its result and every event sent.
async fn run(engine: &OpenAi, turn: Turn) -> (Result<Outcome, Error>, Vec<Value>) {
    let (sink, mut rx) = EventSink::channel();
    let result = timeout(BOUND, engine.run(turn, sink))
        .await
        .expect("the turn ends");
    let mut events = Vec::new();
    while let Ok(event) = rx.try_recv() {
        events.push(event);
    }
    (result, events)
}

fn deltas(events: &[Value]) -> Vec<&str> {
    let deltas = events
        .iter()
        .filter(|event| event["type"] == "stream_event");
    deltas
        .map(|event| event["event"]["delta"]["text"].as_str().unwrap())
        .collect()
}

const STREAM: &str = concat!(
    ": keep-alive\n\n",
    "data: {\"id\":\"c1\",\"model\":\"served-model\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
    "data: {\"id\":\"c1\",\"model\":\"served-model\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Bonjour\"}}]}\n\n",
    "data: not json at all\n\n",
    "data: {\"id\":\"c1\",\"model\":\"served-model\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\", café\"}}]}\r\n\r\n",
    "data: {\"id\":\"c1\",\"model\":\"served-model\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
    "data: {\"id\":\"c1\",\"model\":\"served-model\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3}}\n\n",
    "data: [DONE]\n\n",
);

#[tokio::test]
async fn streams_deltas_then_the_whole_message() {
    // Seven-byte pieces split lines, JSON and the two bytes of "é" across writes.
    let pieces: Vec<&[u8]> = STREAM.as_bytes().chunks(7).collect();
    let (addr, server) = serve_once(event_stream(&pieces), false).await;
    let turn = Turn {
        prompt: "and now?".into(),
        history: vec![
            HistoryMessage {
                role: "user".into(),
                content: "hello".into(),
            },
            HistoryMessage {
                role: "assistant".into(),
                content: "hi".into(),
            },
        ],
        model: Some("chosen-model".into()),
        ..Turn::default()
    };
    let (result, events) = run(&engine(addr, Some("sk-test"), Some("be brief")), turn).await;
    let outcome = result.unwrap();

    let received = timeout(BOUND, server).await.unwrap().unwrap();
    assert!(
        received
            .head
            .starts_with("post /v1/chat/completions http/1.1\r\n"),
        "{}",
        received.head
    );
    assert!(
        received
            .head
            .contains("\r\nauthorization: bearer sk-test\r\n"),
        "{}",
        received.head
    );
    assert_eq!(
        received.body,
        json!({
            "model": "chosen-model",
            "stream": true,
            "stream_options": {"include_usage": true},
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "hello"},
                {"role": "assistant", "content": "hi"},
                {"role": "user", "content": "and now?"},
            ],
        })
    );

    assert_eq!(deltas(&events), ["Bonjour", ", café"]);
    let last = events.last().unwrap();
    assert_eq!(last["type"], "assistant");
    assert_eq!(last["message"]["content"][0]["text"], "Bonjour, café");
    assert_eq!(last["message"]["model"], "served-model");
    assert_eq!(last["message"]["usage"]["input_tokens"], 12);

    assert_eq!(outcome.text, "Bonjour, café");
    assert_eq!(
        (outcome.usage.input_tokens, outcome.usage.output_tokens),
        (12, 3)
    );
    assert_eq!((outcome.num_turns, outcome.cost_usd), (1, 0.0));
    assert_eq!(outcome.model.as_deref(), Some("served-model"));
}

#[tokio::test]
async fn a_server_that_does_not_stream_still_answers() {
    let body = r#"{"choices":[{"message":{"role":"assistant","content":"whole"}}]}"#;
    let (addr, server) = serve_once(whole("200 OK", "application/json", body), false).await;
    let (result, events) = run(
        &engine(addr, None, None),
        Turn {
            prompt: "hi".into(),
            ..Turn::default()
        },
    )
    .await;

    let received = timeout(BOUND, server).await.unwrap().unwrap();
    assert!(
        !received.head.contains("authorization"),
        "{}",
        received.head
    );
    assert_eq!(received.body["model"], "configured-model");
    assert_eq!(
        received.body["messages"],
        json!([{"role": "user", "content": "hi"}])
    );

    let outcome = result.unwrap();
    assert_eq!(
        (outcome.text.as_str(), outcome.model.as_deref()),
        ("whole", Some("configured-model"))
    );
    assert_eq!(deltas(&events), ["whole"]);
    assert_eq!(outcome.usage, Usage::default());
}

#[tokio::test]
async fn an_error_status_fails_without_the_servers_body() {
    let body = r#"{"error":{"message":"model not loaded"}}"#;
    let response = whole("500 Internal Server Error", "application/json", body);
    let (addr, _server) = serve_once(response, false).await;
    match run(&engine(addr, None, None), Turn::default()).await.0 {
        Err(Error::Failed { message, detail }) => {
            assert_eq!(message, "upstream answered 500 Internal Server Error");
            assert_eq!(detail, "");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test]
async fn an_error_chunk_fails_the_turn() {
    let pieces: [&[u8]; 1] = [b"data: {\"error\":{\"message\":\"out of memory\"}}\n\n"];
    let (addr, _server) = serve_once(event_stream(&pieces), false).await;
    match run(&engine(addr, None, None), Turn::default()).await.0 {
        Err(Error::Failed { message, detail }) => {
            assert_eq!(message, "the server reported an error");
            assert_eq!(detail, "");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[tokio::test]
async fn a_refused_connection_is_unavailable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    match run(&engine(addr, None, None), Turn::default()).await.0 {
        Err(Error::Unavailable(message)) => {
            assert!(message.contains("cannot connect"), "{message}")
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn a_user_engine_does_not_connect_to_a_private_address() {
    let (addr, server) = serve_once(event_stream(&[STREAM.as_bytes()]), false).await;
    let public_only = OutboundPolicy::Public(Default::default());
    for base_url in [
        format!("http://{addr}/v1"),
        format!("http://localhost:{}/v1", addr.port()),
    ] {
        let engine = OpenAi::new(
            EngineSpec::OpenAi {
                base_url: base_url.clone(),
                model: "m".into(),
                api_key: None,
                system_prompt: None,
            },
            public_only.clone(),
        );
        match run(&engine, Turn::default()).await.0 {
            Err(Error::Unavailable(message)) => {
                assert!(message.contains("private address"), "{base_url}: {message}")
            }
            other => panic!("{base_url}: expected a refusal, got {other:?}"),
        }
    }
    assert!(!server.is_finished(), "nothing reached the server");
}

#[tokio::test]
async fn only_plain_http_base_urls_are_served() {
    let check = |base_url: &str, expected: &str| {
        let engine = OpenAi::new(
            EngineSpec::OpenAi {
                base_url: base_url.into(),
                model: "m".into(),
                api_key: None,
                system_prompt: None,
            },
            OutboundPolicy::Any,
        );
        match &engine.settings {
            Ok(settings) => assert_eq!(settings.endpoint.to_string(), expected, "{base_url}"),
            Err(reason) => assert_eq!(reason, expected, "{base_url}"),
        }
    };
    check(
        "http://127.0.0.1:8080/v1",
        "http://127.0.0.1:8080/v1/chat/completions",
    );
    check(
        "http://127.0.0.1:11434/v1/",
        "http://127.0.0.1:11434/v1/chat/completions",
    );
    check(
        "https://api.example.com/v1",
        "https://api.example.com/v1/chat/completions",
    );
    check(
        "ftp://127.0.0.1/v1",
        "base_url must be an http:// or https:// URL: ftp://127.0.0.1/v1",
    );
    check(
        "127.0.0.1:8080",
        "invalid base_url 127.0.0.1:8080: invalid format",
    );

    let engine = OpenAi::new(
        EngineSpec::OpenAi {
            base_url: "ftp://127.0.0.1/v1".into(),
            model: "m".into(),
            api_key: None,
            system_prompt: None,
        },
        OutboundPolicy::Any,
    );
    assert!(matches!(
        run(&engine, Turn::default()).await.0,
        Err(Error::Unavailable(_))
    ));
}

#[tokio::test]
async fn dropping_the_turn_closes_the_connection() {
    // The stream starts and never ends; the server waits for the client to go away.
    let head =
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
    let first = b"data: {\"choices\":[{\"delta\":{\"content\":\"thinking\"}}]}\n\n";
    let pieces = vec![
        head.as_bytes().to_vec(),
        [format!("{:x}\r\n", first.len()).as_bytes(), first, b"\r\n"].concat(),
    ];
    let (addr, server) = serve_once(pieces, true).await;
    let engine = engine(addr, None, None);
    let (sink, mut rx) = EventSink::channel();
    let mut turn = engine.run(Turn::default(), sink);
    let first_event = timeout(BOUND, async {
        tokio::select! {
            result = &mut turn => panic!("the endless stream ended: {result:?}"),
            event = rx.recv() => event,
        }
    });
    let first_event = first_event.await.expect("the first delta arrives").unwrap();
    assert_eq!(first_event["event"]["delta"]["text"], "thinking");

    drop(turn);
    let closed = timeout(BOUND, server).await;
    assert!(
        closed.is_ok(),
        "the connection stayed open after the turn was dropped"
    );
}
