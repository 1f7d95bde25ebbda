//! The `[cluster]` table and its flags: this node's name in a berth cluster (`node`), the
//! address clients are told to use for it (`advertise`), and the slot map file
//! (`slot_map`, read at start and again on SIGHUP; format in `cluster::slots`; with `nats`
//! only the seed of the cluster's bucket `berth_slots`, not re-read: `crate::nats::slots`).
//!
//! Without `node` berth is a single broker and nothing here applies; `advertise` or
//! `slot_map` without it is an error, as is a map that does not name this node, or names
//! it at another address than `advertise`. Errors name the key (`cluster.slot_map`) and
//! the file, or the flag (`--slot-map`).
//!
//! `nats` (a NATS server URL, or several separated by commas) turns on the data plane
//! between nodes (`crate::nats`, the NATS bridge); without it a node is only its
//! slots' home and sends nothing to other nodes. `nats` without `node` is an error.
//! `nats_replicas` (1 to 5, JetStream's bounds) is how many servers keep each copy of
//! the node's stream and the cluster's buckets; without it, 3 when the NATS server is in
//! a cluster (one server may die without losing anything acknowledged), else 1.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::ConfigError;
use crate::cluster::{slots, Cluster, SlotMap};

/// The cluster settings in force.
#[derive(Debug, Clone, Default)]
pub struct ClusterConfig {
    /// This node's name (its HAProxy server name too); `None`: not in a cluster.
    pub node: Option<String>,
    /// `host:port` clients are told to use for this node.
    pub advertise: Option<String>,
    pub slot_map_file: Option<PathBuf>,
    /// The map `slot_map_file` held when the configuration was read.
    pub slot_map: Option<Arc<SlotMap>>,
    /// The NATS servers' URLs (`nats`): empty, no NATS bridge (no data plane).
    pub nats: Vec<String>,
    /// `nats` as given, until [`check`] parses it into `nats`.
    nats_given: Option<String>,
    /// The replicas of the node's stream and the buckets (`nats_replicas`); `None`: 3
    /// against a NATS cluster, 1 against a lone server (`nats::replicas`).
    pub nats_replicas: Option<usize>,
    /// `nats_replicas` as given, until [`check`] bounds it.
    replicas_given: Option<i64>,
}

impl ClusterConfig {
    /// This node's view of the cluster, when it is in one.
    pub fn cluster(&self) -> Option<Cluster> {
        Some(Cluster {
            node: self.node.clone()?,
            map: self.slot_map.clone()?,
        })
    }
}

/// The `[cluster]` table of the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ClusterTable {
    node: Option<String>,
    advertise: Option<String>,
    slot_map: Option<PathBuf>,
    nats: Option<String>,
    nats_replicas: Option<i64>,
}

impl ClusterTable {
    pub(super) fn apply(self, cluster: &mut ClusterConfig, path: &Path) {
        cluster.node = self.node.or(cluster.node.take());
        cluster.advertise = self.advertise.or(cluster.advertise.take());
        if let Some(v) = self.slot_map {
            // Relative to the config file, as the other file keys.
            cluster.slot_map_file = Some(path.parent().map_or(v.clone(), |dir| dir.join(&v)));
        }
        if let Some(v) = self.nats {
            cluster.nats_given = Some(v);
        }
        if let Some(v) = self.nats_replicas {
            cluster.replicas_given = Some(v);
        }
    }
}

/// The cluster flags; each optional, so that one not given leaves the file in force.
#[derive(Debug, clap::Args, Default, Clone)]
pub struct ClusterArgs {
    /// This node's name in a cluster (`[cluster] node`): letters, digits, `-`, `_`, `.`.
    /// With it, a CONNECT whose client id's slot another node owns is refused (v5 0x9C Use
    /// another server with its address, 3.1.1 return code 3).
    #[arg(long)]
    pub node: Option<String>,
    /// The `host:port` clients are told to use for this node; it must be this node's
    /// address in the slot map.
    #[arg(long)]
    pub advertise: Option<String>,
    /// The slot map file: `node NAME ADDRESS` lines and `SLOT NODE EPOCH` lines (or
    /// `FIRST-LAST NODE EPOCH`) for all 4096 slots. Re-read on SIGHUP; with --nats only
    /// the seed of the NATS bucket `berth_slots` while it holds no map.
    #[arg(long)]
    pub slot_map: Option<PathBuf>,
    /// The NATS server URL (`nats://host:port`), or several separated by commas, that joins
    /// this node to the others (`[cluster] nats`): publishes, interest and QoS 1/2 hand-off
    /// between nodes go through NATS JetStream (nats-server 2.10 or later). Needs --node.
    #[arg(long)]
    pub nats: Option<String>,
    /// How many NATS servers keep each copy of this node's stream and the cluster's buckets
    /// (`[cluster] nats_replicas`, 1 to 5); an existing stream or bucket is changed to it.
    #[arg(long)]
    pub nats_replicas: Option<i64>,
}

impl ClusterArgs {
    pub(super) fn apply(&self, cluster: &mut ClusterConfig) {
        if let Some(v) = &self.node {
            cluster.node = Some(v.clone());
        }
        if let Some(v) = &self.advertise {
            cluster.advertise = Some(v.clone());
        }
        if let Some(v) = &self.slot_map {
            cluster.slot_map_file = Some(v.clone());
        }
        if let Some(v) = &self.nats {
            cluster.nats_given = Some(v.clone());
        }
        if let Some(v) = self.nats_replicas {
            cluster.replicas_given = Some(v);
        }
    }
}

/// Checks the merged settings and reads the slot map into `cluster.slot_map`.
pub(super) fn check(
    cluster: &mut ClusterConfig,
    args: &ClusterArgs,
    path: Option<&Path>,
) -> Result<(), ConfigError> {
    // Named as the flag when it came from one, else as the key and the file.
    let bad = |key: &'static str, from_flag: bool, message: String| {
        if from_flag {
            ConfigError::Flag { key, message }
        } else {
            ConfigError::Invalid {
                key: match key {
                    "node" => "cluster.node",
                    "advertise" => "cluster.advertise",
                    "nats" => "cluster.nats",
                    "nats_replicas" => "cluster.nats_replicas",
                    _ => "cluster.slot_map",
                },
                path: path.map(Path::to_path_buf),
                message,
            }
        }
    };
    if let Some(nats) = cluster.nats_given.take() {
        cluster.nats = parse_nats(&nats).map_err(|m| bad("nats", args.nats.is_some(), m))?;
    }
    if let Some(replicas) = cluster.replicas_given.take() {
        if !(1..=5).contains(&replicas) {
            let message = format!("`{replicas}`: JetStream keeps 1 to 5 replicas");
            return Err(bad("nats_replicas", args.nats_replicas.is_some(), message));
        }
        cluster.nats_replicas = Some(replicas as usize);
    }
    let Some(node) = cluster.node.clone() else {
        if !cluster.nats.is_empty() {
            return Err(bad(
                "nats",
                args.nats.is_some(),
                "needs `node` (this node's name in the cluster)".into(),
            ));
        }
        if cluster.advertise.is_some() {
            return Err(bad(
                "advertise",
                args.advertise.is_some(),
                "needs `node` (this node's name in the cluster)".into(),
            ));
        }
        if cluster.slot_map_file.is_some() {
            return Err(bad(
                "slot_map",
                args.slot_map.is_some(),
                "needs `node` (this node's name in the cluster)".into(),
            ));
        }
        return Ok(());
    };
    let node_flag = args.node.is_some();
    if !slots::valid_node_name(&node) {
        let message = format!("`{node}`: 1 to 64 letters, digits, `-`, `_` or `.`");
        return Err(bad("node", node_flag, message));
    }
    let map_flag = args.slot_map.is_some();
    let Some(file) = cluster.slot_map_file.clone() else {
        let message = "a cluster node needs `slot_map` (which node owns which slot)".into();
        return Err(bad("slot_map", map_flag, message));
    };
    let text = std::fs::read_to_string(&file).map_err(|e| {
        bad(
            "slot_map",
            map_flag,
            format!("cannot read {}: {e}", file.display()),
        )
    })?;
    let map = SlotMap::parse(&text)
        .map_err(|e| bad("slot_map", map_flag, format!("{}: {e}", file.display())))?;
    let Some(own) = map.node(&node) else {
        let message = format!("{} has no `node {node} ADDRESS` line", file.display());
        return Err(bad("slot_map", map_flag, message));
    };
    if let Some(advertise) = &cluster.advertise {
        let from_flag = args.advertise.is_some();
        if !slots::valid_address(advertise) {
            let message = format!("`{advertise}` is not HOST:PORT");
            return Err(bad("advertise", from_flag, message));
        }
        if *advertise != own.address {
            let message = format!(
                "`{advertise}`, but {} puts node {node} at {}",
                file.display(),
                own.address
            );
            return Err(bad("advertise", from_flag, message));
        }
    }
    cluster.slot_map = Some(Arc::new(map));
    Ok(())
}

/// `nats`: server URLs separated by commas.
pub(crate) fn parse_nats(value: &str) -> Result<Vec<String>, String> {
    let urls: Vec<String> = value.split(',').map(|u| u.trim().to_string()).collect();
    match urls
        .iter()
        .find(|u| u.is_empty() || u.contains(char::is_whitespace))
    {
        Some(bad) => Err(format!(
            "`{value}`: `{bad}` is not a server URL (give `nats://host:port`, several \
             separated by commas)"
        )),
        None => Ok(urls),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Args, Config};

    fn map_file(dir: &Path) -> PathBuf {
        let path = dir.join("slots.map");
        std::fs::write(
            &path,
            "node n1 127.0.0.2:1883\nnode n2 127.0.0.3:1883\n0-2047 n1 1\n2048-4095 n2 1\n",
        )
        .unwrap();
        path
    }

    fn from(args: Args) -> Result<Config, String> {
        Config::from_args(args).map_err(|e| e.to_string())
    }

    #[test]
    fn a_cluster_table_reads_its_map_relative_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        map_file(dir.path());
        let config = dir.path().join("berth.toml");
        std::fs::write(
            &config,
            "[cluster]\nnode = \"n2\"\nadvertise = \"127.0.0.3:1883\"\nslot_map = \"slots.map\"\n",
        )
        .unwrap();
        let args = Args {
            config: Some(config),
            ..Args::default()
        };
        let cluster = from(args).unwrap().cluster.cluster().unwrap();
        assert_eq!(cluster.node, "n2");
        assert_eq!(cluster.map.slots_of("n2"), 2048);
    }

    #[test]
    fn no_node_no_cluster() {
        let config = from(Args::default()).unwrap();
        assert!(config.cluster.cluster().is_none());
    }

    #[test]
    fn errors_name_the_key_and_the_file_or_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let map = map_file(dir.path());
        let config = dir.path().join("berth.toml");
        let file_err = |text: &str| {
            std::fs::write(&config, text).unwrap();
            from(Args {
                config: Some(config.clone()),
                ..Args::default()
            })
            .unwrap_err()
        };
        let err = file_err("[cluster]\nslot_map = \"slots.map\"\n");
        assert!(err.contains("`cluster.slot_map` in ") && err.contains("berth.toml"));
        assert!(err.contains("needs `node`"), "{err}");
        let err = file_err("[cluster]\nnode = \"n1\"\n");
        assert!(err.contains("`cluster.slot_map`") && err.contains("needs `slot_map`"));
        let err = file_err("[cluster]\nnode = \"n3\"\nslot_map = \"slots.map\"\n");
        assert!(err.contains("has no `node n3 ADDRESS` line"), "{err}");
        let err = file_err(
            "[cluster]\nnode = \"n1\"\nadvertise = \"127.0.0.9:1883\"\nslot_map = \"slots.map\"\n",
        );
        assert!(err.contains("`cluster.advertise`") && err.contains("at 127.0.0.2:1883"));
        let err = file_err("[cluster]\nnode = \"a/b\"\nslot_map = \"slots.map\"\n");
        assert!(err.contains("`cluster.node`"), "{err}");
        let err = file_err("[cluster]\nnodes = \"n1\"\n");
        assert!(err.contains("nodes"), "{err}");

        std::fs::write(&map, "node n1 127.0.0.2:1883\n0-4094 n1 1\n").unwrap();
        let err = from(Args {
            cluster: ClusterArgs {
                node: Some("n1".into()),
                slot_map: Some(map.clone()),
                advertise: None,
                nats: None,
                nats_replicas: None,
            },
            ..Args::default()
        })
        .unwrap_err();
        assert!(err.starts_with("flag --slot-map: "), "{err}");
        assert!(err.contains("slots without an owner: 4095"), "{err}");
    }

    #[test]
    fn nats_lists_servers_and_needs_a_node() {
        let dir = tempfile::tempdir().unwrap();
        map_file(dir.path());
        let config = dir.path().join("berth.toml");
        let read = |text: &str| {
            std::fs::write(&config, text).unwrap();
            from(Args {
                config: Some(config.clone()),
                ..Args::default()
            })
        };
        let nodes = "[cluster]\nnode = \"n1\"\nslot_map = \"slots.map\"\n";
        let cluster = read(&format!("{nodes}nats = \"nats://a:1, nats://b:2\"\n"))
            .unwrap()
            .cluster;
        assert_eq!(cluster.nats, vec!["nats://a:1", "nats://b:2"]);
        assert!(
            read(nodes).unwrap().cluster.nats.is_empty(),
            "no nats, no bridge"
        );
        let err = read("[cluster]\nnats = \"nats://a:1\"\n").unwrap_err();
        assert!(
            err.contains("`cluster.nats` in ") && err.contains("needs `node`"),
            "{err}"
        );
        let err = read(&format!("{nodes}nats = \"a,,b\"\n")).unwrap_err();
        assert!(
            err.contains("`cluster.nats`") && err.contains("not a server URL"),
            "{err}"
        );
        let err = from(Args {
            cluster: ClusterArgs {
                nats: Some("nats://a:1".into()),
                ..ClusterArgs::default()
            },
            ..Args::default()
        })
        .unwrap_err();
        assert!(err.starts_with("flag --nats: "), "{err}");
    }

    #[test]
    fn nats_replicas_is_bounded_and_defaults_to_auto() {
        let dir = tempfile::tempdir().unwrap();
        map_file(dir.path());
        let config = dir.path().join("berth.toml");
        let read = |text: &str| {
            std::fs::write(&config, text).unwrap();
            from(Args {
                config: Some(config.clone()),
                ..Args::default()
            })
        };
        let nodes = "[cluster]\nnode = \"n1\"\nslot_map = \"slots.map\"\nnats = \"nats://a:1\"\n";
        assert_eq!(read(nodes).unwrap().cluster.nats_replicas, None);
        let cluster = read(&format!("{nodes}nats_replicas = 3\n"))
            .unwrap()
            .cluster;
        assert_eq!(cluster.nats_replicas, Some(3));
        for bad in ["0", "6", "-1"] {
            let err = read(&format!("{nodes}nats_replicas = {bad}\n")).unwrap_err();
            assert!(
                err.contains("`cluster.nats_replicas` in ")
                    && err.contains("berth.toml")
                    && err.contains("1 to 5"),
                "{err}"
            );
        }
        let err = from(Args {
            cluster: ClusterArgs {
                nats_replicas: Some(9),
                ..ClusterArgs::default()
            },
            ..Args::default()
        })
        .unwrap_err();
        assert!(err.starts_with("flag --nats-replicas: "), "{err}");
    }
}
