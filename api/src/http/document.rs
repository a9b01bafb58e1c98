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
        "sendBeacons" => &["413", "415", "422"],
        "getWatchState" => &["404"],
        "continueWatching" => &[],
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

/// Swagger UI's page with `document` in place of the one poem-openapi embedded (the JSON
/// value after `let spec = `); the page as it was if that is not found.
pub fn embed(html: &str, document: &str) -> String {
    const MARK: &str = "let spec = ";
    let Some(start) = html.find(MARK).map(|at| at + MARK.len()) else {
        return html.to_owned();
    };
    let mut values = serde_json::Deserializer::from_str(&html[start..]).into_iter::<Value>();
    match values.next() {
        Some(Ok(_)) => {
            let end = start + values.byte_offset();
            format!("{}{document}{}", &html[..start], &html[end..])
        }
        _ => html.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_embeds_the_document_given() {
        let page = "<script>\n    let spec = {\"a\": {\"b\": 1}};\n    go(spec);\n</script>";
        assert_eq!(
            embed(page, "{\"c\":2}"),
            "<script>\n    let spec = {\"c\":2};\n    go(spec);\n</script>"
        );
        assert_eq!(embed("no spec here", "{}"), "no spec here");
    }

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
