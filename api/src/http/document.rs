//! The OpenAPI document as served: poem-openapi lists every variant of the shared error type
//! under every operation; this keeps, per operation, only the statuses it can answer with, so
//! generated clients see the errors that can really happen. schemathesis checks the result
//! (an undocumented status fails `status_code_conformance`).

use serde_json::Value;

/// Statuses every authenticated operation can answer with.
const AUTHENTICATED: &[&str] = &["400", "401", "403", "429", "500", "503"];

/// The error statuses an operation adds to [`AUTHENTICATED`]; `None` for operations whose
/// document is left as generated.
fn extra_statuses(operation_id: &str) -> Option<&'static [&'static str]> {
    Some(match operation_id {
        "registerVideo" => &["409", "413", "415", "422"],
        "updateVideo" => &["404", "409", "412", "413", "415", "422"],
        "completeUpload" | "publishVideo" | "unpublishVideo" | "retryEncoding" | "deleteVideo" => {
            &["404", "409", "412", "422"]
        }
        "getVideo" | "getStatus" | "getHistory" | "videoEvents" => &["404"],
        "getPlayback" | "rebuildProjection" => &["404", "409"],
        "listVideos" | "listProjections" | "listDeadLetters" => &[],
        _ => return None,
    })
}

/// Drops the error responses an operation cannot give.
pub fn prune(document: &mut Value) {
    let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for item in paths.values_mut() {
        let Some(methods) = item.as_object_mut() else {
            continue;
        };
        for operation in methods.values_mut() {
            let Some(extra) = operation
                .get("operationId")
                .and_then(Value::as_str)
                .and_then(extra_statuses)
            else {
                continue;
            };
            if let Some(responses) = operation.get_mut("responses").and_then(Value::as_object_mut) {
                responses.retain(|status, _| {
                    status.starts_with('2')
                        || AUTHENTICATED.contains(&status.as_str())
                        || extra.contains(&status.as_str())
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_statuses_an_operation_can_answer_stay() {
        let mut document = serde_json::json!({
            "paths": {
                "/v1/videos/{id}": {
                    "get": {"operationId": "getVideo", "responses": {"200": {}, "404": {}, "413": {}, "429": {}}},
                    "delete": {"operationId": "deleteVideo", "responses": {"200": {}, "412": {}, "415": {}}}
                },
                "/v1/health/live": {"get": {"operationId": "live", "responses": {"200": {}, "418": {}}}}
            }
        });
        prune(&mut document);
        let statuses = |path: &str, method: &str| {
            let mut keys: Vec<String> = document["paths"][path][method]["responses"]
                .as_object()
                .map(|r| r.keys().cloned().collect())
                .unwrap_or_default();
            keys.sort();
            keys
        };
        assert_eq!(statuses("/v1/videos/{id}", "get"), ["200", "404", "429"]);
        assert_eq!(statuses("/v1/videos/{id}", "delete"), ["200", "412"]);
        assert_eq!(
            statuses("/v1/health/live", "get"),
            ["200", "418"],
            "unknown operations stay as they are"
        );
    }
}
