//! Media through a CDN: segments, posters and thumbnails are fetched from the CDN's base URL
//! (`VODSOURCE_MEDIA_BASE_URL`, a distribution whose origin is the object store's `media/`
//! prefix and nothing else, so sources and the lake are never behind it), never through the
//! API. Playlists and manifests stay with the API, under the media token, and are
//! rewritten on the way out: every file they name that is not itself a playlist becomes an
//! absolute CDN URL.
//!
//! With a CloudFront key (`VODSOURCE_MEDIA_KEY_PAIR_ID` and
//! `VODSOURCE_MEDIA_PRIVATE_KEY_FILE`), those URLs are CloudFront signed URLs with a custom
//! policy: one wildcard resource, `<base>/<video>/*`, until the media token expires, and
//! an RSA-SHA256 signature (`Hash-Algorithm=SHA256`). Players drop a playlist's query string
//! when they resolve relative URIs, which is why the rewritten playlists carry the signature
//! on every URI rather than relying on the player to pass it along.

use std::fmt::Write as _;
use std::path::Path;

use base64::Engine as _;
use ring::signature::{RsaKeyPair, RSA_PKCS1_SHA256};

/// A CDN configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CdnError {
    /// The base URL is not an absolute http(s) URL.
    #[error("the media base URL {0:?} is not an absolute http:// or https:// URL without a query")]
    BaseUrl(String),
    /// The private key cannot be read or is not an RSA key in PEM.
    #[error("the CDN signing key {path}: {reason}")]
    Key {
        /// Where it was read from.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A key pair id without a key, or a key without an id.
    #[error("a CDN signing key needs both a key pair id and a private key file")]
    HalfKey,
}

/// A CloudFront key: the public key's id in the distribution's trusted key group and the
/// RSA private key.
pub struct CloudFrontKey {
    key_pair_id: String,
    key: RsaKeyPair,
}

impl std::fmt::Debug for CloudFrontKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudFrontKey")
            .field("key_pair_id", &self.key_pair_id)
            .finish_non_exhaustive()
    }
}

impl CloudFrontKey {
    /// Reads an RSA private key in PEM (`BEGIN RSA PRIVATE KEY`, PKCS#1, as CloudFront's
    /// guide makes it, or `BEGIN PRIVATE KEY`, PKCS#8).
    ///
    /// # Errors
    /// An unreadable file or anything but an unencrypted RSA key.
    pub fn from_file(key_pair_id: &str, path: &Path) -> Result<Self, CdnError> {
        let failed = |reason: String| CdnError::Key {
            path: path.display().to_string(),
            reason,
        };
        let pem = std::fs::read_to_string(path).map_err(|e| failed(e.to_string()))?;
        Self::from_pem(key_pair_id, &pem).map_err(failed)
    }

    /// As [`CloudFrontKey::from_file`], from the PEM text.
    ///
    /// # Errors
    /// What is wrong with it.
    pub fn from_pem(key_pair_id: &str, pem: &str) -> Result<Self, String> {
        if key_pair_id.is_empty() || !key_pair_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(format!("the key pair id {key_pair_id:?} is not a CloudFront key id"));
        }
        let (label, der) = pem_block(pem)?;
        let key = match label.as_str() {
            "RSA PRIVATE KEY" => RsaKeyPair::from_der(&der),
            "PRIVATE KEY" => RsaKeyPair::from_pkcs8(&der),
            other => return Err(format!("a PEM block of {other:?}; an RSA private key is needed")),
        }
        .map_err(|e| format!("not a usable RSA private key ({e})"))?;
        Ok(Self {
            key_pair_id: key_pair_id.to_owned(),
            key,
        })
    }

    /// RSA-SHA256 of `message`.
    fn sign(&self, message: &[u8]) -> Vec<u8> {
        let mut signature = vec![0; self.key.public().modulus_len()];
        // Fails only when the buffer is the wrong size, which it is not.
        let rng = ring::rand::SystemRandom::new();
        if self.key.sign(&RSA_PKCS1_SHA256, &rng, message, &mut signature).is_err() {
            signature.clear();
        }
        signature
    }
}

/// The one PEM block of `text`: its label and bytes.
fn pem_block(text: &str) -> Result<(String, Vec<u8>), String> {
    let begin = text.find("-----BEGIN ").ok_or("no PEM block (-----BEGIN ...-----)")?;
    let rest = &text[begin + "-----BEGIN ".len()..];
    let (label, body) = rest.split_once("-----").ok_or("a PEM header without its end")?;
    let end = format!("-----END {label}-----");
    let body = body.split_once(&end).ok_or_else(|| format!("no {end:?}"))?.0;
    if body.contains(':') {
        return Err("an encrypted PEM key; decrypt it first (openssl rsa -in key.pem -out plain.pem)".into());
    }
    let compact: String = body.split_whitespace().collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|e| format!("the PEM body is not base64 ({e})"))?;
    Ok((label.to_owned(), der))
}

/// CloudFront's URL-safe base64: the standard alphabet with `+=/` as `-_~`.
fn cloudfront_base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD
        .encode(bytes)
        .chars()
        .map(|c| match c {
            '+' => '-',
            '=' => '_',
            '/' => '~',
            c => c,
        })
        .collect()
}

/// Where players fetch media from, and how the URLs are signed.
#[derive(Debug)]
pub struct Cdn {
    base: String,
    key: Option<CloudFrontKey>,
}

impl Cdn {
    /// A CDN at `base`, whose origin is the store's `media/` prefix: `<base>/<video>/<path>`
    /// is the object `media/<video>/<path>` (for S3, origin path `/<prefix>/media`).
    ///
    /// # Errors
    /// A base that is not an absolute http(s) URL.
    pub fn new(base: &str, key: Option<CloudFrontKey>) -> Result<Self, CdnError> {
        let trimmed = base.trim_end_matches('/');
        let valid = trimmed
            .strip_prefix("https://")
            .or_else(|| trimmed.strip_prefix("http://"))
            .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('/') && !rest.contains(['?', '#', ' ']));
        if !valid {
            return Err(CdnError::BaseUrl(base.to_owned()));
        }
        Ok(Self {
            base: trimmed.to_owned(),
            key,
        })
    }

    /// What lets a client fetch the media of `video_id` until `expires` (Unix seconds).
    pub fn grant(&self, video_id: &str, expires: i64) -> Grant {
        let base = format!("{}/{video_id}/", self.base);
        let Some(key) = &self.key else {
            return Grant {
                base,
                query: String::new(),
            };
        };
        let policy = format!(
            r#"{{"Statement":[{{"Resource":"{base}*","Condition":{{"DateLessThan":{{"AWS:EpochTime":{expires}}}}}}}]}}"#
        );
        let signature = key.sign(policy.as_bytes());
        let query = format!(
            "Policy={}&Signature={}&Key-Pair-Id={}&Hash-Algorithm=SHA256",
            cloudfront_base64(policy.as_bytes()),
            cloudfront_base64(&signature),
            key.key_pair_id
        );
        Grant { base, query }
    }
}

/// The URLs of one video's media on the CDN.
#[derive(Debug, Clone)]
pub struct Grant {
    /// `<cdn>/<video>/`.
    base: String,
    /// The signature's query (empty when unsigned).
    query: String,
}

impl Grant {
    /// The URL of `path` (relative to the video's media folder; a `#fragment` is kept last).
    pub fn url(&self, path: &str) -> String {
        let (path, fragment) = path.split_once('#').map_or((path, None), |(p, f)| (p, Some(f)));
        let mut url = format!("{}{path}", self.base);
        if !self.query.is_empty() {
            url.push(if path.contains('?') { '&' } else { '?' });
            url.push_str(&self.query);
        }
        if let Some(fragment) = fragment {
            let _ = write!(url, "#{fragment}");
        }
        url
    }
}

/// What a playlist, manifest or WebVTT file in `dir` (relative to the video's media folder,
/// `""` or ending in `/`) names, resolved: `None` for URIs left alone (absolute ones, and
/// playlists when `keep_playlists`, which the API answers and rewrites in turn).
fn resolve(uri: &str, dir: &str, grant: &Grant, keep_playlists: bool) -> Option<String> {
    let uri = uri.trim();
    if uri.is_empty() || uri.contains("://") || uri.starts_with('/') || uri.starts_with("data:") {
        return None;
    }
    let path = uri.split(['?', '#']).next().unwrap_or(uri);
    if keep_playlists && path.to_ascii_lowercase().ends_with(".m3u8") {
        return None;
    }
    Some(grant.url(&format!("{dir}{uri}")))
}

/// An HLS playlist with every non-playlist URI (segments, `EXT-X-MAP`, keys) on the CDN.
pub fn rewrite_hls(text: &str, dir: &str, grant: &Grant) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    for line in text.lines() {
        if line.starts_with('#') {
            out.push_str(&rewrite_attribute(line, "URI=\"", dir, grant, true));
        } else if let Some(url) = resolve(line, dir, grant, true) {
            out.push_str(&url);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// A DASH MPD with `initialization`, `media` and `sourceURL` on the CDN (XML-escaped).
pub fn rewrite_mpd(text: &str, dir: &str, grant: &Grant) -> String {
    let grant = xml_grant(grant);
    let mut out = text.to_owned();
    for attribute in [" initialization=\"", " media=\"", " sourceURL=\""] {
        out = rewrite_attribute(&out, attribute, dir, &grant, false);
    }
    out
}

/// A grant whose query is escaped for an XML attribute.
fn xml_grant(grant: &Grant) -> Grant {
    Grant {
        base: grant.base.clone(),
        query: grant.query.replace('&', "&amp;"),
    }
}

/// WebVTT (scrubbing thumbnails): each cue's payload that is a URI (`sprite.jpg#xywh=...`).
pub fn rewrite_vtt(text: &str, dir: &str, grant: &Grant) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    let mut in_cue = false;
    for line in text.lines() {
        if line.contains("-->") {
            in_cue = true;
            out.push_str(line);
        } else if line.trim().is_empty() {
            in_cue = false;
        } else if in_cue && !line.contains(char::is_whitespace) {
            match resolve(line, dir, grant, false) {
                Some(url) => out.push_str(&url),
                None => out.push_str(line),
            }
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// `text` with the value after every `start` (an attribute's `name="`, up to its closing
/// quote) resolved.
fn rewrite_attribute(text: &str, start: &str, dir: &str, grant: &Grant, keep_playlists: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(start) {
        let value_at = at + start.len();
        let Some(len) = rest[value_at..].find('"') else {
            break;
        };
        out.push_str(&rest[..value_at]);
        let value = &rest[value_at..value_at + len];
        match resolve(value, dir, grant, keep_playlists) {
            Some(url) => out.push_str(&url),
            None => out.push_str(value),
        }
        rest = &rest[value_at + len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use ring::signature::{UnparsedPublicKey, RSA_PKCS1_2048_8192_SHA256};

    use super::*;

    const PKCS8: &str = include_str!("testdata/cloudfront-test-key.pem");
    const PKCS1: &str = include_str!("testdata/cloudfront-test-key-pkcs1.pem");

    fn decode(text: &str) -> Vec<u8> {
        let standard: String = text
            .chars()
            .map(|c| match c {
                '-' => '+',
                '_' => '=',
                '~' => '/',
                c => c,
            })
            .collect();
        base64::engine::general_purpose::STANDARD
            .decode(standard)
            .expect("base64")
    }

    fn params(url: &str) -> std::collections::HashMap<String, String> {
        url.split_once('?')
            .map(|(_, q)| q.split('#').next().unwrap_or(q))
            .unwrap_or_default()
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    #[test]
    fn a_signed_url_carries_a_wildcard_policy_until_the_expiry_and_a_signature_that_verifies() {
        let key = CloudFrontKey::from_pem("K2JCJMDEHXQW5F", PKCS8).expect("key");
        let public = key.key.public().as_ref().to_vec();
        let cdn = Cdn::new("https://d111111abcdef8.cloudfront.net/vod/", Some(key)).expect("cdn");
        let url = cdn.grant("v1", 1_767_290_400).url("2/720p/seg_00001.m4s");
        assert!(
            url.starts_with("https://d111111abcdef8.cloudfront.net/vod/v1/2/720p/seg_00001.m4s?Policy="),
            "{url}"
        );
        let params = params(&url);
        assert_eq!(params["Key-Pair-Id"], "K2JCJMDEHXQW5F");
        assert_eq!(params["Hash-Algorithm"], "SHA256");
        assert!(!params["Policy"].contains(['+', '=', '/']));
        let policy = decode(&params["Policy"]);
        let json: serde_json::Value = serde_json::from_slice(&policy).expect("policy is JSON");
        let statement = &json["Statement"][0];
        assert_eq!(statement["Resource"], "https://d111111abcdef8.cloudfront.net/vod/v1/*");
        assert_eq!(statement["Condition"]["DateLessThan"]["AWS:EpochTime"], 1_767_290_400);
        let signature = decode(&params["Signature"]);
        let verifier = UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &public);
        assert!(verifier.verify(&policy, &signature).is_ok());
        let mut forged = policy.clone();
        forged.extend_from_slice(b" ");
        assert!(verifier.verify(&forged, &signature).is_err());
    }

    #[test]
    fn keys_in_pkcs1_and_pkcs8_sign_alike_and_bad_keys_are_named() {
        let a = Cdn::new(
            "https://cdn.example",
            Some(CloudFrontKey::from_pem("K1", PKCS8).expect("pkcs8")),
        )
        .expect("cdn");
        let b = Cdn::new(
            "https://cdn.example",
            Some(CloudFrontKey::from_pem("K1", PKCS1).expect("pkcs1")),
        )
        .expect("cdn");
        // PKCS#1 v1.5 signatures are deterministic: the same key signs the same policy alike.
        assert_eq!(a.grant("v", 10).url("x"), b.grant("v", 10).url("x"));
        let public_only = "-----BEGIN PUBLIC KEY-----\nMAo=\n-----END PUBLIC KEY-----\n";
        assert!(CloudFrontKey::from_pem("K1", public_only)
            .expect_err("not a private key")
            .contains("\"PUBLIC KEY\""));
        assert!(CloudFrontKey::from_pem("K1", "hello")
            .expect_err("no PEM")
            .contains("no PEM block"));
        let garbage = "-----BEGIN PRIVATE KEY-----\nMAo=\n-----END PRIVATE KEY-----\n";
        assert!(CloudFrontKey::from_pem("K1", garbage)
            .expect_err("garbage")
            .contains("not a usable RSA private key"));
        assert!(CloudFrontKey::from_pem("K 1&", PKCS8)
            .expect_err("bad id")
            .contains("key pair id"));
        let missing = CloudFrontKey::from_file("K1", Path::new("/nonexistent/key.pem")).expect_err("missing");
        assert!(missing.to_string().contains("/nonexistent/key.pem"), "{missing}");
        for bad in [
            "cdn.example",
            "ftp://cdn.example",
            "https://",
            "https://cdn.example/?a=1",
        ] {
            assert!(matches!(Cdn::new(bad, None), Err(CdnError::BaseUrl(_))), "{bad}");
        }
    }

    #[test]
    fn playlists_keep_playlists_relative_and_send_everything_else_to_the_cdn() {
        let cdn = Cdn::new("https://cdn.example/", None).expect("cdn");
        let grant = cdn.grant("v1", 10);
        let master = "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000\n360p/index.m3u8\n#EXT-X-I-FRAME-STREAM-INF:URI=\"360p/iframes.m3u8\"\n";
        assert_eq!(rewrite_hls(master, "2/", &grant), master);
        let media = "#EXTM3U\n#EXT-X-MAP:URI=\"init.mp4\"\n#EXTINF:4.0,\nseg_00001.m4s\n#EXTINF:4.0,\nhttps://elsewhere/x.m4s\n#EXT-X-ENDLIST\n";
        assert_eq!(
            rewrite_hls(media, "2/360p/", &grant),
            "#EXTM3U\n#EXT-X-MAP:URI=\"https://cdn.example/v1/2/360p/init.mp4\"\n#EXTINF:4.0,\nhttps://cdn.example/v1/2/360p/seg_00001.m4s\n#EXTINF:4.0,\nhttps://elsewhere/x.m4s\n#EXT-X-ENDLIST\n"
        );
    }

    #[test]
    fn signed_manifests_carry_the_query_on_every_uri_escaped_where_xml_needs_it() {
        let key = CloudFrontKey::from_pem("K1", PKCS8).expect("key");
        let cdn = Cdn::new("https://cdn.example", Some(key)).expect("cdn");
        let grant = cdn.grant("v1", 10);
        let media = rewrite_hls("#EXTM3U\n#EXTINF:4.0,\nseg_1.m4s\n", "2/360p/", &grant);
        let segment = media.lines().nth(2).expect("segment line");
        assert_eq!(segment, grant.url("2/360p/seg_1.m4s"));
        assert!(segment.contains("?Policy=") && segment.contains("&Signature="));

        let mpd = r#"<SegmentTemplate timescale="90000" initialization="360p/init.mp4" media="360p/seg_$Number%05d$.m4s" startNumber="1">"#;
        let rewritten = rewrite_mpd(mpd, "2/", &grant);
        assert!(
            !rewritten.contains("&Signature") && rewritten.contains("&amp;Signature="),
            "{rewritten}"
        );
        let unescaped = rewritten.replace("&amp;", "&");
        assert!(unescaped.contains(&format!(r#"initialization="{}""#, grant.url("2/360p/init.mp4"))));
        assert!(unescaped.contains(&format!(r#"media="{}""#, grant.url("2/360p/seg_$Number%05d$.m4s"))));

        let vtt = "WEBVTT\n\n00:00:00.000 --> 00:00:05.000\nsprite.jpg#xywh=0,0,160,90\n\n00:00:05.000 --> 00:00:10.000\nsprite.jpg#xywh=160,0,160,90\n";
        let rewritten = rewrite_vtt(vtt, "2/", &grant);
        let cue = rewritten.lines().nth(3).expect("cue payload");
        assert!(cue.starts_with("https://cdn.example/v1/2/sprite.jpg?Policy="), "{cue}");
        assert!(cue.ends_with("#xywh=0,0,160,90"), "{cue}");
        assert!(rewritten.starts_with("WEBVTT\n\n00:00:00.000 --> 00:00:05.000\n"));
    }
}
