//! Prometheus exposition shared by the daemons, on `prometheus-client` (OpenMetrics text).
//!
//! Each subsystem keeps its own counters (atomics it updates on its hot path) and, where a
//! distribution matters, [`Latencies`] histograms. A scrape builds a [`Scrape`], adds the
//! current values and the histograms, and renders it.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `Content-Type` of [`Scrape::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Latency histograms by label set, with buckets from 0.25 ms to 16 s (doubling).
pub type Latencies<L> = Family<L, Histogram, fn() -> Histogram>;

/// A new, empty [`Latencies`].
pub fn latencies<L: Clone + std::hash::Hash + Eq>() -> Latencies<L> {
    Family::new_with_constructor(latency_histogram)
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 17))
}

/// One label, e.g. `[("kind", "get_shard")]`.
pub type Label = [(&'static str, &'static str); 1];

/// The metrics of one scrape.
#[derive(Debug, Default)]
pub struct Scrape {
    registry: Registry,
}

/// The registry adds the final full stop itself.
fn help(text: &str) -> &str {
    text.strip_suffix('.').unwrap_or(text)
}

impl Scrape {
    /// A counter; `name` is the exported name, ending in `_total`.
    pub fn counter(&mut self, name: &str, help_text: &str, value: u64) {
        let base = name.strip_suffix("_total").unwrap_or(name);
        self.registry
            .register(base, help(help_text), ConstCounter::new(value));
    }

    /// A gauge.
    pub fn gauge(&mut self, name: &str, help_text: &str, value: u64) {
        self.registry
            .register(name, help(help_text), ConstGauge::new(value as i64));
    }

    /// A counter with labels, one series per label set; `name` ends in `_total`.
    pub fn counters<L>(
        &mut self,
        name: &str,
        help_text: &str,
        series: impl IntoIterator<Item = (L, u64)>,
    ) where
        L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
    {
        let family = Family::<L, prometheus_client::metrics::counter::Counter>::default();
        for (labels, value) in series {
            family.get_or_create(&labels).inc_by(value);
        }
        let base = name.strip_suffix("_total").unwrap_or(name);
        self.registry.register(base, help(help_text), family);
    }

    /// Histograms that live with their subsystem (shared, not copied).
    pub fn histograms<L>(&mut self, name: &str, help_text: &str, family: &Latencies<L>)
    where
        L: EncodeLabelSet + Clone + std::hash::Hash + Eq + std::fmt::Debug + Send + Sync + 'static,
    {
        self.registry
            .register(name, help(help_text), family.clone());
    }

    /// The OpenMetrics text of everything added.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_labels_and_histograms() {
        let lat: Latencies<Label> = latencies();
        lat.get_or_create(&[("kind", "get")]).observe(0.003);
        lat.get_or_create(&[("kind", "get")]).observe(20.0);
        let mut s = Scrape::default();
        s.counter("m_bytes_total", "Bytes sent.", 42);
        s.gauge("m_used_bytes", "Bytes used.", 7);
        s.counters(
            "m_requests_total",
            "Requests.",
            [([("outcome", "ok")], 3u64), ([("outcome", "refused")], 1)],
        );
        s.histograms("m_request_duration_seconds", "Latency.", &lat);
        let text = s.render();
        for line in [
            "# HELP m_bytes Bytes sent.",
            "# TYPE m_bytes counter",
            "m_bytes_total 42",
            "# TYPE m_used_bytes gauge",
            "m_used_bytes 7",
            "m_requests_total{outcome=\"ok\"} 3",
            "m_requests_total{outcome=\"refused\"} 1",
            "# TYPE m_request_duration_seconds histogram",
            "m_request_duration_seconds_count{kind=\"get\"} 2",
            "m_request_duration_seconds_bucket{le=\"0.004\",kind=\"get\"} 1",
            "m_request_duration_seconds_bucket{le=\"+Inf\",kind=\"get\"} 2",
            "# EOF",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in\n{text}"
            );
        }
    }
}
