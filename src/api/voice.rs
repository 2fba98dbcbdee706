//! Voice routes: `voice/start`, `voice/stop`, `voice/status`, and the socket
//! `voice/ws`, whose refusals (401/403/404) come before the handshake. After the 101 the
//! socket only moves frames between the client and the call's channels.

use super::{caller_with_scope, Query};
use crate::app::App;
use crate::body::{self, Body, Response};
use crate::error::{ApiError, ApiResult};
use crate::voice::wire::{Inbound, Outbound};
use crate::voice::{StartRequest, TICKET_TTL};
use fastwebsockets::{Frame, OpCode, Payload, WebSocketError};
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

/// Largest frame a client may send: one Opus packet, or a small JSON message.
const MAX_FRAME_BYTES: usize = 16 * 1024;
/// The socket's write timeout when voice is off (no call can run then anyway).
const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the socket waits for the client's close frame after sending its own.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// The voice test page; it loads nothing from elsewhere.
const PAGE: &str = include_str!("voice_page.html");
/// Its own inline script and style, and this origin (HTTP and the socket), nothing else.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
    style-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// `GET /voice`: the test page. It needs no token; everything it does does.
pub fn page() -> ApiResult {
    Ok(body::page(PAGE, PAGE_POLICY))
}

/// `POST /api/agents/{name}/voice/start`
pub async fn start_voice(app: &App, request: Request<Incoming>, name: &str) -> ApiResult {
    let caller = caller_with_scope(app, &request, "voice")?;
    let agent = app.agents().visible(&caller, name)?;
    let start: StartRequest = body::read_json(request, app.config().max_body_bytes).await?;
    let started = app.voice().start(&caller, agent, start).await?;
    let ticket = &started.ticket;
    Ok(body::json(
        StatusCode::CREATED,
        &json!({
            "voice_session_id": started.voice_session_id,
            "chat_session_id": started.chat_session_id,
            "websocket_url": format!("/api/agents/{name}/voice/ws?ticket={ticket}"),
            "ticket": ticket,
            "ticket_expires_in": TICKET_TTL.as_secs(),
            "audio": {"codec": "opus", "sample_rate": started.sample_rate, "channels": 1, "frame_ms": 20},
            "max_duration_s": started.max_duration_s,
        }),
    ))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StopBody {
    voice_session_id: String,
}

/// `POST /api/agents/{name}/voice/stop`
pub async fn stop_voice(app: &App, request: Request<Incoming>, name: &str) -> ApiResult {
    let caller = caller_with_scope(app, &request, "voice")?;
    let agent = app.agents().visible(&caller, name)?;
    let stop: StopBody = body::read_json(request, app.config().max_body_bytes).await?;
    let summary = app
        .voice()
        .stop(&caller, &agent, &stop.voice_session_id)
        .await?;
    Ok(body::json(StatusCode::OK, &summary))
}

/// `GET /api/agents/{name}/voice/status`
pub async fn voice_status(app: &App, request: &Request<Incoming>, name: &str) -> ApiResult {
    let caller = caller_with_scope(app, request, "voice")?;
    let agent = app.agents().visible(&caller, name)?;
    let voice = app.voice();
    let reason = voice.unavailable(&agent).await;
    let config = voice.config();
    let stt = config.and_then(|c| c.stt.as_ref());
    let tts = config.and_then(|c| c.tts.as_ref());
    let (stt_ready, tts_described) = tokio::join!(voice.describe(stt), voice.describe(tts));
    let stt = json!({"kind": stt.map(|e| e.kind()), "ready": stt_ready.is_some()});
    let tts = json!({
        "kind": tts.map(|e| e.kind()),
        "ready": tts_described.is_some(),
        "voices": tts_described.unwrap_or_default(),
    });
    let mut status = json!({
        "enabled": config.is_some() && agent.config.voice,
        "available": reason.is_none(),
        "mode": config.map(|c| if c.mode == crate::config::VoiceMode::Echo { "echo" } else { "pipeline" }),
        "engines": {"stt": stt, "tts": tts},
        "sessions": voice.calls(&caller, &agent),
        "limits": {
            "max_duration_s": config.map(|c| c.max_duration.as_secs()),
            "max_sessions": config.map(|c| c.max_sessions),
            "max_per_user": config.map(|c| c.max_per_user),
        },
    });
    if let Some(reason) = reason {
        status["reason"] = reason.into();
    }
    Ok(body::json(StatusCode::OK, &status))
}

/// `GET /api/agents/{name}/voice/ws`: ticket or bearer + `voice_session_id`, checked before
/// the handshake; then the call runs as a task of the voice service.
pub async fn voice_socket(app: &App, mut request: Request<Incoming>, name: &str) -> ApiResult {
    if !fastwebsockets::upgrade::is_upgrade_request(&request) {
        return Err(ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            "this is a WebSocket endpoint",
        ));
    }
    let query = Query::parse(request.uri().query());
    let attach = match query.get("ticket") {
        Some(ticket) => {
            let auth = app.auth();
            app.voice()
                .attach_ticket(name, ticket, |caller| auth.check(caller).is_ok())?
        }
        None => {
            let caller = caller_with_scope(app, &request, "voice")?;
            let agent = app.agents().visible(&caller, name)?;
            let id = query
                .get("voice_session_id")
                .ok_or_else(|| ApiError::bad_request("give ?ticket= or ?voice_session_id="))?;
            app.voice().attach_bearer(&caller, agent.name(), id)?
        }
    };
    let (response, upgrade) = fastwebsockets::upgrade::upgrade(&mut request)
        .map_err(|err| ApiError::bad_request(format!("bad WebSocket handshake: {err}")))?;
    // The upgrade resolves only once hyper has sent the 101 below.
    let write_timeout = app
        .voice()
        .config()
        .map_or(DEFAULT_WRITE_TIMEOUT, |c| c.write_timeout);
    let end = app.auth().session_end(attach.caller());
    app.voice()
        .run(attach, end, move |inbound, outbound| async move {
            match upgrade.await {
                Ok(socket) => carry(socket, inbound, outbound, write_timeout).await,
                Err(err) => tracing::debug!(cause = %err, "voice upgrade failed"),
            }
        });
    let (parts, _) = response.into_parts();
    Ok(Response::from_parts(parts, Body::empty()))
}

/// Moves frames until the call says goodbye (its close frame) or the client is gone: it
/// closed, or it stopped reading and a frame could not be written within `write_timeout`.
/// Either way the call then sees its channels close and ends, keeping its transcript.
///
/// After our close frame the socket stays open, reading and dropping what the client
/// still had in flight, until the client answers with its own close (or [`CLOSE_GRACE`]
/// passes). Closing the TCP connection over unread audio would make the kernel reset it,
/// and a reset throws away our close frame on the client's side: the client would see an
/// abnormal end (1006) instead of the code the call gave.
async fn carry<S>(
    socket: fastwebsockets::WebSocket<S>,
    inbound: mpsc::Sender<Inbound>,
    outbound: mpsc::Receiver<Outbound>,
    write_timeout: Duration,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut reader, writer) = socket.split(tokio::io::split);
    reader.set_max_message_size(MAX_FRAME_BYTES);
    let (obligated_tx, obligated_rx) = mpsc::channel::<(OpCode, Vec<u8>)>(4);
    let read = async move {
        let mut obliged = move |frame: Frame<'_>| {
            let obligated_tx = obligated_tx.clone();
            let owned = (frame.opcode, frame.payload.to_vec());
            async move {
                obligated_tx
                    .send(owned)
                    .await
                    .map_err(|_| WebSocketError::ConnectionClosed)
            }
        };
        loop {
            let message = match reader.read_frame(&mut obliged).await {
                Ok(frame) => match frame.opcode {
                    OpCode::Binary => Inbound::Audio(frame.payload.to_vec()),
                    OpCode::Text => Inbound::Text(String::from_utf8_lossy(&frame.payload).into()),
                    OpCode::Close => Inbound::Closed,
                    _ => continue,
                },
                // Refused from the frame's header, before its payload is buffered.
                Err(WebSocketError::FrameTooLarge) => Inbound::TooLarge(MAX_FRAME_BYTES),
                Err(_) => Inbound::Closed,
            };
            let closed = matches!(message, Inbound::Closed | Inbound::TooLarge(_));
            // Once the call has ended its frames have nowhere to go: they are dropped
            // while we wait for the client's close.
            let _ = inbound.send(message).await;
            if closed {
                break;
            }
        }
    };
    let mut read = std::pin::pin!(read);
    let mut write = std::pin::pin!(write(writer, outbound, obligated_rx, write_timeout));
    tokio::select! {
        closed_by_us = &mut write => {
            if closed_by_us {
                let _ = tokio::time::timeout(CLOSE_GRACE, read).await;
            }
        }
        // The client closed (or is gone): the call sees it, ends, and the writer sends
        // its close frame in answer.
        () = &mut read => {
            write.await;
        }
    }
}

/// Writes the call's frames, and the control frames the reader owes the client, until the
/// call's close frame is out (true) or the client is gone (false).
async fn write<S>(
    mut writer: fastwebsockets::WebSocketWrite<S>,
    mut outbound: mpsc::Receiver<Outbound>,
    mut obligated: mpsc::Receiver<(OpCode, Vec<u8>)>,
    write_timeout: Duration,
) -> bool
where
    S: AsyncWrite + Unpin,
{
    let mut closing = false;
    loop {
        let frame = tokio::select! {
            next = outbound.recv() => match next {
                None => return false,
                Some(Outbound::Audio(packet)) => Frame::binary(Payload::Owned(packet)),
                Some(Outbound::Event(event)) => Frame::text(Payload::Owned(event.to_json().into_bytes())),
                Some(Outbound::Close(code, reason)) => {
                    closing = true;
                    Frame::close(code, reason.as_bytes())
                }
            },
            Some((opcode, payload)) = obligated.recv() => {
                Frame::new(true, opcode, None, Payload::Owned(payload))
            }
        };
        let sent = async {
            writer.write_frame(frame).await?;
            // A TLS stream holds what it was given until flushed.
            writer.flush().await
        };
        match tokio::time::timeout(write_timeout, sent).await {
            Ok(Ok(())) if closing => return true,
            Ok(Ok(())) => {}
            Ok(Err(_)) => return false,
            Err(_) => {
                tracing::info!(
                    timeout_ms = write_timeout.as_millis() as u64,
                    "a voice client stopped reading; closing its socket"
                );
                return false;
            }
        }
    }
}
