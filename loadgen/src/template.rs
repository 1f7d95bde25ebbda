//! Topic templates (`--topic`, `--filter`): `%i` is the client's index (publisher i,
//! subscriber i, session i), `%c` its client id, `%p` the run's client prefix, `%%` a `%`.
//! A template is checked once, when the options are read, so expanding it per client
//! cannot fail.

use std::fmt::Write as _;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Index,
    ClientId,
    Prefix,
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                literal.push(c);
                continue;
            }
            let part = match chars.next() {
                Some('%') => {
                    literal.push('%');
                    continue;
                }
                Some('i') => Part::Index,
                Some('c') => Part::ClientId,
                Some('p') => Part::Prefix,
                Some(other) => {
                    return Err(format!(
                        "unknown %{other} in {text:?}: templates know %i (client index), \
                         %c (client id), %p (client prefix) and %%"
                    ))
                }
                None => return Err(format!("{text:?} ends in a lone %")),
            };
            if !literal.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut literal)));
            }
            parts.push(part);
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        Ok(Template { parts })
    }

    /// Whether the template names the client id (which differs between a publisher and the
    /// subscriber of the same index).
    pub fn uses_client_id(&self) -> bool {
        self.parts.contains(&Part::ClientId)
    }

    /// Whether the template names the client prefix, which differs between processes unless
    /// --client-prefix is given.
    pub fn uses_prefix(&self) -> bool {
        self.parts.contains(&Part::Prefix)
    }

    pub fn expand(&self, index: usize, client_id: &str, prefix: &str) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Index => {
                    let _ = write!(out, "{index}");
                }
                Part::ClientId => out.push_str(client_id),
                Part::Prefix => out.push_str(prefix),
            }
        }
        out
    }
}

/// For clap's `value_parser`.
pub fn template_arg(text: &str) -> Result<Template, String> {
    Template::parse(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_index_client_id_prefix_and_percent() {
        let t = Template::parse("%p/dev/%i/%c/100%%").unwrap();
        assert_eq!(t.expand(7, "lg-pub-7", "lg"), "lg/dev/7/lg-pub-7/100%");
        assert!(t.uses_client_id() && t.uses_prefix());
        let plain = Template::parse("plain/topic").unwrap();
        assert_eq!(plain.expand(3, "x", "y"), "plain/topic");
        assert!(!plain.uses_client_id() && !plain.uses_prefix());
    }

    #[test]
    fn adjacent_placeholders_and_empty_template() {
        let t = Template::parse("%i%i").unwrap();
        assert_eq!(t.expand(12, "", ""), "1212");
        assert_eq!(Template::parse("").unwrap().expand(1, "c", "p"), "");
    }

    #[test]
    fn unknown_or_lone_percent_is_refused() {
        let unknown = Template::parse("a/%x").unwrap_err();
        assert!(unknown.contains("%x"), "{unknown}");
        let lone = Template::parse("a/%").unwrap_err();
        assert!(lone.contains("lone %"), "{lone}");
    }
}
