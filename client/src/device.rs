//! Playback on the default audio output device, with cpal.
//!
//! The decoder thread pushes samples into a bounded buffer (half a second) that the device's
//! callback drains; an empty buffer plays silence (an underrun, counted). The stream opens
//! with the song's sample rate and channel count when the device supports them (samples
//! then reach the device unchanged); otherwise the device's default configuration is used,
//! with channels mapped and the rate converted by linear interpolation (written here: a
//! fallback for devices that cannot take the song's rate, where a resampling crate's
//! quality would buy little over the device's own mixer).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};
use cpal::{SampleFormat, StreamConfig};
use parking_lot::{Condvar, Mutex};

use crate::error::ClientError;

struct Shared {
    buf: Mutex<VecDeque<f32>>,
    drained: Condvar,
    max: usize,
    underruns: AtomicU64,
    /// Between the first samples queued and the end: an empty buffer then is an underrun.
    live: AtomicBool,
}

/// An open output stream on the default device.
pub(crate) struct DeviceSink {
    shared: Arc<Shared>,
    _stream: cpal::Stream,
    in_channels: usize,
    out_channels: usize,
    step: f64,
    frac: f64,
    prev: Vec<f32>,
}

fn no_device(reason: impl std::fmt::Display) -> ClientError {
    ClientError::NoDevice(reason.to_string())
}

impl DeviceSink {
    /// Opens the default output device for `channels` at `rate`.
    pub(crate) fn open(channels: u16, rate: u32) -> Result<Self, ClientError> {
        let host = cpal::default_host();
        let device = host
            .default_output_device()
            .ok_or_else(|| no_device("the system has no default output device"))?;
        let usable = |f: SampleFormat| matches!(f, SampleFormat::I16 | SampleFormat::F32);
        let ranges: Vec<_> = device
            .supported_output_configs()
            .map_err(no_device)?
            .collect();
        tracing::debug!(?ranges, "audio output configurations");
        let exact = ranges
            .into_iter()
            .filter(|r| r.channels() == channels && usable(r.sample_format()))
            .filter_map(|r| r.try_with_sample_rate(rate))
            .max_by_key(|c| c.sample_format() == SampleFormat::I16);
        let supported = match exact {
            Some(c) => c,
            None => device.default_output_config().map_err(no_device)?,
        };
        let format = supported.sample_format();
        if !usable(format) {
            return Err(no_device(format!("the device wants {format} samples")));
        }
        let config: StreamConfig = supported.config();
        tracing::debug!(
            device = ?device.id().ok(),
            ?config,
            %format,
            exact = config.sample_rate == rate && config.channels == channels,
            "audio output opened"
        );
        let out_channels = usize::from(config.channels.max(1));
        let shared = Arc::new(Shared {
            buf: Mutex::new(VecDeque::new()),
            drained: Condvar::new(),
            max: (config.sample_rate as usize * out_channels / 2).max(4096),
            underruns: AtomicU64::new(0),
            live: AtomicBool::new(false),
        });
        let err = |e: cpal::Error| tracing::warn!(error = %e, "audio device error");
        let stream = match format {
            SampleFormat::I16 => {
                let s = shared.clone();
                device.build_output_stream(
                    config,
                    move |out: &mut [i16], _: &cpal::OutputCallbackInfo| {
                        fill(&s, out, |v| {
                            (v * 32768.0).round().clamp(-32768.0, 32767.0) as i16
                        })
                    },
                    err,
                    None,
                )
            }
            _ => {
                let s = shared.clone();
                device.build_output_stream(
                    config,
                    move |out: &mut [f32], _: &cpal::OutputCallbackInfo| fill(&s, out, |v| v),
                    err,
                    None,
                )
            }
        }
        .map_err(no_device)?;
        stream.play().map_err(no_device)?;
        Ok(Self {
            shared,
            _stream: stream,
            in_channels: usize::from(channels.max(1)),
            out_channels,
            step: f64::from(rate) / f64::from(config.sample_rate.max(1)),
            frac: 0.0,
            prev: Vec::new(),
        })
    }

    /// Queues interleaved samples, waiting while the buffer is full.
    pub(crate) fn write(&mut self, samples: &[i16]) {
        let mut out = Vec::with_capacity(samples.len() * self.out_channels / self.in_channels + 8);
        for frame in samples.chunks(self.in_channels) {
            let cur: Vec<f32> = (0..self.out_channels)
                .map(|c| map_channel(frame, c, self.out_channels))
                .collect();
            if (self.step - 1.0).abs() < f64::EPSILON {
                out.extend_from_slice(&cur);
                continue;
            }
            if self.prev.is_empty() {
                self.prev = cur.clone();
            }
            while self.frac < 1.0 {
                let t = self.frac as f32;
                out.extend(self.prev.iter().zip(&cur).map(|(a, b)| a + (b - a) * t));
                self.frac += self.step;
            }
            self.frac -= 1.0;
            self.prev = cur;
        }
        let mut at = 0;
        while at < out.len() {
            let mut buf = self.shared.buf.lock();
            while buf.len() >= self.shared.max {
                self.shared
                    .drained
                    .wait_for(&mut buf, Duration::from_millis(200));
            }
            let room = self.shared.max - buf.len();
            let n = room.min(out.len() - at);
            buf.extend(&out[at..at + n]);
            at += n;
            self.shared.live.store(true, Ordering::Relaxed);
        }
    }

    /// Waits until everything queued has been handed to the device, plus its latency.
    /// Returns the number of underruns.
    pub(crate) fn finish(self) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut buf = self.shared.buf.lock();
        while !buf.is_empty() && Instant::now() < deadline {
            self.shared
                .drained
                .wait_for(&mut buf, Duration::from_millis(100));
        }
        self.shared.live.store(false, Ordering::Relaxed);
        drop(buf);
        std::thread::sleep(Duration::from_millis(200));
        self.shared.underruns.load(Ordering::Relaxed)
    }
}

/// Output channel `c` of `n` from an input frame: copies when there are as many, duplicates
/// mono, averages down to mono, drops extra channels.
fn map_channel(frame: &[i16], c: usize, n: usize) -> f32 {
    let v = |i: usize| f32::from(frame[i]) / 32768.0;
    match (frame.len(), n) {
        (len, _) if c < len && len == n => v(c),
        (1, _) => v(0),
        (len, 1) => (0..len).map(v).sum::<f32>() / len as f32,
        (len, _) if c < len => v(c),
        _ => 0.0,
    }
}

fn fill<T: Copy>(s: &Shared, out: &mut [T], conv: impl Fn(f32) -> T) {
    let mut buf = s.buf.lock();
    let mut short = false;
    for o in out.iter_mut() {
        *o = conv(buf.pop_front().unwrap_or_else(|| {
            short = true;
            0.0
        }));
    }
    drop(buf);
    if short && s.live.load(Ordering::Relaxed) {
        s.underruns.fetch_add(1, Ordering::Relaxed);
    }
    s.drained.notify_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_mapping() {
        assert_eq!(map_channel(&[16384, -16384], 1, 2), -0.5);
        assert_eq!(map_channel(&[16384], 1, 2), 0.5);
        assert_eq!(map_channel(&[16384, 0], 0, 1), 0.25);
        assert_eq!(map_channel(&[1, 2, 3], 1, 2), 2.0 / 32768.0);
    }
}
