//! `netmix check-config`: every check `netmix run` makes before it serves, without serving.
//!
//! The file must parse and validate; the plugin folders must load without refusals; the
//! configured strategy must exist and start with its options (its plugin is instantiated, after
//! the loader's checks, exactly as `run` does), and so must every other strategy with a
//! `[strategies.<name>]` table; a plugin that starts but warns (an ONNX model file that is not
//! there, so it falls back to its formula) counts as a problem too; the folders the config
//! names for files netmix writes must exist. Each problem is one line naming the file, the key
//! and what is wrong.

use std::path::Path;
use std::sync::{Arc, Mutex};

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};

use crate::config::Config;
use crate::events::Events;

/// Every problem `netmix run` would reject or degrade over in `path`, one line each (empty:
/// the file is good).
pub fn check(path: &Path) -> Vec<String> {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => return vec![e.to_string()],
    };
    let file = path.display();
    let mut problems = Vec::new();

    // Plugins and strategies, with what the plugins log at WARN or ERROR captured.
    let warnings = Arc::new(Mutex::new(Vec::new()));
    let subscriber = tracing_subscriber::registry().with(Capture(warnings.clone()));
    let mut starts = Vec::new();
    tracing::subscriber::with_default(subscriber, || {
        let loaded = crate::load_strategies(&config, &Events::new());
        for refused in &loaded.refused {
            problems.push(format!("{file}: plugins: {refused}"));
        }
        let router = loaded.router;
        // The configured strategy first (its start-up is the one `run` makes), then every
        // other one the config gives options to.
        let mut names = vec![config.strategy.clone()];
        names.extend(
            config
                .strategies
                .keys()
                .filter(|n| **n != config.strategy)
                .cloned(),
        );
        for name in names {
            let key = if name == config.strategy {
                "strategy".to_owned()
            } else {
                format!("strategies.{name}")
            };
            take(&warnings);
            let started = router.select(&name);
            starts.push((key, started, take(&warnings)));
        }
    });
    for (key, started, warned) in starts {
        if let Err(e) = started {
            problems.push(format!("{file}: {key}: {e}"));
        }
        for line in warned {
            problems.push(format!("{file}: {key}: {line}"));
        }
    }
    // Folders for the files netmix writes.
    let parent_missing = |p: &Path| {
        p.parent()
            .filter(|d| !d.as_os_str().is_empty())
            .is_some_and(|d| !d.is_dir())
    };
    if let Some(log) = &config.connection_log
        && parent_missing(log)
    {
        problems.push(format!(
            "{file}: connection_log: the folder of {} does not exist",
            log.display()
        ));
    }
    if config.dashboard.enabled {
        match config.dashboard.token_path() {
            Err(e) => problems.push(format!("{file}: dashboard.token_file: {e}")),
            Ok(token) if config.dashboard.token_file.is_some() && parent_missing(&token) => {
                problems.push(format!(
                    "{file}: dashboard.token_file: the folder of {} does not exist",
                    token.display()
                ));
            }
            Ok(_) => {}
        }
    }
    problems
}

fn take(warnings: &Mutex<Vec<String>>) -> Vec<String> {
    std::mem::take(
        &mut *warnings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    )
}

/// Collects the message of every WARN or ERROR event.
struct Capture(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if *event.metadata().level() > tracing::Level::WARN {
            return;
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        // The plugin refusals and the fallback are reported from their results already.
        if message.0.starts_with("Plugin refused:") || message.0.contains("answers instead") {
            return;
        }
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(message.0);
    }
}

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = value.to_owned();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("netmix-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn an_unknown_strategy_is_one_line_naming_file_and_key() {
        let path = write("nosuch.toml", "strategy = \"nosuch\"\n");
        let problems = check(&path);
        assert_eq!(problems.len(), 1, "{problems:?}");
        let p = &problems[0];
        assert!(
            p.starts_with(&format!("{}: strategy: ", path.display())),
            "{p}"
        );
        assert!(p.contains("no strategy named \"nosuch\""), "{p}");
    }

    #[test]
    fn missing_folders_for_written_files_are_named() {
        let path = write(
            "folders.toml",
            "strategy = \"round-robin\"\nconnection_log = \"/nonexistent-netmix/log.jsonl\"\n\
             [dashboard]\ntoken_file = \"/nonexistent-netmix/token\"\n",
        );
        let problems = check(&path);
        assert!(
            problems
                .iter()
                .any(|p| p.contains(": connection_log: the folder of")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains(": dashboard.token_file: the folder of")),
            "{problems:?}"
        );
    }

    #[test]
    fn a_good_file_has_no_problems() {
        let path = write("good.toml", "strategy = \"round-robin\"\n");
        assert_eq!(check(&path), Vec::<String>::new());
    }

    #[test]
    fn options_for_the_round_robin_plugin_are_checked_not_refused() {
        // The shipped round-robin plugin takes options; only a typo in them is a problem.
        let good = write(
            "rr-options.toml",
            "strategy = \"round-robin\"\n[strategies.round-robin]\n",
        );
        assert_eq!(check(&good), Vec::<String>::new());
    }
}
