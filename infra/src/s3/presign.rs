//! SigV4 query-string presigning with signed headers beyond `host`: a presigned `PUT` whose
//! signature covers `content-length`, so S3 refuses a body of any other length (object_store's
//! own presigner signs `host` only, which lets the holder of an upload URL store any size).
//! The algorithm is AWS's "Authenticating requests: using query parameters".

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Who signs and where.
pub struct Presigner<'a> {
    /// Access key id.
    pub key_id: &'a str,
    /// Secret access key.
    pub secret: &'a str,
    /// Session token of temporary credentials.
    pub token: Option<&'a str>,
    /// Region of the bucket.
    pub region: &'a str,
}

/// RFC 3986 unreserved characters stay; everything else is `%XX` (AWS's `UriEncode`).
fn encode(value: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(byte as char),
            b'/' if keep_slash => out.push('/'),
            _ => {
                let _ = write!(out, "%{byte:02X}");
            }
        }
    }
    out
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    #[allow(clippy::expect_used)]
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

impl Presigner<'_> {
    /// `url` (scheme, host, port, an already-encoded path and a query whose parameters other
    /// than `X-Amz-*` are kept and signed: `partNumber`, `uploadId`) presigned
    /// for `method` with `headers` (lowercase names) signed, valid `expires_secs` from `now`.
    pub fn presign(
        &self,
        method: &str,
        url: &reqwest::Url,
        headers: &[(&str, String)],
        expires_secs: u64,
        now: DateTime<Utc>,
    ) -> reqwest::Url {
        let date = now.format("%Y%m%d").to_string();
        let stamp = now.format("%Y%m%dT%H%M%SZ").to_string();
        let scope = format!("{date}/{}/s3/aws4_request", self.region);
        let host = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_owned(),
        };
        let mut signed: Vec<(String, String)> = headers
            .iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), value.trim().to_owned()))
            .chain(std::iter::once(("host".to_owned(), host)))
            .collect();
        signed.sort();
        let signed_names = signed.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(";");
        let kept = url
            .query_pairs()
            .filter(|(k, _)| !k.starts_with("X-Amz-"))
            .map(|(k, v)| (k.into_owned(), v.into_owned()));
        let mut query: Vec<(String, String)> = kept.collect();
        query.extend([
            ("X-Amz-Algorithm".into(), "AWS4-HMAC-SHA256".into()),
            ("X-Amz-Credential".into(), format!("{}/{scope}", self.key_id)),
            ("X-Amz-Date".into(), stamp.clone()),
            ("X-Amz-Expires".into(), expires_secs.to_string()),
            ("X-Amz-SignedHeaders".into(), signed_names.clone()),
        ]);
        if let Some(token) = self.token {
            query.push(("X-Amz-Security-Token".into(), token.to_owned()));
        }
        let mut encoded: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (encode(k, false), encode(v, false)))
            .collect();
        encoded.sort();
        let canonical_query = encoded
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&");
        let canonical_headers: String = signed.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
        let canonical = format!(
            "{method}\n{}\n{canonical_query}\n{canonical_headers}\n{signed_names}\nUNSIGNED-PAYLOAD",
            url.path()
        );
        let to_sign = format!(
            "AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{}",
            hex(&Sha256::digest(canonical.as_bytes()))
        );
        let key = [self.region.as_bytes(), b"s3", b"aws4_request"].iter().fold(
            hmac(format!("AWS4{}", self.secret).as_bytes(), date.as_bytes()),
            |key, part| hmac(&key, part),
        );
        let signature = hex(&hmac(&key, to_sign.as_bytes()));
        let mut out = url.clone();
        out.set_query(Some(&format!("{canonical_query}&X-Amz-Signature={signature}")));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's own worked example of a presigned GET ("Example: a presigned URL", S3 API
    /// reference, SigV4 query parameters): the same inputs must give the published signature.
    #[test]
    fn the_published_example_signs_to_the_published_signature() {
        let signer = Presigner {
            key_id: "AKIAIOSFODNN7EXAMPLE",
            secret: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            token: None,
            region: "us-east-1",
        };
        let url = reqwest::Url::parse("https://examplebucket.s3.amazonaws.com/test.txt").expect("url");
        let now = DateTime::parse_from_rfc3339("2013-05-24T00:00:00Z")
            .expect("time")
            .with_timezone(&Utc);
        let signed = signer.presign("GET", &url, &[], 86_400, now);
        assert!(
            signed
                .as_str()
                .ends_with("X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"),
            "{signed}"
        );
    }

    #[test]
    fn a_signed_length_is_named_among_the_signed_headers() {
        let signer = Presigner {
            key_id: "id",
            secret: "secret",
            token: Some("a/token+with=chars"),
            region: "eu-west-1",
        };
        let url = reqwest::Url::parse("http://127.0.0.1:5000/bucket/sources/v/clip%20one.mp4").expect("url");
        let signed = signer.presign("PUT", &url, &[("content-length", "10".into())], 60, Utc::now());
        let query = signed.query().unwrap_or_default();
        assert!(query.contains("X-Amz-SignedHeaders=content-length%3Bhost"), "{query}");
        assert!(
            query.contains("X-Amz-Security-Token=a%2Ftoken%2Bwith%3Dchars"),
            "{query}"
        );
        assert_eq!(signed.path(), "/bucket/sources/v/clip%20one.mp4");
    }

    #[test]
    fn a_part_keeps_its_number_and_upload_and_drops_an_earlier_signature() {
        let signer = Presigner {
            key_id: "id",
            secret: "secret",
            token: None,
            region: "us-east-1",
        };
        let url = reqwest::Url::parse("http://127.0.0.1:5000/bucket/k?X-Amz-Signature=old&uploadId=a%2Bb&partNumber=3")
            .expect("url");
        let signed = signer.presign("PUT", &url, &[], 60, Utc::now());
        let query = signed.query().unwrap_or_default();
        assert!(query.contains("partNumber=3&uploadId=a%2Bb"), "{query}");
        assert_eq!(query.matches("X-Amz-Signature=").count(), 1, "{query}");
        assert!(!query.contains("=old"), "{query}");
    }
}
