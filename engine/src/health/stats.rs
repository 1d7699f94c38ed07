//! Pure statistics an interface keeps: latency history (a time-bounded ring buffer), EWMA,
//! jitter, and throughput from byte counters.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// EWMA weight of a new latency sample.
const LATENCY_ALPHA: f64 = 0.3;
/// Per-second decay of the peak-rate (capacity) estimate while the link carries traffic
/// (half-life ≈ 2.3 min).
const PEAK_DECAY: f64 = 0.995;
/// EWMA weight of the throughput rate, per second.
const THROUGHPUT_ALPHA: f64 = 0.5;

/// Latency samples over a time window, with smoothed value and jitter.
#[derive(Debug, Clone)]
pub struct LatencyStats {
    samples: VecDeque<(Instant, u32)>,
    window: Duration,
    cap: usize,
    ewma_us: Option<f64>,
    jitter_us: f64,
    last_us: Option<u32>,
}

impl LatencyStats {
    /// Keeps samples of the last `window`, at most `cap` of them.
    pub fn new(window: Duration, cap: usize) -> Self {
        Self {
            samples: VecDeque::with_capacity(cap.min(1024)),
            window,
            cap,
            ewma_us: None,
            jitter_us: 0.0,
            last_us: None,
        }
    }

    /// Adds one measurement (a TCP connect time).
    pub fn record(&mut self, now: Instant, rtt: Duration) {
        let us = u32::try_from(rtt.as_micros()).unwrap_or(u32::MAX);
        let x = f64::from(us);
        self.ewma_us = Some(match self.ewma_us {
            None => x,
            Some(e) => e + LATENCY_ALPHA * (x - e),
        });
        if let Some(last) = self.last_us {
            // RFC 3550-style interarrival jitter: smoothed |difference| of successive samples.
            let d = (x - f64::from(last)).abs();
            self.jitter_us += (d - self.jitter_us) / 8.0;
        }
        self.last_us = Some(us);
        self.samples.push_back((now, us));
        self.expire(now);
    }

    /// Drops samples older than the window or beyond the cap.
    pub fn expire(&mut self, now: Instant) {
        while self.samples.len() > self.cap {
            self.samples.pop_front();
        }
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > self.window)
        {
            self.samples.pop_front();
        }
    }

    /// Smoothed latency in microseconds, `None` before the first sample.
    pub fn ewma_us(&self) -> Option<u32> {
        self.ewma_us.map(|e| e.round() as u32)
    }

    /// Smoothed jitter in microseconds.
    pub fn jitter_us(&self) -> u32 {
        self.jitter_us.round() as u32
    }

    /// The most recent `n` samples in microseconds, oldest first.
    pub fn recent(&self, n: usize) -> Vec<u32> {
        let skip = self.samples.len().saturating_sub(n);
        self.samples.iter().skip(skip).map(|&(_, us)| us).collect()
    }

    /// Samples with their age relative to `now`, oldest first (for the dashboard's chart).
    pub fn history(&self, now: Instant) -> Vec<(Duration, u32)> {
        self.samples
            .iter()
            .map(|&(t, us)| (now.duration_since(t), us))
            .collect()
    }
}

/// The window a throughput rate is measured over (sliding: one rate per sample).
pub const RATE_WINDOW: Duration = Duration::from_secs(1);

/// Throughput from cumulative byte counters sampled on a timer (a few times per
/// [`RATE_WINDOW`]).
///
/// Each sample yields the rate over the last [`RATE_WINDOW`] (a sliding window, so a transfer
/// of 1.5 s is seen whole in at least one window whatever the timer's phase). The displayed
/// rate is an EWMA of those; the capacity estimate is their peak, which forgets slowly while
/// the link carries traffic and not at all while it is idle (idleness says nothing about
/// what the link could carry).
#[derive(Debug, Clone, Default)]
pub struct Throughput {
    /// (when, cumulative up, cumulative down), oldest first, spanning at least the window.
    samples: VecDeque<(Instant, u64, u64)>,
    up_bps: f64,
    down_bps: f64,
    peak_down_bps: f64,
    peak_up_bps: f64,
}

impl Throughput {
    /// Feeds the current cumulative totals.
    pub fn sample(&mut self, now: Instant, bytes_up: u64, bytes_down: u64) {
        let Some(&(prev_t, prev_up, prev_down)) = self.samples.back() else {
            self.samples.push_back((now, bytes_up, bytes_down));
            return;
        };
        let step = now.duration_since(prev_t).as_secs_f64();
        if step <= 0.0 {
            return;
        }
        self.samples.push_back((now, bytes_up, bytes_down));
        // Keep exactly one sample at or before the window's start.
        while self.samples.len() > 2 && now.duration_since(self.samples[1].0) >= RATE_WINDOW {
            self.samples.pop_front();
        }
        let (t0, up0, down0) = self.samples[0];
        let secs = now.duration_since(t0).as_secs_f64();
        let up_bps = bytes_up.saturating_sub(up0) as f64 * 8.0 / secs;
        let down_bps = bytes_down.saturating_sub(down0) as f64 * 8.0 / secs;
        // Per-step weights equivalent to the per-second ones whatever the timer's period.
        let alpha = 1.0 - (1.0 - THROUGHPUT_ALPHA).powf(step.min(1.0));
        self.up_bps += alpha * (up_bps - self.up_bps);
        self.down_bps += alpha * (down_bps - self.down_bps);
        // A window shorter than the full one (just after start) must not set a peak.
        if secs + 1e-3 >= RATE_WINDOW.as_secs_f64() {
            let decay = PEAK_DECAY.powf(step);
            if bytes_up > prev_up {
                self.peak_up_bps = up_bps.max(self.peak_up_bps * decay);
            }
            if bytes_down > prev_down {
                self.peak_down_bps = down_bps.max(self.peak_down_bps * decay);
            }
        }
    }

    /// Smoothed bits per second, client → destination.
    pub fn up_bps(&self) -> u64 {
        self.up_bps as u64
    }

    /// Smoothed bits per second, destination → client.
    pub fn down_bps(&self) -> u64 {
        self.down_bps as u64
    }

    /// Highest one-window rate seen each way (a capacity estimate).
    pub fn peak_bps(&self) -> (u64, u64) {
        (self.peak_up_bps as u64, self.peak_down_bps as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ewma_jitter_and_window() {
        let mut l = LatencyStats::new(Duration::from_secs(10), 100);
        assert_eq!(l.ewma_us(), None);
        l.record(Instant::now(), Duration::from_millis(10));
        assert_eq!(l.ewma_us(), Some(10_000));
        l.record(Instant::now(), Duration::from_millis(20));
        assert_eq!(l.ewma_us(), Some(13_000));
        assert_eq!(l.jitter_us(), 1_250);
        tokio::time::advance(Duration::from_secs(11)).await;
        l.record(Instant::now(), Duration::from_millis(20));
        assert_eq!(l.recent(10), vec![20_000], "older samples left the window");
    }

    #[tokio::test(start_paused = true)]
    async fn cap_bounds_memory() {
        let mut l = LatencyStats::new(Duration::from_secs(3600), 5);
        for ms in 0..20 {
            l.record(Instant::now(), Duration::from_millis(ms));
        }
        assert_eq!(l.recent(100).len(), 5);
        assert_eq!(l.recent(2), vec![18_000, 19_000]);
    }

    #[tokio::test(start_paused = true)]
    async fn throughput_from_counters() {
        let mut t = Throughput::default();
        t.sample(Instant::now(), 0, 0);
        tokio::time::advance(Duration::from_secs(1)).await;
        t.sample(Instant::now(), 1_000, 125_000);
        assert_eq!(t.down_bps(), 500_000);
        assert_eq!(t.peak_bps(), (8_000, 1_000_000));
    }

    /// Samples every 250 ms: `rate(k)` bytes in step k.
    fn feed(t: &mut Throughput, now: &mut Instant, steps: usize, rate: impl Fn(usize) -> u64) {
        let (mut up, mut down) = t.samples.back().map_or((0, 0), |s| (s.1, s.2));
        for k in 0..steps {
            *now += Duration::from_millis(250);
            down += rate(k);
            up += rate(k) / 100;
            t.sample(*now, up, down);
        }
    }

    #[test]
    fn a_short_transfer_is_seen_whole_by_the_sliding_window() {
        // 1.5 s at 10 MB/s (80 Mbit/s), starting half-way between two samples: a fixed
        // one-second bucket would see at most ~75% of the rate; the sliding window sees it all.
        let mut t = Throughput::default();
        let mut now = Instant::now();
        t.sample(now, 0, 0);
        feed(&mut t, &mut now, 2, |_| 0);
        feed(&mut t, &mut now, 7, |k| match k {
            0 | 6 => 1_250_000,
            _ => 2_500_000,
        });
        feed(&mut t, &mut now, 4, |_| 0);
        let peak = t.peak_bps().1;
        // (The busy steps after the full window decay it by a hair.)
        assert!((79_500_000..=80_000_000).contains(&peak), "{peak}");
    }

    #[test]
    fn the_capacity_estimate_holds_while_idle_and_decays_while_busy() {
        let mut t = Throughput::default();
        let mut now = Instant::now();
        t.sample(now, 0, 0);
        feed(&mut t, &mut now, 8, |_| 2_500_000); // 80 Mbit/s
        assert_eq!(t.peak_bps().1, 80_000_000);
        feed(&mut t, &mut now, 4 * 600, |_| 0); // ten idle minutes
        assert_eq!(t.peak_bps().1, 80_000_000, "idle time is no evidence");
        assert_eq!(t.down_bps(), 0);
        feed(&mut t, &mut now, 4 * 140, |_| 625_000); // 20 Mbit/s for 140 s
        let peak = t.peak_bps().1;
        assert!(
            (38_000_000..42_000_000).contains(&peak),
            "about half after one half-life of traffic: {peak}"
        );
    }
}
