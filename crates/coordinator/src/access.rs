//! Who may call the coordinator's API: bearer tokens, each with a scope and a name.
//!
//! A token file has one token per line, `SCOPE TOKEN [NAME]` (`#` starts a comment):
//!
//! ```text
//! read    r-3f9a0c...           dashboards
//! submit  s-8c1d77...           alice
//! admin   a-77e0b2...
//! ```
//!
//! A line that is a token alone is an admin token (the file of one token grove read before
//! scopes). `read` may look (status, logs, watch, diff, workers, compare); `submit` may also
//! plan and run jobs, and cancel and retry the jobs it submitted; `admin` may do everything
//! (merge, discard, pick, push, and cancel or retry anyone's job). A job is recorded with the
//! name of the token that submitted it: the third column, else the scope and a short
//! fingerprint of the token (never the token).

use std::fmt;

/// What a token may do; each scope includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Look: status, logs, watch, diff, workers, compare.
    Read,
    /// Also plan and run jobs, and cancel and retry one's own.
    Submit,
    /// Everything: merge, discard, pick, push, and anyone's jobs.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Submit => "submit",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "read" => Ok(Scope::Read),
            "submit" => Ok(Scope::Submit),
            "admin" => Ok(Scope::Admin),
            other => Err(format!("unknown scope {other:?} (read, submit or admin)")),
        }
    }
}

/// Who is calling, as the API's interceptor found out: put in each request's extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub scope: Scope,
    /// The token's name; `None` on a listener without tokens (loopback only).
    pub name: Option<String>,
}

impl Caller {
    /// A caller on a listener without tokens: the person on this machine.
    pub fn local() -> Caller {
        Caller { scope: Scope::Admin, name: None }
    }
}

/// A token file that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// A line does not read as `SCOPE TOKEN [NAME]`.
    #[error("line {line}: {why}")]
    Line { line: usize, why: String },
    /// The file has no token.
    #[error("no token in it (lines are `SCOPE TOKEN [NAME]`, scope read, submit or admin)")]
    Empty,
}

#[derive(Clone)]
struct Entry {
    /// `Bearer <token>`, as the header carries it.
    bearer: Vec<u8>,
    caller: Caller,
}

/// The tokens a listener accepts.
#[derive(Default, Clone)]
pub struct Tokens {
    entries: Vec<Entry>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.entries.iter().map(|e| &e.caller)).finish()
    }
}

/// FNV-1a, for a token's fingerprint (a name that does not reveal the token).
fn fingerprint(token: &str) -> String {
    let h = token
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("{:08x}", h as u32)
}

impl Tokens {
    /// No tokens: every call is the local person's (a loopback listener).
    pub fn none() -> Tokens {
        Tokens::default()
    }

    /// One admin token (`GROVE_TOKEN`).
    pub fn admin(token: &str) -> Result<Tokens, TokenError> {
        Tokens::parse(token)
    }

    /// Read a token file (see the module's documentation).
    pub fn parse(text: &str) -> Result<Tokens, TokenError> {
        let mut entries: Vec<Entry> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let bad = |why: String| TokenError::Line { line, why };
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let words: Vec<&str> = content.split_whitespace().collect();
            let (scope, token, name) = match words.as_slice() {
                [token] => (Scope::Admin, *token, None),
                [scope, token] => (scope.parse().map_err(bad)?, *token, None),
                [scope, token, name] => (scope.parse().map_err(bad)?, *token, Some(*name)),
                _ => return Err(bad("more than `SCOPE TOKEN [NAME]`".into())),
            };
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(bad("a token is printable ASCII without spaces".into()));
            }
            let bearer = format!("Bearer {token}").into_bytes();
            if entries.iter().any(|e| e.bearer == bearer) {
                return Err(bad("this token is given twice".into()));
            }
            let name = name.map_or_else(|| format!("{scope}-{}", fingerprint(token)), str::to_owned);
            entries.push(Entry { bearer, caller: Caller { scope, name: Some(name) } });
        }
        if entries.is_empty() {
            return Err(TokenError::Empty);
        }
        Ok(Tokens { entries })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The tokens themselves, for masking them wherever grove writes an agent's output.
    pub fn values(&self) -> Vec<String> {
        self.entries
            .iter()
            .filter_map(|e| e.bearer.strip_prefix(b"Bearer "))
            .map(|t| String::from_utf8_lossy(t).into_owned())
            .collect()
    }

    /// Who sends `authorization` (the header's bytes); `None`: nobody this listener knows.
    /// Every token is compared, each in time that depends only on the lengths.
    pub fn caller(&self, authorization: &[u8]) -> Option<Caller> {
        let mut found = None;
        for e in &self.entries {
            if constant_time_eq(authorization, &e.bearer) && found.is_none() {
                found = Some(e.caller.clone());
            }
        }
        found
    }
}

/// Equal bytes, in time that depends only on the lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_exactly() {
        assert!(constant_time_eq(b"Bearer abc", b"Bearer abc"));
        assert!(!constant_time_eq(b"Bearer abd", b"Bearer abc"));
        assert!(!constant_time_eq(b"Bearer ab", b"Bearer abc"));
    }

    #[test]
    fn a_token_file_names_scopes_and_owners() {
        let t = Tokens::parse("# fleet\nread r1 dash\n\nsubmit s1 alice # her laptop\nadmin a1\n")
            .expect("parse");
        let who = |tok: &str| t.caller(format!("Bearer {tok}").as_bytes());
        assert_eq!(who("r1"), Some(Caller { scope: Scope::Read, name: Some("dash".into()) }));
        assert_eq!(who("s1").map(|c| c.scope), Some(Scope::Submit));
        let admin = who("a1").expect("admin");
        assert_eq!(admin.scope, Scope::Admin);
        assert!(admin.name.as_deref().is_some_and(|n| n.starts_with("admin-") && !n.contains("a1")));
        assert_eq!(who("nope"), None);
        assert_eq!(t.caller(b"r1"), None, "the scheme is part of it");
        // The file of one token grove read before scopes: an admin token.
        assert_eq!(
            Tokens::parse("s3cret\n").expect("one").caller(b"Bearer s3cret").map(|c| c.scope),
            Some(Scope::Admin)
        );
        assert!(Scope::Admin > Scope::Submit && Scope::Submit > Scope::Read);
    }

    #[test]
    fn bad_token_files_say_which_line() {
        assert_eq!(Tokens::parse("\n# nothing\n").err(), Some(TokenError::Empty));
        for (text, line) in [("write t1\n", 1), ("read a\nread a\n", 2), ("read a b c d\n", 1)] {
            match Tokens::parse(text) {
                Err(TokenError::Line { line: l, .. }) => assert_eq!(l, line, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
        assert!(format!("{:?}", Tokens::parse("read secret-value x").expect("ok")).contains("Read"));
        assert!(!format!("{:?}", Tokens::parse("read secret-value x").expect("ok")).contains("secret-value"));
    }
}
