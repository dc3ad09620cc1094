//! Terminal output: colour only on a terminal and without NO_COLOR, tables, durations.

use std::io::IsTerminal;

use grove_core::TaskState;

pub fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty())
}

pub fn color_enabled_stdout() -> bool {
    !no_color() && std::io::stdout().is_terminal()
}

pub fn color_enabled_stderr() -> bool {
    !no_color() && std::io::stderr().is_terminal()
}

/// Wrap `s` in an ANSI colour when `on`.
pub fn paint(s: &str, code: &str, on: bool) -> String {
    if on { format!("\x1b[{code}m{s}\x1b[0m") } else { s.to_owned() }
}

pub fn state_color(s: TaskState) -> &'static str {
    match s {
        TaskState::Succeeded => "32",
        TaskState::Failed => "31",
        TaskState::NeedsAttention | TaskState::Parked => "33",
        TaskState::Cancelled => "90",
        _ => "36",
    }
}

pub use grove_core::task::shown_state;

/// A plain text table: columns padded to their widest cell (ANSI codes not counted).
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let visible = |s: &str| {
        let mut n = 0;
        let mut esc = false;
        for c in s.chars() {
            match (esc, c) {
                (false, '\x1b') => esc = true,
                (true, 'm') => esc = false,
                (false, _) => n += 1,
                _ => {}
            }
        }
        n
    };
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(visible(c));
            }
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<&str>, out: &mut String| {
        let last = cells.len().saturating_sub(1);
        for (i, c) in cells.iter().enumerate() {
            out.push_str(c);
            if i < last {
                out.push_str(&" ".repeat(widths[i].saturating_sub(visible(c)) + 2));
            }
        }
        out.push('\n');
    };
    line(header.to_vec(), &mut out);
    for r in rows {
        line(r.iter().map(String::as_str).collect(), &mut out);
    }
    out
}
