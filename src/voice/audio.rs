//! PCM helpers: resampling between rates (`rubato`) and 16-bit mono WAV in and out, the
//! format the speech engines speak. CPU-heavy on long audio: call from `spawn_blocking`.

use rubato::audioadapter_buffers::direct::SequentialSliceOfVecs;
use rubato::{Fft, FixedSync, Resampler};

/// Rate of the audio the detector and the speech-to-text engine hear: a call decodes its
/// caller's audio at this rate.
pub const LISTEN_RATE: u32 = 16_000;

/// What a WAV from an engine can be wrong about.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not a 16-bit PCM WAV file: {0}")]
    Wav(&'static str),
    #[error("resampling: {0}")]
    Resample(String),
}

/// Mono PCM at a sample rate.
#[derive(Clone, Debug, PartialEq)]
pub struct Pcm {
    pub sample_rate: u32,
    pub samples: Vec<i16>,
}

/// `pcm` at `to` Hz.
pub fn resample(pcm: &Pcm, to: u32) -> Result<Vec<i16>, Error> {
    if pcm.sample_rate == to || pcm.samples.is_empty() {
        return Ok(pcm.samples.clone());
    }
    let fail = |e: &dyn std::fmt::Display| Error::Resample(e.to_string());
    let input: Vec<Vec<f32>> = vec![pcm.samples.iter().map(|s| *s as f32 / 32768.0).collect()];
    let frames = pcm.samples.len();
    let mut resampler = Fft::<f32>::new(
        pcm.sample_rate as usize,
        to as usize,
        1024,
        1,
        FixedSync::Input,
    )
    .map_err(|e| fail(&e))?;
    let needed = resampler.process_all_needed_output_len(frames);
    let mut output = vec![vec![0f32; needed]];
    let input_adapter = SequentialSliceOfVecs::new(&input, 1, frames).map_err(|e| fail(&e))?;
    let mut output_adapter =
        SequentialSliceOfVecs::new_mut(&mut output, 1, needed).map_err(|e| fail(&e))?;
    let (_, produced) = resampler
        .process_all_into_buffer(&input_adapter, &mut output_adapter, frames, None)
        .map_err(|e| fail(&e))?;
    Ok(output[0][..produced]
        .iter()
        .map(|s| (s * 32767.0).clamp(-32768.0, 32767.0) as i16)
        .collect())
}

/// A 16-bit mono WAV file of `pcm`.
pub fn to_wav(pcm: &Pcm) -> Vec<u8> {
    let data_len = (pcm.samples.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + data_len as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&pcm.sample_rate.to_le_bytes());
    out.extend_from_slice(&(pcm.sample_rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for sample in &pcm.samples {
        out.extend_from_slice(&sample.to_le_bytes());
    }
    out
}

/// The PCM of a 16-bit WAV file (the first channel when there are several). A data chunk
/// longer than the file is read to the end: programs writing to a pipe cannot know the size.
pub fn from_wav(bytes: &[u8]) -> Result<Pcm, Error> {
    if bytes.len() < 12 || &bytes[..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(Error::Wav("no RIFF/WAVE header"));
    }
    let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let mut at = 12;
    let mut format = None;
    while at + 8 <= bytes.len() {
        let (id, len) = (&bytes[at..at + 4], u32_at(at + 4) as usize);
        let body = at + 8;
        if id == b"fmt " && body + 16 <= bytes.len() {
            format = Some((
                u16_at(body),
                u16_at(body + 2),
                u32_at(body + 4),
                u16_at(body + 14),
            ));
        } else if id == b"data" {
            let (kind, channels, sample_rate, bits) =
                format.ok_or(Error::Wav("data before fmt"))?;
            if kind != 1 || bits != 16 || channels == 0 {
                return Err(Error::Wav("only 16-bit integer PCM is read"));
            }
            let end = body.saturating_add(len).min(bytes.len());
            let step = 2 * channels as usize;
            let samples = bytes[body..end]
                .chunks_exact(step)
                .map(|frame| i16::from_le_bytes([frame[0], frame[1]]))
                .collect();
            return Ok(Pcm {
                sample_rate,
                samples,
            });
        }
        at = body.saturating_add(len + (len & 1));
    }
    Err(Error::Wav("no data chunk"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wav_round_trip() {
        let pcm = Pcm {
            sample_rate: 22_050,
            samples: vec![0, 1, -1, i16::MAX, i16::MIN],
        };
        assert_eq!(from_wav(&to_wav(&pcm)).unwrap(), pcm);
        assert!(from_wav(b"RIFF....WAVE").is_err());
        assert!(from_wav(b"nothing").is_err());
    }

    #[test]
    fn resampling_keeps_the_duration() {
        let pcm = Pcm {
            sample_rate: 22_050,
            samples: (0..22_050)
                .map(|i| ((i as f32 / 10.0).sin() * 9000.0) as i16)
                .collect(),
        };
        let out = resample(&pcm, 16_000).unwrap();
        assert!((15_800..16_200).contains(&out.len()), "{}", out.len());
        assert!(out.iter().any(|s| s.abs() > 1000));
    }
}
