//! Password hashes against lines other programs wrote: Debian's `mosquitto_passwd` 2.0
//! (`$7$`, 101 iterations, 12-byte salt), Python's hashlib (`$6$`; `$7$` with 2.1's
//! 210,000 iterations and 64-byte salt) and argon2-cffi (`$argon2id$` with 2.1's
//! parameters).

use super::*;

/// `mosquitto_passwd -b pw.txt alice 'correct horse'` and `... bob 's3cret:with:colons'`.
const MOSQUITTO_2_0: &str = "\
alice:$7$101$3cRscLg3jsWcKUIi$SwuaO5l1JDI5TY5LU0a85s0N+oPbQIqBUMM0vGtjAt0fqjSc77n6HjGxrCmzCfaMumATKNOXy0x7KXEzSw/kBA==
bob:$7$101$ibbVdJhjl4hhLA+M$Tg6M5AFr8kUr33yHr8XVV1BTbAQ+6XN3PC+cwxtDJSBhU1c/MjcSmt/K2eaOkVgKfb2JoQ5Ob2M94YQ5YyyN/A==
";

/// hashlib: salt `0123456789ab`, password `sha pass`.
const SHA512: &str = "$6$MDEyMzQ1Njc4OWFi$w1qyEzfEmOiWk9/QhPZzm6RrGLc4yauC74mgYxVkOxtgm1ao1C7cbC0tRVIyOrtH0cSkNV4V8jGOnyKjCZxoKA==";

/// hashlib: `pbkdf2_hmac('sha512', b'long pass', b'S' * 64, 210000, 64)`.
const PBKDF2_2_1: &str = "$7$210000$U1NTU1NTU1NTU1NTU1NTU1NTU1NTU1NTU1NTU1NTU1NTU1NTU1NTU1NTU1NTU1NTU1NTU1NTU1NTU1NTU1NTUw==$B8gEvxw1NXrDdVWiGU1yHEVTV++BU68FgTEUrXLX3lG+EzIX/0hcGEwWPL7rrwuz0cZTJumaJux1wv9QjbRdpg==";

/// argon2-cffi, `PasswordHasher(time_cost=1, memory_cost=47104, parallelism=1)`, password
/// `argon pass`.
const ARGON2ID: &str = "$argon2id$v=19$m=47104,t=1,p=1$oWEzH5bTKq/uiwtOVogzZg$5dunxKBMOYZd5phRF5iE9UlgYk0Xm6XoZD70jMke+Jw";

fn file(text: &str) -> PasswordFile {
    PasswordFile::parse(text, Path::new("/etc/berth/passwd")).unwrap()
}

#[test]
fn reads_what_mosquitto_passwd_2_0_writes() {
    let users = file(MOSQUITTO_2_0);
    assert_eq!(users.len(), 2);
    assert!(users.verify("alice", b"correct horse"));
    assert!(users.verify("bob", b"s3cret:with:colons"));
    assert!(!users.verify("alice", b"correct horsE"));
    assert!(!users.verify("alice", b""));
    assert!(!users.verify("bob", b"correct horse"));
    assert!(!users.verify("carol", b"correct horse"));
    assert!(
        matches!(users.get("alice"), Some(Hash::Pbkdf2 { iterations: 101, salt, .. }) if salt.len() == 12)
    );
}

#[test]
fn verifies_every_hash_mosquitto_writes() {
    for (hash, password) in [
        (SHA512, "sha pass"),
        (PBKDF2_2_1, "long pass"),
        (ARGON2ID, "argon pass"),
    ] {
        let parsed = Hash::parse(hash).unwrap();
        assert!(parsed.verify(password.as_bytes()), "{hash}");
        assert!(!parsed.verify(b"wrong"), "{hash}");
        assert_eq!(parsed.to_string(), hash, "written back as read");
    }
}

#[test]
fn hashes_it_writes_verify_and_read_back() {
    let mut users = PasswordFile::default();
    users.set("dev-1", Hash::argon2id(b"pw one"));
    users.set("dev-2", Hash::pbkdf2(b"pw two", 101, 12));
    users.set("dev-1", Hash::argon2id(b"pw three"));
    let text = users.to_string();
    assert_eq!(text.lines().count(), 2);
    assert!(text.starts_with("dev-1:$argon2id$v=19$m=47104,t=1,p=1$"));
    let read = file(&text);
    assert_eq!(read, users);
    assert!(read.verify("dev-1", b"pw three"));
    assert!(!read.verify("dev-1", b"pw one"));
    assert!(read.verify("dev-2", b"pw two"));
    let mut fewer = read.clone();
    assert!(fewer.remove("dev-1"));
    assert!(!fewer.remove("dev-1"));
    assert_eq!(fewer.len(), 1);
}

#[test]
fn skips_comments_and_blank_lines() {
    let text = format!("# made by hand\n\n  \nalice:{SHA512}\r\n");
    let users = file(&text);
    assert_eq!(users.len(), 1);
    assert!(users.verify("alice", b"sha pass"));
}

#[test]
fn a_bad_line_is_an_error_naming_file_and_line() {
    let cases = [
        ("alice\n", "line 1: expected username:hash"),
        (":$6$AAAA$AAAA\n", "line 1: empty username"),
        ("# c\nalice:plaintext\n", "line 2: user alice: not a $6$, $7$ or $argon2id$ hash"),
        ("alice:$6$!!$AAAA\n", "line 1: user alice: salt or hash is not base64"),
        ("alice:$6$AAAA$AAAA\n", "line 1: user alice: a $6$ hash that is not 64 bytes"),
        ("alice:$7$0$AAAA$AAAA\n", "a $7$ iteration count that is not a positive number"),
        ("alice:$argon2id$v=19$m=x\n", "an $argon2id$ string without its hash"),
        ("alice:$argon2id$v=19$m=1,t=1,p=1$oWEzH5bTKq/uiwtOVogzZg$5dunxKBMOYZd5phRF5iE9UlgYk0Xm6XoZD70jMke+Jw\n", "$argon2id$ parameters that do not parse"),
        ("alice:$argon2id$\n", "an $argon2id$ hash that does not parse"),
    ];
    for (text, want) in cases {
        let error = PasswordFile::parse(text, Path::new("/etc/berth/passwd"))
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("password_file /etc/berth/passwd line "),
            "{error}"
        );
        assert!(error.contains(want), "{text:?}: {error}");
    }
    let twice = format!("alice:{SHA512}\nbob:{SHA512}\nalice:{SHA512}\n");
    let error = PasswordFile::parse(&twice, Path::new("p"))
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "password_file p line 3: user alice is also on line 1"
    );
}

#[test]
fn a_missing_file_names_itself() {
    let error = PasswordFile::load(Path::new("/nonexistent/berth-passwd")).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("password_file /nonexistent/berth-passwd: "),
        "{error}"
    );
}

#[test]
fn debug_output_never_shows_a_hash() {
    let hash = Hash::parse(SHA512).unwrap();
    assert_eq!(format!("{hash:?}"), "Hash::Sha512");
    assert!(!format!("{:?}", file(MOSQUITTO_2_0)).contains("3cRsc"));
}
