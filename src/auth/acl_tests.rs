//! ACL decisions against the rules Mosquitto's documentation gives, and the case: a
//! user may publish to `devices/%u/#` and read `cmd/%c`, and nothing else.

use super::*;

const FILE: &str = "\
# anonymous clients may read the broker's figures
topic read $SYS/#

user alice
topic readwrite shared/alice
topic deny devices/alice/secret
topic read news/#

user bob
topic shared/bob

pattern write devices/%u/#
pattern read cmd/%c
";

fn acl() -> Acl {
    Acl::parse(FILE, Path::new("/etc/berth/acl")).unwrap()
}

fn user<'a>(client_id: &'a str, username: &'a str) -> Who<'a> {
    Who {
        client_id,
        username: Some(username),
    }
}

fn anonymous(client_id: &str) -> Who<'_> {
    Who {
        client_id,
        username: None,
    }
}

#[test]
fn patterns_give_each_user_their_own_topics() {
    let acl = acl();
    let alice = user("sensor-1", "alice");
    assert!(acl.may_publish(alice, "devices/alice/temp"));
    assert!(
        acl.may_publish(alice, "devices/alice"),
        "# matches the parent level"
    );
    assert!(!acl.may_publish(alice, "devices/bob/temp"));
    assert!(
        !acl.may_read(alice, "devices/alice/temp"),
        "the pattern grants write only"
    );
    assert!(acl.may_read(alice, "cmd/sensor-1"));
    assert!(!acl.may_read(alice, "cmd/sensor-2"));
    assert!(!acl.may_publish(alice, "cmd/sensor-1"));
    assert!(acl.may_subscribe(alice, "cmd/sensor-1"));
    assert!(!acl.may_subscribe(alice, "cmd/+"));
    assert!(!acl.may_subscribe(alice, "cmd/#"));
}

#[test]
fn deny_is_checked_before_grants() {
    let acl = acl();
    let alice = user("sensor-1", "alice");
    assert!(
        !acl.may_publish(alice, "devices/alice/secret"),
        "denied despite the pattern"
    );
    assert!(
        acl.may_publish(alice, "devices/alice/secret/sub"),
        "deny is exact here"
    );
}

#[test]
fn a_user_block_applies_to_its_user_only() {
    let acl = acl();
    assert!(acl.may_read(user("c", "alice"), "shared/alice"));
    assert!(acl.may_publish(user("c", "alice"), "shared/alice"));
    assert!(!acl.may_read(user("c", "bob"), "shared/alice"));
    assert!(
        acl.may_read(user("c", "bob"), "shared/bob"),
        "no access word: readwrite"
    );
    assert!(acl.may_publish(user("c", "bob"), "shared/bob"));
    assert!(!acl.may_read(user("c", "carol"), "shared/bob"));
    assert!(
        !acl.may_read(user("c", "alice"), "$SYS/broker/uptime"),
        "anonymous block only"
    );
}

#[test]
fn anonymous_clients_get_the_lines_before_the_first_user() {
    let acl = acl();
    let anon = anonymous("x");
    assert!(acl.may_read(anon, "$SYS/broker/uptime"));
    assert!(acl.may_subscribe(anon, "$SYS/#"));
    assert!(!acl.may_publish(anon, "$SYS/broker/uptime"));
    assert!(!acl.may_read(anon, "news/today"));
    assert!(
        acl.may_read(anon, "cmd/x"),
        "%c patterns apply without a username"
    );
    assert!(
        !acl.may_publish(anon, "devices/x/t"),
        "%u patterns need a username"
    );
}

#[test]
fn subscriptions_must_be_covered_by_a_read_grant() {
    let acl = acl();
    let alice = user("c", "alice");
    assert!(acl.may_subscribe(alice, "news/#"));
    assert!(acl.may_subscribe(alice, "news/+/sport"));
    assert!(acl.may_subscribe(alice, "news"));
    assert!(!acl.may_subscribe(alice, "#"));
    assert!(!acl.may_subscribe(alice, "+/today"));
    assert!(!acl.may_subscribe(alice, "devices/alice/#"), "write only");
}

#[test]
fn wildcards_do_not_reach_dollar_topics() {
    let acl = Acl::parse("topic #\n", Path::new("a")).unwrap();
    let anon = anonymous("x");
    assert!(acl.may_read(anon, "a/b"));
    assert!(!acl.may_read(anon, "$SYS/broker/uptime"));
    assert!(!acl.may_subscribe(anon, "$SYS/#"));
    assert!(acl.may_subscribe(anon, "#"));
}

#[test]
fn ids_that_could_escape_their_level_get_no_pattern() {
    let acl = acl();
    assert!(!acl.may_read(user("a/b", "alice"), "cmd/a/b"));
    assert!(!acl.may_read(user("+", "alice"), "cmd/+"));
    assert!(!acl.may_publish(user("c", "al#"), "devices/al#"));
    assert!(
        acl.may_read(user("a/b", "alice"), "news/x"),
        "own rules still apply"
    );
}

#[test]
fn bad_lines_are_errors_naming_file_and_line() {
    let cases = [
        ("user\n", "line 1: user without a username"),
        ("topic\n", "line 1: a rule without a topic"),
        ("topic read\n", "line 1: a rule without a topic"),
        ("# x\ntopic read a/#/b\n", "line 2: topic \"a/#/b\""),
        (
            "pattern read dev_%c\n",
            "%c and %u must be a whole topic level",
        ),
        ("topics read a\n", "unknown keyword \"topics\""),
    ];
    for (text, want) in cases {
        let error = Acl::parse(text, Path::new("/etc/berth/acl"))
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("acl_file /etc/berth/acl line "),
            "{error}"
        );
        assert!(error.contains(want), "{text:?}: {error}");
    }
    let missing = Acl::load(Path::new("/nonexistent/acl"))
        .unwrap_err()
        .to_string();
    assert!(
        missing.starts_with("acl_file /nonexistent/acl: "),
        "{missing}"
    );
}

#[test]
fn topics_may_hold_spaces_and_comments_and_blank_lines_are_skipped() {
    let acl = Acl::parse(
        "  # indented comment\n\ntopic read  room one/#\r\n",
        Path::new("a"),
    )
    .unwrap();
    assert_eq!(acl.rules(), 1);
    assert!(acl.may_read(anonymous("x"), "room one/lamp"));
}
