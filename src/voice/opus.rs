//! The only user of libopus (through the `opus` crate): one decoder and one encoder per call,
//! mono, 20 ms frames out. Nothing else in the daemon names an `opus` type.

use opus::{Application, Bitrate, Channels};

/// Largest Opus packet (RFC 6716), also the largest a client may send.
pub const MAX_PACKET_BYTES: usize = 1275;
/// Samples per channel of the longest packet (120 ms at 48 kHz).
const MAX_FRAME_SAMPLES: usize = 5760;

/// A packet libopus could not take, or a setting it refused.
#[derive(Debug, thiserror::Error)]
#[error("opus: {0}")]
pub struct Error(String);

impl From<opus::Error> for Error {
    fn from(err: opus::Error) -> Error {
        Error(err.description().to_string())
    }
}

/// Decodes a caller's packets to mono PCM at a fixed rate (libopus resamples internally).
pub struct Decoder {
    inner: opus::Decoder,
    buffer: Vec<i16>,
}

impl Decoder {
    /// A decoder whose output is mono at `sample_rate` (8, 12, 16, 24 or 48 kHz).
    pub fn new(sample_rate: u32) -> Result<Decoder, Error> {
        Ok(Decoder {
            inner: opus::Decoder::new(sample_rate, Channels::Mono)?,
            buffer: vec![0; MAX_FRAME_SAMPLES],
        })
    }

    /// The PCM of one packet.
    pub fn decode(&mut self, packet: &[u8]) -> Result<&[i16], Error> {
        let samples = self.inner.decode(packet, &mut self.buffer, false)?;
        Ok(&self.buffer[..samples])
    }

    /// The PCM of one packet from a caller, or None for an empty, oversized (over
    /// [`MAX_PACKET_BYTES`]) or undecodable one.
    pub fn decode_packet(&mut self, packet: &[u8]) -> Option<&[i16]> {
        if packet.is_empty() || packet.len() > MAX_PACKET_BYTES {
            return None;
        }
        self.decode(packet).ok()
    }
}

/// Encodes 20 ms frames of mono PCM: VOIP application, in-band FEC on.
pub struct Encoder {
    inner: opus::Encoder,
    /// Samples in one 20 ms frame at the encoder's rate.
    pub frame_samples: usize,
}

impl Encoder {
    pub fn new(sample_rate: u32, complexity: i32) -> Result<Encoder, Error> {
        let mut inner = opus::Encoder::new(sample_rate, Channels::Mono, Application::Voip)?;
        inner.set_complexity(complexity)?;
        inner.set_inband_fec(true)?;
        inner.set_packet_loss_perc(5)?;
        inner.set_bitrate(Bitrate::Bits(24_000))?;
        Ok(Encoder {
            inner,
            frame_samples: sample_rate as usize / 50,
        })
    }

    /// One packet from one 20 ms frame; a short frame is padded with silence.
    pub fn encode(&mut self, frame: &[i16]) -> Result<Vec<u8>, Error> {
        if frame.len() == self.frame_samples {
            return Ok(self.inner.encode_vec(frame, MAX_PACKET_BYTES)?);
        }
        let mut padded = frame.to_vec();
        padded.resize(self.frame_samples, 0);
        Ok(self.inner.encode_vec(&padded, MAX_PACKET_BYTES)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tone_survives_encode_and_decode() {
        let mut encoder = Encoder::new(16_000, 5).unwrap();
        let mut decoder = Decoder::new(16_000).unwrap();
        let mut energy = 0f64;
        for frame_idx in 0..10 {
            let frame: Vec<i16> = (0..320)
                .map(|i| {
                    let t = (frame_idx * 320 + i) as f64 / 16_000.0;
                    ((t * 440.0 * std::f64::consts::TAU).sin() * 8000.0) as i16
                })
                .collect();
            let packet = encoder.encode(&frame).unwrap();
            assert!(packet.len() <= MAX_PACKET_BYTES);
            let pcm = decoder.decode(&packet).unwrap();
            assert_eq!(pcm.len(), 320);
            energy += pcm.iter().map(|s| (*s as f64).powi(2)).sum::<f64>();
        }
        assert!(energy > 0.0);
        assert!(decoder.decode(&[0xff; 3]).is_err() || decoder.decode(&[]).is_err());
    }
}
