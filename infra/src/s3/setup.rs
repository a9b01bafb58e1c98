//! The bucket's setup (`vodsource setup`): creating it, and the CORS rules that let browsers
//! upload to presigned URLs and players fetch media.

use std::time::Duration;

use object_store::path::Path;
use object_store::CredentialProvider as _;
use vodsource_commands::ports::StoreError;

use super::S3ObjectStore;

impl S3ObjectStore {
    /// Creates the bucket unless this account already has it (`vodsource setup`). The
    /// request is `PUT /<bucket>/` presigned by the same client (query-string SigV4, so no
    /// second S3 library is needed), with the region as location constraint outside
    /// us-east-1.
    ///
    /// # Errors
    /// `Unavailable` naming the bucket and S3's answer (a name another account owns, say).
    pub async fn create_bucket(&self) -> Result<(), StoreError> {
        use object_store::signer::Signer;
        let bucket = &self.location.bucket;
        let url = self
            .client
            .signed_url(reqwest::Method::PUT, &Path::from(""), Duration::from_secs(300))
            .await
            .map_err(|e| StoreError::unavailable(format!("signing CreateBucket {bucket}: {e}")))?;
        let region = &self.region;
        let body = if region == "us-east-1" || region.is_empty() {
            String::new()
        } else {
            format!(
                "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LocationConstraint>{region}</LocationConstraint></CreateBucketConfiguration>"
            )
        };
        let response = reqwest::Client::new()
            .put(url.as_str())
            .header(reqwest::header::CONTENT_LENGTH, body.len())
            .body(body)
            .send()
            .await
            .map_err(|e| StoreError::unavailable(format!("CreateBucket {bucket}: {e}")))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if status.is_success() || text.contains("BucketAlreadyOwnedByYou") {
            return Ok(());
        }
        Err(StoreError::unavailable(format!(
            "CreateBucket {bucket}: {status}: {}",
            text.chars().take(300).collect::<String>()
        )))
    }

    /// Lets web pages on `origins` (`*` for any) use the bucket straight from the browser:
    /// `PUT` uploads to presigned URLs and `GET`/`HEAD` media (PutBucketCors, replacing the
    /// bucket's CORS rules). Without it a browser's upload or a player's segment request to
    /// the bucket fails its CORS check. Presigned URLs are the capability, so any origin is a
    /// safe default.
    ///
    /// # Errors
    /// `Invalid` for an origin that is not `*` or `scheme://host[:port]`; `Unavailable` with
    /// S3's answer.
    pub async fn allow_browsers(&self, origins: &[String]) -> Result<(), StoreError> {
        use md5::Digest as _;
        use object_store::client::{HttpRequest, HttpRequestBody};
        use object_store::signer::Signer;
        let bucket = &self.location.bucket;
        for origin in origins {
            let plain = origin == "*"
                || (origin.starts_with("https://") || origin.starts_with("http://"))
                    && !origin.trim_end_matches('/').contains(['?', '#', ' ', '<', '>', '&'])
                    && origin.matches('/').count() == 2;
            if !plain {
                return Err(StoreError::Invalid(format!(
                    "the CORS origin {origin:?} is not * or scheme://host[:port]"
                )));
            }
        }
        let rules: String = origins
            .iter()
            .map(|o| format!("<AllowedOrigin>{}</AllowedOrigin>", o.trim_end_matches('/')))
            .collect();
        let body = format!(
            "<CORSConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><CORSRule>{rules}\
             <AllowedMethod>GET</AllowedMethod><AllowedMethod>HEAD</AllowedMethod><AllowedMethod>PUT</AllowedMethod>\
             <AllowedHeader>*</AllowedHeader><ExposeHeader>ETag</ExposeHeader><ExposeHeader>Content-Length</ExposeHeader>\
             <ExposeHeader>Content-Range</ExposeHeader><MaxAgeSeconds>3600</MaxAgeSeconds></CORSRule></CORSConfiguration>"
        );
        // The bucket's own URL, as the client addresses it (path or virtual-hosted style).
        let mut url = self
            .client
            .signed_url(reqwest::Method::PUT, &Path::from(""), Duration::from_secs(60))
            .await
            .map_err(|e| StoreError::unavailable(format!("the URL of bucket {bucket}: {e}")))?;
        url.set_query(Some("cors"));
        let md5 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, md5::Md5::digest(&body));
        let mut request: HttpRequest = http::Request::builder()
            .method(http::Method::PUT)
            .uri(url.as_str())
            .header("content-md5", &md5)
            .header("content-type", "application/xml")
            .body(HttpRequestBody::from(body.clone().into_bytes()))
            .map_err(|e| StoreError::Invalid(format!("PutBucketCors {bucket}: {e}")))?;
        if let Some(credentials) = &self.credentials {
            let credential = credentials
                .get_credential()
                .await
                .map_err(|e| StoreError::unavailable(format!("PutBucketCors {bucket}: {e}")))?;
            object_store::aws::AwsAuthorizer::new(&credential, "s3", &self.region).authorize(&mut request, None);
        }
        let mut send = reqwest::Client::new().put(url.as_str()).body(body);
        for (name, value) in request.headers() {
            send = send.header(name.as_str(), value.as_bytes());
        }
        let response = send
            .send()
            .await
            .map_err(|e| StoreError::unavailable(format!("PutBucketCors {bucket}: {e}")))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        Err(StoreError::unavailable(format!(
            "PutBucketCors {bucket}: {status}: {}",
            text.chars().take(300).collect::<String>()
        )))
    }
}
