//! `onnx`: a learned strategy plugin of netmix. An ONNX model predicts, for every candidate
//! interface, how long the new connection would take to *finish* there, and the fastest wins.
//!
//! Latency alone misleads when links differ in capacity: a 5 ms / 4 Mbit/s link answers a small
//! request first but takes seconds for a download that a 40 ms / 50 Mbit/s link finishes in a
//! fraction of that. This plugin scores with completion time instead.
//!
//! # How a decision is made
//!
//! ```text
//! pick(plan, conn) ── features::FeatureState::rows ──▶ [N candidates × 11 features]
//!        │                                                        │ ort Session::run (µs)
//!        │                                  predicted completion ms per candidate
//!        ▼                                                        ▼
//!  order by prediction ── exploration (ε among near-best, or a stale link) ──▶ Choice
//! observe(Connected / Closed) ──▶ FeatureState: expected size per destination,
//!                                 measured capacity per link, bytes in flight per link
//! ```
//!
//! - **Features** ([`features`]): latency EWMA, jitter, success rate, active connections,
//!   current throughput, estimated capacity (the plugin's own bytes/duration of big
//!   transfers, or the engine's `capacity_down_bps`, optimistic until measured), the
//!   connection's expected size (EWMA of earlier `bytes_down` to the same `host:port` — the
//!   size itself is unknown at decision time), bytes in flight on the link, and the derived
//!   transfer and queue times.
//! - **Target**: completion time (connect + transfer) in ms, as `ln(1 + ms)`
//!   (`netmix.target` in the model says which).
//! - **Model** ([`model`]): ONNX, run through `ort` with `load-dynamic`: the C library of the
//!   `onnxruntime==1.31.1` PyPI wheel (`./scripts/setup-onnx.sh` installs it into
//!   `.deps/onnxruntime`), loaded explicitly after checking that the file exists. The model
//!   carries `netmix.features` (comma-separated names) and `netmix.version` in its
//!   `metadata_props`; a model whose features do not match is refused with a one-line error.
//!   The default model (`model/default.onnx`, trained on lab data by
//!   `plugins/onnx/train/train.py`) is embedded in the plugin.
//! - **Exploration**: with probability `epsilon` the first pick is a random candidate among
//!   those predicted within `explore_within_pct` of the best; and an interface not picked for
//!   `explore_after_secs` is picked once when its predicted cost is at most
//!   `explore_budget_ms` above the best. Either way the model never starves a link of fresh
//!   measurements.
//! - **Fallback**: when the library or the model is missing or broken, the plugin says so
//!   once in the engine's log (one line, attributed to the `onnx` plugin) and orders by
//!   latency EWMA × (1 + active connections), like the `latency` plugin; the reason string
//!   says `latency fallback`. It never returns an error for that.
//!
//! # Cost and threading
//!
//! The library and the model load on a background thread started by the constructor, so
//! neither the engine's startup nor a dashboard strategy switch waits for it; until it is
//! ready, picks use the fallback. A pick then runs the model once for all candidates (one
//! batch) under one of a few `Mutex<Session>`s (`Session::run` takes `&mut self`), trying a
//! free one first. Measured (`cargo bench -p netmix-strategy-onnx --bench decision`, release,
//! 8 interfaces, through the ABI; BENCHMARKS.md): 8.9 µs per decision with the shipped model
//! (8.8 µs of it is the inference), 0.7 µs in `formula` mode — under the 50 µs target and far
//! below a TCP connect, so it runs inline in `pick`; no actor handler ever calls into the
//! model.
//!
//! # Options (`[strategies.onnx]`)
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `mode` | `"model"` | `"model"`: the ONNX model; `"formula"`: latency + expected size / capacity, no model (the benchmark's reference) |
//! | `library` | `$NETMIX_ORT_LIB`, then well-known places ([`model::library_candidates`]) | path of `libonnxruntime.so.1.31.1` |
//! | `model` | the embedded default model | path of an `.onnx` model made by `plugins/onnx/train/train.py` |
//! | `epsilon` | `0.05` | chance of exploring on a pick (0–1) |
//! | `explore_within_pct` | `200` | ε-exploration picks among candidates predicted within this many percent of the best |
//! | `explore_after_secs` | `30` | pick an interface not picked for this long (0: never) … |
//! | `explore_budget_ms` | `250` | … when its predicted cost is at most this much above the best |
//! | `sessions` | `2` | ONNX Runtime sessions kept for concurrent picks |
//! | `seed` | time | seed of the exploration's random numbers |
//!
//! `#![forbid(unsafe_code)]` is not possible here: `export_strategy!` expands to abi_stable
//! macros that use `unsafe`.

#![allow(non_local_definitions)]

pub mod features;
pub mod model;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use netmix_plugin_api::{
    Choice, ConnMeta, ConnOutcome, InterfaceSnapshot, LinkState, Snapshot, StrategyError,
    StrategyImpl, log, parse_options,
};

use crate::features::{FeatureState, N_FEATURES, formula_ms};
use crate::model::{Model, ModelSource};

/// Default `epsilon`.
pub const DEFAULT_EPSILON: f64 = 0.05;
/// Default `explore_within_pct`.
pub const DEFAULT_EXPLORE_WITHIN_PCT: f64 = 200.0;
/// Default `explore_after_secs`.
pub const DEFAULT_EXPLORE_AFTER_SECS: u64 = 30;
/// Default `explore_budget_ms`.
pub const DEFAULT_EXPLORE_BUDGET_MS: f64 = 250.0;
/// Default `sessions`.
pub const DEFAULT_SESSIONS: usize = 2;
/// Score multiplier of a `Degraded` interface (model, formula and fallback alike).
pub const DEGRADED_PENALTY: f64 = 2.0;

/// How candidates are scored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// The ONNX model's predicted completion time.
    #[default]
    Model,
    /// The formula latency + expected size / capacity (no model, no library).
    Formula,
}

/// Options of the `onnx` strategy (see the crate docs).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OnnxConfig {
    /// Scoring mode.
    pub mode: Mode,
    /// Path of `libonnxruntime.so.1.31.1`.
    pub library: Option<PathBuf>,
    /// Path of the model; the embedded default when absent.
    pub model: Option<PathBuf>,
    /// Chance of an ε-exploration on a pick.
    pub epsilon: f64,
    /// ε-exploration picks among candidates predicted within this many percent of the best.
    pub explore_within_pct: f64,
    /// An interface not picked for this long is explored (0: never).
    pub explore_after_secs: u64,
    /// … when its predicted cost is at most this many ms above the best.
    pub explore_budget_ms: f64,
    /// ONNX Runtime sessions kept.
    pub sessions: usize,
    /// Seed of the exploration's random numbers.
    pub seed: Option<u64>,
}

impl Default for OnnxConfig {
    fn default() -> Self {
        Self {
            mode: Mode::Model,
            library: None,
            model: None,
            epsilon: DEFAULT_EPSILON,
            explore_within_pct: DEFAULT_EXPLORE_WITHIN_PCT,
            explore_after_secs: DEFAULT_EXPLORE_AFTER_SECS,
            explore_budget_ms: DEFAULT_EXPLORE_BUDGET_MS,
            sessions: DEFAULT_SESSIONS,
            seed: None,
        }
    }
}

impl OnnxConfig {
    fn validate(&self) -> Result<(), StrategyError> {
        if !(0.0..=1.0).contains(&self.epsilon) {
            return Err(StrategyError::invalid_config(format!(
                "epsilon must be between 0 and 1, got {}",
                self.epsilon
            )));
        }
        if !(self.explore_within_pct >= 0.0 && self.explore_budget_ms >= 0.0) {
            return Err(StrategyError::invalid_config(
                "explore_within_pct and explore_budget_ms must be >= 0",
            ));
        }
        if !(1..=64).contains(&self.sessions) {
            return Err(StrategyError::invalid_config(format!(
                "sessions must be between 1 and 64, got {}",
                self.sessions
            )));
        }
        Ok(())
    }
}

/// The model as the loader thread left it.
type Loaded = OnceLock<Result<Model, String>>;

/// The ONNX completion-time strategy.
pub struct Onnx {
    config: OnnxConfig,
    model: Arc<Loaded>,
    state: Mutex<FeatureState>,
    /// Interface id → when it was last the first pick (or first seen).
    last_picked: Mutex<HashMap<u32, Instant>>,
    rng: AtomicU64,
    /// Set once an inference error was reported.
    predict_error_reported: AtomicBool,
}

impl std::fmt::Debug for Onnx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Onnx")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Loads the library and the model (on the loader thread) and says how it went, once.
fn load(config: &OnnxConfig) -> Result<Model, String> {
    let source = config
        .model
        .clone()
        .map_or(ModelSource::Embedded, ModelSource::File);
    let result = model::find_library(config.library.as_deref())
        .and_then(|lib| Model::load(&lib, &source, config.sessions).map(|m| (m, lib)));
    match result {
        Ok((m, lib)) => {
            log::info(format_args!(
                "ONNX model ready: {} with ONNX Runtime {}",
                m.source,
                lib.display()
            ));
            Ok(m)
        }
        Err(e) => {
            log::warn(format_args!(
                "ONNX model unavailable, falling back to latency scoring: {e}"
            ));
            Err(e)
        }
    }
}

impl Onnx {
    /// Builds the strategy from its options (TOML text); in `model` mode the library and the
    /// model load on a background thread (see [`Onnx::wait_ready`]).
    pub fn from_options(options_toml: &str) -> Result<Self, StrategyError> {
        let config: OnnxConfig = parse_options(options_toml)?;
        Self::new(config)
    }

    /// Builds the strategy from its options.
    pub fn new(config: OnnxConfig) -> Result<Self, StrategyError> {
        config.validate()?;
        let seed = config.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
        let model: Arc<Loaded> = Arc::new(OnceLock::new());
        // What can be known at once (the files are there) is said at once, during
        // construction, so `netmix check-config` and the start-up log report it; only the
        // loading itself waits for the background thread.
        let missing = (config.mode == Mode::Model)
            .then(|| {
                model::find_library(config.library.as_deref())
                    .err()
                    .or_else(|| {
                        config
                            .model
                            .as_ref()
                            .filter(|p| !p.is_file())
                            .map(|p| format!("model file {} does not exist", p.display()))
                    })
            })
            .flatten();
        if let Some(msg) = missing {
            log::warn(format_args!(
                "ONNX model unavailable, falling back to latency scoring: {msg}"
            ));
            let _ = model.set(Err(msg));
        } else if config.mode == Mode::Model {
            let (slot, cfg) = (model.clone(), config.clone());
            let spawned = std::thread::Builder::new()
                .name("netmix-onnx-load".into())
                .spawn(move || {
                    let _ = slot.set(load(&cfg));
                });
            if let Err(e) = spawned {
                let msg = format!("cannot start the model loader thread: {e}");
                log::warn(format_args!(
                    "ONNX model unavailable, falling back to latency scoring: {msg}"
                ));
                let _ = model.set(Err(msg));
            }
        }
        Ok(Self {
            config,
            model,
            state: Mutex::new(FeatureState::default()),
            last_picked: Mutex::new(HashMap::new()),
            rng: AtomicU64::new(seed | 1),
            predict_error_reported: AtomicBool::new(false),
        })
    }

    /// Waits (at most `timeout`) until the model is loaded or has failed; returns the failure.
    /// `Ok` in `formula` mode. For tests and benchmarks: the engine never waits.
    pub fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        if self.config.mode == Mode::Formula {
            return Ok(());
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.model.get() {
                Some(Ok(_)) => return Ok(()),
                Some(Err(e)) => return Err(e.clone()),
                None if Instant::now() >= deadline => {
                    return Err("the model is still loading".to_owned());
                }
                None => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    }

    /// A uniform random number in [0, 1) (xorshift64*, lock-free).
    fn random(&self) -> f64 {
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.store(x, Ordering::Relaxed);
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Scores (lower is better, ms) and the label of the scorer that produced them.
    fn score(&self, usable: &[&InterfaceSnapshot], rows: &[f32]) -> (Vec<f64>, &'static str) {
        let penalty = |i: &InterfaceSnapshot| {
            if i.state == LinkState::Degraded {
                DEGRADED_PENALTY
            } else {
                1.0
            }
        };
        let with_penalty = |scores: Vec<f64>| -> Vec<f64> {
            scores
                .into_iter()
                .zip(usable)
                .map(|(s, i)| s * penalty(i))
                .collect()
        };
        match self.config.mode {
            Mode::Formula => {
                let s = rows.chunks(N_FEATURES).map(formula_ms).collect();
                return (with_penalty(s), "formula");
            }
            Mode::Model => {}
        }
        if let Some(Ok(model)) = self.model.get() {
            let mut out = Vec::with_capacity(usable.len());
            match model.predict(rows, &mut out) {
                Ok(()) => {
                    let s = out.iter().map(|&v| model.target.to_ms(v)).collect();
                    return (with_penalty(s), "onnx");
                }
                Err(e) => {
                    if !self.predict_error_reported.swap(true, Ordering::Relaxed) {
                        log::warn(format_args!(
                            "ONNX inference failed, using latency scoring for such picks (reported once): {e}"
                        ));
                    }
                }
            }
        }
        // Latency fallback: EWMA × (1 + active), like the latency plugin.
        let s = rows
            .chunks(N_FEATURES)
            .map(|r| f64::from(r[0]) * (1.0 + f64::from(r[3])))
            .collect();
        (with_penalty(s), "latency fallback")
    }

    /// Chooses an exploration target, if any: (index into the order, why).
    fn explore(
        &self,
        order: &[(f64, usize)],
        usable: &[&InterfaceSnapshot],
        now: Instant,
    ) -> Option<(usize, String)> {
        if order.len() < 2 {
            return None;
        }
        let best = order[0].0;
        if self.config.explore_after_secs > 0 {
            let stale_after = Duration::from_secs(self.config.explore_after_secs);
            let mut last = self
                .last_picked
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for (pos, &(score, idx)) in order.iter().enumerate().skip(1) {
                let at = *last.entry(usable[idx].id).or_insert(now);
                if now.duration_since(at) >= stale_after
                    && score - best <= self.config.explore_budget_ms
                {
                    return Some((
                        pos,
                        format!("not picked for {}s", now.duration_since(at).as_secs()),
                    ));
                }
            }
        }
        if self.config.epsilon > 0.0 && self.random() < self.config.epsilon {
            let limit = best * (1.0 + self.config.explore_within_pct / 100.0);
            let near: Vec<usize> = (0..order.len()).filter(|&p| order[p].0 <= limit).collect();
            if near.len() > 1 {
                let pos = near[((self.random() * near.len() as f64) as usize).min(near.len() - 1)];
                return Some((pos, format!("ε={}", self.config.epsilon)));
            }
        }
        None
    }
}

/// What [`Onnx`] keeps from a snapshot: its usable interfaces. The features of a pick depend on
/// the connection (its expected size) and on what `observe` learned since, so they are
/// computed per pick, for the candidates only.
#[derive(Debug, Default)]
pub struct OnnxPlan {
    interfaces: Vec<InterfaceSnapshot>,
}

impl StrategyImpl for Onnx {
    type Plan = OnnxPlan;

    fn plan(&self, snapshot: &Snapshot) -> Result<OnnxPlan, StrategyError> {
        Ok(OnnxPlan {
            interfaces: snapshot
                .interfaces
                .iter()
                .filter(|i| i.is_usable())
                .cloned()
                .collect(),
        })
    }

    fn pick(&self, plan: &OnnxPlan, conn: &ConnMeta) -> Result<Choice, StrategyError> {
        let usable: Vec<&InterfaceSnapshot> =
            plan.interfaces.iter().filter(|i| conn.fits(i)).collect();
        if usable.is_empty() {
            return Err(StrategyError::NoCandidate);
        }
        let mut rows = Vec::with_capacity(usable.len() * N_FEATURES);
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .rows(&usable, conn, &mut rows);
        let (scores, scorer) = self.score(&usable, &rows);
        let mut order: Vec<(f64, usize)> = scores
            .iter()
            .enumerate()
            .map(|(i, &s)| (if s.is_finite() { s } else { f64::MAX }, i))
            .collect();
        order.sort_by(|a, b| {
            a.0.total_cmp(&b.0)
                .then(usable[a.1].id.cmp(&usable[b.1].id))
        });

        let now = Instant::now();
        let explored = self.explore(&order, &usable, now);
        if let Some((pos, _)) = &explored {
            let e = order.remove(*pos);
            order.insert(0, e);
        }
        self.last_picked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(usable[order[0].1].id, now);

        let (first_score, first) = order[0];
        let unit = if scorer == "latency fallback" {
            // Latency and in-flight count as the scores saw them (the count is live).
            format!(
                "{:.1}ms×(1+{} active)",
                rows[first * N_FEATURES],
                rows[first * N_FEATURES + 3] as u32
            )
        } else {
            format!("~{first_score:.0}ms")
        };
        let runner_up = order
            .get(1)
            .map(|&(s, i)| {
                if scorer == "latency fallback" {
                    String::new()
                } else {
                    format!(" (next {} ~{s:.0}ms)", usable[i].name)
                }
            })
            .unwrap_or_default();
        let reason = match explored {
            Some((_, why)) => format!(
                "{scorer} explore ({why}): {} {unit}{runner_up}",
                usable[first].name
            ),
            None => format!("{scorer} {} {unit}{runner_up}", usable[first].name),
        };
        let ids: Vec<u32> = order.iter().map(|&(_, i)| usable[i].id).collect();
        Ok(Choice::new(ids, reason))
    }

    fn observe(&self, outcome: &ConnOutcome) -> Result<(), StrategyError> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .observe(outcome);
        Ok(())
    }

    /// The model minimises completion time, which multipath shortens for bulk: a
    /// destination not seen yet goes multipath, one known for small answers stays single-path.
    fn multipath(&self) -> netmix_plugin_api::paths::MultipathPolicy {
        netmix_plugin_api::paths::MultipathPolicy::ByHistory {
            unknown: netmix_plugin_api::Paths::Multi,
        }
    }
}

netmix_plugin_api::export_strategy! {
    name: "onnx",
    description: "Learned completion time per interface (ONNX model), with exploration; latency fallback.",
    new: Onnx::from_options,
}

#[cfg(test)]
mod tests;
