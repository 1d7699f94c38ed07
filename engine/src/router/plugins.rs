//! Finding and loading strategy plugins (the ABI and per-file loading live in
//! `netmix-plugin-api`'s `host` module; this decides *where* to look).
//!
//! The folder is `plugins.dir` when configured, else `plugins/` beside the `netmix` executable
//! when it exists; every `.so`/`.dll`/`.dylib` there is tried. As a last resort the
//! executable's own folder is searched, but only for files named like a strategy plugin
//! (`*netmix_strategy_*`), since that folder holds other libraries too (a cargo `target/`
//! directory, for instance). Every bad file is reported in one line; good ones load anyway.

use std::path::{Path, PathBuf};

use netmix_plugin_api::host::{LoadedPlugin, PLUGIN_EXTENSIONS, PluginLoadError, load_plugin};

use crate::config::Config;

/// What a plugin scan found.
#[derive(Debug, Default)]
pub struct PluginScan {
    /// The folder searched (None when no folder could be determined).
    pub dir: Option<PathBuf>,
    /// Loaded plugins, by file name order.
    pub loaded: Vec<LoadedPlugin>,
    /// Files refused, each with a one-line reason.
    pub refused: Vec<PluginLoadError>,
}

/// The folder to search, and whether every library in it counts (`true`) or only files named
/// like strategy plugins (`false`).
pub fn plugin_dir(config: &Config) -> Option<(PathBuf, bool)> {
    if let Some(dir) = &config.plugins.dir {
        return Some((dir.clone(), true));
    }
    let exe_dir = std::env::current_exe().ok()?.parent()?.to_path_buf();
    let dedicated = exe_dir.join("plugins");
    if dedicated.is_dir() {
        Some((dedicated, true))
    } else {
        Some((exe_dir, false))
    }
}

/// Loads every plugin of the configured folder.
pub fn scan(config: &Config) -> PluginScan {
    let Some((dir, all)) = plugin_dir(config) else {
        return PluginScan::default();
    };
    let mut scan = PluginScan {
        dir: Some(dir.clone()),
        ..PluginScan::default()
    };
    let mut files = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| is_library(p) && (all || is_strategy_name(p)))
            .collect::<Vec<_>>(),
        Err(e) => {
            if config.plugins.dir.is_some() {
                scan.refused.push(PluginLoadError {
                    path: dir,
                    reason: format!("cannot read the plugins folder: {e}"),
                });
            }
            return scan;
        }
    };
    files.sort();
    for path in files {
        match load_plugin(&path) {
            Ok(plugin) => {
                if let Some(first) = scan.loaded.iter().find(|p| p.name == plugin.name) {
                    scan.refused.push(PluginLoadError {
                        reason: format!(
                            "duplicate strategy name \"{}\" (already loaded from {})",
                            plugin.name,
                            first.path.display()
                        ),
                        path,
                    });
                } else {
                    scan.loaded.push(plugin);
                }
            }
            Err(e) => scan.refused.push(e),
        }
    }
    scan
}

fn is_library(path: &Path) -> bool {
    path.is_file()
        && path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| PLUGIN_EXTENSIONS.contains(&e))
}

fn is_strategy_name(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.contains("netmix_strategy_"))
}
