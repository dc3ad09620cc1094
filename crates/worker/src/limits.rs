//! Usage and rate limits: recognise an agent CLI saying its provider refuses work until some
//! time, and when that is, from the output of the turn that failed.
//!
//! Formats recognised (the real ones, see the tests):
//! - Claude Code: `Claude AI usage limit reached|<unix seconds>`; newer versions
//!   `5-hour limit reached ∙ resets 3pm`, `... resets Oct 6, 1pm`, `... will reset at 3pm (UTC)`.
//! - Codex CLI: `You've hit your usage limit. ... try again in 4 days 23 hours 1 minute.` or
//!   `... try again at 3:04 PM.`
//! - Copilot CLI: `... Please try again in 2 hours.`, `... wait for your limit to reset on April
//!   20, 2026 at 2:00 AM ...`, `Please retry after 2733 seconds.`
//! - Gemini CLI: `... Resets in 87h35m9s.`
//! - HTTP 429 / "rate limit" messages with `retry after 30s`, `Retry-After: 30`.
//!
//! The builtin CLI adapters ([`crate::adapter`]) read a CLI's structured limit event first
//! (Claude's `rate_limit_event` with its `resetsAt`), and come here for the text only when
//! there is none.
//!
//! A time of day ("3pm") is read in the zone the message names, as an offset (`UTC+2`, `UTC`)
//! or a tz database name (`(America/New_York)`), else in the worker's local zone (`TZ`, else
//! `/etc/localtime`), which is where the agent CLI printed it. Read in a wrong zone, the reset
//! is early or late by the difference: early costs one more parked attempt, never a failed
//! task.
//! A limit recognised without any reset time parks for [`DEFAULT_PARK`].

use std::sync::LazyLock;

use regex::Regex;

/// How long a task parks when the agent names a limit but no reset time (seconds).
pub const DEFAULT_PARK: i64 = 5 * 60;

/// Something in the output says a limit was hit. Strict enough that a compiler's output is
/// not one: `429` only as an HTTP status (`HTTP/1.1 429`, `status 429`, `Error: 429`), not as
/// `src/x.rs:429:5`; `limit reached` only for a provider's limit (`5-hour limit reached`,
/// `limit reached ∙ resets 3pm`), not rustc's `recursion limit reached`.
static LIMIT: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(
        r"(?ix)
        usage\ limit | rate[\ -]limit | too\ many\ requests | hit\ your\ (?:[\w-]+\ )?limit
        | (?:http/[\d.]+|status(?:\ code)?|error|code)[:=\ ]+429\b
        | (?:hour|weekly|daily|monthly|session|opus|sonnet|plan|quota|token|request|api)s?\ limit\ reached
        | exhausted\ your | session\ limits | quota\ reached | quota\ exceeded
        | (?:^|[^\w\ ]\ ?)limit\ reached\s*(?:[∙·|]|[-–—]\s*resets?|,\s*resets?)",
    )
    .ok()
});
/// Gemini's compact `Resets in 87h35m9s`.
static COMPACT: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"(?i)resets? in ((?:\d+[dhms])+)\b").ok());
/// Claude Code's machine-readable form.
static CLAUDE_EPOCH: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"(?i)usage limit reached\|(\d{9,13})").ok());
/// `try again in 2 hours 5 minutes`, `retry after 30s`, `Retry-After: 30`, `resets in 20m`.
static RELATIVE: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(
        r"(?i)(?:try again in|retry[- ]after:?|retry in|resets? in|wait)\s+((?:\d+(?:\.\d+)?\s*(?:days?|d|hours?|hrs?|h|minutes?|mins?|m|seconds?|secs?|s)?\b[\s,]*(?:and\s+)?)+)",
    )
    .ok()
});
static AMOUNT: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"(?i)(\d+(?:\.\d+)?)\s*(days?|d|hours?|hrs?|h|minutes?|mins?|m|seconds?|secs?|s)?\b").ok()
});
/// `resets 3pm`, `resets at 3:30 pm`, `resets Oct 6, 1pm`, `try again at 3:04 PM`,
/// `reset at 15:00 (UTC+2)`, `resets 3pm (UTC)`.
static CLOCK: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(
        r"(?i)(?:resets?|try again)\s+(?:at\s+|on\s+)?(?:([a-z]{3})[a-z]*\.?\s+(\d{1,2})(?:st|nd|rd|th)?,?\s+(?:(\d{4}),?\s+)?(?:at\s+)?)?(\d{1,2})(?::(\d{2}))?\s*([ap]\.?m\.?)?(?:\s*\(?(UTC|GMT)(?:([+-]\d{1,2})(?::?(\d{2}))?)?\)?)?",
    )
    .ok()
});

/// A tz database name in parentheses: `resets 3pm (Europe/Berlin)`.
static ZONE_NAME: LazyLock<Option<Regex>> =
    LazyLock::new(|| Regex::new(r"\(([A-Za-z_]+(?:/[A-Za-z0-9_+-]+)+)\)").ok());

/// When the limit the agent hit resets (unix seconds), if `output` says it hit one. `now` is
/// unix seconds; a time of day without a zone is read in this machine's local zone.
pub fn usage_limit(output: &str, now: i64) -> Option<i64> {
    usage_limit_in(output, now, &jiff::tz::TimeZone::system())
}

/// [`usage_limit`] with `local` as the zone of a time of day that names none.
pub fn usage_limit_in(output: &str, now: i64, local: &jiff::tz::TimeZone) -> Option<i64> {
    let limit = LIMIT.as_ref()?;
    // The latest message wins: look at the lines that name a limit, last first, and the line
    // after each (Codex puts the time on the same line; some CLIs wrap).
    let lines: Vec<&str> = output.lines().collect();
    let hits: Vec<usize> = (0..lines.len()).filter(|i| limit.is_match(lines[*i])).collect();
    if hits.is_empty() {
        return None;
    }
    for &i in hits.iter().rev() {
        let text = lines[i..(i + 2).min(lines.len())].join(" ");
        if let Some(at) = reset_in(&text, now, local) {
            return Some(at);
        }
    }
    Some(now + DEFAULT_PARK)
}

fn reset_in(text: &str, now: i64, local: &jiff::tz::TimeZone) -> Option<i64> {
    if let Some(c) = CLAUDE_EPOCH.as_ref()?.captures(text) {
        let n: i64 = c[1].parse().ok()?;
        // Milliseconds, from a CLI that prints them.
        return Some(if n > 100_000_000_000 { n / 1000 } else { n });
    }
    if let Some(c) = COMPACT.as_ref()?.captures(text) {
        let mut secs = 0i64;
        let mut n = 0i64;
        for ch in c[1].chars() {
            match ch.to_digit(10) {
                Some(d) => n = n * 10 + i64::from(d),
                None => {
                    secs += n * match ch.to_ascii_lowercase() {
                        'd' => 86400,
                        'h' => 3600,
                        'm' => 60,
                        _ => 1,
                    };
                    n = 0;
                }
            }
        }
        if secs > 0 {
            return Some(now + secs);
        }
    }
    if let Some(c) = RELATIVE.as_ref()?.captures(text) {
        let mut secs = 0f64;
        for a in AMOUNT.as_ref()?.captures_iter(&c[1]) {
            let n: f64 = a[1].parse().ok()?;
            let unit = a.get(2).map_or("s", |u| u.as_str()).to_ascii_lowercase();
            secs += n * match unit.chars().next() {
                Some('d') => 86400.0,
                Some('h') => 3600.0,
                Some('m') => 60.0,
                _ => 1.0,
            };
        }
        if secs > 0.0 {
            // `as` saturates: "try again in 9999999999 days" is far away, not an overflow.
            return Some(now.saturating_add(secs.ceil() as i64));
        }
    }
    let c = CLOCK.as_ref()?.captures(text)?;
    let mut hour: i64 = c[4].parse().ok()?;
    let minute: i64 = c.get(5).map_or(Ok(0), |m| m.as_str().parse()).ok()?;
    if let Some(ampm) = c.get(6) {
        let pm = ampm.as_str().to_ascii_lowercase().starts_with('p');
        if !(1..=12).contains(&hour) {
            return None;
        }
        hour = hour % 12 + if pm { 12 } else { 0 };
    } else if c.get(1).is_none() && c.get(5).is_none() {
        // A bare number ("resets 3") is not a time.
        return None;
    }
    if hour > 23 || minute > 59 {
        return None;
    }
    let tz = if let Some(h) = c.get(8) {
        let h: i32 = h.as_str().parse().ok()?;
        let m: i32 = c.get(9).map_or(Ok(0), |m| m.as_str().parse()).ok()?;
        let secs = (h * 60 + h.signum() * m) * 60;
        jiff::tz::TimeZone::fixed(jiff::tz::Offset::from_seconds(secs).ok()?)
    } else if c.get(7).is_some() {
        jiff::tz::TimeZone::UTC
    } else if let Some(z) = ZONE_NAME.as_ref().and_then(|r| r.captures(text)) {
        jiff::tz::TimeZone::get(&z[1]).unwrap_or_else(|_| local.clone())
    } else {
        local.clone()
    };
    let (hour, minute) = (i8::try_from(hour).ok()?, i8::try_from(minute).ok()?);
    let at = |date: jiff::civil::Date| -> Option<i64> {
        Some(date.at(hour, minute, 0, 0).to_zoned(tz.clone()).ok()?.timestamp().as_second())
    };
    let today = jiff::Timestamp::from_second(now).ok()?.to_zoned(tz.clone()).date();
    if let Some(mon) = c.get(1) {
        let month = i8::try_from(month(mon.as_str())?).ok()?;
        let day: i8 = c[2].parse().ok()?;
        let year = c.get(3).map_or(Ok(today.year()), |y| y.as_str().parse()).ok()?;
        let this = at(jiff::civil::Date::new(year, month, day).ok()?)?;
        if this + 86400 < now && c.get(3).is_none() {
            // "Jan 2" seen on Dec 30: next year.
            return at(jiff::civil::Date::new(year + 1, month, day).ok()?);
        }
        return Some(this);
    }
    // The next time the clock there shows this time. A clock names a minute: when that minute
    // is the current one, the reset is within it (not tomorrow), so wait until it ends.
    let this = at(today)?;
    if this > now {
        Some(this)
    } else if now < this + 60 {
        Some(this + 60)
    } else {
        at(today.tomorrow().ok()?)
    }
}

fn month(name: &str) -> Option<i64> {
    let names = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
    let lower = name.to_ascii_lowercase();
    names.iter().position(|m| lower.starts_with(m)).map(|i| i as i64 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-25 10:00:00 UTC.
    const NOW: i64 = 1_795_600_800;

    /// The tests read times of day in UTC, unless they say otherwise.
    fn usage_limit(output: &str, now: i64) -> Option<i64> {
        usage_limit_in(output, now, &jiff::tz::TimeZone::UTC)
    }

    #[test]
    fn a_time_of_day_is_read_in_the_zone_it_names_else_the_local_one() {
        let new_york = jiff::tz::TimeZone::fixed(jiff::tz::offset(-5));
        // 10:00 UTC is 5am in New York: 3pm there is 10 hours on (20:00 UTC), not 5.
        assert_eq!(
            usage_limit_in("5-hour limit reached ∙ resets 3pm", NOW, &new_york),
            Some(NOW + 10 * 3600)
        );
        // 9am there is 4 hours on, today.
        assert_eq!(usage_limit_in("Weekly limit reached ∙ resets 9am", NOW, &new_york), Some(NOW + 4 * 3600));
        // A zone the message names wins over the local one.
        assert_eq!(usage_limit_in("limit reached ∙ resets 3pm (UTC)", NOW, &new_york), Some(NOW + 5 * 3600));
        assert_eq!(
            usage_limit_in(
                "Claude usage limit reached. Your limit will reset at 3pm (Europe/Berlin).",
                NOW,
                &new_york
            ),
            Some(NOW + 4 * 3600),
            "3pm in Berlin is 14:00 UTC in November"
        );
        assert_eq!(
            usage_limit_in("Opus weekly limit reached ∙ resets Nov 27, 1pm", NOW, &new_york),
            Some(NOW + 2 * 86400 + 8 * 3600)
        );
    }

    #[test]
    fn claude_code_epoch() {
        let out = "Working...\nClaude AI usage limit reached|1795615200\n";
        assert_eq!(usage_limit(out, NOW), Some(1_795_615_200));
    }

    #[test]
    fn claude_code_resets_at_a_time_of_day() {
        // 3pm UTC today is 5 hours on.
        assert_eq!(usage_limit("5-hour limit reached ∙ resets 3pm", NOW), Some(NOW + 5 * 3600));
        assert_eq!(usage_limit("5-hour limit reached ∙ resets at 3:30 pm", NOW), Some(NOW + 5 * 3600 + 1800));
        // 9am has passed today: tomorrow.
        assert_eq!(usage_limit("Weekly limit reached ∙ resets 9am", NOW), Some(NOW + 23 * 3600));
        assert_eq!(
            usage_limit("Claude usage limit reached. Your limit will reset at 3pm (UTC+2).", NOW),
            Some(NOW + 3 * 3600)
        );
        assert_eq!(
            usage_limit("Opus weekly limit reached ∙ resets Nov 27, 1pm", NOW),
            Some(NOW + 2 * 86400 + 3 * 3600)
        );
    }

    #[test]
    fn codex_usage_limit() {
        let out = "■ You've hit your usage limit. Upgrade to Pro (https://openai.com/chatgpt/pricing) \
                   or try again in 4 days 23 hours 1 minute.";
        assert_eq!(usage_limit(out, NOW), Some(NOW + 4 * 86400 + 23 * 3600 + 60));
        assert_eq!(
            usage_limit("You've hit your usage limit. Try again in 52 minutes.", NOW),
            Some(NOW + 52 * 60)
        );
        // A reset seconds away reads as the current minute: the end of that minute, not tomorrow.
        let soon = "You've hit your usage limit. Upgrade to Plus or try again at 10:00 AM.";
        assert_eq!(usage_limit(soon, NOW + 30), Some(NOW + 60));
        assert_eq!(
            usage_limit("You've hit your usage limit. Try again at 9:59 AM.", NOW + 30),
            Some(NOW - 60 + 86400),
            "a minute already over is tomorrow's"
        );
        assert_eq!(
            usage_limit("You've hit your usage limit. Upgrade to Plus or try again at 3:04 PM.", NOW),
            Some(NOW + 5 * 3600 + 4 * 60)
        );
    }

    #[test]
    fn newer_claude_code_texts() {
        // 2.1.x, as printed in `result.result` (verified with Claude Code 2.1.328).
        assert_eq!(
            usage_limit("You've hit your 5-hour limit · resets 3:30pm (UTC)", NOW),
            Some(NOW + 5 * 3600 + 1800)
        );
        assert_eq!(
            usage_limit("You've hit your weekly limit · resets Nov 27, 2am (UTC)", NOW),
            Some(NOW + 2 * 86400 - 8 * 3600)
        );
        assert_eq!(
            usage_limit("You've hit your session limit · resets Nov 25 at 7pm", NOW),
            Some(NOW + 9 * 3600)
        );
    }

    #[test]
    fn codex_newer_texts() {
        // U+2019 in "You’ve", as Codex 0.169 prints it.
        let out = "You’ve hit your usage limit. Upgrade to Pro (https://chatgpt.com/explore/pro), visit \
                   https://chatgpt.com/settings/usage to purchase more credits or try again at 6:12 AM.";
        assert_eq!(usage_limit(out, NOW), Some(NOW + 20 * 3600 + 12 * 60));
        let out = "You've hit your usage limit. Try again at Nov 26th, 2026 7:10 AM.";
        assert_eq!(usage_limit(out, NOW), Some(NOW + 86400 - 3 * 3600 + 10 * 60));
    }

    #[test]
    fn copilot_and_gemini_limits() {
        let out = "Sorry, you've hit a rate limit that restricts the number of Copilot model requests you can \
                   make within a specific time period. Please try again in 2 hours. (Request ID: X)";
        assert_eq!(usage_limit(out, NOW), Some(NOW + 2 * 3600));
        let out = "You've reached your weekly rate limit. Please wait for your limit to reset on November 27, \
                   2026 at 2:00 AM or switch to auto model to continue.";
        assert_eq!(usage_limit(out, NOW), Some(NOW + 2 * 86400 - 8 * 3600));
        let out = "Sorry, you've exceeded your 5 hour session limits. Please retry after 2733 seconds.";
        assert_eq!(usage_limit(out, NOW), Some(NOW + 2733));
        let out = "RESOURCE_EXHAUSTED (code 429): Individual quota reached. Resets in 87h35m9s.";
        assert_eq!(usage_limit(out, NOW), Some(NOW + 87 * 3600 + 35 * 60 + 9));
        let out = "You have exhausted your daily quota on this model.";
        assert_eq!(usage_limit(out, NOW), Some(NOW + DEFAULT_PARK));
    }

    #[test]
    fn http_rate_limits() {
        let out = "Error: 429 Too Many Requests: rate limit exceeded, retry after 30s";
        assert_eq!(usage_limit(out, NOW), Some(NOW + 30));
        let out = "HTTP/1.1 429 Too Many Requests\nRetry-After: 120\n";
        assert_eq!(usage_limit(out, NOW), Some(NOW + 120));
        assert_eq!(usage_limit("API Error: Rate limit reached", NOW), Some(NOW + DEFAULT_PARK));
    }

    #[test]
    fn compiler_output_is_not_a_limit() {
        let rustc = "error[E0308]: mismatched types\n   --> src/x.rs:429:5\n    |\n429 |     foo(bar)\n";
        assert_eq!(usage_limit(rustc, NOW), None, "a line number 429 is not HTTP 429");
        let recursion = "error: recursion limit reached while expanding `vec!`\n  |\n  = help: consider \
                         increasing the recursion limit by adding a `#![recursion_limit = \"256\"]`";
        assert_eq!(usage_limit(recursion, NOW), None);
        assert_eq!(usage_limit("error: type length limit reached", NOW), None);
        assert_eq!(usage_limit("thread 'main' panicked at src/lib.rs:12:429", NOW), None);
        // The real forms still are.
        assert_eq!(usage_limit("API Error: 429 {\"type\":\"error\"}", NOW), Some(NOW + DEFAULT_PARK));
        assert_eq!(usage_limit("request failed with status code 429", NOW), Some(NOW + DEFAULT_PARK));
        assert_eq!(usage_limit("Claude AI usage limit reached|1795615200", NOW), Some(1_795_615_200));
    }

    #[test]
    fn a_reset_too_far_away_saturates_instead_of_overflowing() {
        let far = usage_limit("You've hit your usage limit. Try again in 9999999 days.", NOW);
        assert_eq!(far, Some(NOW + 9_999_999 * 86400));
        let absurd = usage_limit("You've hit your usage limit. Try again in 99999999999999999999 days.", NOW);
        assert_eq!(absurd, Some(i64::MAX));
    }

    #[test]
    fn ordinary_failures_are_not_limits() {
        assert_eq!(usage_limit("error[E0425]: cannot find value `x`\ntest failed, try again", NOW), None);
        assert_eq!(usage_limit("", NOW), None);
        assert_eq!(usage_limit("retry after 30s", NOW), None, "a time without a limit is not a limit");
    }
}
