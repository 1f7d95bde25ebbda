//! Tests of the merge of flags, file and defaults, and of the errors a bad value gives.

use super::*;

fn with_file(text: &str) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("berth.toml");
    std::fs::write(&path, text).unwrap();
    Config::from_args(Args {
        config: Some(path),
        ..Args::default()
    })
}

#[test]
fn defaults_need_no_file() {
    let config = Config::from_args(Args::default()).unwrap();
    assert_eq!(
        config.listeners[0].address,
        "127.0.0.1:1883".parse().unwrap()
    );
    assert_eq!(config.data_dir, PathBuf::from("./berth-data"));
}

#[test]
fn unknown_key_names_key_and_file() {
    let err = with_file("listen = \"127.0.0.1:1\"\nlisen = 3\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("lisen"), "{err}");
    assert!(err.contains("berth.toml"), "{err}");
}

#[test]
fn bad_value_names_key_and_file() {
    let err = with_file("listen = \"nowhere\"\n").unwrap_err().to_string();
    assert!(
        err.contains("`listen`") && err.contains("berth.toml"),
        "{err}"
    );
    let err = with_file("cores = 0\n").unwrap_err().to_string();
    assert!(
        err.contains("`cores`") && err.contains("berth.toml"),
        "{err}"
    );
}

#[test]
fn public_broker_policy_can_be_configured() {
    let config = with_file(
        "max_session_expiry = 300\nmax_queued_messages = 1000\nqueue_qos0 = false\nqueue_overflow = \"refuse-newest\"\nfsync = \"always\"\n",
    )
    .unwrap();
    assert_eq!(config.max_session_expiry, Duration::from_secs(300));
    assert_eq!(config.max_queued_messages, 1000);
    assert!(!config.queue_qos0);
    assert_eq!(config.queue_overflow, Overflow::RefuseNewest);
    assert_eq!(config.fsync, FsyncMode::Always);
    let err = with_file("fsync = \"sometimes\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("fsync") && err.contains("berth.toml"), "{err}");
    let err = with_file("segment_size = 10\n").unwrap_err().to_string();
    assert!(err.contains("`segment_size`"), "{err}");
}

#[test]
fn mqtt5_negotiation_and_outbox_keys() {
    let config = Config::from_args(Args::default()).unwrap();
    assert_eq!(config.topic_alias_maximum, 10);
    assert_eq!(config.max_outbox_bytes, 256 << 10);
    let config = with_file("topic_alias_maximum = 0\nmax_outbox_bytes = 131072\n").unwrap();
    assert_eq!(config.topic_alias_maximum, 0);
    assert_eq!(config.max_outbox_bytes, 131072);
    let err = with_file("topic_alias_maximum = 70000\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("topic_alias_maximum"), "{err}");
}

#[test]
fn flags_override_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.toml");
    std::fs::write(&path, "cores = 3\nmax_packet_size = 1000\n").unwrap();
    let config = Config::from_args(Args {
        config: Some(path),
        cores: Some(1),
        ..Args::default()
    })
    .unwrap();
    assert_eq!(config.cores, 1);
    assert_eq!(config.max_packet_size, 1000);
}

#[test]
fn sys_interval_defaults_to_ten_seconds_and_zero_turns_it_off() {
    let config = Config::from_args(Args::default()).unwrap();
    assert_eq!(config.sys_interval, Duration::from_secs(10));
    assert!(with_file("sys_interval = 0\n")
        .unwrap()
        .sys_interval
        .is_zero());
    let config = Config::from_args(Args {
        sys_interval: Some(1),
        ..Args::default()
    })
    .unwrap();
    assert_eq!(config.sys_interval, Duration::from_secs(1));
}

#[test]
fn session_bounds_default_to_limits_and_zero_lifts_them() {
    let config = Config::from_args(Args::default()).unwrap();
    assert_eq!(config.max_subscriptions, 10_000);
    assert_eq!(config.max_queued_bytes, 16 << 20);
    assert_eq!(config.max_queued_messages, 1000);
    let config = with_file("max_subscriptions = 0\nmax_queued_bytes = 0\n").unwrap();
    assert_eq!(config.max_subscriptions, 0);
    assert_eq!(config.max_queued_bytes, 0);
    let err = with_file("max_subscriptions = -1\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("max_subscriptions") && err.contains("berth.toml"),
        "{err}"
    );
}

#[test]
fn log_levels_take_mosquitto_and_tracing_names_and_refuse_others() {
    for (given, filter) in [
        ("error", "error"),
        ("warning", "warn"),
        ("warn", "warn"),
        ("notice", "info"),
        ("information", "info"),
        ("info", "info"),
        ("debug", "debug"),
        ("trace", "trace"),
        ("none", "off"),
        ("off", "off"),
        ("WARNING", "warn"),
        ("berth=debug,info", "berth=debug,info"),
    ] {
        assert_eq!(log_filter(given).as_deref(), Ok(filter), "{given}");
    }
    let err = with_file("log = \"loud\"\n").unwrap_err().to_string();
    assert!(
        err.contains("`log`") && err.contains("berth.toml") && err.contains("loud"),
        "{err}"
    );
    let err = Config::from_args(Args {
        log: Some("verbose".into()),
        ..Args::default()
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("flag --log:") && !err.contains(" in "),
        "{err}"
    );
    assert!(log_filter("berth=loud").is_err());
}

#[test]
fn write_timeout_and_max_keepalive_keys() {
    let config = Config::from_args(Args::default()).unwrap();
    assert_eq!(config.write_timeout, Duration::from_secs(30));
    assert_eq!(config.max_keepalive, None);
    let config = with_file("write_timeout = 2\nmax_keepalive = 60\n").unwrap();
    assert_eq!(config.write_timeout, Duration::from_secs(2));
    assert_eq!(config.max_keepalive, Some(60));
    for no_cap in ["0", "65535"] {
        let config = with_file(&format!("max_keepalive = {no_cap}\n")).unwrap();
        assert_eq!(config.max_keepalive, None, "{no_cap}");
    }
    let err = with_file("write_timeout = 0\n").unwrap_err().to_string();
    assert!(err.contains("`write_timeout`"), "{err}");
    let err = with_file("max_keepalive = 60\nserver_keep_alive = 61\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("`server_keep_alive`"), "{err}");
}

#[test]
fn authentication_keys() {
    // Loopback without a password file: anonymous clients allowed, nothing to check.
    let config = with_file("").unwrap();
    assert!(config.auth.allow_anonymous && config.auth.passwords.is_none());
    // Another address with no authentication is refused unless asked for.
    let error = with_file("listen = \"0.0.0.0:1883\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("`allow_anonymous`") && error.contains("password_file"),
        "{error}"
    );
    let open = with_file("listen = \"0.0.0.0:1883\"\nallow_anonymous = true\n").unwrap();
    assert!(open.auth.allow_anonymous);
    let error = with_file("allow_anonymous = false\n")
        .unwrap_err()
        .to_string();
    assert!(error.contains("needs a password_file"), "{error}");
    // A password file named in the config file is read relative to it.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "# none yet\n").unwrap();
    std::fs::write(dir.path().join("berth.toml"), "password_file = \"pw\"\n").unwrap();
    let args = Args {
        config: Some(dir.path().join("berth.toml")),
        ..Args::default()
    };
    let config = Config::from_args(args).unwrap();
    assert_eq!(config.password_file, Some(dir.path().join("pw")));
    assert!(
        !config.auth.allow_anonymous,
        "a password file turns anonymous off"
    );
    std::fs::write(dir.path().join("pw"), "alice\n").unwrap();
    let args = Args {
        config: Some(dir.path().join("berth.toml")),
        ..Args::default()
    };
    let error = Config::from_args(args).unwrap_err().to_string();
    assert!(error.contains("line 1: expected username:hash"), "{error}");
}

#[test]
fn max_session_expiry_refuses_0_and_what_would_overflow_and_takes_never_expires() {
    let err = with_file("max_session_expiry = 0\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`max_session_expiry`")
            && err.contains("berth.toml")
            && err.contains("4294967295"),
        "{err}"
    );
    let err = Config::from_args(Args {
        max_session_expiry: Some(0),
        ..Args::default()
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("flag --max-session-expiry:") && err.contains("4294967295"),
        "{err}"
    );
    for huge in [u64::from(u32::MAX) + 1, u64::MAX] {
        let err = with_file(&format!(
            "max_session_expiry = {}\n",
            huge.min(i64::MAX as u64)
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("`max_session_expiry`"), "{huge}: {err}");
        let flag = Config::from_args(Args {
            max_session_expiry: Some(huge),
            ..Args::default()
        });
        assert!(flag.is_err(), "{huge}");
    }
    // The largest accepted, "never expires", still leaves room for `now + expiry`.
    let never = with_file("max_session_expiry = 4294967295\n").unwrap();
    assert_eq!(never.max_session_expiry.as_secs(), NEVER_EXPIRES);
    assert!(std::time::Instant::now()
        .checked_add(never.max_session_expiry)
        .is_some());
}

#[test]
fn connack_debug_properties_are_off_unless_asked_for() {
    assert!(
        !Config::from_args(Args::default())
            .unwrap()
            .connack_debug_properties
    );
    assert!(
        with_file("connack_debug_properties = true\n")
            .unwrap()
            .connack_debug_properties
    );
    let args = Args::command_showing_defaults()
        .try_get_matches_from(["berth", "--connack-debug-properties"])
        .unwrap();
    let args = <Args as clap::FromArgMatches>::from_arg_matches(&args).unwrap();
    assert!(Config::from_args(args).unwrap().connack_debug_properties);
    let args = Args::command_showing_defaults()
        .try_get_matches_from(["berth", "--connack-debug-properties", "false"])
        .unwrap();
    let args = <Args as clap::FromArgMatches>::from_arg_matches(&args).unwrap();
    assert!(!Config::from_args(args).unwrap().connack_debug_properties);
}

#[test]
fn help_shows_the_default_of_every_flag_that_has_one() {
    let mut command = Args::command_showing_defaults();
    command.build();
    let missing: Vec<_> = command
        .get_arguments()
        .filter(|arg| {
            ![
                "help",
                "version",
                "config",
                "server_keep_alive",
                "password_file",
                "acl_file",
                "admin_keys_file",
                "ban_file",
            ]
            .contains(&arg.get_id().as_str())
        })
        .filter(|arg| {
            let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
            !help.contains("[default: ")
        })
        .map(|arg| arg.get_id().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "flags whose --help shows no default: {missing:?}"
    );
    let help = command.render_help().to_string();
    assert!(help.contains("[default: 127.0.0.1:1883]"), "{help}");
    assert!(help.contains("[default: 7200]"), "{help}");
}

/// A config file in a directory that also holds a self-signed `server.pem`/`server.key`.
fn with_certificates(text: &str) -> (tempfile::TempDir, Result<Config, ConfigError>) {
    let dir = tempfile::tempdir().unwrap();
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    std::fs::write(dir.path().join("server.pem"), made.cert.pem()).unwrap();
    std::fs::write(dir.path().join("server.key"), made.key_pair.serialize_pem()).unwrap();
    let path = dir.path().join("berth.toml");
    std::fs::write(&path, text).unwrap();
    let config = Config::from_args(Args {
        config: Some(path),
        ..Args::default()
    });
    (dir, config)
}

const TLS: &str = "[[listener]]\naddress = \"127.0.0.1:8883\"\ntransport = \"tls\"\n";

#[test]
fn listen_comes_first_and_listener_tables_add_to_it() {
    let (_dir, config) = with_certificates(&format!(
        "listen = \"127.0.0.1:1884\"\n{TLS}cert = \"server.pem\"\nkey = \"server.key\"\n"
    ));
    let config = config.unwrap();
    let seen: Vec<_> = config
        .listeners
        .iter()
        .map(|l| (l.address.to_string(), l.kind()))
        .collect();
    assert_eq!(
        seen,
        [
            ("127.0.0.1:1884".into(), "tcp"),
            ("127.0.0.1:8883".into(), "tls")
        ]
    );
    // Only tables: no default plain listener beside them.
    let (_dir, config) = with_certificates(&format!(
        "{TLS}cert = \"server.pem\"\nkey = \"server.key\"\n"
    ));
    assert_eq!(config.unwrap().listeners.len(), 1);
    let config = with_file("[[listener]]\naddress = \"127.0.0.1:1885\"\n").unwrap();
    assert_eq!(config.listeners[0].kind(), "tcp");
}

#[test]
fn listener_errors_name_the_listener_the_key_and_the_file() {
    let cases = [
        (format!("{TLS}key = \"server.key\"\n"), "key `cert`", "is required"),
        (
            format!("{TLS}cert = \"missing.pem\"\nkey = \"server.key\"\n"),
            "key `cert`",
            "cannot read",
        ),
        (
            format!("{TLS}cert = \"server.pem\"\nkey = \"server.pem\"\n"),
            "key `key`",
            "no PEM private key",
        ),
        (
            format!("{TLS}cert = \"server.pem\"\nkey = \"server.key\"\nrequire_certificate = true\n"),
            "key `require_certificate`",
            "needs `ca`",
        ),
        (
            format!("{TLS}cert = \"server.pem\"\nkey = \"server.key\"\nuse_identity_as_username = true\n"),
            "key `use_identity_as_username`",
            "require_certificate",
        ),
        (
            "[[listener]]\naddress = \"127.0.0.1:8883\"\ncert = \"server.pem\"\n".into(),
            "key `cert`",
            "tls and wss listeners only",
        ),
        (
            "[[listener]]\naddress = \"127.0.0.1:8083\"\ntransport = \"ws\"\npath = \"mqtt\"\n".into(),
            "key `path`",
            "not an HTTP path",
        ),
        (
            "[[listener]]\naddress = \"127.0.0.1:8083\"\ntransport = \"quic\"\n".into(),
            "key `transport`",
            "unknown transport",
        ),
        (
            "listen = \"127.0.0.1:8883\"\n[[listener]]\naddress = \"127.0.0.1:8883\"\n".into(),
            "key `address`",
            "the `listen` address",
        ),
    ];
    for (text, key, why) in cases {
        let (_dir, config) = with_certificates(&text);
        let err = config.unwrap_err().to_string();
        assert!(err.starts_with("listener 1 (127.0.0.1:"), "{err}");
        assert!(err.contains(key) && err.contains(why), "{err}");
        assert!(err.contains("berth.toml"), "{err}");
    }
    let (_dir, config) = with_certificates(&format!(
        "{TLS}cert = \"server.pem\"\nkey = \"server.key\"\nkye = 1\n"
    ));
    let err = config.unwrap_err().to_string();
    assert!(err.contains("kye") && err.contains("berth.toml"), "{err}");
}

#[test]
fn every_listener_counts_for_the_refusal_to_run_open_beyond_loopback() {
    let err = with_file("[[listener]]\naddress = \"0.0.0.0:1883\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`allow_anonymous`") && err.contains("0.0.0.0:1883"),
        "{err}"
    );
    // Client certificates are authentication: such a listener may face the network.
    let (dir, _) = with_certificates("");
    let ca = dir.path().join("server.pem").display().to_string();
    let (_dir, config) = with_certificates(&format!(
        "[[listener]]\naddress = \"0.0.0.0:8883\"\ntransport = \"tls\"\ncert = \"server.pem\"\nkey = \"server.key\"\nca = \"{ca}\"\nrequire_certificate = true\nuse_identity_as_username = true\n"
    ));
    let config = config.unwrap();
    assert!(config.listeners[0].certificate_required());
}
