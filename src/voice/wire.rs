//! What travels on the voice socket besides audio: the JSON control frames of the client,
//! the JSON event frames of the server, and the close codes.

use crate::ids::ExecutionId;
use serde::{Deserialize, Serialize};

/// Close codes after the handshake (spec: "The socket").
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const AUTH: u16 = 4001;
    pub const NOT_YOURS: u16 = 4003;
    pub const UNKNOWN_SESSION: u16 = 4004;
    pub const LIMIT: u16 = 4008;
    pub const DURATION: u16 = 4009;
}

/// A text frame from the client.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// Hang up.
    End,
    /// Stop speaking now.
    Interrupt,
    /// A typed turn inside the call.
    Text {
        text: String,
    },
    Ping,
}

impl ClientMessage {
    /// Reads a text frame; an unreadable one gives the `bad_message` error event to answer.
    pub fn read(text: &str) -> Result<ClientMessage, Event> {
        serde_json::from_str(text)
            .map_err(|err| Event::error("bad_message", format!("unreadable frame: {err}")))
    }
}

/// A frame from the client, as the socket layer hands it over.
#[derive(Debug)]
pub enum Inbound {
    /// One Opus packet.
    Audio(Vec<u8>),
    /// A text frame (parsed by the call, which answers bad ones).
    Text(String),
    /// The client closed or the connection broke.
    Closed,
    /// The client announced a frame larger than the socket takes (closed with 4008).
    TooLarge(usize),
}

/// A frame to the client.
#[derive(Debug)]
pub enum Outbound {
    /// One Opus packet.
    Audio(Vec<u8>),
    Event(Event),
    /// The last frame: a close with this code and reason.
    Close(u16, String),
}

/// Per-turn latencies, in milliseconds.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Timings {
    pub speech_end_to_transcript_ms: u64,
    pub transcript_to_first_token_ms: u64,
    pub first_token_to_first_audio_ms: u64,
    pub speech_end_to_first_audio_ms: u64,
}

/// A JSON event frame of the server.
#[derive(Clone, Debug, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Status {
        state: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    Transcript {
        role: &'static str,
        text: String,
        #[serde(rename = "final")]
        is_final: bool,
    },
    Turn {
        execution_id: ExecutionId,
        timings: Timings,
    },
    Interrupted {
        spoken_text: String,
    },
    Error {
        error: &'static str,
        message: String,
    },
    Pong,
    Saved {
        messages_saved: u64,
        duration_seconds: f64,
    },
}

impl Event {
    pub fn status(state: &'static str) -> Event {
        Event::Status {
            state,
            reason: None,
        }
    }

    pub fn error(error: &'static str, message: impl Into<String>) -> Event {
        Event::Error {
            error,
            message: message.into(),
        }
    }

    /// The frame's text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("events serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Option<ClientMessage>) {
        assert_eq!(serde_json::from_str::<ClientMessage>(input).ok(), expected);
    }

    #[test]
    fn client_messages() {
        check(r#"{"type":"end"}"#, Some(ClientMessage::End));
        check(r#"{"type":"interrupt"}"#, Some(ClientMessage::Interrupt));
        check(r#"{"type":"ping"}"#, Some(ClientMessage::Ping));
        check(
            r#"{"type":"text","text":"hi"}"#,
            Some(ClientMessage::Text { text: "hi".into() }),
        );
        check(r#"{"type":"text"}"#, None);
        check(r#"{"type":"dance"}"#, None);
        check("not json", None);
    }

    #[test]
    fn events() {
        let transcript = Event::Transcript {
            role: "user",
            text: "hi".into(),
            is_final: true,
        };
        assert_eq!(
            transcript.to_json(),
            r#"{"type":"transcript","role":"user","text":"hi","final":true}"#
        );
        assert_eq!(
            Event::status("listening").to_json(),
            r#"{"type":"status","state":"listening"}"#
        );
    }
}
