//! Who may do what: tokens and the topics each may produce to or consume from.
//!
//! A token file has one token per line (`#` starts a comment line). A token alone may do everything.
//! Rules after it limit it: `produce=PATTERNS` and `consume=PATTERNS` (comma-separated); a role without a
//! rule is then not allowed at all:
//!
//! ```text
//! s3cret                                   # everything
//! backend-token consume=hello produce=hello_*
//! client-token  produce=hello consume=hello_*
//! team-token    produce=public/default/* consume=team-*
//! ```
//!
//! Patterns are globs (`*` any run of characters, `?` one). A pattern with a `/` is matched against
//! `tenant/namespace/topic`, one with `://` against the full name (`persistent://tenant/namespace/topic`),
//! any other against the bare topic name. A DASF backend consumes its topic and produces to the reply
//! topics of its callers (`<topic>_<8 letters>`); a client does the opposite.

use std::collections::HashMap;

/// A connection's role on a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Publish (producer endpoint).
    Produce,
    /// Receive (consumer and reader endpoints).
    Consume,
}

impl Access {
    fn as_str(self) -> &'static str {
        match self {
            Self::Produce => "produce to",
            Self::Consume => "consume from",
        }
    }
}

/// What one token may do; `None` rules mean everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Grant {
    rules: Option<Rules>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Rules {
    produce: Vec<String>,
    consume: Vec<String>,
}

/// Why a token was turned away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No token was presented.
    Missing,
    /// The token is not known.
    Unknown,
    /// The token is known but may not do this (the text says what).
    Forbidden(String),
}

/// The accepted tokens and their grants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tokens {
    grants: HashMap<String, Grant>,
}

impl Tokens {
    /// Parse token file lines (blank lines and `#` comments are skipped). Errors name the line.
    pub fn parse<'a>(lines: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut grants = HashMap::new();
        for (n, line) in lines.into_iter().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            let token = words.next().expect("non-empty line").to_owned();
            let mut rules: Option<Rules> = None;
            for word in words {
                if word.starts_with('#') {
                    break; // a trailing comment
                }
                let (key, value) = word.split_once('=').ok_or_else(|| {
                    format!(
                        "line {}: expected produce=PATTERNS or consume=PATTERNS, got {word:?}",
                        n + 1
                    )
                })?;
                let patterns: Vec<String> = value.split(',').filter(|p| !p.is_empty()).map(str::to_owned).collect();
                if patterns.is_empty() {
                    return Err(format!("line {}: {key}= needs at least one pattern", n + 1));
                }
                let r = rules.get_or_insert_with(Rules::default);
                match key {
                    "produce" => r.produce.extend(patterns),
                    "consume" => r.consume.extend(patterns),
                    other => {
                        return Err(format!(
                            "line {}: unknown role {other:?} (use produce= or consume=)",
                            n + 1
                        ))
                    }
                }
            }
            grants.insert(token, Grant { rules });
        }
        if grants.is_empty() {
            return Err("no token given".into());
        }
        Ok(Self { grants })
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.grants.len()
    }

    /// Whether there is no token.
    pub fn is_empty(&self) -> bool {
        self.grants.is_empty()
    }

    /// Whether `token` is one of ours (whatever it may do).
    pub fn knows(&self, token: Option<&str>) -> Result<(), Denied> {
        match token {
            None => Err(Denied::Missing),
            Some(t) if self.grants.contains_key(t) => Ok(()),
            Some(_) => Err(Denied::Unknown),
        }
    }

    /// Whether `token` may `access` the topic with the fully qualified name `topic`
    /// (`persistent://tenant/namespace/name`).
    pub fn check(&self, token: Option<&str>, access: Access, topic: &str) -> Result<(), Denied> {
        self.knows(token)?;
        let grant = &self.grants[token.expect("known")];
        let Some(rules) = &grant.rules else {
            return Ok(());
        };
        let patterns = match access {
            Access::Produce => &rules.produce,
            Access::Consume => &rules.consume,
        };
        if patterns.iter().any(|p| matches_topic(p, topic)) {
            Ok(())
        } else {
            Err(Denied::Forbidden(format!(
                "this token may not {} topic {topic}",
                access.as_str()
            )))
        }
    }
}

/// Fuzz entry point (the `tokens` target in `fuzz/`, and `tests/fuzz_smoke.rs`): the first line is a topic,
/// the rest a token file. Parsing never panics, and a parsed file's decisions are stable.
#[doc(hidden)]
pub fn fuzz_tokens(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.lines();
    let topic = lines.next().unwrap_or("");
    let rest: Vec<&str> = lines.collect();
    if let Ok(tokens) = Tokens::parse(rest.iter().copied()) {
        for line in &rest {
            let token = line.split_whitespace().next();
            for access in [Access::Produce, Access::Consume] {
                let first = tokens.check(token, access, topic);
                assert_eq!(first, tokens.check(token, access, topic));
            }
        }
    }
}

/// Match `pattern` against the form of `topic` it is written for (see the module docs).
fn matches_topic(pattern: &str, topic: &str) -> bool {
    let path = topic.split_once("://").map_or(topic, |(_, p)| p);
    let subject = if pattern.contains("://") {
        topic
    } else if pattern.contains('/') {
        path
    } else {
        path.rsplit('/').next().unwrap_or(path)
    };
    glob(pattern.as_bytes(), subject.as_bytes())
}

/// `*` (any run, also empty) and `?` (one character); iterative with one backtrack point.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const NP: &str = "non-persistent://public/default/";

    #[test]
    fn globs() {
        assert!(glob(b"*", b""));
        assert!(glob(b"hello_*", b"hello_AbCdEfGh"));
        assert!(!glob(b"hello_*", b"hello"));
        assert!(glob(b"h?llo", b"hallo"));
        assert!(glob(b"a*b*c", b"aXXbYYc"));
        assert!(!glob(b"a*b*c", b"aXXbYY"));
        assert!(glob(b"**x", b"abx"));
    }

    #[test]
    fn plain_tokens_may_do_everything() {
        let t = Tokens::parse(["# comment", "", "s3cret"]).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(t.check(Some("s3cret"), Access::Consume, &format!("{NP}x")), Ok(()));
        assert_eq!(t.check(None, Access::Produce, "x"), Err(Denied::Missing));
        assert_eq!(t.check(Some("nope"), Access::Produce, "x"), Err(Denied::Unknown));
    }

    #[test]
    fn rules_limit_roles_and_topics() {
        let t = Tokens::parse([
            "backend consume=hello produce=hello_*",
            "team produce=public/default/* consume=team-*,other  # trailing comment",
            "full produce=persistent://public/default/p",
        ])
        .unwrap();
        let ok = |tok: &str, a: Access, topic: &str| t.check(Some(tok), a, topic).is_ok();
        assert!(ok("backend", Access::Consume, &format!("{NP}hello")));
        assert!(ok("backend", Access::Produce, &format!("{NP}hello_AbCdEfGh")));
        assert!(!ok("backend", Access::Produce, &format!("{NP}hello")));
        assert!(!ok("backend", Access::Consume, &format!("{NP}other")));
        assert!(ok("team", Access::Produce, &format!("{NP}anything")));
        assert!(!ok("team", Access::Produce, "non-persistent://other/default/x"));
        assert!(ok("team", Access::Consume, &format!("{NP}team-a")));
        assert!(ok("team", Access::Consume, &format!("{NP}other")));
        assert!(!ok("team", Access::Consume, &format!("{NP}x")));
        assert!(ok("full", Access::Produce, "persistent://public/default/p"));
        assert!(!ok("full", Access::Produce, "non-persistent://public/default/p"));
        assert!(!ok("full", Access::Consume, "persistent://public/default/p"));
        match t.check(Some("backend"), Access::Produce, &format!("{NP}hello")) {
            Err(Denied::Forbidden(why)) => assert_eq!(why, format!("this token may not produce to topic {NP}hello")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_lines_are_named() {
        assert_eq!(
            Tokens::parse(["ok", "t publish=x"]).unwrap_err(),
            "line 2: unknown role \"publish\" (use produce= or consume=)"
        );
        assert!(Tokens::parse(["t consume"])
            .unwrap_err()
            .starts_with("line 1: expected"));
        assert!(Tokens::parse(["t consume="])
            .unwrap_err()
            .contains("at least one pattern"));
        assert_eq!(Tokens::parse(["# only comments"]).unwrap_err(), "no token given");
    }
}
