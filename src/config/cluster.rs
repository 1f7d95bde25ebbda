//! The `[cluster]` table and the `--node` / `--nats` flags: whether this broker is one node
//! of several joined through NATS (`src/cluster/`), its name, and the NATS servers.
//!
//! Invariant: without `node` the cluster is off and nothing else in the configuration
//! changes; a `nats` given without `node` is an error rather than silently unused.

use std::path::Path;

use serde::Deserialize;

use super::ConfigError;

/// The NATS server a node connects to when `nats` is not given.
pub const DEFAULT_NATS: &str = "nats://127.0.0.1:4222";

/// Longest node name: it is part of NATS subjects, KV keys and a stream name.
const MAX_NODE_LEN: usize = 32;

/// The cluster settings in force.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This node's name; `None`: no cluster.
    pub node: Option<String>,
    /// The NATS servers' URLs (several for a NATS cluster; the client picks and fails over).
    pub nats: Vec<String>,
}

impl ClusterConfig {
    pub fn enabled(&self) -> bool {
        self.node.is_some()
    }
}

/// The `[cluster]` table of a config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ClusterTable {
    node: Option<String>,
    nats: Option<String>,
}

/// The cluster's flags.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct ClusterArgs {
    /// This node's name (letters, digits, `-` and `_`, up to 32): makes the broker one node
    /// of a cluster joined through NATS JetStream (README "Cluster (preview)"). Key `node`
    /// in the `[cluster]` table. Without it the broker runs alone.
    #[arg(long)]
    pub node: Option<String>,
    /// The NATS server URL, or several separated by commas, for a node (`--node`). Key
    /// `nats` in the `[cluster]` table.
    #[arg(long)]
    pub nats: Option<String>,
}

/// Where a value came from, for the error that names it.
#[derive(Clone, Copy)]
enum Source<'a> {
    File(&'a Path),
    Flag,
}

impl ClusterTable {
    /// Lays the table over `cluster`; `path` is the file, named in errors.
    pub(super) fn apply(self, cluster: &mut ClusterConfig, path: &Path) -> Result<(), ConfigError> {
        if let Some(node) = self.node {
            cluster.node = Some(check_node(&node, Source::File(path))?);
        }
        if let Some(nats) = self.nats {
            cluster.nats = parse_nats(&nats, Source::File(path))?;
        }
        Ok(())
    }
}

impl ClusterArgs {
    /// Lays the given flags over `cluster` (flags win over the file), then checks the whole.
    /// `path`: the config file, if any, named when its `nats` lacks a `node`.
    pub(super) fn apply(
        &self,
        cluster: &mut ClusterConfig,
        path: Option<&Path>,
    ) -> Result<(), ConfigError> {
        if let Some(node) = &self.node {
            cluster.node = Some(check_node(node, Source::Flag)?);
        }
        if let Some(nats) = &self.nats {
            cluster.nats = parse_nats(nats, Source::Flag)?;
        }
        if cluster.node.is_none() {
            if !cluster.nats.is_empty() {
                let message = "is set but `node` is not: without a node name the broker runs \
                               alone and never connects to NATS"
                    .to_string();
                return Err(match (self.nats.is_some(), path) {
                    (false, Some(path)) => invalid("nats", Source::File(path), message),
                    _ => invalid("nats", Source::Flag, message),
                });
            }
        } else if cluster.nats.is_empty() {
            cluster.nats = vec![DEFAULT_NATS.to_string()];
        }
        Ok(())
    }
}

fn invalid(key: &'static str, source: Source, message: String) -> ConfigError {
    match source {
        Source::File(path) => ConfigError::Invalid {
            key,
            path: Some(path.into()),
            message,
        },
        Source::Flag => ConfigError::Flag { key, message },
    }
}

fn check_node(node: &str, source: Source) -> Result<String, ConfigError> {
    let fine = !node.is_empty()
        && node.len() <= MAX_NODE_LEN
        && node
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if fine {
        Ok(node.to_string())
    } else {
        Err(invalid(
            "node",
            source,
            format!(
                "`{node}` is not a node name: 1 to {MAX_NODE_LEN} letters, digits, `-` or `_` \
                 (it becomes part of NATS subjects and a stream name)"
            ),
        ))
    }
}

fn parse_nats(value: &str, source: Source) -> Result<Vec<String>, ConfigError> {
    let urls: Vec<String> = value.split(',').map(|u| u.trim().to_string()).collect();
    if let Some(bad) = urls
        .iter()
        .find(|u| u.is_empty() || u.contains(char::is_whitespace))
    {
        return Err(invalid(
            "nats",
            source,
            format!("`{value}`: `{bad}` is not a server URL (give `nats://host:port`, several separated by commas)"),
        ));
    }
    Ok(urls)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Result<ClusterConfig, ConfigError> {
        let table: ClusterTable = toml::from_str(text).expect("toml");
        let mut cluster = ClusterConfig::default();
        table.apply(&mut cluster, Path::new("b.toml"))?;
        ClusterArgs::default().apply(&mut cluster, Some(Path::new("b.toml")))?;
        Ok(cluster)
    }

    #[test]
    fn node_alone_takes_the_default_server() {
        let cluster = table("node = \"n1\"").unwrap();
        assert_eq!(cluster.node.as_deref(), Some("n1"));
        assert_eq!(cluster.nats, vec![DEFAULT_NATS.to_string()]);
    }

    #[test]
    fn servers_are_a_comma_separated_list() {
        let cluster = table("node = \"n1\"\nnats = \"nats://a:1, nats://b:2\"").unwrap();
        assert_eq!(cluster.nats, vec!["nats://a:1", "nats://b:2"]);
    }

    #[test]
    fn errors_name_the_key_and_the_file() {
        let error = table("nats = \"nats://a:1\"").unwrap_err().to_string();
        assert!(error.contains("`nats` in b.toml"), "{error}");
        let error = table("node = \"n.1\"").unwrap_err().to_string();
        assert!(error.contains("`node` in b.toml"), "{error}");
        let error = table("node = \"n1\"\nnats = \"a,,b\"")
            .unwrap_err()
            .to_string();
        assert!(error.contains("`nats` in b.toml"), "{error}");
    }

    #[test]
    fn flags_win_and_are_named_as_flags() {
        let mut cluster = ClusterConfig {
            node: Some("n1".into()),
            nats: vec![],
        };
        let args = ClusterArgs {
            node: Some("n2".into()),
            nats: Some("nats://x:1".into()),
        };
        args.apply(&mut cluster, None).unwrap();
        assert_eq!(cluster.node.as_deref(), Some("n2"));
        assert_eq!(cluster.nats, vec!["nats://x:1"]);
        let args = ClusterArgs {
            node: Some(String::new()),
            nats: None,
        };
        let error = args.apply(&mut cluster, None).unwrap_err().to_string();
        assert!(error.starts_with("flag --node"), "{error}");
    }

    #[test]
    fn the_table_in_a_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("berth.toml");
        let read = |text: &str| {
            std::fs::write(&path, text).unwrap();
            crate::config::Config::from_args(crate::config::Args {
                config: Some(path.clone()),
                ..Default::default()
            })
        };
        let config = read("[cluster]\nnode = \"n7\"\nnats = \"nats://h:1\"\n").unwrap();
        assert_eq!(config.cluster.node.as_deref(), Some("n7"));
        assert_eq!(config.cluster.nats, vec!["nats://h:1"]);
        let error = read("[cluster]\nnod = \"n7\"\n").unwrap_err().to_string();
        assert!(
            error.contains("nod") && error.contains("berth.toml"),
            "{error}"
        );
        let error = read("[cluster]\nnats = \"nats://h:1\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("`nats` in") && error.contains("berth.toml"),
            "{error}"
        );
        assert!(!read("").unwrap().cluster.enabled());
    }

    #[test]
    fn no_node_no_cluster() {
        let cluster = table("").unwrap();
        assert!(!cluster.enabled());
        assert!(cluster.nats.is_empty());
    }
}
