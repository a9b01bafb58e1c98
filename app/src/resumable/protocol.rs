//! What tus 1.0 says of the requests: the version and extensions served, the forms of
//! `Upload-Metadata` and `Upload-Checksum`, and the checksums a body is checked against.

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::error::AppError;

/// The tus protocol version served.
pub const TUS_VERSION: &str = "1.0.0";
/// The tus extensions served.
pub const TUS_EXTENSIONS: &str = "creation,creation-with-upload,termination,expiration,checksum";
/// The checksum algorithms `Upload-Checksum` may name.
pub const CHECKSUM_ALGORITHMS: &str = "sha1,sha256,crc32c";
/// Longest `Upload-Metadata` header.
pub const MAX_METADATA_CHARS: usize = 4096;
/// The form of an upload id (32 hex digits, random).
pub const UPLOAD_ID_PATTERN: &str = "^[0-9a-f]{32}$";
/// The form of `Upload-Metadata`: comma-separated `key base64-value` pairs (a value is
/// optional), one of them `video_id`. (Keys are unique; a second `video_id` is refused.)
pub const METADATA_PATTERN: &str = concat!(
    "^([!-+\\--~]+( (?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?)?,)*",
    "video_id (?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?",
    "(,[!-+\\--~]+( (?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?)?)*$"
);
/// The form of `Upload-Checksum`: an algorithm and its digest in base64.
pub const CHECKSUM_PATTERN: &str = "^(sha1 [A-Za-z0-9+/]{27}=|sha256 [A-Za-z0-9+/]{43}=|crc32c [A-Za-z0-9+/]{6}==)$";

/// Base64 as clients write it: padded, any bits after the last byte ignored.
pub(super) const BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// A body's checksum as `Upload-Checksum` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checksum {
    /// SHA-1 (tus's recommended algorithm, which clients such as tuspy send).
    Sha1([u8; 20]),
    /// SHA-256.
    Sha256([u8; 32]),
    /// CRC-32C (Castagnoli), big-endian.
    Crc32c(u32),
}

impl Checksum {
    /// Parses `<algorithm> <base64 digest>`.
    ///
    /// # Errors
    /// VALIDATION_FAILED naming the problem (tus answers an unknown algorithm with 400).
    pub fn parse(header: &str) -> Result<Self, AppError> {
        let bad = |why: String| AppError::invalid("Upload-Checksum", why);
        let (algorithm, digest) = header
            .split_once(' ')
            .ok_or_else(|| bad("Upload-Checksum is `<algorithm> <base64 digest>`".into()))?;
        let digest = BASE64
            .decode(digest.trim())
            .map_err(|e| bad(format!("the digest is not base64: {e}")))?;
        match algorithm {
            "sha1" => digest
                .try_into()
                .map(Self::Sha1)
                .map_err(|_| bad("a sha1 digest is 20 bytes".into())),
            "sha256" => digest
                .try_into()
                .map(Self::Sha256)
                .map_err(|_| bad("a sha256 digest is 32 bytes".into())),
            "crc32c" => <[u8; 4]>::try_from(digest)
                .map(|b| Self::Crc32c(u32::from_be_bytes(b)))
                .map_err(|_| bad("a crc32c digest is 4 bytes".into())),
            other => Err(bad(format!(
                "checksum algorithm {other:?} is not supported; use one of {CHECKSUM_ALGORITHMS}"
            ))),
        }
    }
}

const CASTAGNOLI: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// A running digest of the algorithm a checksum names.
pub(super) enum Hasher {
    Sha1(sha1::Sha1),
    Sha256(Sha256),
    Crc32c(crc::Digest<'static, u32>),
}

impl Hasher {
    pub(super) fn new(checksum: &Checksum) -> Self {
        match checksum {
            Checksum::Sha1(_) => Self::Sha1(sha1::Sha1::new()),
            Checksum::Sha256(_) => Self::Sha256(Sha256::new()),
            Checksum::Crc32c(_) => Self::Crc32c(CASTAGNOLI.digest()),
        }
    }

    pub(super) fn update(&mut self, bytes: &[u8]) {
        match self {
            Self::Sha1(h) => h.update(bytes),
            Self::Sha256(h) => h.update(bytes),
            Self::Crc32c(h) => h.update(bytes),
        }
    }

    pub(super) fn matches(self, checksum: &Checksum) -> bool {
        match (self, checksum) {
            (Self::Sha1(h), Checksum::Sha1(want)) => h.finalize().as_slice() == want,
            (Self::Sha256(h), Checksum::Sha256(want)) => h.finalize().as_slice() == want,
            (Self::Crc32c(h), Checksum::Crc32c(want)) => h.finalize() == *want,
            _ => false,
        }
    }
}

/// Parses `Upload-Metadata` (`key base64,key base64`, a value optional) and returns the
/// value of `video_id`.
///
/// # Errors
/// VALIDATION_FAILED naming the problem.
pub fn metadata_video_id(metadata: &str) -> Result<String, AppError> {
    let bad = |why: String| AppError::invalid("Upload-Metadata", why);
    if metadata.chars().count() > MAX_METADATA_CHARS {
        return Err(bad(format!(
            "Upload-Metadata is at most {MAX_METADATA_CHARS} characters"
        )));
    }
    let mut keys = std::collections::HashSet::new();
    // Clients repeat no key (tus); only a second video_id is ambiguous enough to refuse.
    let mut video = None;
    for pair in metadata.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let mut words = pair.split(' ');
        let key = words.next().unwrap_or_default();
        let value = words.next();
        if words.next().is_some() || key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(bad(format!("{pair:?} is not `key base64-value`")));
        }
        if !keys.insert(key) && key == "video_id" {
            return Err(bad(format!("key {key:?} appears twice")));
        }
        let value = match value {
            Some(v) => BASE64
                .decode(v)
                .map_err(|e| bad(format!("the value of {key:?} is not base64: {e}")))?,
            None => Vec::new(),
        };
        if key == "video_id" {
            // Not text, or not an id: it names no video (404 when looked up).
            video = Some(String::from_utf8_lossy(&value).into_owned());
        }
    }
    video.ok_or_else(|| bad("Upload-Metadata must name the video: `video_id <base64 of its id>`".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn metadata_names_the_video_in_base64_and_bad_forms_are_refused() {
        assert_eq!(
            metadata_video_id("filename Y2xpcC5tcDQ=,video_id djE=,is_confidential").expect("valid"),
            "v1"
        );
        for (bad, named) in [
            ("filename Y2xpcC5tcDQ=", "must name the video"),
            ("video_id djE=,video_id djI=", "twice"),
            ("video_id not*base64", "not base64"),
            ("video_id djE= extra", "not `key base64-value`"),
        ] {
            let e = metadata_video_id(bad).expect_err(bad);
            assert!(e.message.contains(named), "{bad}: {}", e.message);
        }
        let long = format!("video_id djE=,pad {}", "A".repeat(MAX_METADATA_CHARS));
        assert!(metadata_video_id(&long).is_err());
    }

    #[test]
    fn checksums_parse_and_match_what_they_name() {
        let body = b"hello, tus";
        let sha = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(body));
        let sum = Checksum::parse(&format!("sha256 {sha}")).expect("sha256");
        let mut hasher = Hasher::new(&sum);
        hasher.update(body);
        assert!(hasher.matches(&sum));
        let mut other = Hasher::new(&sum);
        other.update(b"hello, tuS");
        assert!(!other.matches(&sum));
        let sha1 = base64::engine::general_purpose::STANDARD.encode(sha1::Sha1::digest(body));
        let sum = Checksum::parse(&format!("sha1 {sha1}")).expect("sha1");
        let mut hasher = Hasher::new(&sum);
        hasher.update(body);
        assert!(hasher.matches(&sum));
        let crc = CASTAGNOLI.checksum(body).to_be_bytes();
        let sum = Checksum::parse(&format!(
            "crc32c {}",
            base64::engine::general_purpose::STANDARD.encode(crc)
        ))
        .expect("crc32c");
        let mut hasher = Hasher::new(&sum);
        hasher.update(&body[..4]);
        hasher.update(&body[4..]);
        assert!(hasher.matches(&sum));
        for bad in ["md5 AAAA", "sha256", "sha256 AAAA", "crc32c !!"] {
            assert_eq!(Checksum::parse(bad).expect_err(bad).kind, ErrorKind::Invalid, "{bad}");
        }
    }
}
