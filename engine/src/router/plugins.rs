//! Finding and loading strategy plugins (the ABI and per-file loading live in
//! `netmix-plugin-api`'s `host` module; this decides *where* to look).
//!
//! The user's folders (`plugins.dir`, `plugins.dirs`) are searched first, in order; then, unless
//! `plugins.include_builtin = false`, the shipped plugins: the `plugins/` folder beside the
//! `netmix` executable when it exists, else the executable's own folder, but there only files
//! named like a strategy plugin (`*netmix_strategy_*`), since that folder holds other libraries
//! too (a cargo `target/` directory, for instance). Every bad file is reported in one line; good
//! ones load anyway. A user's plugin with a shipped plugin's name replaces it (said at INFO).

use std::path::{Path, PathBuf};

use netmix_plugin_api::host::{LoadedPlugin, PLUGIN_EXTENSIONS, PluginLoadError, load_plugin};

use crate::config::Config;

/// What a plugin scan found.
#[derive(Debug, Default)]
pub struct PluginScan {
    /// The folders searched, in order.
    pub dirs: Vec<PathBuf>,
    /// Loaded plugins, folder by folder, by file name order within one.
    pub loaded: Vec<LoadedPlugin>,
    /// Files refused, each with a one-line reason.
    pub refused: Vec<PluginLoadError>,
    /// Shipped plugins a user's plugin of the same name replaced: (shipped file, user's file).
    pub replaced: Vec<(PathBuf, PathBuf)>,
}

/// One folder to search.
struct Folder {
    path: PathBuf,
    /// Every library counts (`false`: only files named like strategy plugins).
    all: bool,
    /// The shipped folder (its duplicates yield to the user's plugins).
    shipped: bool,
}

/// The shipped plugins' folder, and whether every library in it counts (`true`) or only files
/// named like strategy plugins (`false`).
pub fn shipped_dir() -> Option<(PathBuf, bool)> {
    let exe_dir = std::env::current_exe().ok()?.parent()?.to_path_buf();
    let dedicated = exe_dir.join("plugins");
    if dedicated.is_dir() {
        Some((dedicated, true))
    } else {
        Some((exe_dir, false))
    }
}

fn folders(config: &Config) -> Vec<Folder> {
    let mut list: Vec<Folder> = config
        .plugins
        .user_dirs()
        .map(|p| Folder {
            path: p.clone(),
            all: true,
            shipped: false,
        })
        .collect();
    if config.plugins.include_builtin
        && let Some((path, all)) = shipped_dir()
        && !list.iter().any(|f| f.path == path)
    {
        list.push(Folder {
            path,
            all,
            shipped: true,
        });
    }
    list
}

/// Loads every plugin of the configured folders.
pub fn scan(config: &Config) -> PluginScan {
    let mut scan = PluginScan::default();
    for folder in folders(config) {
        scan.dirs.push(folder.path.clone());
        let mut files = match std::fs::read_dir(&folder.path) {
            Ok(entries) => entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| is_library(p) && (folder.all || is_strategy_name(p)))
                .collect::<Vec<_>>(),
            Err(e) => {
                if !folder.shipped {
                    scan.refused.push(PluginLoadError {
                        path: folder.path,
                        reason: format!("cannot read the plugins folder: {e}"),
                    });
                }
                continue;
            }
        };
        files.sort();
        for path in files {
            match load_plugin(&path) {
                Ok(plugin) => match scan.loaded.iter().find(|p| p.name == plugin.name) {
                    Some(first) if folder.shipped => {
                        scan.replaced.push((path, first.path.clone()));
                    }
                    Some(first) => scan.refused.push(PluginLoadError {
                        reason: format!(
                            "duplicate strategy name \"{}\" (already loaded from {})",
                            plugin.name,
                            first.path.display()
                        ),
                        path,
                    }),
                    None => scan.loaded.push(plugin),
                },
                Err(e) => scan.refused.push(e),
            }
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
