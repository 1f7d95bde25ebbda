//! The settings an operator may change while the broker runs (the admin API's
//! `/api/v1/settings`), kept in `settings.json` in the data directory so that a restart
//! keeps them: read at start over the config file's values.
//!
//! Guarantees: a change is checked whole before any of it applies (a bad value names its
//! key, and nothing changes); the file is replaced atomically (a temporary file, synced,
//! then renamed), so a crash leaves the old settings or the new ones, never half of each.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Map, Value};

use super::{Config, Overflow, NEVER_EXPIRES};
use crate::session::state::QueueLimits;

/// The file in the data directory.
pub const SETTINGS_FILE: &str = "settings.json";

/// What can change at run time. Each applies at once on every core: the expiry cap to
/// sessions that connect from then on, the queue limits to the next message queued, the
/// publish rate to connections made from then on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Seconds, 1..=4294967295.
    pub max_session_expiry: u64,
    /// At least 1.
    pub max_queued_messages: usize,
    /// 0: no limit.
    pub max_queued_bytes: usize,
    pub queue_overflow: Overflow,
    pub queue_qos0: bool,
    /// PUBLISH packets a second per client; 0: no limit.
    pub max_publish_rate: u32,
}

/// A bad settings change: the key, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("setting {key}: {message}")]
pub struct BadSetting {
    pub key: String,
    pub message: String,
}

impl Settings {
    pub const KEYS: [&'static str; 6] = [
        "max_session_expiry",
        "max_queued_messages",
        "max_queued_bytes",
        "queue_overflow",
        "queue_qos0",
        "max_publish_rate",
    ];

    pub fn of(config: &Config) -> Settings {
        Settings {
            max_session_expiry: config.max_session_expiry.as_secs(),
            max_queued_messages: config.max_queued_messages,
            max_queued_bytes: config.max_queued_bytes,
            queue_overflow: config.queue_overflow,
            queue_qos0: config.queue_qos0,
            max_publish_rate: config.limits.max_publish_rate,
        }
    }

    pub fn apply_to(&self, config: &mut Config) {
        config.max_session_expiry = Duration::from_secs(self.max_session_expiry);
        config.max_queued_messages = self.max_queued_messages;
        config.max_queued_bytes = self.max_queued_bytes;
        config.queue_overflow = self.queue_overflow;
        config.queue_qos0 = self.queue_qos0;
        config.limits.max_publish_rate = self.max_publish_rate;
    }

    /// The bounds of each session's queue these settings give.
    pub fn queue_limits(&self) -> QueueLimits {
        QueueLimits {
            max_messages: self.max_queued_messages,
            max_bytes: match self.max_queued_bytes {
                0 => usize::MAX,
                n => n,
            },
            overflow: self.queue_overflow,
            queue_qos0: self.queue_qos0,
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "max_session_expiry": self.max_session_expiry,
            "max_queued_messages": self.max_queued_messages,
            "max_queued_bytes": self.max_queued_bytes,
            "queue_overflow": match self.queue_overflow {
                Overflow::DropOldest => "drop-oldest",
                Overflow::RefuseNewest => "refuse-newest",
            },
            "queue_qos0": self.queue_qos0,
            "max_publish_rate": self.max_publish_rate,
        })
    }

    /// These settings with the keys of `changes` (a JSON object, any of [`Settings::KEYS`])
    /// changed; an unknown key or a bad value is refused, naming it.
    pub fn changed(&self, changes: &Value) -> Result<Settings, BadSetting> {
        let bad = |key: &str, message: &str| BadSetting {
            key: key.to_string(),
            message: message.to_string(),
        };
        let Some(changes) = changes.as_object() else {
            return Err(bad("(body)", "a JSON object of settings"));
        };
        let mut next = *self;
        for (key, value) in changes {
            let number = |max: u64| value.as_u64().filter(|&n| n <= max);
            match key.as_str() {
                "max_session_expiry" => {
                    next.max_session_expiry = number(NEVER_EXPIRES)
                        .filter(|&n| n > 0)
                        .ok_or_else(|| bad(key, "seconds, 1 to 4294967295"))?
                }
                "max_queued_messages" => {
                    next.max_queued_messages = number(u32::MAX.into())
                        .filter(|&n| n > 0)
                        .ok_or_else(|| bad(key, "a number, at least 1"))?
                        as usize
                }
                "max_queued_bytes" => {
                    next.max_queued_bytes =
                        number(u64::MAX)
                            .and_then(|n| usize::try_from(n).ok())
                            .ok_or_else(|| bad(key, "a number of bytes (0: no limit)"))?
                }
                "queue_overflow" => {
                    next.queue_overflow = match value.as_str() {
                        Some("drop-oldest") => Overflow::DropOldest,
                        Some("refuse-newest") => Overflow::RefuseNewest,
                        _ => return Err(bad(key, "drop-oldest or refuse-newest")),
                    }
                }
                "queue_qos0" => {
                    next.queue_qos0 = value.as_bool().ok_or_else(|| bad(key, "true or false"))?
                }
                "max_publish_rate" => {
                    next.max_publish_rate = number(u32::MAX.into())
                        .ok_or_else(|| bad(key, "PUBLISH packets a second (0: no limit)"))?
                        as u32
                }
                _ => {
                    let known = Settings::KEYS.join(", ");
                    return Err(bad(
                        key,
                        &format!("not a run-time setting (those are {known})"),
                    ));
                }
            }
        }
        Ok(next)
    }

    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(SETTINGS_FILE)
    }

    /// The settings kept in `data_dir` over `self` (the config file's), and the changes
    /// the file holds (a JSON object); `self` and `{}` when there is no file. A file that
    /// does not read, or holds a bad value, is an error.
    pub fn load_over(&self, data_dir: &Path) -> anyhow::Result<(Settings, Map<String, Value>)> {
        let path = Settings::path(data_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((*self, Map::new())),
            Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
        };
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: not JSON: {e}", path.display()))?;
        let settings = self
            .changed(&value)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let Value::Object(changes) = value else {
            unreachable!("`changed` takes objects only");
        };
        Ok((settings, changes))
    }
}

/// Writes `changes` (the settings changed at run time, a JSON object) to `data_dir`
/// atomically. Only those are kept: a setting never changed at run time follows the config
/// file at the next start.
pub fn save(data_dir: &Path, changes: &Map<String, Value>) -> std::io::Result<()> {
    use std::io::Write as _;
    let path = Settings::path(data_dir);
    let temporary = data_dir.join(format!("{SETTINGS_FILE}.tmp"));
    let mut file = std::fs::File::create(&temporary)?;
    let mut text = serde_json::to_string_pretty(changes)?;
    text.push('\n');
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, &path)?;
    // The rename itself is durable once the directory is.
    std::fs::File::open(data_dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Settings {
        Settings::of(&Config::default())
    }

    #[test]
    fn a_change_names_its_bad_key_and_changes_nothing() {
        let err = base()
            .changed(&json!({"queue_qos0": true, "max_queued_messages": 0}))
            .unwrap_err();
        assert_eq!(err.key, "max_queued_messages");
        let err = base().changed(&json!({"max_sessions": 5})).unwrap_err();
        assert_eq!(err.key, "max_sessions");
        let err = base()
            .changed(&json!({"queue_overflow": "drop"}))
            .unwrap_err();
        assert_eq!(err.key, "queue_overflow");
        let err = base()
            .changed(&json!({"max_session_expiry": 4294967296u64}))
            .unwrap_err();
        assert_eq!(err.key, "max_session_expiry");
    }

    #[test]
    fn settings_round_trip_through_their_file() {
        let dir = tempfile::tempdir().unwrap();
        let changes = json!({
            "max_session_expiry": 60, "max_queued_messages": 7, "max_queued_bytes": 0,
            "queue_overflow": "refuse-newest", "queue_qos0": true, "max_publish_rate": 9
        });
        let changed = base().changed(&changes).unwrap();
        assert_eq!(base().load_over(dir.path()).unwrap(), (base(), Map::new()));
        let Value::Object(changes) = changes else {
            unreachable!()
        };
        save(dir.path(), &changes).unwrap();
        assert_eq!(base().load_over(dir.path()).unwrap(), (changed, changes));
        assert!(!dir.path().join("settings.json.tmp").exists());
        std::fs::write(dir.path().join(SETTINGS_FILE), r#"{"queue_qos0": 1}"#).unwrap();
        let error = base().load_over(dir.path()).unwrap_err().to_string();
        assert!(error.contains("queue_qos0"), "{error}");
        let mut config = Config::default();
        changed.apply_to(&mut config);
        assert_eq!(Settings::of(&config), changed);
    }
}
