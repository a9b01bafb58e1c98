//! DynamoDB's errors as the ports' `StoreError`, in one place.

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use vodsource_commands::ports::StoreError;

pub(super) fn unavailable<E: ProvideErrorMetadata + std::fmt::Debug, R: std::fmt::Debug>(
    what: &str,
    e: &SdkError<E, R>,
) -> StoreError {
    let detail = match e {
        SdkError::ServiceError(service) => {
            let err = service.err();
            format!("{}: {}", err.code().unwrap_or("error"), err.message().unwrap_or(""))
        }
        other => format!("{other:?}"),
    };
    StoreError::Unavailable(format!("DynamoDB {what}: {detail}"))
}

pub(super) fn invalid(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unexpected(format!("DynamoDB request: {e}"))
}

pub(super) fn lease_lost(name: &str, owner: &str) -> StoreError {
    tracing::warn!(name, owner, "lease no longer held");
    StoreError::LeaseLost(name.to_owned())
}
