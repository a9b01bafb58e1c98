//! The two tables and the state table's index: created on demand, idempotently.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType, TableStatus, TimeToLiveSpecification,
};
use std::time::Duration;

use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use vodsource_commands::ports::StoreError;

use super::errors::{invalid, unavailable};
use super::DynamoViewStore;

/// The state table's index of deadlines and ready jobs.
pub(super) const DUE_INDEX: &str = "due";

impl DynamoViewStore {
    /// Creates the tables (on-demand capacity) unless they exist, and waits until they are
    /// active. Safe to run twice, or from two processes at once.
    ///
    /// # Errors
    /// `Unavailable` when DynamoDB refuses or cannot be reached.
    pub async fn create_tables(&self) -> Result<(), StoreError> {
        for (table, sorted) in [(&self.views, true), (&self.state, false)] {
            let attribute = |name: &str| {
                AttributeDefinition::builder()
                    .attribute_name(name)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .map_err(invalid)
            };
            let element = |name: &str, kind: KeyType| {
                KeySchemaElement::builder()
                    .attribute_name(name)
                    .key_type(kind)
                    .build()
                    .map_err(invalid)
            };
            let mut request = self
                .client
                .create_table()
                .table_name(table.as_str())
                .billing_mode(BillingMode::PayPerRequest)
                .attribute_definitions(attribute("pk")?)
                .key_schema(element("pk", KeyType::Hash)?);
            if sorted {
                request = request
                    .attribute_definitions(attribute("sk")?)
                    .key_schema(element("sk", KeyType::Range)?);
            } else {
                // Deadlines and ready jobs by time: a sparse index of the items that carry
                // a queue name `q` and a time `at`.
                request = request
                    .attribute_definitions(attribute("q")?)
                    .attribute_definitions(
                        AttributeDefinition::builder()
                            .attribute_name("at")
                            .attribute_type(ScalarAttributeType::N)
                            .build()
                            .map_err(invalid)?,
                    )
                    .global_secondary_indexes(
                        GlobalSecondaryIndex::builder()
                            .index_name(DUE_INDEX)
                            .key_schema(element("q", KeyType::Hash)?)
                            .key_schema(element("at", KeyType::Range)?)
                            .projection(Projection::builder().projection_type(ProjectionType::All).build())
                            .build()
                            .map_err(invalid)?,
                    );
            }
            match request.send().await {
                Ok(_) => tracing::info!(table = %table, "DynamoDB table created"),
                Err(e) if e.code() == Some("ResourceInUseException") => {}
                Err(e) => return Err(unavailable(&format!("CreateTable {table}"), e)),
            }
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            loop {
                let described = self
                    .client
                    .describe_table()
                    .table_name(table.as_str())
                    .send()
                    .await
                    .map_err(|e| unavailable(&format!("DescribeTable {table}"), e))?;
                let status = described.table().and_then(|t| t.table_status()).cloned();
                if status == Some(TableStatus::Active) {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    return Err(StoreError::unavailable(format!(
                        "DynamoDB table {table} is still {status:?} after 120 s"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        // Expired idempotency keys go by DynamoDB's TTL.
        let ttl = self
            .client
            .update_time_to_live()
            .table_name(&self.state)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .enabled(true)
                    .attribute_name("expires_s")
                    .build()
                    .map_err(invalid)?,
            )
            .send()
            .await;
        match ttl {
            Ok(_) => Ok(()),
            // Already on (DynamoDB refuses to set it twice).
            Err(e) if e.code() == Some("ValidationException") => Ok(()),
            Err(e) => Err(unavailable(&format!("UpdateTimeToLive {}", self.state), e)),
        }
    }
}
