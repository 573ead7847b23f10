//! Cutting a song's bytes into fixed-size segments, streaming.

use std::io::{self, Read};

use crate::hash::SegmentId;

/// Default segment size: 256 KiB.
pub const DEFAULT_SEGMENT_SIZE: u32 = 256 * 1024;

/// Largest segment size a manifest may declare: 4 MiB. Bounds the memory a reader of any
/// manifest needs for one segment.
pub const MAX_SEGMENT_SIZE: u32 = 4 * 1024 * 1024;

/// One segment cut from a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Position of the segment in the song, from 0.
    pub index: u32,
    /// `blake3(bytes)`.
    pub id: SegmentId,
    /// The segment's bytes: `segment_size` long, except the last, which may be shorter.
    pub bytes: Vec<u8>,
}

/// Reads any [`Read`] and yields its segments in order.
///
/// Holds at most one segment in memory at a time (the one it is filling); the caller owns
/// each yielded segment. An empty input yields no segments.
#[derive(Debug)]
pub struct Segmenter<R> {
    reader: R,
    segment_size: usize,
    next_index: u32,
    done: bool,
}

impl<R: Read> Segmenter<R> {
    /// Segments `reader` into pieces of `segment_size` bytes.
    ///
    /// # Panics
    /// If `segment_size` is zero (a programming error, not an input error).
    pub fn new(reader: R, segment_size: u32) -> Self {
        assert!(segment_size > 0, "segment size must be positive");
        Self {
            reader,
            segment_size: segment_size as usize,
            next_index: 0,
            done: false,
        }
    }

    fn fill(&mut self) -> io::Result<Vec<u8>> {
        let mut buf = Vec::with_capacity(self.segment_size);
        // `take` + `read_to_end` loops over short reads and retries on `Interrupted`.
        (&mut self.reader)
            .take(self.segment_size as u64)
            .read_to_end(&mut buf)?;
        Ok(buf)
    }
}

impl<R: Read> Iterator for Segmenter<R> {
    type Item = io::Result<Segment>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.fill() {
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
            Ok(bytes) if bytes.is_empty() => {
                self.done = true;
                None
            }
            Ok(bytes) => {
                if bytes.len() < self.segment_size {
                    self.done = true;
                }
                let index = self.next_index;
                self.next_index += 1;
                Some(Ok(Segment {
                    index,
                    id: SegmentId::of(&bytes),
                    bytes,
                }))
            }
        }
    }
}

/// Number of segments a song of `total_size` bytes has at `segment_size`.
pub fn segment_count(total_size: u64, segment_size: u32) -> u64 {
    total_size.div_ceil(u64::from(segment_size.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A reader that returns at most 7 bytes per call, to exercise short reads.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = buf.len().min(7).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    proptest! {
        #[test]
        fn segments_concatenate_to_input(data in proptest::collection::vec(any::<u8>(), 0..5000), size in 1u32..700) {
            let segs: Vec<Segment> = Segmenter::new(Trickle(&data), size).collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(segs.len() as u64, segment_count(data.len() as u64, size));
            let mut joined = Vec::new();
            for (i, s) in segs.iter().enumerate() {
                prop_assert_eq!(s.index as usize, i);
                prop_assert_eq!(s.id, SegmentId::of(&s.bytes));
                if i + 1 < segs.len() {
                    prop_assert_eq!(s.bytes.len(), size as usize);
                } else {
                    prop_assert!(!s.bytes.is_empty() && s.bytes.len() <= size as usize);
                }
                joined.extend_from_slice(&s.bytes);
            }
            prop_assert_eq!(joined, data);
        }
    }

    #[test]
    fn read_error_is_reported_once() {
        struct Broken;
        impl Read for Broken {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::Error::other("disk gone"))
            }
        }
        let mut s = Segmenter::new(Broken, 16);
        assert!(matches!(s.next(), Some(Err(_))));
        assert!(s.next().is_none());
    }
}
