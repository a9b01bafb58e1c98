//! DynamoDB's errors as the ports' `StoreError`, in one place.

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use vodsource_commands::ports::StoreError;

/// A request DynamoDB refused or could not be sent: the operation, the service's code and
/// message (or the transport's failure), and the SDK's error kept as the cause.
pub(super) fn unavailable<E, R>(what: &str, e: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let detail = match &e {
        SdkError::ServiceError(service) => {
            let err = service.err();
            format!("{}: {}", err.code().unwrap_or("error"), err.message().unwrap_or(""))
        }
        other => format!("{other:?}"),
    };
    StoreError::Unavailable {
        message: format!("DynamoDB {what}: {detail}"),
        source: Some(std::sync::Arc::new(e)),
    }
}

pub(super) fn invalid(e: impl std::fmt::Display) -> StoreError {
    StoreError::unexpected(format!("DynamoDB request: {e}"))
}

pub(super) fn lease_lost(name: &str, owner: &str) -> StoreError {
    tracing::warn!(name, owner, "lease no longer held");
    StoreError::LeaseLost(name.to_owned())
}
