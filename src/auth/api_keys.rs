//! API keys for the admin API: a file of `key:secret` lines (`#` starts a comment), each
//! pair sent as HTTP Basic credentials (`curl -u key:secret`). Secrets are compared in
//! constant time.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine as _;
use subtle::ConstantTimeEq;

#[derive(Default)]
pub struct ApiKeys {
    secrets: HashMap<String, Vec<u8>>,
}

/// Names the keys, never their secrets (the configuration is printed in debug logs).
impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.secrets.keys()).finish()
    }
}

impl ApiKeys {
    /// Reads a keys file; an error names the file and the line.
    pub fn load(path: &Path) -> Result<ApiKeys, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("admin_keys_file {}: {e}", path.display()))?;
        ApiKeys::parse(&text)
            .map_err(|(line, why)| format!("admin_keys_file {} line {line}: {why}", path.display()))
    }

    pub fn parse(text: &str) -> Result<ApiKeys, (usize, &'static str)> {
        let mut secrets = HashMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((key, secret)) = line.split_once(':') else {
                return Err((n + 1, "expected key:secret"));
            };
            if key.is_empty() || secret.is_empty() {
                return Err((n + 1, "a key and its secret must not be empty"));
            }
            secrets.insert(key.to_string(), secret.as_bytes().to_vec());
        }
        if secrets.is_empty() {
            return Err((0, "no key in the file"));
        }
        Ok(ApiKeys { secrets })
    }

    /// Whether an `Authorization` header value carries one of the keys.
    pub fn admits(&self, authorization: Option<&[u8]>) -> bool {
        let Some(encoded) = authorization.and_then(|v| v.strip_prefix(b"Basic ")) else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim_ascii())
        else {
            return false;
        };
        let Some(colon) = decoded.iter().position(|&b| b == b':') else {
            return false;
        };
        let (key, secret) = (&decoded[..colon], &decoded[colon + 1..]);
        let Some(expected) = std::str::from_utf8(key)
            .ok()
            .and_then(|key| self.secrets.get(key))
        else {
            return false;
        };
        expected.as_slice().ct_eq(secret).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(pair: &str) -> Vec<u8> {
        let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
        format!("Basic {encoded}").into_bytes()
    }

    #[test]
    fn only_a_listed_key_with_its_secret_is_admitted() {
        let keys = ApiKeys::parse("# ops\nops:s3cret:with:colons\nci:x\n").unwrap();
        assert!(keys.admits(Some(&basic("ops:s3cret:with:colons"))));
        assert!(keys.admits(Some(&basic("ci:x"))));
        assert!(!keys.admits(Some(&basic("ci:y"))));
        assert!(!keys.admits(Some(&basic("nobody:x"))));
        assert!(!keys.admits(Some(b"Bearer x")));
        assert!(!keys.admits(Some(b"Basic !!!")));
        assert!(!keys.admits(None));
    }

    #[test]
    fn a_bad_line_names_its_number() {
        assert_eq!(ApiKeys::parse("a:b\nnocolon\n").unwrap_err().0, 2);
        assert!(ApiKeys::parse("# nothing\n").is_err());
    }
}
