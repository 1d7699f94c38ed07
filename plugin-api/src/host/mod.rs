//! Loading strategy plugins: used by the engine's router and by `netmix plugins`.
//!
//! Each file is loaded on its own with abi_stable's
//! `lib_header_from_path(path)?.init_root_module::<StrategyMod_Ref>()`, which checks the
//! abi_stable version, the `netmix-plugin-api` version and the layout of every type reachable
//! from the root module. (`RootModule::load_from_file` would cache one module per Rust type, so a
//! second plugin file would silently come back as the first.) Libraries are never unloaded: the
//! trait objects they hand out point into their code.
//!
//! Every failure becomes a [`PluginLoadError`] whose `Display` is one line naming the file and
//! the cause, and [`load_dir`] reports all of them instead of stopping at the first.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use abi_stable::{
    library::{LibraryError, RootModule, lib_header_from_path},
    std_types::RStr,
};

use crate::{HostMod_Ref, StrategyBox, StrategyError, StrategyMod_Ref, error::one_line, v1_0};

pub mod image;
pub mod trust;

/// Longest `reason` of a [`PluginLoadError`], in characters.
pub const MAX_REASON_CHARS: usize = 200;

/// File extensions [`load_dir`] considers plugins.
pub const PLUGIN_EXTENSIONS: [&str; 3] = ["so", "dll", "dylib"];

/// A strategy plugin whose root module was loaded and checked.
#[derive(Clone)]
pub struct LoadedPlugin {
    /// The file it was loaded from.
    pub path: PathBuf,
    /// The name users put in the config (`StrategyMod::name`).
    pub name: String,
    /// Its one-sentence description.
    pub description: String,
    /// The root module, to build instances from, in the layout the plugin was built with.
    pub module: Module,
}

/// A plugin's root module, in the layout it was built with (see [`crate::v1_0`]).
#[derive(Clone, Copy)]
pub enum Module {
    /// Built against this version (1.1) or a later 1.x.
    Current(StrategyMod_Ref),
    /// Built against 1.0: its instances are wrapped in [`v1_0::Upgraded`].
    V1_0(v1_0::StrategyMod_Ref),
}

impl Module {
    /// The ABI version the plugin was built against, as far as this engine tells them apart:
    /// `"1.0"`, or `"1.1"` for 1.1 and later.
    pub fn abi(&self) -> &'static str {
        match self {
            Self::Current(_) => "1.1",
            Self::V1_0(_) => "1.0",
        }
    }

    fn name(&self) -> RStr<'static> {
        match self {
            Self::Current(m) => (m.name())(),
            Self::V1_0(m) => (m.name())(),
        }
    }

    fn description(&self) -> RStr<'static> {
        match self {
            Self::Current(m) => (m.description())(),
            Self::V1_0(m) => (m.description())(),
        }
    }
}

impl LoadedPlugin {
    /// Builds a strategy instance from its options table serialized as TOML (`""` for none),
    /// handing it the engine's services (`host`: see [`crate::HostMod`]).
    pub fn instantiate(
        &self,
        options_toml: &str,
        host: HostMod_Ref,
    ) -> Result<StrategyBox, StrategyError> {
        let options = RStr::from_str(options_toml);
        match self.module {
            Module::Current(m) => (m.new())(options, host).into_result(),
            Module::V1_0(m) => (m.new())(options, host)
                .into_result()
                .map(v1_0::Upgraded::boxed),
        }
    }
}

impl fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("path", &self.path)
            .field("name", &self.name)
            .field("description", &self.description)
            .field("abi", &self.module.abi())
            .finish_non_exhaustive()
    }
}

/// Why a file could not be loaded as a plugin. `Display` is `"<path>: <reason>"` on one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginLoadError {
    /// The file.
    pub path: PathBuf,
    /// The cause, one line of at most [`MAX_REASON_CHARS`] characters.
    pub reason: String,
}

impl PluginLoadError {
    fn new(path: &Path, reason: impl AsRef<str>) -> Self {
        Self {
            path: path.to_path_buf(),
            reason: one_line(reason.as_ref(), MAX_REASON_CHARS),
        }
    }
}

impl fmt::Display for PluginLoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

impl std::error::Error for PluginLoadError {}

/// Loads one plugin file and checks that it is a compatible netmix strategy.
///
/// Before the file is opened as a library (whose constructors would run inside `dlopen`), it
/// must be one no other user could have written or swapped (see [`trust`]) and a complete
/// library image (see [`image`]: a truncated file would crash the process when mapped).
///
/// # Errors
///
/// One line naming the file and the cause: missing file, `refused: …` (another user's file or
/// folder, writable by group or others, a truncated or malformed library), `cannot open:
/// <dlopen error>`, `not a netmix plugin (no abi_stable root module)`,
/// `version mismatch: ...`, `ABI mismatch: ...`, or a failing root-module constructor.
pub fn load_plugin(path: &Path) -> Result<LoadedPlugin, PluginLoadError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| PluginLoadError::new(path, format!("cannot read: {e}")))?;
    if !meta.is_file() {
        return Err(PluginLoadError::new(path, "not a regular file"));
    }
    // Everything is decided on the open file, before it is opened as a library: library
    // constructors run inside dlopen, before any ABI check.
    let opened = trust::open_trusted(path).map_err(|reason| PluginLoadError::new(path, reason))?;
    image::check(&opened.file).map_err(|reason| PluginLoadError::new(path, reason))?;

    let loaded = lib_header_from_path(&opened.load_path);
    // The dynamic loader knows the library by the name it was opened with, and never unloads
    // it here: were this descriptor closed, its number — hence `/proc/self/fd/<n>`, the name —
    // could be reused for the next plugin, and `dlopen` would hand back this one instead. So
    // the descriptor stays open for the life of the process (one per plugin file tried).
    std::mem::forget(opened);
    let refuse = |e: &LibraryError| PluginLoadError::new(path, describe_library_error(e));
    let header = loaded.map_err(|e| refuse(&e))?;
    // The current layout first; a plugin built against 1.0 has shorter prefix types, which
    // abi_stable refuses through it, so the 1.0 layout second. A file neither fits is refused
    // with the current layout's reason.
    let module = match header.init_root_module::<StrategyMod_Ref>() {
        Ok(module) => Module::Current(module),
        Err(newest) => match header.init_root_module::<v1_0::StrategyMod_Ref>() {
            Ok(module) => Module::V1_0(module),
            Err(_) => return Err(refuse(&newest)),
        },
    };
    Ok(LoadedPlugin {
        path: path.to_path_buf(),
        name: module.name().to_string(),
        description: module.description().to_string(),
        module,
    })
}

/// Tries every `*.so` / `*.dll` / `*.dylib` file directly in `dir`, in name order, and returns
/// the plugins that loaded and the errors of those that did not (never stopping at the first).
/// A missing or unreadable directory is one error.
pub fn load_dir(dir: &Path) -> (Vec<LoadedPlugin>, Vec<PluginLoadError>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => return (Vec::new(), vec![PluginLoadError::new(dir, e.to_string())]),
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|ext| ext.to_str())
                .is_some_and(|ext| PLUGIN_EXTENSIONS.contains(&ext))
        })
        .collect();
    files.sort();
    let (mut loaded, mut errors) = (Vec::new(), Vec::new());
    for file in files {
        match load_plugin(&file) {
            Ok(plugin) => loaded.push(plugin),
            Err(err) => errors.push(err),
        }
    }
    (loaded, errors)
}

/// A short, one-cause description of an abi_stable loading error.
fn describe_library_error(err: &LibraryError) -> String {
    match err {
        LibraryError::OpenError { path, err } => {
            // dlerror() starts with the path, which the caller already shows.
            let msg = err.to_string();
            let msg = msg
                .strip_prefix(&format!("{}: ", path.display()))
                .unwrap_or(&msg)
                .to_owned();
            format!("cannot open: {msg}")
        }
        LibraryError::GetSymbolError { .. } => {
            "not a netmix plugin (no abi_stable root module)".to_owned()
        }
        LibraryError::ParseVersionError(e) => format!("version mismatch: unreadable version: {e}"),
        LibraryError::IncompatibleVersionNumber {
            expected_version,
            actual_version,
            ..
        } => format!(
            "version mismatch: plugin built against netmix-plugin-api {actual_version}, \
             engine has {expected_version}"
        ),
        LibraryError::RootModule { err, .. } => {
            format!("the plugin's root module failed to initialize: {err}")
        }
        LibraryError::AbiInstability(e) => {
            format!("ABI mismatch: {}", summarize_abi_error(&e.to_string()))
        }
        LibraryError::InvalidAbiHeader(h) => format!(
            "ABI mismatch: built with an incompatible abi_stable (header {h:?}); \
             rebuild it against this netmix-plugin-api"
        ),
        LibraryError::InvalidCAbi { .. } => {
            "ABI mismatch: built by a compiler with a different C ABI".to_owned()
        }
        LibraryError::Many(errs) => errs
            .iter()
            .map(describe_library_error)
            .collect::<Vec<_>>()
            .join("; "),
    }
}

/// abi_stable's layout errors are 25–39 KB: both type layouts in full, then one block per
/// difference, shaped `Error:<what>` / `Expected:` / `<value>` / `Found:` / `<value>`. Keep the
/// first difference (what, expected, found: the names a user can act on) and the count of others.
fn summarize_abi_error(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let starts: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with("Error:"))
        .collect();
    let Some(&first) = starts.first() else {
        return format!(
            "{} (rebuild the plugin against this netmix-plugin-api)",
            one_line(text, 100)
        );
    };
    let what = lines[first].trim_start_matches("Error:").trim();
    let block_end = starts.get(1).copied().unwrap_or(lines.len());
    let block = &lines[first + 1..block_end];
    // The first line of the value after a `label` line, if any.
    let value_after = |label: &str| {
        block
            .iter()
            .position(|l| *l == label)
            .and_then(|i| block.get(i + 1))
            .map(|v| one_line(v, 60))
    };
    let mut summary = what.to_owned();
    if let Some(field) = innermost_field(&lines[..first]) {
        summary.push_str(&format!(" in field `{field}`"));
    }
    if let (Some(expected), Some(found)) = (value_after("Expected:"), value_after("Found:")) {
        summary.push_str(&format!(" (expected {expected}, found {found})"));
    }
    if starts.len() > 1 {
        summary.push_str(&format!(" and {} more", starts.len() - 1));
    }
    format!("{summary}; rebuild the plugin against this netmix-plugin-api")
}

/// The innermost named field on the path to the first difference, from the
/// `N error(s)inside:` section that precedes it (positional fields are skipped).
fn innermost_field<'a>(lines: &[&'a str]) -> Option<&'a str> {
    let inside = lines.iter().rposition(|l| l.ends_with("inside:"))?;
    lines[inside..]
        .iter()
        .take_while(|l| !l.starts_with("Layout of expected type"))
        .filter_map(|l| l.strip_prefix("field_name:"))
        .filter(|name| !name.chars().all(|c| c.is_ascii_digit()))
        .last()
}

/// The version strings the engine expects from plugins (for `netmix plugins --verbose`).
pub fn expected_api_version() -> String {
    StrategyMod_Ref::VERSION_STRINGS.version.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_error_is_one_line() {
        let err = PluginLoadError::new(Path::new("/p/x.so"), "a\nb\n".repeat(500));
        let shown = err.to_string();
        assert!(shown.starts_with("/p/x.so: a b a b"));
        assert!(!shown.contains('\n'));
        assert!(err.reason.chars().count() <= MAX_REASON_CHARS);
    }

    #[test]
    fn missing_file_and_dir() {
        let err = load_plugin(Path::new("/nonexistent/libx.so")).unwrap_err();
        assert!(
            err.to_string().starts_with("/nonexistent/libx.so: "),
            "{err}"
        );
        let (ok, errs) = load_dir(Path::new("/nonexistent"));
        assert!(ok.is_empty());
        assert_eq!(errs.len(), 1);
    }

    #[test]
    fn abi_summary_keeps_the_cause() {
        use abi_stable::{StableAbi, abi_stability::abi_checking::check_layout_compatibility};

        mod v1 {
            #[repr(C)]
            #[derive(abi_stable::StableAbi)]
            pub struct Probe {
                pub id: u32,
                pub name: abi_stable::std_types::RString,
            }
        }
        mod v2 {
            #[repr(C)]
            #[derive(abi_stable::StableAbi)]
            pub struct Probe {
                pub id: u64,
                pub name: abi_stable::std_types::RString,
            }
        }
        let err = check_layout_compatibility(v1::Probe::LAYOUT, v2::Probe::LAYOUT).unwrap_err();
        let text = err.to_string();
        assert!(text.len() > 1000, "{}", text.len());
        let s = summarize_abi_error(&text);
        assert!(!s.contains('\n'), "{s}");
        assert!(s.chars().count() < MAX_REASON_CHARS, "{s}");
        eprintln!("{s}");
        assert!(
            s.starts_with("mismatched type in field `id` (expected u32, found u64)"),
            "{s}"
        );

        let s = summarize_abi_error("Error:mismatched package\nExpected:\n    a\nFound:\n    b\n");
        assert_eq!(
            s,
            "mismatched package (expected a, found b); rebuild the plugin against this \
             netmix-plugin-api"
        );
    }

    #[test]
    fn version_mismatch_message() {
        use abi_stable::sabi_types::VersionNumber;
        let err = LibraryError::IncompatibleVersionNumber {
            library_name: "netmix strategy",
            expected_version: VersionNumber {
                major: 0,
                minor: 2,
                patch: 0,
            },
            actual_version: VersionNumber {
                major: 0,
                minor: 1,
                patch: 3,
            },
        };
        assert_eq!(
            describe_library_error(&err),
            "version mismatch: plugin built against netmix-plugin-api 0.1.3, engine has 0.2.0"
        );
    }

    #[test]
    fn version_is_ours() {
        assert_eq!(expected_api_version(), crate::API_VERSION);
    }
}
