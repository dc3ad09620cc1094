//! Repository URLs and the credentials people put in them (`https://user:token@host/r.git`).
//!
//! grove takes a credential out of a URL as soon as it gets one ([`split_credential`]): what
//! it stores (the job's source, its spec, the mirror's name) and shows is the URL without it,
//! and the credential itself is held in memory for the fetch or push it was given for (the git
//! crate hands it to git through a credential helper's environment, never an argument).
//! [`redact`] masks any that got into a text anyway (an error message).

use std::fmt;

/// A user name and password (or token) taken out of a URL. Its `Debug` shows neither.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    user: String,
    password: String,
}

impl Credential {
    pub fn user(&self) -> &str {
        &self.user
    }
    pub fn password(&self) -> &str {
        &self.password
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credential(***)")
    }
}

/// What a URL's userinfo is for: with http(s), a credential (a token may be the user name
/// alone); elsewhere (ssh) the user name is kept and only a password is dropped, as git would
/// not use it.
fn scheme_carries_credentials(scheme: &str) -> bool {
    matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https" | "ftp" | "ftps")
}

/// Split `url` into the URL without its credential and the credential. A path, an scp-like
/// location (`git@host:repo`) or a URL without userinfo comes back as it is.
pub fn split_credential(url: &str) -> (String, Option<Credential>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_owned(), None);
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return (url.to_owned(), None);
    };
    let (user, password) = match userinfo.split_once(':') {
        Some((u, p)) => (u, Some(p)),
        None => (userinfo, None),
    };
    if scheme_carries_credentials(scheme) {
        let credential = Credential {
            user: percent_decode(user),
            password: password.map(percent_decode).unwrap_or_default(),
        };
        (format!("{scheme}://{host}{path}"), Some(credential))
    } else if password.is_some() {
        (format!("{scheme}://{user}@{host}{path}"), None)
    } else {
        (url.to_owned(), None)
    }
}

/// `text` with the userinfo of every `scheme://userinfo@host` in it replaced by `***`.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = rest.split_at(at + 3);
        out.push_str(before);
        let end = after
            .find(|c: char| c == '/' || c.is_whitespace() || "\"'<>()[]{},;`".contains(c))
            .unwrap_or(after.len());
        let authority = &after[..end];
        match authority.rfind('@') {
            Some(i) => {
                out.push_str("***");
                out.push_str(&authority[i..]);
            }
            None => out.push_str(authority),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: &u8| (*c as char).to_digit(16);
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (b.get(i + 1).and_then(hex), b.get(i + 2).and_then(hex))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_out_of_http_urls() {
        let (url, c) = split_credential("https://user:s3cr%40t@example.com:8443/org/r.git");
        assert_eq!(url, "https://example.com:8443/org/r.git");
        let c = c.expect("credential");
        assert_eq!((c.user(), c.password()), ("user", "s3cr@t"));
        assert_eq!(format!("{c:?}"), "Credential(***)");
        let (url, c) = split_credential("https://ghp_token@github.com/o/r");
        assert_eq!(url, "https://github.com/o/r");
        assert_eq!(c.map(|c| c.user().to_owned()), Some("ghp_token".into()));
    }

    #[test]
    fn other_locations_keep_their_user_and_lose_a_password() {
        for plain in ["https://example.com/r.git", "git@github.com:o/r.git", "/srv/r", "./r", "file:///srv/r"]
        {
            assert_eq!(split_credential(plain), (plain.to_owned(), None), "{plain}");
        }
        assert_eq!(split_credential("ssh://git@h/r").0, "ssh://git@h/r");
        assert_eq!(split_credential("ssh://git:pw@h/r"), ("ssh://git@h/r".to_owned(), None));
        // An @ in the path is not userinfo.
        assert_eq!(split_credential("https://h/a@b").0, "https://h/a@b");
    }

    #[test]
    fn redaction_masks_every_userinfo() {
        let text = "fatal: unable to access 'https://u:tok@h/r.git/': 403; also http://t@x and ssh://git@y/z";
        let r = redact(text);
        assert!(!r.contains("tok") && !r.contains("t@x"), "{r}");
        assert_eq!(
            r,
            "fatal: unable to access 'https://***@h/r.git/': 403; also http://***@x and ssh://***@y/z"
        );
        assert_eq!(redact("no urls here"), "no urls here");
        assert_eq!(redact("a://"), "a://");
    }
}
