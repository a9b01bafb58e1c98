//! Idempotency keys: a reservation, its stored response, its release.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::ProvideErrorMetadata;
use chrono::{DateTime, Utc};
use vodsource_commands::ports::{IdempotencyStore, Reservation, StoreError, StoredResponse};

use super::codec::*;
use super::errors::unavailable;
use super::DynamoViewStore;

#[async_trait]
impl IdempotencyStore for DynamoViewStore {
    async fn reserve(
        &self,
        scope: &str,
        key_: &str,
        fingerprint: &str,
        now: DateTime<Utc>,
        ttl: Duration,
        in_flight: Duration,
    ) -> Result<Reservation, StoreError> {
        let pk = format!("idem#{scope}#{key_}");
        let now_us = micros(now);
        let expires_us = now_us.saturating_add(i64::try_from(ttl.as_micros()).unwrap_or(i64::MAX));
        let abandoned_us = now_us.saturating_sub(i64::try_from(in_flight.as_micros()).unwrap_or(i64::MAX));
        // Read, decide, then claim on condition that nothing changed since the read; a
        // concurrent claim makes the condition fail, and the next round sees it.
        for _ in 0..5 {
            let existing = self.get_state(pk.clone()).await?;
            let seen_created: Option<i64> = existing.as_ref().and_then(|item| get_n(item, "created"));
            if let Some(item) = &existing {
                let status: Option<u16> = get_n(item, "st");
                let created = seen_created.unwrap_or(0);
                let expires: i64 = get_n(item, "expires").unwrap_or(0);
                let abandoned = expires < now_us || (status.is_none() && created < abandoned_us);
                if !abandoned {
                    if get_s(item, "fp") != Some(fingerprint) {
                        return Ok(Reservation::Mismatch);
                    }
                    return Ok(match (status, get_s(item, "bd")) {
                        (Some(status), Some(body)) => Reservation::Replay(StoredResponse {
                            status,
                            body: body.to_owned(),
                        }),
                        _ => Reservation::InFlight,
                    });
                }
            }
            let mut item = key(pk.clone(), None);
            item.insert("fp".into(), s(fingerprint));
            item.insert("created".into(), n(now_us));
            item.insert("expires".into(), n(expires_us));
            item.insert("expires_s".into(), n(expires_us / 1_000_000 + 1));
            let mut put = self.client.put_item().table_name(&self.state).set_item(Some(item));
            put = match seen_created {
                Some(created) => put
                    .condition_expression("created = :seen")
                    .expression_attribute_values(":seen", n(created)),
                None => put.condition_expression("attribute_not_exists(pk)"),
            };
            match put.send().await {
                Ok(_) => return Ok(Reservation::Fresh),
                Err(e) if e.code() == Some("ConditionalCheckFailedException") => continue,
                Err(e) => return Err(unavailable("PutItem (idempotency)", e)),
            }
        }
        Ok(Reservation::InFlight)
    }

    async fn complete(&self, scope: &str, key_: &str, response: &StoredResponse) -> Result<(), StoreError> {
        let updated = self
            .client
            .update_item()
            .table_name(&self.state)
            .set_key(Some(key(format!("idem#{scope}#{key_}"), None)))
            .update_expression("SET st = :st, bd = :bd")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":st", n(response.status))
            .expression_attribute_values(":bd", s(response.body.clone()))
            .send()
            .await;
        match updated {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(()),
            Err(e) => Err(unavailable("UpdateItem (idempotency)", e)),
        }
    }

    async fn release(&self, scope: &str, key_: &str) -> Result<(), StoreError> {
        let deleted = self
            .client
            .delete_item()
            .table_name(&self.state)
            .set_key(Some(key(format!("idem#{scope}#{key_}"), None)))
            .condition_expression("attribute_not_exists(st)")
            .send()
            .await;
        match deleted {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(()),
            Err(e) => Err(unavailable("DeleteItem (idempotency)", e)),
        }
    }
}
