//! The AWS SDK's configuration, shared by every AWS adapter: the standard chain (environment,
//! profile, container or instance role) for credentials and region, one HTTPS client (rustls
//! over ring), and `AWS_ENDPOINT_URL` (or [`AwsSettings::endpoint`]) to point every client at
//! an emulator.

#[cfg(feature = "aws")]
use aws_config::{BehaviorVersion, Region, SdkConfig};
#[cfg(feature = "aws")]
use aws_credential_types::Credentials;
#[cfg(feature = "aws")]
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};

/// Overrides of the standard chain, for tests and emulators; `Default` takes everything from
/// the environment.
#[derive(Debug, Clone, Default)]
pub struct AwsSettings {
    /// Endpoint of every service (an emulator); otherwise `AWS_ENDPOINT_URL` or AWS itself.
    pub endpoint: Option<String>,
    /// Region; otherwise `AWS_REGION` or the profile's.
    pub region: Option<String>,
    /// Access key id and secret; otherwise the standard chain.
    pub static_credentials: Option<(String, String)>,
}

impl AwsSettings {
    /// Settings for a local emulator at `endpoint` (any credentials, region us-east-1).
    pub fn emulator(endpoint: &str) -> Self {
        Self {
            endpoint: Some(endpoint.to_owned()),
            region: Some("us-east-1".into()),
            static_credentials: Some(("vodsource".into(), "vodsource".into())),
        }
    }
}

/// Loads the SDK configuration.
#[cfg(feature = "aws")]
///
/// # Errors
/// No region is configured (the message says which variable to set).
pub async fn load(settings: &AwsSettings) -> Result<SdkConfig, String> {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
    if let Some(endpoint) = &settings.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    if let Some(region) = &settings.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some((id, secret)) = &settings.static_credentials {
        loader = loader.credentials_provider(Credentials::new(id, secret, None, None, "vodsource"));
    }
    let config = loader.load().await;
    if config.region().is_none() {
        return Err("no AWS region is configured: set AWS_REGION (or a profile's region)".into());
    }
    Ok(config)
}
