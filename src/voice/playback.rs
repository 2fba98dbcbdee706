//! The agent's side of a call before it is encoded: 20 ms frames waiting to be sent, the
//! clock that paces them in real time with a small lead, and the text they have spoken.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

const FRAME: Duration = Duration::from_millis(20);
/// How far ahead of real time packets may be sent.
const LEAD: Duration = Duration::from_millis(100);

/// A 20 ms frame waiting to be sent, with the text it starts speaking, if any.
struct Queued {
    pcm: Vec<i16>,
    text: Option<String>,
}

/// A frame taken for sending.
pub(super) struct Frame {
    pub pcm: Vec<i16>,
    /// True for the first frame of a reply (nothing spoken before it).
    pub starts_reply: bool,
    /// True when it left later than its due time plus one frame.
    pub late: bool,
}

/// Frames to send, and their pacing.
pub(super) struct Playback {
    queue: VecDeque<Queued>,
    /// When frame 0 of the current run of speech was due, and how many went since.
    clock: Option<(Instant, u32)>,
    /// Text whose audio has started playing in the current reply.
    spoken: String,
    frame_samples: usize,
}

impl Playback {
    /// Frames of `frame_samples` samples (20 ms at the call's rate).
    pub fn new(frame_samples: usize) -> Playback {
        Playback {
            queue: VecDeque::new(),
            clock: None,
            spoken: String::new(),
            frame_samples,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Queues `pcm` (a short last frame is padded by the encoder), which speaks `text`.
    pub fn push(&mut self, pcm: &[i16], text: Option<String>) {
        let mut text = text;
        for chunk in pcm.chunks(self.frame_samples) {
            self.queue.push_back(Queued {
                pcm: chunk.to_vec(),
                text: text.take(),
            });
        }
    }

    /// When the next frame is due: `LEAD` ahead of real time.
    pub fn due(&self) -> Option<Instant> {
        if self.queue.is_empty() {
            return None;
        }
        Some(match self.clock {
            None => Instant::now(),
            Some((start, sent)) => (start + FRAME * sent).checked_sub(LEAD).unwrap_or(start),
        })
    }

    /// The next frame to send now.
    pub fn next(&mut self) -> Option<Frame> {
        let queued = self.queue.pop_front()?;
        let now = Instant::now();
        let (start, sent, late) = match self.clock {
            Some((start, sent)) if now <= start + FRAME * sent => (start, sent, false),
            Some((start, sent)) if now <= start + FRAME * (sent + 1) => (start, sent, true),
            // First frame, or the queue ran dry for a while: restart the clock.
            _ => (now, 0, false),
        };
        self.clock = Some((start, sent + 1));
        let starts_reply = sent == 0 && self.spoken.is_empty();
        if let Some(text) = queued.text {
            self.spoken.push_str(&text);
            self.spoken.push(' ');
        }
        if self.queue.is_empty() {
            self.clock = None;
        }
        Some(Frame {
            pcm: queued.pcm,
            starts_reply,
            late,
        })
    }

    /// Stops at once: drops every queued frame and returns the text spoken so far.
    pub fn stop(&mut self) -> String {
        self.queue.clear();
        self.clock = None;
        std::mem::take(&mut self.spoken).trim().to_string()
    }

    /// Forgets the spoken text (the reply was heard in full).
    pub fn reply_done(&mut self) {
        self.spoken.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_their_text_once_and_stop_returns_it() {
        let mut playback = Playback::new(320);
        playback.push(&[1; 700], Some("Hello.".into()));
        playback.push(&[2; 320], Some("Again.".into()));
        let first = playback.next().unwrap();
        assert!(first.starts_reply && !first.late);
        assert!(!playback.next().unwrap().starts_reply);
        assert_eq!(playback.next().unwrap().pcm.len(), 60);
        assert!(playback.due().is_some());
        assert_eq!(playback.stop(), "Hello.");
        assert!(playback.is_empty() && playback.due().is_none());
    }

    #[test]
    fn the_first_frames_go_at_once_then_in_real_time() {
        let mut playback = Playback::new(320);
        playback.push(&[0; 320 * 10], None);
        let start = Instant::now();
        for _ in 0..6 {
            assert!(playback.due().unwrap() <= start + Duration::from_millis(5));
            playback.next();
        }
        let due = playback.due().unwrap();
        assert!(
            due >= start + Duration::from_millis(15),
            "{:?}",
            due - start
        );
    }
}
