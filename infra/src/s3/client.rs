//! The S3 client of a bucket: region and credentials from the AWS SDK's chain, the SDK's
//! credentials as `object_store` asks for them (cached until near expiry).

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use object_store::aws::{AmazonS3, AmazonS3Builder, AwsCredential};
use object_store::CredentialProvider;
use tokio::sync::Mutex;
use vodsource_commands::ports::StoreError;

use crate::aws::AwsSettings;

/// A client for one bucket, with credentials and region from the AWS SDK's chain.
///
/// # Errors
/// No region configured; a client `object_store` refuses to build.
pub async fn s3_client(bucket: &str, settings: &AwsSettings) -> Result<AmazonS3, StoreError> {
    Ok(client_in_region(bucket, settings).await?.0)
}

/// The client, the region it signs for, and its credentials.
pub(super) async fn client_in_region(
    bucket: &str,
    settings: &AwsSettings,
) -> Result<(AmazonS3, String, Option<Arc<SdkCredentials>>), StoreError> {
    let config = crate::aws::load(settings).await.map_err(StoreError::Invalid)?;
    let region = config.region().map(ToString::to_string).unwrap_or_default();
    let mut builder = AmazonS3Builder::new().with_bucket_name(bucket).with_region(&region);
    let credentials = config
        .credentials_provider()
        .map(|provider| Arc::new(SdkCredentials::new(provider)));
    if let Some(credentials) = &credentials {
        builder = builder.with_credentials(credentials.clone());
    }
    if let Some(endpoint) = config.endpoint_url() {
        builder = builder
            .with_endpoint(endpoint)
            .with_allow_http(endpoint.starts_with("http://"))
            .with_virtual_hosted_style_request(false);
    }
    let client = builder
        .build()
        .map_err(|e| StoreError::Invalid(format!("S3 client for bucket {bucket}: {e}")))?;
    Ok((client, region, credentials))
}

/// The SDK's credential chain as `object_store` asks for it, cached until near expiry.
pub(super) struct SdkCredentials {
    provider: SharedCredentialsProvider,
    cached: Mutex<Option<(Arc<AwsCredential>, Option<SystemTime>)>>,
}

impl SdkCredentials {
    fn new(provider: SharedCredentialsProvider) -> Self {
        Self {
            provider,
            cached: Mutex::new(None),
        }
    }
}

impl fmt::Debug for SdkCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SdkCredentials")
    }
}

#[async_trait]
impl CredentialProvider for SdkCredentials {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        let mut cached = self.cached.lock().await;
        if let Some((credential, expiry)) = cached.as_ref() {
            let fresh = expiry.is_none_or(|at| SystemTime::now() + Duration::from_secs(300) < at);
            if fresh {
                return Ok(credential.clone());
            }
        }
        let credentials = self
            .provider
            .provide_credentials()
            .await
            .map_err(|e| object_store::Error::Generic {
                store: "S3",
                source: format!("AWS credentials: {e}").into(),
            })?;
        let credential = Arc::new(AwsCredential {
            key_id: credentials.access_key_id().to_owned(),
            secret_key: credentials.secret_access_key().to_owned(),
            token: credentials.session_token().map(ToOwned::to_owned),
        });
        *cached = Some((credential.clone(), credentials.expiry()));
        Ok(credential)
    }
}
