//! ACL files in Mosquitto's syntax, and the decisions they make.
//!
//! ```text
//! # comment
//! topic read $SYS/#              <- before any `user` line: clients without a username
//! user alice
//! topic readwrite devices/alice/#
//! topic deny devices/alice/secret
//! pattern write devices/%u/#     <- every client, wherever the line is
//! pattern read cmd/%c
//! ```
//!
//! Grants are `read` (receive, and subscribe), `write` (publish), `readwrite` (the default
//! when the access word is left out) and `deny`. `%c` and `%u` stand for the client id and
//! the username, and must fill a whole topic level (Mosquitto 2.0's rule); a pattern with
//! `%u` never matches a client without a username, and patterns never match a client whose
//! id or username holds `+`, `#` or `/` (it could otherwise reach another's topics).
//!
//! A decision, as Mosquitto 2.0 makes it: a `deny` that matches refuses; otherwise a grant
//! of the client's block (its `user` block, or the anonymous block when it has no username)
//! or a pattern with the right access allows; otherwise refused. A topic starting with `$`
//! is matched only by an ACL topic that starts with `$`.
//!
//! Subscriptions: a filter is allowed when one read grant covers it (every topic the filter
//! can match is matched by the grant: `devices/alice/#` covers `devices/alice/+/temp`, and
//! `devices/+` does not cover `devices/#`) and no deny covers it. That is stricter than
//! Mosquitto 2.0, which accepts every SUBSCRIBE and filters at delivery; berth also checks
//! every message at delivery (`may_read`), so a deny inside an allowed wildcard still holds.
//!
//! Invariants: pure (the file's text in, decisions out); an ACL file that does not parse is
//! an error naming the file and the line, never a partial set of rules.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::topic::validate_topic_filter;

/// What a rule grants, or that it refuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    ReadWrite,
    Deny,
}

impl Access {
    fn allows_read(self) -> bool {
        matches!(self, Access::Read | Access::ReadWrite)
    }

    fn allows_write(self) -> bool {
        matches!(self, Access::Write | Access::ReadWrite)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    access: Access,
    /// The topic's levels; in patterns `%c` and `%u` are whole levels.
    levels: Vec<String>,
}

/// The client a decision is about.
#[derive(Debug, Clone, Copy)]
pub struct Who<'a> {
    pub client_id: &'a str,
    pub username: Option<&'a str>,
}

/// A file's rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    anonymous: Vec<Rule>,
    users: HashMap<String, Vec<Rule>>,
    patterns: Vec<Rule>,
}

/// An ACL file that did not load.
#[derive(Debug, thiserror::Error)]
pub enum AclFileError {
    #[error("acl_file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("acl_file {} line {line}: {problem}", path.display())]
    Line {
        path: PathBuf,
        line: usize,
        problem: String,
    },
}

enum Check {
    Read,
    Write,
}

impl Acl {
    pub fn load(path: &Path) -> Result<Acl, AclFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| AclFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Acl::parse(&text, path)
    }

    /// Reads the text of an ACL file; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Acl, AclFileError> {
        let mut acl = Acl::default();
        let mut user: Option<String> = None;
        for (index, raw) in text.lines().enumerate() {
            let err = |problem: String| AclFileError::Line {
                path: path.to_path_buf(),
                line: index + 1,
                problem,
            };
            let line = raw.trim_start().trim_end_matches(['\r', '\n']);
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let (keyword, rest) = line.split_once(' ').unwrap_or((line, ""));
            let rest = rest.trim_start_matches(' ');
            match keyword {
                "user" => {
                    if rest.trim().is_empty() {
                        return Err(err("user without a username".into()));
                    }
                    user = Some(rest.to_string());
                }
                "topic" | "pattern" => {
                    let rule = parse_rule(rest, keyword == "pattern").map_err(err)?;
                    if keyword == "pattern" {
                        acl.patterns.push(rule);
                    } else {
                        match &user {
                            Some(name) => acl.users.entry(name.clone()).or_default().push(rule),
                            None => acl.anonymous.push(rule),
                        }
                    }
                }
                other => {
                    return Err(err(format!(
                        "unknown keyword {other:?} (expected topic, pattern or user)"
                    )))
                }
            }
        }
        Ok(acl)
    }

    /// Whether `who` may publish to `topic`.
    pub fn may_publish(&self, who: Who<'_>, topic: &str) -> bool {
        self.decide(who, Check::Write, |levels| matches(levels, topic))
    }

    /// Whether `who` may receive a message published to `topic`.
    pub fn may_read(&self, who: Who<'_>, topic: &str) -> bool {
        self.decide(who, Check::Read, |levels| matches(levels, topic))
    }

    /// Whether `who` may subscribe to `filter` (see the module documentation).
    pub fn may_subscribe(&self, who: Who<'_>, filter: &str) -> bool {
        self.decide(who, Check::Read, |levels| covers(levels, filter))
    }

    fn decide(&self, who: Who<'_>, check: Check, applies: impl Fn(&[String]) -> bool) -> bool {
        let own: &[Rule] = match who.username {
            Some(name) => self.users.get(name).map_or(&[], Vec::as_slice),
            None => &self.anonymous,
        };
        let safe_ids =
            !unsafe_for_patterns(who.client_id) && !who.username.is_some_and(unsafe_for_patterns);
        let patterns: Vec<(Access, Vec<String>)> = if safe_ids {
            self.patterns
                .iter()
                .filter_map(|rule| Some((rule.access, substitute(&rule.levels, who)?)))
                .collect()
        } else {
            Vec::new()
        };
        let rules = own
            .iter()
            .map(|rule| (rule.access, rule.levels.as_slice()))
            .chain(
                patterns
                    .iter()
                    .map(|(access, levels)| (*access, levels.as_slice())),
            );
        let mut allowed = false;
        for (access, levels) in rules {
            if !applies(levels) {
                continue;
            }
            if access == Access::Deny {
                return false;
            }
            allowed |= match check {
                Check::Read => access.allows_read(),
                Check::Write => access.allows_write(),
            };
        }
        allowed
    }

    /// How many rules the file holds (for the log line that says it loaded).
    pub fn rules(&self) -> usize {
        self.anonymous.len()
            + self.users.values().map(Vec::len).sum::<usize>()
            + self.patterns.len()
    }
}

fn parse_rule(rest: &str, pattern: bool) -> Result<Rule, String> {
    let (first, after) = rest.split_once(' ').unwrap_or((rest, ""));
    let (access, topic) = match first {
        "read" => (Access::Read, after),
        "write" => (Access::Write, after),
        "readwrite" => (Access::ReadWrite, after),
        "deny" => (Access::Deny, after),
        // No access word: the whole rest is the topic, granted read and write.
        _ => (Access::ReadWrite, rest),
    };
    let topic = topic.trim_start_matches(' ');
    if topic.is_empty() {
        return Err("a rule without a topic".into());
    }
    validate_topic_filter(topic).map_err(|e| format!("topic {topic:?}: {e}"))?;
    let levels: Vec<String> = topic.split('/').map(str::to_string).collect();
    if pattern {
        for level in &levels {
            if level != "%c" && level != "%u" && (level.contains("%c") || level.contains("%u")) {
                return Err(format!(
                    "pattern {topic:?}: %c and %u must be a whole topic level"
                ));
            }
        }
    }
    Ok(Rule { access, levels })
}

fn unsafe_for_patterns(id: &str) -> bool {
    id.contains(['+', '#', '/'])
}

/// A pattern's levels with `%c` and `%u` filled in; `None` when it needs a username the
/// client does not have.
fn substitute(levels: &[String], who: Who<'_>) -> Option<Vec<String>> {
    levels
        .iter()
        .map(|level| match level.as_str() {
            "%c" => Some(who.client_id.to_string()),
            "%u" => who.username.map(str::to_string),
            _ => Some(level.clone()),
        })
        .collect()
}

fn dollar_mismatch(rule: &[String], first: &str) -> bool {
    first.starts_with('$') && !rule.first().is_some_and(|l| l.starts_with('$'))
}

/// Whether the ACL topic (a filter) matches the topic name `topic`.
fn matches(rule: &[String], topic: &str) -> bool {
    let names: Vec<&str> = topic.split('/').collect();
    if dollar_mismatch(rule, names[0]) {
        return false;
    }
    let mut i = 0;
    loop {
        match (rule.get(i).map(String::as_str), names.get(i)) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(level), Some(name)) if level == *name => {}
            (None, None) => return true,
            _ => return false,
        }
        i += 1;
    }
}

/// Whether every topic the filter `filter` can match is matched by the ACL topic `rule`.
fn covers(rule: &[String], filter: &str) -> bool {
    let levels: Vec<&str> = filter.split('/').collect();
    if dollar_mismatch(rule, levels[0]) {
        return false;
    }
    let mut i = 0;
    loop {
        match (rule.get(i).map(String::as_str), levels.get(i)) {
            (Some("#"), _) => return true,
            (_, Some(&"#")) => return false,
            (Some("+"), Some(_)) => {}
            (Some(level), Some(name)) if *name != "+" && level == *name => {}
            (None, None) => return true,
            _ => return false,
        }
        i += 1;
    }
}

#[cfg(test)]
#[path = "acl_tests.rs"]
mod tests;
