//! The per-interface health state machine, pure and clock-injected so that its flapping cases
//! are tested without sleeping.
//!
//! ```text
//!            failure                      failures_to_down in a row / hard failure
//!   Up ───────────────▶ Degraded ───────────────────────────────────────▶ Down (ejected)
//!    ▲ successes_to_up     │ ▲                                              │
//!    └─────────────────────┘ └──── ejection over: on probation ─────────────┘
//!                               (successes_to_up good results → Up)
//! ```
//!
//! - One failure makes an Up interface Degraded; it takes `successes_to_up` consecutive
//!   successes to be Up again, `failures_to_down` consecutive failures to go Down. Separate
//!   thresholds each way give hysteresis, so one lost probe never flips a link.
//! - A hard failure (the OS says the link is down, connects fail with "network unreachable")
//!   takes the interface Down at once.
//! - Down is an ejection with a growing back-off: `eject_base × 2^(ejections-1)`, capped at
//!   `eject_max`, reset after a long healthy stretch. When it ends, the interface is Degraded
//!   (on probation): traffic may try it again, protected by failover. With active probes
//!   configured (`probing`) there is no probation: the interface stays Down until
//!   `successes_to_up` good probes after the ejection bring it straight back Up, so a link
//!   that is still black-holed costs clients nothing.
//! - While the OS reports the link down it stays Down whatever the timers say.

use std::time::Duration;

use tokio::time::Instant;

/// The three health states strategies see.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Healthy.
    Up,
    /// Recent failures (or on probation after an ejection): usable, but suspect.
    Degraded,
    /// Ejected or link down: no new connections.
    Down,
}

impl Health {
    /// The lowercase name the dashboard, the API and the connection log use.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Degraded => "degraded",
            Self::Down => "down",
        }
    }
}

/// Thresholds and back-off of the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthPolicy {
    /// Consecutive failures that take an interface Down.
    pub failures_to_down: u32,
    /// Consecutive successes that take a Degraded interface Up.
    pub successes_to_up: u32,
    /// First ejection length.
    pub eject_base: Duration,
    /// Longest ejection.
    pub eject_max: Duration,
    /// Active probes judge the interface: an ejected interface returns only after
    /// `successes_to_up` good probes (no probation with real traffic). Without probes it
    /// returns on probation when its ejection ends.
    pub probing: bool,
}

impl Default for HealthPolicy {
    /// 3 failures down, 2 successes up, ejections of 2 s doubling up to 60 s.
    fn default() -> Self {
        Self {
            failures_to_down: 3,
            successes_to_up: 2,
            eject_base: Duration::from_secs(2),
            eject_max: Duration::from_secs(60),
            probing: false,
        }
    }
}

/// What changed after an observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// The state before.
    pub from: Health,
    /// The state now.
    pub to: Health,
}

/// One interface's health.
#[derive(Debug, Clone)]
pub struct HealthState {
    policy: HealthPolicy,
    state: Health,
    link_up: bool,
    ok_streak: u32,
    fail_streak: u32,
    ejections: u32,
    ejected_until: Option<Instant>,
    healthy_since: Option<Instant>,
}

impl HealthState {
    /// A new interface: Up if its link is up.
    pub fn new(policy: HealthPolicy, link_up: bool, now: Instant) -> Self {
        Self {
            policy,
            state: if link_up { Health::Up } else { Health::Down },
            link_up,
            ok_streak: 0,
            fail_streak: 0,
            ejections: 0,
            ejected_until: None,
            healthy_since: link_up.then_some(now),
        }
    }

    /// The current state.
    pub fn state(&self) -> Health {
        self.state
    }

    /// When the current ejection ends, if ejected.
    pub fn ejected_until(&self) -> Option<Instant> {
        self.ejected_until
    }

    /// How many times the interface has been ejected since it was last healthy for long.
    pub fn ejections(&self) -> u32 {
        self.ejections
    }

    /// A connect or probe through the interface succeeded.
    pub fn success(&mut self, now: Instant) -> Option<Transition> {
        self.fail_streak = 0;
        self.ok_streak = self.ok_streak.saturating_add(1);
        let from = self.state;
        let ejection_over = self.ejected_until.is_none_or(|until| now >= until);
        let readmit = self.state == Health::Degraded
            || (self.state == Health::Down && self.policy.probing && self.link_up && ejection_over);
        if readmit && self.ok_streak >= self.policy.successes_to_up {
            self.state = Health::Up;
            self.ejected_until = None;
            self.healthy_since = Some(now);
        }
        if self.state == Health::Up
            && self
                .healthy_since
                .is_some_and(|t| now.duration_since(t) >= self.policy.eject_max * 2)
        {
            // A long healthy stretch forgives past ejections.
            self.ejections = 0;
        }
        self.changed(from)
    }

    /// A connect or probe through the interface failed on the interface's side.
    pub fn failure(&mut self, now: Instant) -> Option<Transition> {
        self.ok_streak = 0;
        self.fail_streak = self.fail_streak.saturating_add(1);
        let from = self.state;
        match self.state {
            Health::Up => {
                self.state = Health::Degraded;
                if self.fail_streak >= self.policy.failures_to_down {
                    self.eject(now);
                }
            }
            Health::Degraded if self.fail_streak >= self.policy.failures_to_down => self.eject(now),
            Health::Degraded | Health::Down => {}
        }
        self.changed(from)
    }

    /// A failure that leaves no doubt (link gone, network unreachable): Down at once.
    pub fn hard_failure(&mut self, now: Instant) -> Option<Transition> {
        self.ok_streak = 0;
        self.fail_streak = self.fail_streak.max(self.policy.failures_to_down);
        let from = self.state;
        if self.state != Health::Down {
            self.eject(now);
        }
        self.changed(from)
    }

    /// The OS reported the link state.
    pub fn link(&mut self, up: bool) -> Option<Transition> {
        if up == self.link_up {
            return None;
        }
        self.link_up = up;
        let from = self.state;
        if up {
            // Back from an OS-level outage: on probation until results say otherwise.
            self.ejected_until = None;
            self.ok_streak = 0;
            self.fail_streak = 0;
            self.state = Health::Degraded;
        } else {
            self.state = Health::Down;
            self.ejected_until = None;
            self.healthy_since = None;
        }
        self.changed(from)
    }

    /// Ends an ejection whose time is over (call on a timer).
    pub fn tick(&mut self, now: Instant) -> Option<Transition> {
        let from = self.state;
        if self.state == Health::Down
            && !self.policy.probing
            && self.link_up
            && self.ejected_until.is_some_and(|until| now >= until)
        {
            self.ejected_until = None;
            self.ok_streak = 0;
            self.fail_streak = 0;
            self.state = Health::Degraded;
        }
        self.changed(from)
    }

    fn eject(&mut self, now: Instant) {
        self.ejections = self.ejections.saturating_add(1);
        let factor = 1u32 << (self.ejections - 1).min(16);
        let length = self
            .policy
            .eject_base
            .saturating_mul(factor)
            .min(self.policy.eject_max);
        self.ejected_until = Some(now + length);
        self.healthy_since = None;
        self.state = Health::Down;
    }

    fn changed(&self, from: Health) -> Option<Transition> {
        (from != self.state).then_some(Transition {
            from,
            to: self.state,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> HealthPolicy {
        HealthPolicy {
            failures_to_down: 3,
            successes_to_up: 2,
            eject_base: Duration::from_secs(2),
            eject_max: Duration::from_secs(16),
            probing: false,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn with_probes_an_ejected_link_returns_only_after_good_probes() {
        let mut h = HealthState::new(
            HealthPolicy {
                probing: true,
                ..policy()
            },
            true,
            Instant::now(),
        );
        h.hard_failure(Instant::now());
        // Probes keep failing through and after the ejection: no probation, still Down.
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(h.tick(Instant::now()), None);
        h.failure(Instant::now());
        assert_eq!(h.state(), Health::Down);
        // The blackhole ends: two good probes bring it straight back Up.
        assert_eq!(h.success(Instant::now()), None);
        assert_eq!(
            h.success(Instant::now()),
            Some(Transition {
                from: Health::Down,
                to: Health::Up
            })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn with_probes_good_probes_during_the_ejection_wait_for_its_end() {
        let mut h = HealthState::new(
            HealthPolicy {
                probing: true,
                ..policy()
            },
            true,
            Instant::now(),
        );
        h.hard_failure(Instant::now());
        h.success(Instant::now());
        h.success(Instant::now());
        assert_eq!(h.state(), Health::Down, "still ejected");
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(h.success(Instant::now()).map(|t| t.to), Some(Health::Up));
    }

    #[tokio::test(start_paused = true)]
    async fn one_failure_degrades_but_does_not_eject() {
        let now = Instant::now();
        let mut h = HealthState::new(policy(), true, now);
        assert_eq!(
            h.failure(now),
            Some(Transition {
                from: Health::Up,
                to: Health::Degraded
            })
        );
        assert_eq!(h.success(now), None, "one success is not enough");
        assert_eq!(h.state(), Health::Degraded);
        assert_eq!(
            h.success(now),
            Some(Transition {
                from: Health::Degraded,
                to: Health::Up
            })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn alternating_results_never_flap_to_down_or_up() {
        let now = Instant::now();
        let mut h = HealthState::new(policy(), true, now);
        h.failure(now);
        for _ in 0..50 {
            h.success(now);
            assert_eq!(h.state(), Health::Degraded);
            h.failure(now);
            assert_eq!(h.state(), Health::Degraded);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_eject_with_growing_backoff() {
        let mut h = HealthState::new(policy(), true, Instant::now());
        let mut lengths = Vec::new();
        for _ in 0..5 {
            let now = Instant::now();
            for _ in 0..3 {
                h.failure(now);
            }
            assert_eq!(h.state(), Health::Down);
            let until = h.ejected_until().unwrap();
            lengths.push(until - now);
            // still ejected just before the end
            tokio::time::advance(until - now - Duration::from_millis(1)).await;
            assert_eq!(h.tick(Instant::now()), None);
            tokio::time::advance(Duration::from_millis(1)).await;
            assert_eq!(
                h.tick(Instant::now()),
                Some(Transition {
                    from: Health::Down,
                    to: Health::Degraded
                })
            );
        }
        let secs: Vec<u64> = lengths.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, vec![2, 4, 8, 16, 16]);
    }

    #[tokio::test(start_paused = true)]
    async fn probation_failure_counts_toward_the_next_ejection() {
        let now = Instant::now();
        let mut h = HealthState::new(policy(), true, now);
        h.hard_failure(now);
        tokio::time::advance(Duration::from_secs(2)).await;
        h.tick(Instant::now());
        assert_eq!(h.state(), Health::Degraded);
        h.success(Instant::now());
        h.success(Instant::now());
        assert_eq!(h.state(), Health::Up);
    }

    #[tokio::test(start_paused = true)]
    async fn link_down_is_immediate_and_sticks_until_link_up() {
        let now = Instant::now();
        let mut h = HealthState::new(policy(), true, now);
        assert_eq!(
            h.link(false),
            Some(Transition {
                from: Health::Up,
                to: Health::Down
            })
        );
        tokio::time::advance(Duration::from_secs(600)).await;
        assert_eq!(
            h.tick(Instant::now()),
            None,
            "no probation while the OS says down"
        );
        h.success(Instant::now());
        assert_eq!(h.state(), Health::Down);
        assert_eq!(
            h.link(true),
            Some(Transition {
                from: Health::Down,
                to: Health::Degraded
            })
        );
        h.success(Instant::now());
        assert_eq!(h.success(Instant::now()).map(|t| t.to), Some(Health::Up));
    }

    #[tokio::test(start_paused = true)]
    async fn hard_failure_is_down_at_once() {
        let now = Instant::now();
        let mut h = HealthState::new(policy(), true, now);
        assert_eq!(h.hard_failure(now).map(|t| t.to), Some(Health::Down));
        assert_eq!(h.ejections(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn long_health_forgives_ejections() {
        let now = Instant::now();
        let mut h = HealthState::new(policy(), true, now);
        h.hard_failure(now);
        tokio::time::advance(Duration::from_secs(2)).await;
        h.tick(Instant::now());
        h.success(Instant::now());
        h.success(Instant::now());
        tokio::time::advance(Duration::from_secs(40)).await;
        h.success(Instant::now());
        assert_eq!(h.ejections(), 0);
        h.hard_failure(Instant::now());
        let left = h.ejected_until().unwrap() - Instant::now();
        assert_eq!(
            left,
            Duration::from_secs(2),
            "back-off restarts from the base"
        );
    }
}
