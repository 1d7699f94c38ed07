//! Numbers and text the way the CLI prints them: bytes in binary units (KiB, MiB, GiB), rates in
//! decimal bits per second (kbit/s, Mbit/s, Gbit/s), `—` for what is not known yet, and plain
//! word wrapping for tables that must fit a terminal. (The dashboard page has its own
//! formatters in `web/src/static/app.js`; these follow the same conventions.)

use std::io::IsTerminal;

/// What the CLI prints for a value that is not known (yet): no latency sample, no attempt.
pub const UNKNOWN: &str = "—";

/// Width assumed when the output is not a terminal (or its width cannot be read).
pub const DEFAULT_WIDTH: usize = 80;

/// A byte count in binary units: `512 B`, `1.50 KiB`, `12.3 MiB`, `2.00 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    scaled(n, 1024.0, &UNITS)
}

/// A rate in bits per second, decimal units: `800 bit/s`, `1.20 kbit/s`, `12.5 Mbit/s`,
/// `1.00 Gbit/s`.
pub fn bits_per_second(bps: u64) -> String {
    const UNITS: [&str; 5] = ["bit/s", "kbit/s", "Mbit/s", "Gbit/s", "Tbit/s"];
    scaled(bps, 1000.0, &UNITS)
}

/// `n` divided by `step` until it is below `step`, with 3 significant digits (the whole number
/// in the smallest unit).
fn scaled(n: u64, step: f64, units: &[&str]) -> String {
    let mut v = n as f64;
    let mut i = 0;
    while v >= step && i < units.len() - 1 {
        v /= step;
        i += 1;
    }
    match i {
        0 => format!("{n} {}", units[0]),
        _ if v < 10.0 => format!("{v:.2} {}", units[i]),
        _ if v < 100.0 => format!("{v:.1} {}", units[i]),
        _ => format!("{v:.0} {}", units[i]),
    }
}

/// Milliseconds, or [`UNKNOWN`]: `0.42 ms`, `12.3 ms`, `250 ms`.
pub fn millis(ms: Option<f64>) -> String {
    match ms {
        Some(ms) if ms.is_finite() => {
            if ms < 10.0 {
                format!("{ms:.2} ms")
            } else if ms < 100.0 {
                format!("{ms:.1} ms")
            } else {
                format!("{ms:.0} ms")
            }
        }
        _ => UNKNOWN.to_owned(),
    }
}

/// A rate in `0.0..=1.0` as a percentage, or [`UNKNOWN`]: `100%`, `97.5%`.
pub fn percent(rate: Option<f64>) -> String {
    match rate {
        Some(r) if r.is_finite() => {
            let pct = r * 100.0;
            if r >= 0.999 || pct.fract() == 0.0 {
                format!("{pct:.0}%")
            } else {
                format!("{pct:.1}%")
            }
        }
        _ => UNKNOWN.to_owned(),
    }
}

/// `text` broken into lines of at most `width` characters at spaces; a word longer than a
/// line is cut. Always at least one line (empty for empty text).
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines = Vec::new();
    let mut line = String::new();
    let mut len = 0;
    for word in text.split_whitespace() {
        let mut word: Vec<char> = word.chars().collect();
        // Cut what can never fit on a line of its own.
        while word.len() > width {
            if len > 0 {
                lines.push(std::mem::take(&mut line));
                len = 0;
            }
            let rest = word.split_off(width);
            lines.push(word.into_iter().collect());
            word = rest;
        }
        if word.is_empty() {
            continue;
        }
        let needed = if len == 0 {
            word.len()
        } else {
            len + 1 + word.len()
        };
        if needed > width {
            lines.push(std::mem::take(&mut line));
            len = 0;
        }
        if len > 0 {
            line.push(' ');
            len += 1;
        }
        line.extend(word.iter());
        len += word.len();
    }
    if len > 0 || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// The width to lay tables out for: `$COLUMNS` when set, else the terminal's width when
/// standard output is one (read with `stty size`), else [`DEFAULT_WIDTH`].
pub fn output_width() -> usize {
    let columns = std::env::var("COLUMNS").ok();
    let terminal = std::io::stdout().is_terminal();
    width_from(columns.as_deref(), terminal, stty_columns)
}

/// [`output_width`]'s decision, with its inputs passed in (for tests).
fn width_from(columns: Option<&str>, terminal: bool, ask: impl FnOnce() -> Option<usize>) -> usize {
    columns
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|&c| c > 0)
        .or_else(|| if terminal { ask() } else { None })
        .unwrap_or(DEFAULT_WIDTH)
        .clamp(40, 1000)
}

/// The controlling terminal's columns, from `stty size` ("rows cols"), when there is one.
fn stty_columns() -> Option<usize> {
    let tty = std::fs::File::open("/dev/tty").ok()?;
    let out = std::process::Command::new("stty")
        .arg("size")
        .stdin(tty)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    text.split_whitespace()
        .nth(1)?
        .parse()
        .ok()
        .filter(|&c| c > 0)
}

/// One row per entry: `name` in a column of `name_width`, then `text` wrapped to what is left
/// of `width`, continuation lines indented under it. The name column grows for a longer name.
pub fn two_columns(name: &str, name_width: usize, text: &str, width: usize) -> Vec<String> {
    let name_len = name.chars().count();
    let indent = name_width.max(name_len) + 1;
    let room = width.saturating_sub(indent).max(20);
    wrap(text, room)
        .into_iter()
        .enumerate()
        .map(|(k, line)| {
            let head = if k == 0 { name } else { "" };
            format!("{head:<w$}{line}", w = indent)
                .trim_end()
                .to_owned()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_in_binary_units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.00 KiB");
        assert_eq!(bytes(1536), "1.50 KiB");
        assert_eq!(bytes(2 * 1024 * 1024), "2.00 MiB");
        assert_eq!(bytes(12_900_000), "12.3 MiB");
        assert_eq!(bytes(500 * 1024 * 1024), "500 MiB");
        assert_eq!(bytes(3 << 30), "3.00 GiB");
        assert_eq!(
            bytes(u64::MAX),
            "16384 PiB",
            "the largest unit keeps growing"
        );
    }

    #[test]
    fn rates_in_decimal_bits() {
        assert_eq!(bits_per_second(0), "0 bit/s");
        assert_eq!(bits_per_second(999), "999 bit/s");
        assert_eq!(bits_per_second(1_200), "1.20 kbit/s");
        assert_eq!(bits_per_second(12_500_000), "12.5 Mbit/s");
        assert_eq!(bits_per_second(250_000_000), "250 Mbit/s");
        assert_eq!(bits_per_second(1_000_000_000), "1.00 Gbit/s");
    }

    #[test]
    fn unknown_values_are_a_dash_not_zero() {
        assert_eq!(millis(None), "—");
        assert_eq!(millis(Some(f64::NAN)), "—");
        assert_eq!(millis(Some(0.0)), "0.00 ms");
        assert_eq!(millis(Some(0.418)), "0.42 ms");
        assert_eq!(millis(Some(12.34)), "12.3 ms");
        assert_eq!(millis(Some(250.2)), "250 ms");
        assert_eq!(percent(None), "—");
        assert_eq!(percent(Some(1.0)), "100%");
        assert_eq!(percent(Some(0.975)), "97.5%");
        assert_eq!(percent(Some(0.5)), "50%");
    }

    #[test]
    fn wrap_breaks_at_spaces_and_cuts_long_words() {
        assert_eq!(wrap("", 10), [""]);
        assert_eq!(wrap("one two three", 80), ["one two three"]);
        assert_eq!(wrap("one two three", 7), ["one two", "three"]);
        assert_eq!(wrap("  spaced   out  ", 80), ["spaced out"]);
        assert_eq!(wrap("abcdefghij kl", 4), ["abcd", "efgh", "ij", "kl"]);
        assert_eq!(wrap("a abcdefgh", 4), ["a", "abcd", "efgh"]);
        for line in wrap(&"word ".repeat(100), 33) {
            assert!(line.chars().count() <= 33, "{line}");
        }
        // Characters, not bytes.
        assert_eq!(wrap("héllo wörld", 5), ["héllo", "wörld"]);
    }

    #[test]
    fn two_columns_indents_continuations_and_fits_the_width() {
        let text = "lowest smoothed connect latency first, with jitter weighed in and a \
                    probation for interfaces that just came back";
        let rows = two_columns("latency", 16, text, 60);
        assert!(rows.len() > 1, "{rows:?}");
        assert!(rows[0].starts_with("latency          lowest"), "{rows:?}");
        for row in &rows[1..] {
            assert!(row.starts_with(&" ".repeat(17)), "{row:?}");
        }
        for row in &rows {
            assert!(row.chars().count() <= 60, "{row:?}");
        }
        let words: Vec<&str> = rows.iter().flat_map(|r| r.split_whitespace()).collect();
        assert_eq!(words[1..].join(" "), text);
        // A name longer than its column pushes the text right rather than touching it.
        let long = two_columns("a-very-long-strategy-name", 16, "x", 80);
        assert_eq!(long, ["a-very-long-strategy-name x"]);
    }

    #[test]
    fn width_from_columns_then_terminal_then_80() {
        assert_eq!(width_from(Some("120"), true, || Some(200)), 120);
        assert_eq!(width_from(None, true, || Some(200)), 200);
        assert_eq!(width_from(None, false, || Some(200)), DEFAULT_WIDTH);
        assert_eq!(width_from(Some("junk"), false, || None), DEFAULT_WIDTH);
        assert_eq!(width_from(None, true, || None), DEFAULT_WIDTH);
        assert_eq!(width_from(Some("5"), false, || None), 40, "clamped");
    }
}
