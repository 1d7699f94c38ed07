//! Loading the ONNX Runtime C library and the model, checking the model's metadata, and
//! running it.
//!
//! The library is loaded explicitly with `ort::init_from(path)` after checking that the file
//! exists (an implicit load panics, and the PyPI wheel ships no unversioned
//! `libonnxruntime.so`). One ONNX Runtime environment serves the whole process (every
//! instance of the strategy shares it); it is created on first use and never dropped.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError, TryLockError};

use ort::session::Session;
use ort::value::Tensor;

use crate::features::{FEATURE_VERSION, FEATURES, N_FEATURES};

/// The library file of the pinned `onnxruntime` wheel.
#[cfg(not(any(windows, target_os = "macos")))]
pub const ORT_LIB_FILE: &str = "libonnxruntime.so.1.31.1";
/// The ONNX Runtime library's file name (Windows: as its release zip and wheel name it).
#[cfg(windows)]
pub const ORT_LIB_FILE: &str = "onnxruntime.dll";
/// The ONNX Runtime library's file name (macOS: as its wheel names it).
#[cfg(target_os = "macos")]
pub const ORT_LIB_FILE: &str = "libonnxruntime.1.31.1.dylib";
/// Environment variable naming the library file (used when the `library` option is not set).
pub const ENV_ORT_LIB: &str = "NETMIX_ORT_LIB";
/// The model that ships with the plugin (trained on lab data, see the crate docs).
pub static DEFAULT_MODEL: &[u8] = include_bytes!("../model/default.onnx");
/// Metadata key: comma-separated feature names, in input column order.
pub const META_FEATURES: &str = "netmix.features";
/// Metadata key: the feature-rules version ([`FEATURE_VERSION`]).
pub const META_VERSION: &str = "netmix.version";
/// Metadata key: what the output is (`completion_ms` or `log1p_completion_ms`).
pub const META_TARGET: &str = "netmix.target";

/// What the model's single output means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Expected completion time, ms.
    CompletionMs,
    /// `ln(1 + completion ms)`.
    Log1pCompletionMs,
}

impl Target {
    /// The output converted to milliseconds.
    pub fn to_ms(self, v: f32) -> f64 {
        match self {
            Self::CompletionMs => f64::from(v),
            Self::Log1pCompletionMs => f64::from(v).exp_m1(),
        }
    }
}

/// Where the model comes from.
#[derive(Debug, Clone)]
pub enum ModelSource {
    /// The model embedded in the plugin ([`DEFAULT_MODEL`]).
    Embedded,
    /// A file.
    File(PathBuf),
}

impl std::fmt::Display for ModelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Embedded => f.write_str("the built-in model"),
            Self::File(p) => write!(f, "model {}", p.display()),
        }
    }
}

/// Where the library is looked for when neither the option nor [`ENV_ORT_LIB`] names it:
/// the repository's `.deps/onnxruntime` (what `scripts/setup-onnx.sh` installs, relative to the
/// working directory and to this crate's source tree), the system library folders, and the
/// `site-packages`/`dist-packages` folders of the usual Python installs (found by listing
/// directories; Python is never run).
pub fn library_candidates() -> Vec<PathBuf> {
    let wheel_rel = Path::new("onnxruntime/capi").join(ORT_LIB_FILE);
    let mut out = Vec::new();
    // Next to the netmix binary first (where a user unpacking a release puts it).
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        out.push(dir.join(ORT_LIB_FILE));
    }
    out.extend([
        Path::new(".deps/onnxruntime").join(&wheel_rel),
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../.deps/onnxruntime")
            .join(&wheel_rel),
        Path::new("/usr/local/lib").join(ORT_LIB_FILE),
        Path::new("/usr/lib").join(ORT_LIB_FILE),
        Path::new("/usr/lib/x86_64-linux-gnu").join(ORT_LIB_FILE),
        Path::new("/usr/lib/aarch64-linux-gnu").join(ORT_LIB_FILE),
    ]);
    let mut lib_dirs: Vec<PathBuf> = vec!["/usr/lib".into(), "/usr/local/lib".into()];
    if let Some(home) = std::env::var_os("HOME").map(PathBuf::from) {
        lib_dirs.push(home.join(".local/lib"));
        if let Ok(versions) = std::fs::read_dir(home.join(".pyenv/versions")) {
            lib_dirs.extend(versions.flatten().map(|v| v.path().join("lib")));
        }
    }
    if let Some(venv) = std::env::var_os("VIRTUAL_ENV").map(PathBuf::from) {
        lib_dirs.push(venv.join("lib"));
    }
    for dir in lib_dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut pythons: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("python3"))
            .map(|e| e.path())
            .collect();
        pythons.sort();
        for py in pythons {
            for packages in ["site-packages", "dist-packages"] {
                out.push(py.join(packages).join(&wheel_rel));
            }
        }
    }
    out
}

/// The library to load: `configured` (the `library` option), else `$NETMIX_ORT_LIB`, else the
/// first existing [`library_candidates`]. A named file that does not exist is an error, not a
/// reason to look elsewhere.
pub fn find_library(configured: Option<&Path>) -> Result<PathBuf, String> {
    let named = configured
        .map(|p| (p.to_path_buf(), "option `library`"))
        .or_else(|| {
            std::env::var_os(ENV_ORT_LIB)
                .filter(|v| !v.is_empty())
                .map(|v| (PathBuf::from(v), ENV_ORT_LIB))
        });
    if let Some((path, from)) = named {
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "ONNX Runtime library {} (from {from}) does not exist; ./scripts/setup-onnx.sh installs it",
                path.display()
            ))
        };
    }
    library_candidates()
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "ONNX Runtime library {ORT_LIB_FILE} not found (set the `library` option or \
                 {ENV_ORT_LIB}; ./scripts/setup-onnx.sh installs it into .deps/onnxruntime)"
            )
        })
}

/// The process-wide ONNX Runtime environment, created from `library` on first success.
fn environment(library: &Path) -> Result<ort::environment::Environment, String> {
    static ENV: Mutex<Option<ort::environment::Environment>> = Mutex::new(None);
    let mut env = ENV.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(e) = env.as_ref() {
        return Ok(e.clone());
    }
    if !library.is_file() {
        return Err(format!("{} does not exist", library.display()));
    }
    let built = ort::init_from(library)
        .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", library.display()))?
        .with_name("netmix-strategy-onnx")
        .with_telemetry(false)
        .build()
        .map_err(|e| format!("cannot start ONNX Runtime: {e}"))?;
    *env = Some(built.clone());
    Ok(built)
}

/// A loaded, checked model: a few sessions (`Session::run` needs `&mut`), so that
/// concurrent picks rarely wait for each other.
pub struct Model {
    sessions: Vec<Mutex<Session>>,
    /// What the output means.
    pub target: Target,
    /// Where it came from, for messages.
    pub source: String,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("source", &self.source)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// Checks the model's `netmix.*` metadata against this plugin's features.
pub fn check_metadata(
    source: &str,
    features: Option<&str>,
    version: Option<&str>,
    target: Option<&str>,
) -> Result<Target, String> {
    let expected = FEATURES.join(",");
    let Some(features) = features else {
        return Err(format!(
            "{source} has no `{META_FEATURES}` metadata: not a netmix model (train one with plugins/onnx/train)"
        ));
    };
    if features != expected {
        return Err(format!(
            "{source} was trained on features [{features}] but this plugin computes [{expected}]; retrain it (plugins/onnx/train)"
        ));
    }
    if version != Some(FEATURE_VERSION) {
        return Err(format!(
            "{source} has feature version {} but this plugin has {FEATURE_VERSION}; retrain it (plugins/onnx/train)",
            version.unwrap_or("(none)")
        ));
    }
    match target {
        Some("completion_ms") => Ok(Target::CompletionMs),
        Some("log1p_completion_ms") | None => Ok(Target::Log1pCompletionMs),
        Some(other) => Err(format!(
            "{source} predicts `{other}`, which this plugin does not understand"
        )),
    }
}

impl Model {
    /// Loads the library and the model and checks the model (metadata, one test run).
    /// `sessions` is how many sessions to keep (at least 1).
    pub fn load(library: &Path, model: &ModelSource, sessions: usize) -> Result<Self, String> {
        let env = environment(library)?;
        let source = model.to_string();
        let bytes: std::borrow::Cow<'static, [u8]> = match model {
            ModelSource::Embedded => DEFAULT_MODEL.into(),
            ModelSource::File(path) => std::fs::read(path)
                .map_err(|e| format!("cannot read {source}: {e}"))?
                .into(),
        };
        let mut pool = Vec::new();
        let mut target = Target::Log1pCompletionMs;
        for _ in 0..sessions.max(1) {
            let configure = |e: &dyn std::fmt::Display| {
                format!("cannot configure an ONNX Runtime session: {e}")
            };
            let session = Session::builder(&env)
                .map_err(|e| configure(&e))?
                .with_intra_threads(1)
                .map_err(|e| configure(&e))?
                .with_inter_threads(1)
                .map_err(|e| configure(&e))?
                .with_intra_op_spinning(false)
                .map_err(|e| configure(&e))?
                .commit_from_memory(&bytes)
                .map_err(|e| format!("cannot load {source}: {e}"))?;
            if pool.is_empty() {
                let meta = session
                    .metadata()
                    .map_err(|e| format!("cannot read the metadata of {source}: {e}"))?;
                target = check_metadata(
                    &source,
                    meta.custom(META_FEATURES).as_deref(),
                    meta.custom(META_VERSION).as_deref(),
                    meta.custom(META_TARGET).as_deref(),
                )?;
                if session.inputs().len() != 1 || session.outputs().is_empty() {
                    return Err(format!(
                        "{source} must have one input (float [N, {N_FEATURES}]) and an output"
                    ));
                }
            }
            pool.push(Mutex::new(session));
        }
        let model = Self {
            sessions: pool,
            target,
            source,
        };
        // One test run, so that a broken model fails here and not on a connection.
        let mut out = Vec::new();
        model.predict(&[0.0; N_FEATURES], &mut out)?;
        if out.len() != 1 || !out[0].is_finite() {
            return Err(format!(
                "{} answered {out:?} for one row; expected one finite number",
                model.source
            ));
        }
        Ok(model)
    }

    /// Runs the model on `rows` (row-major, [`N_FEATURES`] per row) and writes one output per
    /// row into `out` (as the model gives it, see [`Model::target`]).
    pub fn predict(&self, rows: &[f32], out: &mut Vec<f32>) -> Result<(), String> {
        let n = rows.len() / N_FEATURES;
        let input = Tensor::from_array(([n, N_FEATURES], rows.to_vec()))
            .map_err(|e| format!("cannot build the input tensor: {e}"))?;
        let mut session = self.session();
        let outputs = session
            .run(ort::inputs![input])
            .map_err(|e| format!("{} failed: {e}", self.source))?;
        let (_, values) = outputs[0]
            .try_extract_tensor::<f32>()
            .map_err(|e| format!("{} output: {e}", self.source))?;
        if values.len() != n {
            return Err(format!(
                "{} answered {} values for {n} rows",
                self.source,
                values.len()
            ));
        }
        out.clear();
        out.extend_from_slice(values);
        Ok(())
    }

    /// A free session if there is one, else waits for the first (a run takes microseconds).
    fn session(&self) -> std::sync::MutexGuard<'_, Session> {
        for s in &self.sessions {
            match s.try_lock() {
                Ok(g) => return g,
                Err(TryLockError::Poisoned(p)) => return p.into_inner(),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        self.sessions[0]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_checked() {
        let ok = FEATURES.join(",");
        assert_eq!(
            check_metadata("m", Some(&ok), Some(FEATURE_VERSION), None),
            Ok(Target::Log1pCompletionMs)
        );
        assert_eq!(
            check_metadata("m", Some(&ok), Some(FEATURE_VERSION), Some("completion_ms")),
            Ok(Target::CompletionMs)
        );
        let err = check_metadata("m", Some("latency_ms,active"), Some("1"), None).unwrap_err();
        assert!(
            err.contains("[latency_ms,active]") && err.contains("retrain"),
            "{err}"
        );
        assert!(!err.contains('\n'));
        let err = check_metadata("m", Some(&ok), Some("0"), None).unwrap_err();
        assert!(err.contains("feature version 0"), "{err}");
        assert!(
            check_metadata("m", None, None, None)
                .unwrap_err()
                .contains("not a netmix model")
        );
        assert!(check_metadata("m", Some(&ok), Some(FEATURE_VERSION), Some("p")).is_err());
    }

    #[test]
    fn a_named_library_must_exist() {
        let err =
            find_library(Some(Path::new("/nonexistent/libonnxruntime.so.1.31.1"))).unwrap_err();
        assert!(
            err.contains("/nonexistent/libonnxruntime.so.1.31.1"),
            "{err}"
        );
        assert!(err.contains("does not exist"), "{err}");
    }

    #[test]
    fn candidates_are_next_to_the_binary_then_the_repo_folder() {
        let c = library_candidates();
        let exe_dir = std::env::current_exe()
            .unwrap()
            .parent()
            .unwrap()
            .to_path_buf();
        assert_eq!(c[0], exe_dir.join(ORT_LIB_FILE));
        assert!(c[1].ends_with(Path::new("onnxruntime/capi").join(ORT_LIB_FILE)));
        assert!(c.iter().all(|p| p.to_string_lossy().contains(ORT_LIB_FILE)));
    }
}
