//! One call's loop: `select!` over the client's frames, the work of its helper tasks (echo
//! audio, speech-to-text, the agent's turn, text-to-speech), the pacing clock of outbound
//! audio, `voice/stop` and shutdown. Audio leaves in 20 ms Opus packets paced in real time.

use super::audio::LISTEN_RATE;
use super::opus::{Decoder, Encoder};
use super::playback::Playback;
use super::speech;
use super::stream::Streams;
use super::turn::{self, Input, TurnContext, Work};
use super::vad::{Heard, Vad};
use super::wire::{close, ClientMessage, Event, Inbound, Outbound, Timings};
use super::{lock, CallShared, Line, Summary};
use crate::agents::Agent;
use crate::chat::Chat;
use crate::config::{VoiceConfig, VoiceMode};
use crate::executions::{Executions, Live, StopReason};
use crate::ids::SessionId;
use crate::metrics::Metrics;
use crate::outbound::Client;
use crate::shutdown::Shutdown;
use crate::turns::Turns;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::sleep_until;

const UNDECODABLE_IN_A_ROW: u32 = 20;
const PACKETS_PER_SECOND: u32 = 60;
const WARN_BEFORE_END: Duration = Duration::from_secs(30);

/// Everything a call needs, handed over by `Voice::run`.
pub(super) struct Context {
    pub voice_session_id: String,
    pub config: VoiceConfig,
    pub agent: Arc<Agent>,
    pub username: String,
    pub chat_session_id: Option<SessionId>,
    pub sample_rate: u32,
    pub preferences: super::speech::Preferences,
    /// The client for the speech servers of the configuration (one pool for every call).
    pub speech_client: Client,
    pub started: Instant,
    pub shared: Arc<CallShared>,
    pub chat: Chat,
    pub turns: Turns,
    pub executions: Executions,
    pub metrics: Arc<Metrics>,
    pub shutdown: Shutdown,
}

/// Why the loop ended: a close code and its reason.
type Ending = (u16, String);

/// The state of one call.
struct Call {
    context: Context,
    outbound: mpsc::Sender<Outbound>,
    decoder: Decoder,
    encoder: Encoder,
    vad: Vad,
    playback: Playback,
    /// Echo work and the turn in flight; dropping it aborts them.
    helpers: JoinSet<()>,
    work_tx: mpsc::Sender<Work>,
    work_rx: mpsc::Receiver<Work>,
    /// Bumped by each utterance and each barge-in; work of older turns is ignored.
    generation: u64,
    busy: bool,
    timing: Option<TurnTiming>,
    previous: Option<Arc<Live>>,
    /// The chat turn whose reply is being spoken, with its session.
    current: Option<Reply>,
    /// Speech-to-text of the utterance being spoken, for engines that take audio as it comes.
    streams: Streams,
    /// Rewrites of interrupted replies; waited for before the call says `saved`.
    keepers: JoinSet<()>,
    /// The caller started speaking over the agent and has not yet said `barge_in_ms` of it.
    barging: bool,
    undecodable: u32,
    window: (Instant, u32),
    counts: Counts,
    summary: Summary,
}

/// Packets of one call, logged when it ends.
#[derive(Debug, Default)]
struct Counts {
    packets_in: u64,
    packets_out: u64,
    /// Undecodable or oversized.
    invalid: u64,
    /// Over the rate limit, ignored.
    dropped: u64,
    /// Sent later than their due time plus one frame (the loop fell behind).
    late: u64,
    /// Utterances over the agent's voice too short to barge in.
    ignored: u64,
}

/// The chat turn whose reply is being spoken.
struct Reply {
    live: Arc<Live>,
    session_id: SessionId,
    /// The whole reply, once the turn has finished.
    text: Option<String>,
}

struct TurnTiming {
    speech_end: Option<Instant>,
    transcript_at: Option<Instant>,
    first_token_at: Option<Instant>,
    execution_id: Option<crate::ids::ExecutionId>,
}

/// Resolves once the flag is set: `voice/stop` asked the call to end, or its token is no
/// longer accepted.
async fn hung_up(hangup: &mut tokio::sync::watch::Receiver<bool>) {
    if hangup.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Resolves at `due`: at once when it has passed, not at the timer's next millisecond tick
/// (an echo's or a reply's first frames are due at once).
async fn at(due: Instant) {
    if due > Instant::now() {
        sleep_until(due.into()).await;
    }
}

/// Runs the call until it ends; the last outbound frame is the close.
pub(super) async fn run(
    context: Context,
    mut inbound: mpsc::Receiver<Inbound>,
    outbound: mpsc::Sender<Outbound>,
) -> Summary {
    let started = context.started;
    let mut call = match Call::new(context, outbound.clone()) {
        Ok(call) => call,
        Err(err) => {
            tracing::error!(cause = %err, "voice call could not set up its codec");
            let _ = outbound.send(Outbound::Close(1011, "codec".into())).await;
            return Summary::default();
        }
    };
    let (code, reason) = call.serve(&mut inbound).await;
    tracing::info!(
        call = %call.context.voice_session_id,
        code,
        reason = %reason,
        counts = ?call.counts,
        "voice call ended"
    );
    call.helpers.abort_all();
    let keepers = async { while call.keepers.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(Duration::from_secs(5), keepers).await;
    let mut summary = std::mem::take(&mut call.summary);
    summary.duration_seconds = (started.elapsed().as_millis() as f64) / 1000.0;
    if code == close::NORMAL || code == close::DURATION {
        call.event(Event::Saved {
            messages_saved: summary.messages_saved,
            duration_seconds: summary.duration_seconds,
        })
        .await;
    }
    call.set_state("ended", Some(reason.clone())).await;
    let _ = outbound.send(Outbound::Close(code, reason)).await;
    summary
}

impl Call {
    fn new(context: Context, outbound: mpsc::Sender<Outbound>) -> Result<Call, super::opus::Error> {
        let (work_tx, work_rx) = mpsc::channel(64);
        Ok(Call {
            decoder: Decoder::new(LISTEN_RATE)?,
            encoder: Encoder::new(context.sample_rate, context.config.opus_complexity)?,
            vad: Vad::new(context.config.min_speech_ms, context.config.end_silence_ms),
            playback: Playback::new(context.sample_rate as usize / 50),
            context,
            outbound,
            helpers: JoinSet::new(),
            work_tx,
            work_rx,
            generation: 0,
            busy: false,
            timing: None,
            previous: None,
            current: None,
            streams: Streams::default(),
            keepers: JoinSet::new(),
            barging: false,
            undecodable: 0,
            window: (Instant::now(), 0),
            counts: Counts::default(),
            summary: Summary::default(),
        })
    }

    async fn serve(&mut self, inbound: &mut mpsc::Receiver<Inbound>) -> Ending {
        let mut hangup = self.context.shared.hangup.subscribe();
        let mut signed_out = self.context.shared.signed_out.subscribe();
        let shutdown = self.context.shutdown.clone();
        let end_at = self.context.started + self.context.config.max_duration;
        let warn_at = end_at.checked_sub(WARN_BEFORE_END).unwrap_or(end_at);
        let mut warned = false;
        let mut last_heard = Instant::now();
        let idle = self.context.config.idle_timeout;
        self.set_state("listening", None).await;
        loop {
            let due = self.playback.due();
            let result = tokio::select! {
                biased;
                _ = shutdown.wait() => return (close::GOING_AWAY, "server shutting down".into()),
                () = hung_up(&mut hangup) => return (close::NORMAL, "stopped".into()),
                () = hung_up(&mut signed_out) => {
                    return (close::AUTH, "this token is no longer accepted".into())
                }
                _ = sleep_until(end_at.into()) => {
                    return (close::DURATION, "the call reached max_duration".into())
                }
                _ = sleep_until(warn_at.into()), if !warned => {
                    warned = true;
                    let state = *lock(&self.context.shared.state);
                    self.set_state(state, Some("time_warning".into())).await;
                    Ok(())
                }
                _ = sleep_until((last_heard + idle).into()) => {
                    return (close::NORMAL, format!("nothing from the client for {} s", idle.as_secs()))
                }
                frame = inbound.recv() => {
                    last_heard = Instant::now();
                    match frame {
                        None | Some(Inbound::Closed) => return (close::NORMAL, "client closed".into()),
                        Some(Inbound::TooLarge(limit)) => {
                            return (close::LIMIT, format!("a frame larger than {limit} bytes"))
                        }
                        Some(Inbound::Audio(packet)) => self.on_packet(&packet).await,
                        Some(Inbound::Text(text)) => self.on_text(&text).await,
                    }
                }
                Some(work) = self.work_rx.recv() => self.on_work(work).await,
                () = at(due.unwrap_or(end_at)), if due.is_some() => self.send_packet().await,
            };
            if let Err(ending) = result {
                return ending;
            }
        }
    }

    async fn on_packet(&mut self, packet: &[u8]) -> Result<(), Ending> {
        let now = Instant::now();
        if now.duration_since(self.window.0) >= Duration::from_secs(1) {
            self.window = (now, 0);
        }
        self.window.1 += 1;
        if self.window.1 > PACKETS_PER_SECOND * 2 {
            return Err((close::LIMIT, "more than 60 packets per second".into()));
        }
        if self.window.1 > PACKETS_PER_SECOND {
            self.counts.dropped += 1;
            return Ok(());
        }
        let decoded = self.decoder.decode_packet(packet).map(<[i16]>::to_vec);
        self.context
            .metrics
            .observe("outpost_voice_decode_seconds", now.elapsed());
        self.counts.packets_in += 1;
        let Some(pcm) = decoded else {
            self.counts.invalid += 1;
            self.undecodable += 1;
            if self.undecodable >= UNDECODABLE_IN_A_ROW {
                return Err((close::LIMIT, "20 undecodable packets in a row".into()));
            }
            return Ok(());
        };
        self.undecodable = 0;
        for heard in self.vad.push(&pcm) {
            match heard {
                Heard::SpeechStarted => {
                    // Over the agent's voice: a barge-in once it has lasted barge_in_ms.
                    self.barging = self.speaking();
                    let config = &self.context.config;
                    match (&config.mode, &config.stt) {
                        (VoiceMode::Pipeline, Some(stt)) if speech::streams(stt) => {
                            self.streams.start(stt, &self.context.preferences)
                        }
                        _ => {}
                    }
                }
                Heard::Utterance(_) if std::mem::take(&mut self.barging) => {
                    // Too short to stop the agent: a noise, or its own voice in the room.
                    self.counts.ignored += 1;
                    self.streams.discard();
                }
                Heard::Utterance(samples) => self.on_utterance(samples).await?,
                Heard::Discarded => {
                    self.barging = false;
                    self.streams.discard();
                }
            }
        }
        if self.barging && self.vad.speech_ms() >= self.context.config.barge_in_ms {
            self.barging = false;
            if self.speaking() {
                self.barge_in().await?;
            }
        }
        let early = self.context.config.end_silence_ms / 2;
        self.streams
            .feed(self.vad.utterance(), self.vad.silence_ms(), early);
        Ok(())
    }

    async fn on_text(&mut self, text: &str) -> Result<(), Ending> {
        match ClientMessage::read(text) {
            Ok(ClientMessage::Ping) => self.event(Event::Pong).await,
            Ok(ClientMessage::End) => return Err((close::NORMAL, "the caller hung up".into())),
            Ok(ClientMessage::Interrupt) => {
                if self.speaking() {
                    self.barge_in().await?;
                }
            }
            Ok(ClientMessage::Text { text }) if self.context.config.mode == VoiceMode::Echo => {
                let _ = text;
                let message = "typed turns need voice.mode = \"pipeline\"";
                self.event(Event::error("unsupported", message)).await;
            }
            Ok(ClientMessage::Text { text }) => self.start_turn(Input::Text(text)).await?,
            Err(event) => self.event(event).await,
        }
        Ok(())
    }

    async fn on_utterance(&mut self, samples: Vec<i16>) -> Result<(), Ending> {
        match self.context.config.mode {
            VoiceMode::Echo if self.context.sample_rate == LISTEN_RATE => {
                // Nothing to resample: the utterance is queued at once, on this task.
                self.generation += 1;
                self.set_state("thinking", None).await;
                self.playback.push(&samples, None);
                Ok(())
            }
            VoiceMode::Echo => {
                self.generation += 1;
                self.busy = true;
                let (rate, generation, work) = (
                    self.context.sample_rate,
                    self.generation,
                    self.work_tx.clone(),
                );
                self.helpers
                    .spawn(turn::echo(samples, rate, generation, work));
                self.set_state("thinking", None).await;
                Ok(())
            }
            VoiceMode::Pipeline => {
                let input = match self.streams.finish(&samples) {
                    Some(transcript) => Input::Streamed(transcript, Instant::now()),
                    None => Input::Speech(samples, Instant::now()),
                };
                self.start_turn(input).await
            }
        }
    }

    async fn start_turn(&mut self, input: Input) -> Result<(), Ending> {
        if self.speaking() {
            self.barge_in().await?;
        }
        self.generation += 1;
        self.busy = true;
        self.timing = Some(TurnTiming {
            speech_end: input.speech_end(),
            transcript_at: None,
            first_token_at: None,
            execution_id: None,
        });
        let context = TurnContext {
            generation: self.generation,
            config: self.context.config.clone(),
            agent: self.context.agent.clone(),
            username: self.context.username.clone(),
            chat_session_id: self.context.chat_session_id.clone(),
            sample_rate: self.context.sample_rate,
            preferences: self.context.preferences.clone(),
            speech_client: self.context.speech_client.clone(),
            turns: self.context.turns.clone(),
            executions: self.context.executions.clone(),
            previous: self.previous.clone(),
            work: self.work_tx.clone(),
        };
        self.helpers.spawn(turn::run(context, input));
        self.set_state("thinking", None).await;
        Ok(())
    }

    async fn on_work(&mut self, work: Work) -> Result<(), Ending> {
        if work.generation() != self.generation {
            return Ok(());
        }
        match work {
            Work::Transcript { text, .. } => {
                if let Some(timing) = &mut self.timing {
                    timing.transcript_at = Some(Instant::now());
                }
                self.summary.transcript.push(Line {
                    role: "user",
                    text: text.clone(),
                });
                let event = Event::Transcript {
                    role: "user",
                    text,
                    is_final: true,
                };
                self.event(event).await;
            }
            Work::Started {
                live, session_id, ..
            } => {
                if let Some(timing) = &mut self.timing {
                    timing.execution_id = Some(live.execution_id.clone());
                }
                self.context.chat_session_id = Some(session_id.clone());
                self.previous = Some(live.clone());
                // The user message is stored now, the reply when the turn ends.
                self.summary.messages_saved += 2;
                self.current = Some(Reply {
                    live,
                    session_id,
                    text: None,
                });
            }
            Work::FirstToken { .. } => {
                if let Some(timing) = &mut self.timing {
                    timing.first_token_at = Some(Instant::now());
                }
            }
            Work::Speech { pcm, text, .. } => self.playback.push(&pcm, text),
            Work::Done { reply, .. } => {
                self.busy = false;
                if let Some(text) = reply {
                    if let Some(current) = &mut self.current {
                        current.text = Some(text.clone());
                    }
                    let event = Event::Transcript {
                        role: "assistant",
                        text,
                        is_final: true,
                    };
                    self.event(event).await;
                }
                if self.playback.is_empty() {
                    self.reply_heard().await;
                }
            }
            Work::Failed { error, message, .. } => {
                self.busy = false;
                self.event(Event::error(error, message)).await;
                if self.playback.is_empty() {
                    self.set_state("listening", None).await;
                }
            }
        }
        Ok(())
    }

    /// True while the agent is answering: audio queued or a turn in flight.
    fn speaking(&self) -> bool {
        !self.playback.is_empty() || self.busy
    }

    /// Stops the audio now, drops pending synthesis and listens again.
    async fn barge_in(&mut self) -> Result<(), Ending> {
        self.helpers.abort_all();
        self.generation += 1;
        self.busy = false;
        self.timing = None;
        let spoken_text = self.playback.stop();
        if let Some(Reply {
            live, session_id, ..
        }) = self.current.take()
        {
            // Only what the caller heard is kept as the reply.
            live.stop(StopReason::Terminated);
            self.summary.transcript.push(Line {
                role: "assistant",
                text: spoken_text.clone(),
            });
            let (chat, text) = (self.context.chat.clone(), spoken_text.clone());
            self.keepers.spawn(async move {
                live.finished().await;
                let kept = chat.keep_spoken_reply(&session_id, &live.execution_id, &text);
                if let Err(err) = kept.await {
                    tracing::warn!(cause = %err, "keeping the spoken part of a reply failed");
                }
            });
        }
        self.event(Event::Interrupted { spoken_text }).await;
        self.set_state("listening", None).await;
        Ok(())
    }

    async fn send_packet(&mut self) -> Result<(), Ending> {
        let Some(frame) = self.playback.next() else {
            return Ok(());
        };
        if frame.starts_reply {
            self.set_state("speaking", None).await;
        }
        self.counts.late += u64::from(frame.late);
        let started = Instant::now();
        let encoded = self.encoder.encode(&frame.pcm);
        self.context
            .metrics
            .observe("outpost_voice_encode_seconds", started.elapsed());
        let packet = encoded.map_err(|err| (1011, err.to_string()))?;
        self.counts.packets_out += 1;
        self.outbound
            .send(Outbound::Audio(packet))
            .await
            .map_err(|_| (close::NORMAL, "client gone".to_string()))?;
        self.first_audio_sent().await;
        if self.playback.is_empty() && !self.busy {
            self.reply_heard().await;
        }
        Ok(())
    }

    /// The reply has been heard in full: it stays as stored; listen again.
    async fn reply_heard(&mut self) {
        if let Some(text) = self.current.take().and_then(|reply| reply.text) {
            self.summary.transcript.push(Line {
                role: "assistant",
                text,
            });
        }
        self.playback.reply_done();
        self.set_state("listening", None).await;
    }

    /// Reports the turn's timings once its first packet went out.
    async fn first_audio_sent(&mut self) {
        let Some(timing) = self.timing.take() else {
            return;
        };
        let now = Instant::now();
        let between = |from: Option<Instant>, to: Option<Instant>| match (from, to) {
            (Some(from), Some(to)) => to.saturating_duration_since(from),
            _ => Duration::ZERO,
        };
        let metrics = &self.context.metrics;
        let spans = [
            (
                "outpost_voice_speech_end_to_transcript_seconds",
                timing.speech_end,
                timing.transcript_at,
            ),
            (
                "outpost_voice_transcript_to_first_token_seconds",
                timing.transcript_at,
                timing.first_token_at,
            ),
            (
                "outpost_voice_first_token_to_first_audio_seconds",
                timing.first_token_at,
                Some(now),
            ),
            (
                "outpost_voice_speech_end_to_first_audio_seconds",
                timing.speech_end,
                Some(now),
            ),
        ];
        let ms: Vec<u64> = spans
            .iter()
            .map(|(name, from, to)| {
                let span = between(*from, *to);
                metrics.observe(name, span);
                span.as_millis() as u64
            })
            .collect();
        if let Some(execution_id) = timing.execution_id {
            let timings = Timings {
                speech_end_to_transcript_ms: ms[0],
                transcript_to_first_token_ms: ms[1],
                first_token_to_first_audio_ms: ms[2],
                speech_end_to_first_audio_ms: ms[3],
            };
            self.event(Event::Turn {
                execution_id,
                timings,
            })
            .await;
        }
    }

    async fn set_state(&mut self, state: &'static str, reason: Option<String>) {
        *lock(&self.context.shared.state) = state;
        self.event(Event::Status { state, reason }).await;
    }

    async fn event(&mut self, event: Event) {
        tracing::trace!(call = %self.context.voice_session_id, ?event, "voice event");
        let _ = self.outbound.send(Outbound::Event(event)).await;
    }
}
