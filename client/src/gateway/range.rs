//! The HTTP `Range` header for byte ranges (RFC 9110, section 14).

/// What a request's `Range` header asks of a representation of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// The whole representation: no `Range`, or one the server ignores (another unit, a
    /// malformed value, or several ranges).
    Full,
    /// Bytes `start..=end` (`end` inclusive, both within the representation).
    Partial {
        /// First byte.
        start: u64,
        /// Last byte.
        end: u64,
    },
    /// No byte of the range exists: answer 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// Most characters of a `Range` value that are looked at; longer values are ignored.
const MAX_RANGE_LEN: usize = 256;

/// Interprets `header` (the `Range` value, if any) for a representation of `len` bytes.
///
/// One range-spec is served: `a-b` (clamped to the end), `a-` (to the end) or `-n` (the
/// last `n` bytes). A range starting at or past the end, or a zero-length suffix, is
/// unsatisfiable. Several ranges, another unit or a malformed value are ignored, which RFC
/// 9110 allows: the whole representation is sent with 200.
pub fn parse(header: Option<&str>, len: u64) -> RangeRequest {
    let Some(value) = header.map(str::trim) else {
        return RangeRequest::Full;
    };
    if value.len() > MAX_RANGE_LEN {
        return RangeRequest::Full;
    }
    let Some((unit, set)) = value.split_once('=') else {
        return RangeRequest::Full;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || set.contains(',') {
        return RangeRequest::Full;
    }
    let Some((first, last)) = set.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let number = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // Digits beyond u64 mean "more than any length".
        Some(s.parse().unwrap_or(u64::MAX))
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // A suffix: the last `n` bytes.
        return match number(last) {
            None => RangeRequest::Full,
            Some(0) => RangeRequest::Unsatisfiable,
            Some(_) if len == 0 => RangeRequest::Unsatisfiable,
            Some(n) => RangeRequest::Partial {
                start: len.saturating_sub(n),
                end: len - 1,
            },
        };
    }
    let Some(start) = number(first) else {
        return RangeRequest::Full;
    };
    let end = if last.is_empty() {
        u64::MAX
    } else {
        match number(last) {
            Some(e) if e >= start => e,
            // `last < first` makes the range-spec invalid: ignored.
            _ => return RangeRequest::Full,
        }
    };
    if start >= len {
        return RangeRequest::Unsatisfiable;
    }
    RangeRequest::Partial {
        start,
        end: end.min(len - 1),
    }
}

#[cfg(test)]
mod tests {
    use super::RangeRequest::{Full, Partial, Unsatisfiable};
    use super::parse;

    #[test]
    fn the_forms_of_rfc_9110() {
        let p = |h| parse(Some(h), 10_000);
        assert_eq!(parse(None, 10), Full);
        assert_eq!(p("bytes=0-499"), Partial { start: 0, end: 499 });
        assert_eq!(
            p("bytes=500-999"),
            Partial {
                start: 500,
                end: 999
            }
        );
        assert_eq!(
            p("bytes=9500-"),
            Partial {
                start: 9500,
                end: 9999
            }
        );
        assert_eq!(
            p("bytes=-500"),
            Partial {
                start: 9500,
                end: 9999
            }
        );
        assert_eq!(p("bytes=0-0"), Partial { start: 0, end: 0 });
        assert_eq!(
            p("bytes=-1"),
            Partial {
                start: 9999,
                end: 9999
            }
        );
        // Clamped to the end; a suffix longer than the whole is the whole.
        assert_eq!(
            p("bytes=9000-20000"),
            Partial {
                start: 9000,
                end: 9999
            }
        );
        assert_eq!(
            p("bytes=-20000"),
            Partial {
                start: 0,
                end: 9999
            }
        );
        assert_eq!(p("Bytes = 1-2"), Partial { start: 1, end: 2 });
        assert_eq!(
            p("bytes=0-99999999999999999999999"),
            Partial {
                start: 0,
                end: 9999
            }
        );
    }

    #[test]
    fn unsatisfiable_and_ignored() {
        let p = |h| parse(Some(h), 10_000);
        assert_eq!(p("bytes=10000-"), Unsatisfiable);
        assert_eq!(p("bytes=20000-30000"), Unsatisfiable);
        assert_eq!(p("bytes=-0"), Unsatisfiable);
        assert_eq!(parse(Some("bytes=0-"), 0), Unsatisfiable);
        assert_eq!(parse(Some("bytes=-5"), 0), Unsatisfiable);
        for ignored in [
            "items=0-5",
            "bytes",
            "bytes=",
            "bytes=-",
            "bytes=abc-",
            "bytes=5-2",
            "bytes=+1-2",
            "bytes=0-1,5-6",
            "bytes=1-2-3",
        ] {
            assert_eq!(p(ignored), Full, "{ignored}");
        }
        assert_eq!(p(&format!("bytes={}", "1".repeat(300))), Full);
    }
}
