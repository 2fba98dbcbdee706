//! Reading the agent's pipes without trusting them: stdout as lines of bounded length, stderr as
//! a bounded tail kept for error reports.

use std::io;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt};
use tracing::debug;

/// What [`next_line`] found.
#[derive(Debug, PartialEq)]
pub(super) enum Line {
    /// A whole line, now in the buffer without its newline.
    Complete,
    /// A line longer than the limit: it was read to its end and thrown away.
    TooLong,
}

/// Reads the next line into `line` (cleared first, newline not included), keeping at most
/// `max_bytes` of it in memory. `None` at the end of the stream. A last line without a newline
/// still counts as a line.
pub(super) async fn next_line<R>(
    reader: &mut R,
    line: &mut Vec<u8>,
    max_bytes: usize,
) -> io::Result<Option<Line>>
where
    R: AsyncBufRead + Unpin,
{
    line.clear();
    let mut read_any = false;
    let mut too_long = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(read_any.then_some(if too_long {
                Line::TooLong
            } else {
                Line::Complete
            }));
        }
        read_any = true;
        let newline = available.iter().position(|&byte| byte == b'\n');
        let piece = &available[..newline.unwrap_or(available.len())];
        if !too_long && line.len() + piece.len() > max_bytes {
            too_long = true;
            line.clear();
        }
        if !too_long {
            line.extend_from_slice(piece);
        }
        let used = piece.len() + usize::from(newline.is_some());
        reader.consume(used);
        if newline.is_some() {
            return Ok(Some(if too_long {
                Line::TooLong
            } else {
                Line::Complete
            }));
        }
    }
}

/// Reads `reader` to its end and returns the last `max_bytes` of it as text (lossy UTF-8,
/// trimmed), marked with a leading `…` when the start was cut.
pub(super) async fn read_tail<R>(mut reader: R, max_bytes: usize) -> String
where
    R: AsyncRead + Unpin,
{
    let mut tail = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut cut = false;
    loop {
        match reader.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => tail.extend_from_slice(&chunk[..n]),
            Err(err) => {
                debug!(cause = %err, "stopped reading the agent's stderr");
                break;
            }
        }
        // Trim in batches so a chatty stderr costs amortised constant work per byte.
        if tail.len() > 2 * max_bytes {
            tail.drain(..tail.len() - max_bytes);
            cut = true;
        }
    }
    if tail.len() > max_bytes {
        tail.drain(..tail.len() - max_bytes);
        cut = true;
    }
    let text = String::from_utf8_lossy(&tail);
    let text = text.trim();
    if cut {
        format!("…{}", text.trim_start_matches('\u{FFFD}'))
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads all of `input` with a line limit of `max_bytes`, one entry per line.
    async fn lines(input: &[u8], max_bytes: usize) -> Vec<Result<String, Line>> {
        // A tiny buffer makes lines span several reads, as they do on a pipe.
        let mut reader = tokio::io::BufReader::with_capacity(3, input);
        let mut line = Vec::new();
        let mut found = Vec::new();
        while let Some(kind) = next_line(&mut reader, &mut line, max_bytes).await.unwrap() {
            found.push(match kind {
                Line::Complete => Ok(String::from_utf8(line.clone()).unwrap()),
                Line::TooLong => Err(Line::TooLong),
            });
        }
        found
    }

    fn ok(text: &str) -> Result<String, Line> {
        Ok(text.to_string())
    }

    #[tokio::test]
    async fn splits_lines_across_reads() {
        assert_eq!(lines(b"", 100).await, vec![]);
        assert_eq!(lines(b"abc", 100).await, vec![ok("abc")]);
        assert_eq!(lines(b"abc\n", 100).await, vec![ok("abc")]);
        assert_eq!(lines(b"\n\n", 100).await, vec![ok(""), ok("")]);
        assert_eq!(
            lines(b"one\ntwo\nthree", 100).await,
            vec![ok("one"), ok("two"), ok("three")]
        );
        assert_eq!(
            lines(b"a longer line here\nx\n", 100).await,
            vec![ok("a longer line here"), ok("x")]
        );
    }

    #[tokio::test]
    async fn drops_overlong_lines_and_carries_on() {
        assert_eq!(lines(b"12345\n", 5).await, vec![ok("12345")]);
        assert_eq!(
            lines(b"123456\nok\n", 5).await,
            vec![Err(Line::TooLong), ok("ok")]
        );
        assert_eq!(
            lines(b"ok\n1234567890123", 5).await,
            vec![ok("ok"), Err(Line::TooLong)]
        );
    }

    #[tokio::test]
    async fn keeps_the_end_of_stderr() {
        assert_eq!(
            read_tail(&b"  warning: low disk\n"[..], 100).await,
            "warning: low disk"
        );
        let noise = format!("{}the end", "x".repeat(20_000));
        assert_eq!(read_tail(noise.as_bytes(), 7).await, "…the end");
    }
}
