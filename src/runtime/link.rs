//! Emulation of slow links and slow devices on one machine, unprivileged (no `tc`, no netem).
//!
//! * [`LinkEmulation`]: the sender paces the forward body through a [`TokenBucket`] at `mbps`
//!   (10^6 bit/s, as `tc` counts) and holds every chunk back a further `delay_ms` (one-way
//!   propagation delay). Sending N bytes takes `N·8/mbps` µs + `delay_ms`, like a store-and-forward
//!   link with an empty queue. The bucket is shared by every request to the same next tier, so
//!   concurrent forwards share the bandwidth as they would on a real link.
//! * [`ComputeEmulation`]: after the model ran for `t`, the tier sleeps `(slowdown − 1)·t`
//!   (asynchronously: no inference thread is held), so it answers like a device `slowdown`
//!   times slower. This is emulation: the CPU is not actually slower, the wait is just added.
//!
//! Real kernel shaping, for tests that run as root, is in `testkit::netns`.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

/// The emulated link from this tier to the next.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LinkEmulation {
    /// Bandwidth in Mbit/s (10^6 bit/s); `None` = as fast as the real network.
    pub mbps: Option<f64>,
    /// Added one-way delay, ms.
    pub delay_ms: f64,
}

impl LinkEmulation {
    /// Checks the numbers: a bandwidth must be positive and finite, a delay finite and ≥ 0.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(m) = self.mbps {
            if !(m.is_finite() && m > 0.0) {
                return Err(format!("link bandwidth must be > 0 Mbit/s, got {m}"));
            }
        }
        if !(self.delay_ms.is_finite() && self.delay_ms >= 0.0) {
            return Err(format!("link delay must be ≥ 0 ms, got {}", self.delay_ms));
        }
        Ok(())
    }

    pub fn is_noop(&self) -> bool {
        self.mbps.is_none() && self.delay_ms == 0.0
    }

    pub fn delay(&self) -> Duration {
        Duration::from_secs_f64(self.delay_ms.max(0.0) / 1e3)
    }

    /// What the emulation adds to sending `bytes` on an idle link: `bytes·8/mbps` µs + delay.
    pub fn transfer_time(&self, bytes: u64) -> Duration {
        let serialise = self.mbps.map_or(0.0, |m| bytes as f64 * 8.0 / (m * 1e6));
        Duration::from_secs_f64(serialise) + self.delay()
    }
}

/// A token bucket over bytes with reservations: a sender takes `n` tokens at once (the balance may
/// go negative) and learns when its bytes are through. With `burst = 0` this is exact pacing:
/// bytes sent back to back from an idle bucket finish at `n / rate`.
#[derive(Debug)]
pub struct TokenBucket {
    bytes_per_sec: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(mbps: f64, burst_bytes: u64) -> TokenBucket {
        TokenBucket {
            bytes_per_sec: mbps * 1e6 / 8.0,
            burst: burst_bytes as f64,
            tokens: burst_bytes as f64,
            last: Instant::now(),
        }
    }

    /// Changes the rate at `now`: the balance is brought up to `now` at the old rate first, so
    /// bytes already through are not re-priced (bytes still owed go at the new rate).
    pub fn set_mbps(&mut self, mbps: f64, now: Instant) {
        let now = now.max(self.last);
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.bytes_per_sec).min(self.burst);
        self.bytes_per_sec = mbps * 1e6 / 8.0;
    }

    /// Takes `n` tokens at `now`; returns the instant at which the balance is back to ≥ 0, i.e.
    /// when the last of these `n` bytes has been "transmitted".
    pub fn reserve(&mut self, n: u64, now: Instant) -> Instant {
        // Time never runs backwards for the bucket: a reservation "in the past" queues behind
        // what was reserved since.
        let now = now.max(self.last);
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.bytes_per_sec).min(self.burst);
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            now
        } else {
            now + Duration::from_secs_f64(-self.tokens / self.bytes_per_sec)
        }
    }
}

/// The emulated link to one next tier, shared by all requests going there.
#[derive(Debug)]
pub struct Link {
    bucket: Option<Mutex<TokenBucket>>,
    delay: Duration,
}

impl Link {
    pub fn new(em: &LinkEmulation) -> Link {
        Link {
            // Burst 0: the emulated link has no free allowance, so the time is exactly N·8/B.
            bucket: em.mbps.map(|m| Mutex::new(TokenBucket::new(m, 0))),
            delay: em.delay(),
        }
    }

    /// Changes the bandwidth of a running link (to emulate a network that gets slower or
    /// faster); a link built without a bandwidth has nothing to change.
    pub fn set_mbps(&self, mbps: f64) -> Result<(), String> {
        LinkEmulation {
            mbps: Some(mbps),
            delay_ms: 0.0,
        }
        .validate()?;
        match &self.bucket {
            Some(b) => {
                b.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .set_mbps(mbps, Instant::now());
                Ok(())
            }
            None => Err("this link emulates no bandwidth".into()),
        }
    }

    /// When `n` bytes handed to the link at `at` are sent, and when they arrive (sent + delay).
    fn schedule(&self, n: u64, at: Instant) -> (Instant, Instant) {
        let sent = match &self.bucket {
            // A poisoned lock only means another sender panicked mid-update: the bucket's
            // numbers are still usable.
            Some(b) => b.lock().unwrap_or_else(|p| p.into_inner()).reserve(n, at),
            None => at,
        };
        (sent, sent + self.delay)
    }
}

/// Chunk size of paced bodies: small enough for smooth pacing at 1 Mbit/s (65 ms a chunk),
/// large enough that the per-chunk timer cost is negligible at 1 Gbit/s.
pub const PACE_CHUNK: usize = 8 * 1024;

/// The wait before a paced chunk is released.
type Wait = Pin<Box<dyn Future<Output = ()> + Send + Sync>>;

/// A request body that releases its bytes at the pace of a [`Link`]: each chunk is held until
/// it would have arrived. Unpaced (no link) it is a single chunk.
pub struct PacedBody {
    data: Bytes,
    link: Option<Arc<Link>>,
    /// The chunk waiting for its arrival time.
    pending: Option<(Bytes, Wait)>,
    /// When the previous chunk finished sending: the next one is handed to the link then, not
    /// when the previous one arrived, or the delay would be paid once per chunk.
    last_sent: Option<Instant>,
}

impl PacedBody {
    pub fn new(data: Bytes, link: Option<Arc<Link>>) -> PacedBody {
        PacedBody {
            data,
            link,
            pending: None,
            last_sent: None,
        }
    }

    pub fn empty() -> PacedBody {
        PacedBody::new(Bytes::new(), None)
    }
}

impl Body for PacedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        if this.pending.is_none() {
            if this.data.is_empty() {
                return Poll::Ready(None);
            }
            let Some(link) = &this.link else {
                let all = std::mem::take(&mut this.data);
                return Poll::Ready(Some(Ok(Frame::data(all))));
            };
            let chunk = this.data.split_to(PACE_CHUNK.min(this.data.len()));
            // Absolute deadlines: timer granularity never accumulates over many chunks.
            let now = Instant::now();
            let (sent, at) = link.schedule(
                chunk.len() as u64,
                this.last_sent.map_or(now, |t| t.min(now)),
            );
            this.last_sent = Some(sent);
            // The last chunk is released precisely: tokio's timer fires up to a millisecond
            // late, and while the earlier chunks' deadlines are absolute (their lateness never
            // adds up), the last one's is the transfer's. Served, every emulated link came in
            // 0.3–1.3 ms over its bytes' time and the hop's measured cost.
            let wait: Wait = if this.data.is_empty() {
                Box::pin(sleep_precisely_until(at))
            } else {
                Box::pin(tokio::time::sleep_until(at))
            };
            this.pending = Some((chunk, wait));
        }
        if let Some((_, sleep)) = &mut this.pending {
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        match this.pending.take() {
            Some((chunk, _)) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_empty() && self.pending.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        let pending = self.pending.as_ref().map_or(0, |(c, _)| c.len());
        SizeHint::with_exact((self.data.len() + pending) as u64)
    }
}

/// Sleeps `d` to within a fraction of a millisecond. tokio's timer ticks in whole
/// milliseconds, so a plain sleep overshoots by up to one, and every emulated tier would add
/// that to the latency it reports but not to the compute it reports; the last two ms are
/// slept on a blocking thread (≈ 0.1 ms late) instead.
pub async fn sleep_precisely(d: Duration) {
    const COARSE: Duration = Duration::from_millis(2);
    let deadline = std::time::Instant::now() + d;
    if d > COARSE {
        tokio::time::sleep(d - COARSE).await;
    }
    let rest = deadline.saturating_duration_since(std::time::Instant::now());
    if !rest.is_zero() {
        // A join error only means the runtime is shutting down: nothing left to wait for.
        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(rest)).await;
    }
}

/// [`sleep_precisely`] until `at`. The precise part sleeps in real time; should tokio's clock
/// still read earlier after it (a paused clock, in tests), the clock is moved on to `at` too.
async fn sleep_precisely_until(at: Instant) {
    sleep_precisely(at.saturating_duration_since(Instant::now())).await;
    if Instant::now() < at {
        tokio::time::sleep_until(at).await;
    }
}

/// An emulated compute slowdown for this tier.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ComputeEmulation {
    /// ≥ 1; 1 = this machine's speed.
    pub slowdown: f64,
}

impl Default for ComputeEmulation {
    fn default() -> Self {
        ComputeEmulation { slowdown: 1.0 }
    }
}

impl ComputeEmulation {
    pub fn validate(&self) -> Result<(), String> {
        if self.slowdown.is_finite() && self.slowdown >= 1.0 {
            Ok(())
        } else {
            Err(format!(
                "compute slowdown must be a finite factor ≥ 1, got {}",
                self.slowdown
            ))
        }
    }

    /// The time to wait after a run that took `measured`: `(slowdown − 1)·measured`.
    pub fn extra(&self, measured: Duration) -> Duration {
        measured.mul_f64((self.slowdown - 1.0).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_precise_sleep_never_ends_early() {
        for ms in [0.3, 2.0, 3.7] {
            let d = Duration::from_secs_f64(ms / 1e3);
            let start = std::time::Instant::now();
            sleep_precisely(d).await;
            assert!(
                start.elapsed() >= d,
                "{ms} ms: woke after {:?}",
                start.elapsed()
            );
        }
    }

    #[test]
    fn bucket_paces_exactly_with_no_burst() {
        let mut b = TokenBucket::new(8.0, 0); // 1 byte/µs
        let t0 = Instant::now();
        assert_eq!(b.reserve(1000, t0), t0 + Duration::from_micros(1000));
        // Back to back: queued behind the first.
        assert_eq!(b.reserve(500, t0), t0 + Duration::from_micros(1500));
        // After an idle second the debt is paid, but no credit accrues beyond burst 0.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(b.reserve(10, t1), t1 + Duration::from_micros(10));
    }

    #[test]
    fn bucket_burst_is_free_then_paced() {
        let mut b = TokenBucket::new(8.0, 100);
        let t0 = Instant::now();
        assert_eq!(b.reserve(100, t0), t0);
        assert_eq!(b.reserve(100, t0), t0 + Duration::from_micros(100));
    }

    #[test]
    fn transfer_time_formula() {
        let l = LinkEmulation {
            mbps: Some(10.0),
            delay_ms: 5.0,
        };
        // 125 000 bytes = 1 Mbit → 100 ms at 10 Mbit/s, plus 5 ms.
        assert_eq!(l.transfer_time(125_000), Duration::from_millis(105));
        assert!(LinkEmulation {
            mbps: Some(0.0),
            delay_ms: 0.0
        }
        .validate()
        .is_err());
        assert!(ComputeEmulation { slowdown: 0.5 }.validate().is_err());
        assert_eq!(
            ComputeEmulation { slowdown: 3.0 }.extra(Duration::from_millis(10)),
            Duration::from_millis(20)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_running_link_changes_bandwidth() {
        let link = Arc::new(Link::new(&LinkEmulation {
            mbps: Some(8.0),
            delay_ms: 0.0,
        }));
        let send = |n: usize| PacedBody::new(Bytes::from(vec![1u8; n]), Some(link.clone()));
        let t0 = Instant::now();
        send(10_000).collect().await.unwrap();
        assert_eq!(t0.elapsed(), Duration::from_millis(10));
        link.set_mbps(0.8).unwrap();
        let t1 = Instant::now();
        send(10_000).collect().await.unwrap();
        assert_eq!(t1.elapsed(), Duration::from_millis(100));
        assert!(link.set_mbps(0.0).is_err());
        assert!(Link::new(&LinkEmulation::default()).set_mbps(1.0).is_err());
    }

    #[tokio::test]
    async fn a_paced_body_never_arrives_early_in_real_time() {
        // 20 Mbit/s, 20 000 bytes: 8 ms, the last of three chunks released precisely.
        let em = LinkEmulation {
            mbps: Some(20.0),
            delay_ms: 0.0,
        };
        let want = em.transfer_time(20_000);
        for _ in 0..5 {
            let link = Arc::new(Link::new(&em));
            let data = Bytes::from(vec![3u8; 20_000]);
            let start = std::time::Instant::now();
            let got = PacedBody::new(data.clone(), Some(link))
                .collect()
                .await
                .unwrap()
                .to_bytes();
            assert_eq!(got, data);
            assert!(start.elapsed() >= want, "{:?} < {want:?}", start.elapsed());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn paced_body_takes_bytes_over_rate_plus_delay() {
        let em = LinkEmulation {
            mbps: Some(8.0),
            delay_ms: 20.0,
        };
        let link = Arc::new(Link::new(&em));
        let data = Bytes::from(vec![7u8; 100_000]);
        let t0 = Instant::now();
        let body = PacedBody::new(data.clone(), Some(link));
        assert_eq!(body.size_hint().exact(), Some(100_000));
        let got = body.collect().await.unwrap().to_bytes();
        assert_eq!(got, data);
        assert_eq!(t0.elapsed(), em.transfer_time(100_000));
    }
}
