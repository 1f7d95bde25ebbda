//! Tests of the limit keys: defaults, flags over the file, and the errors a bad value gives.

use std::time::Duration;

use clap::Parser;

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
fn limits_default_to_emqx_bounds_and_no_rate_limits() {
    let l = Config::from_args(Args::default()).unwrap().limits;
    assert_eq!(l.max_connections, None);
    assert_eq!((l.max_connection_rate, l.max_publish_rate), (0, 0));
    assert_eq!((l.max_topic_levels, l.max_clientid_len), (128, 65535));
    assert!(l.flapping.is_none(), "flapping detection is off by default");
    assert!(l.bans.is_empty());
}

#[test]
fn limit_keys_are_read_and_flags_win() {
    let text = "max_connections = 10\nmax_connection_rate = 50\nmax_publish_rate = 7\n\
                max_topic_levels = 4\nmax_clientid_len = 23\nflapping_max_disconnects = 3\n\
                flapping_window = 5\nflapping_ban = 2\n";
    let l = with_file(text).unwrap().limits;
    assert_eq!(l.max_connections, Some(10));
    assert_eq!((l.max_connection_rate, l.max_publish_rate), (50, 7));
    assert_eq!((l.max_topic_levels, l.max_clientid_len), (4, 23));
    let flapping = l.flapping.unwrap();
    assert_eq!(flapping.max_disconnects, 3);
    assert_eq!(flapping.window, Duration::from_secs(5));
    assert_eq!(flapping.ban, Duration::from_secs(2));
    for unlimited in ["-1", "0"] {
        let l = with_file(&format!("max_connections = {unlimited}\n"))
            .unwrap()
            .limits;
        assert_eq!(l.max_connections, None, "{unlimited}");
    }

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("berth.toml");
    std::fs::write(&path, text).unwrap();
    let args = Args::try_parse_from([
        "berth",
        "--config",
        path.to_str().unwrap(),
        "--max-publish-rate",
        "9",
        "--max-connections",
        "-1",
    ])
    .unwrap();
    let l = Config::from_args(args).unwrap().limits;
    assert_eq!((l.max_publish_rate, l.max_connections), (9, None));
}

#[test]
fn bad_limits_name_the_key_or_the_flag() {
    for (text, key) in [
        ("max_topic_levels = 0\n", "`max_topic_levels`"),
        ("max_clientid_len = 22\n", "`max_clientid_len`"),
        ("max_connections = -2\n", "`max_connections`"),
        (
            "flapping_max_disconnects = 3\nflapping_window = 0\n",
            "`flapping_window`",
        ),
        ("max_publish_rate = -1\n", "max_publish_rate"),
    ] {
        let err = with_file(text).unwrap_err().to_string();
        assert!(err.contains(key) && err.contains("berth.toml"), "{err}");
    }
    let args = Args::try_parse_from(["berth", "--max-clientid-len", "70000"]).unwrap();
    let err = Config::from_args(args).unwrap_err().to_string();
    assert!(err.contains("--max-clientid-len"), "{err}");
}

#[test]
fn a_ban_file_is_read_relative_to_the_config_file_and_a_bad_one_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bans"),
        "clientid evil\nnetwork 10.0.0.0/8\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("berth.toml"), "ban_file = \"bans\"\n").unwrap();
    let args = Args {
        config: Some(dir.path().join("berth.toml")),
        ..Args::default()
    };
    let config = Config::from_args(args.clone()).unwrap();
    assert_eq!(config.limits.ban_file, Some(dir.path().join("bans")));
    let peer = "10.1.2.3".parse().unwrap();
    assert!(config.limits.bans.check("evil", None, peer).is_some());
    std::fs::write(dir.path().join("bans"), "clientid ok\nnetwork nowhere\n").unwrap();
    let err = Config::from_args(args).unwrap_err().to_string();
    assert!(
        err.contains("`ban_file`") && err.contains("line 2") && err.contains("bans"),
        "{err}"
    );
}
