//! What SIGHUP does: read the configuration again, exactly as at start (flags over the
//! config file over the defaults, so a flag given on the command line still wins), and
//! hand it to every hook registered for a setting that can change while the broker runs.
//!
//! The seam is deliberately small: a setting that can be reloaded registers one hook with
//! [`Reload::on_reload`]; nothing else changes. Today that is the log level (`main`
//! registers it, as it owns the tracing subscriber); credentials, ACLs and certificates
//! are meant to hook in the same way. A configuration that no longer reads (a typo in the
//! file) changes nothing: the error is logged and the broker goes on as it was.
//! Settings without a hook (listen address, cores, limits other than `ban_file`) keep their
//! start-up values.

use crate::config::{Args, Config, ConfigError};

/// Re-applies one setting from a configuration read again.
type Hook = Box<dyn FnMut(&Config) + Send>;

pub struct Reload {
    /// The command line as given at start; the config file it names is read again.
    args: Args,
    hooks: Vec<(&'static str, Hook)>,
}

impl Reload {
    pub fn new(args: Args) -> Reload {
        Reload {
            args,
            hooks: Vec::new(),
        }
    }

    /// Registers `hook` to re-apply the setting `what` (its config key, named in the log).
    pub fn on_reload(&mut self, what: &'static str, hook: impl FnMut(&Config) + Send + 'static) {
        self.hooks.push((what, Box::new(hook)));
    }

    /// Reads the configuration again and runs every hook with it; returns the settings
    /// re-applied. On an error no hook runs.
    pub fn reload(&mut self) -> Result<Vec<&'static str>, ConfigError> {
        let config = Config::from_args(self.args.clone())?;
        Ok(self
            .hooks
            .iter_mut()
            .map(|(what, hook)| {
                hook(&config);
                *what
            })
            .collect())
    }

    /// The config file read on reload, if one was given.
    pub fn config_file(&self) -> Option<&std::path::Path> {
        self.args.config.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn a_reload_reads_the_file_again_and_the_flag_still_wins() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("berth.toml");
        std::fs::write(&path, "log = \"warning\"\n").unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut reload = Reload::new(Args {
            config: Some(path.clone()),
            ..Args::default()
        });
        let record = seen.clone();
        reload.on_reload("log", move |config| {
            record.lock().unwrap().push(config.log.clone())
        });
        assert_eq!(reload.reload().unwrap(), vec!["log"]);
        std::fs::write(&path, "log = \"debug\"\n").unwrap();
        reload.reload().unwrap();
        assert_eq!(*seen.lock().unwrap(), vec!["warn", "debug"]);

        std::fs::write(&path, "log = \"loud\"\n").unwrap();
        let err = reload.reload().unwrap_err().to_string();
        assert!(err.contains("`log`") && err.contains("berth.toml"), "{err}");
        assert_eq!(seen.lock().unwrap().len(), 2, "no hook runs on a bad file");

        let mut flagged = Reload::new(Args {
            config: Some(path.clone()),
            log: Some("error".into()),
            ..Args::default()
        });
        std::fs::write(&path, "log = \"debug\"\n").unwrap();
        let record = seen.clone();
        flagged.on_reload("log", move |config| {
            record.lock().unwrap().push(config.log.clone())
        });
        flagged.reload().unwrap();
        assert_eq!(seen.lock().unwrap().last().unwrap(), "error");
    }
}
