//! A client certificate's identity, as a username: its subject's Common Name
//! (`use_identity_as_username`) or its whole subject (`use_subject_as_username`), Mosquitto's
//! two options.
//!
//! A minimal DER walk over the one path that matters (Certificate → tbsCertificate →
//! subject), not a general X.509 parser: rustls has verified the certificate before this
//! reads it, so only its subject needs finding. Anything unexpected gives `None`, never a
//! panic. The subject is written as RFC 4514 (and OpenSSL's `XN_FLAG_RFC2253`, which
//! Mosquitto uses) writes it: the last RDN first, `CN=client,O=Example,C=GB`.

/// The subject's Common Name (the last one, if several), if it has one.
pub fn common_name(der: &[u8]) -> Option<String> {
    attributes(der)?
        .into_iter()
        .flatten()
        .rev()
        .find(|(oid, _)| oid == COMMON_NAME)
        .map(|(_, value)| value)
}

/// The whole subject as RFC 4514 writes it; `None` if it is empty or unreadable.
pub fn subject(der: &[u8]) -> Option<String> {
    let rdns = attributes(der)?;
    let text = rdns
        .iter()
        .rev()
        .map(|rdn| {
            rdn.iter()
                .map(|(oid, value)| format!("{}={}", name_of(oid), escape(value)))
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect::<Vec<_>>()
        .join(",");
    (!text.is_empty()).then_some(text)
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// One relative distinguished name: its attributes (type OID, value).
type Rdn = Vec<(Vec<u8>, String)>;

/// The subject's RDNs in the order the certificate holds them.
fn attributes(der: &[u8]) -> Option<Vec<Rdn>> {
    let (tag, certificate, _) = tlv(der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, mut tbs, _) = tlv(certificate)?;
    if tag != SEQUENCE {
        return None;
    }
    // [0] version (optional), serial, signature algorithm, issuer, validity, subject.
    if tbs.first() == Some(&0xA0) {
        tbs = tlv(tbs)?.2;
    }
    for _ in 0..4 {
        tbs = tlv(tbs)?.2;
    }
    let (tag, mut name, _) = tlv(tbs)?;
    if tag != SEQUENCE {
        return None;
    }
    let mut rdns = Vec::new();
    while !name.is_empty() {
        let (tag, mut set, rest) = tlv(name)?;
        name = rest;
        if tag != SET {
            return None;
        }
        let mut rdn = Vec::new();
        while !set.is_empty() {
            let (tag, pair, rest) = tlv(set)?;
            set = rest;
            if tag != SEQUENCE {
                return None;
            }
            let (tag, oid, rest) = tlv(pair)?;
            if tag != OID {
                return None;
            }
            let (tag, value, _) = tlv(rest)?;
            rdn.push((oid.to_vec(), string(tag, value)?));
        }
        rdns.push(rdn);
    }
    Some(rdns)
}

/// Splits one DER element off `input`: (tag, content, what follows).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let count = (first & 0x7f) as usize;
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let len = rest[..count]
            .iter()
            .fold(0usize, |len, &b| (len << 8) | b as usize);
        (len, &rest[count..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

/// A directory string's text (UTF8String, PrintableString, IA5String, TeletexString as
/// Latin-1, BMPString as UTF-16).
fn string(tag: u8, value: &[u8]) -> Option<String> {
    match tag {
        0x0C | 0x13 | 0x16 => String::from_utf8(value.to_vec()).ok(),
        0x14 => Some(value.iter().map(|&b| b as char).collect()),
        0x1E if value.len().is_multiple_of(2) => {
            let units = value.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]]));
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .ok()
        }
        _ => None,
    }
}

/// The short name OpenSSL gives an attribute type, or its dotted OID.
fn name_of(oid: &[u8]) -> String {
    let known: &[(&[u8], &str)] = &[
        (&[0x55, 0x04, 0x03], "CN"),
        (&[0x55, 0x04, 0x05], "serialNumber"),
        (&[0x55, 0x04, 0x06], "C"),
        (&[0x55, 0x04, 0x07], "L"),
        (&[0x55, 0x04, 0x08], "ST"),
        (&[0x55, 0x04, 0x09], "street"),
        (&[0x55, 0x04, 0x0A], "O"),
        (&[0x55, 0x04, 0x0B], "OU"),
        (
            &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x09, 0x01],
            "emailAddress",
        ),
        (
            &[0x09, 0x92, 0x26, 0x89, 0x93, 0xF2, 0x2C, 0x64, 0x01, 0x19],
            "DC",
        ),
        (
            &[0x09, 0x92, 0x26, 0x89, 0x93, 0xF2, 0x2C, 0x64, 0x01, 0x01],
            "UID",
        ),
    ];
    if let Some((_, name)) = known.iter().find(|(k, _)| *k == oid) {
        return name.to_string();
    }
    let mut arcs = Vec::new();
    let mut arc = 0u64;
    for (i, &b) in oid.iter().enumerate() {
        arc = (arc << 7) | (b & 0x7f) as u64;
        if b & 0x80 == 0 {
            if arcs.is_empty() && i < oid.len() {
                let first = (arc / 40).min(2);
                arcs.push(first);
                arcs.push(arc - first * 40);
            } else {
                arcs.push(arc);
            }
            arc = 0;
        }
    }
    arcs.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

/// RFC 4514's escaping of an attribute value.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && matches!(c, '#' | ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate(names: &[(rcgen::DnType, &str)]) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["client".into()]).unwrap();
        let mut dn = rcgen::DistinguishedName::new();
        for (kind, value) in names {
            dn.push(kind.clone(), *value);
        }
        params.distinguished_name = dn;
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn the_common_name_and_the_subject_are_read_from_the_certificate() {
        let der = certificate(&[
            (rcgen::DnType::CountryName, "GB"),
            (rcgen::DnType::OrganizationName, "Example, Ltd"),
            (rcgen::DnType::CommonName, "sensor-7"),
        ]);
        assert_eq!(common_name(&der).as_deref(), Some("sensor-7"));
        assert_eq!(
            subject(&der).as_deref(),
            Some("CN=sensor-7,O=Example\\, Ltd,C=GB")
        );
    }

    #[test]
    fn a_subject_without_a_common_name_has_none_and_garbage_reads_as_nothing() {
        let der = certificate(&[(rcgen::DnType::OrganizationName, "Example")]);
        assert_eq!(common_name(&der), None);
        assert_eq!(subject(&der).as_deref(), Some("O=Example"));
        assert_eq!(common_name(b"\x30\x84\xff\xff\xff\xff"), None);
        assert_eq!(subject(&der[..der.len() / 3]), None);
        assert_eq!(name_of(&[0x2B, 0x06, 0x01]), "1.3.6.1");
    }
}
