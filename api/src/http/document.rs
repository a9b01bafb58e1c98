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
        "getVideo" | "getStatus" => &["404", "409"],
        "getHistory" | "videoEvents" => &["404"],
        "getPlayback" | "rebuildProjection" => &["404", "409"],
        "listVideos" => &["409"],
        "listProjections" | "listDeadLetters" => &[],
        "createUpload" => &["404", "409", "412", "413", "415", "422", "460"],
        "getUploadOffset" | "terminateUpload" => &["404", "409", "410", "412"],
        "appendUpload" => &["404", "408", "409", "410", "412", "413", "415", "460"],
        "tusOptions" => &[],
        // A grant, not a bearer token, authorizes these: no 401.
        "createDirectUpload" => &["404", "409", "413", "415"],
        "signDirectPart" | "listDirectParts" => &["404", "409", "410"],
        "completeDirectUpload" => &["404", "409", "410", "413", "415"],
        "abortDirectUpload" => &["404", "409"],
        "createWebhook" => &["409", "413", "415", "422"],
        "listWebhooks" => &[],
        "getWebhook" | "deleteWebhook" | "testWebhook" => &["404"],
        "updateWebhook" => &["404", "413", "415", "422"],
        "rotateWebhookSecret" => &["404", "413", "415"],
        "replayWebhook" => &["404", "409", "413", "415", "422"],
        _ => return None,
    })
}

/// Request bodies whose unknown fields the server refuses.
const CLOSED: &[&str] = &[
    "RegisterVideo",
    "UpdateVideo",
    "CreateWebhook",
    "UpdateWebhook",
    "RotateSecret",
];

/// No control characters anywhere, and something besides white space (a title, a tag):
/// the domain's rule, by hand on the server, as a pattern here.
const TEXT_PATTERN: &str =
    "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u001F\\u007F-\\u009F]*$";

/// No control characters.
const NO_CONTROL_PATTERN: &str = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$";

/// A file name: no folders, no control characters, not `.` or `..`.
const FILENAME_PATTERN: &str = "^(?!\\.\\.?$)[^/\\\\\\u0000-\\u001F\\u007F-\\u009F]+$";

/// What the document says of the API beyond what poem-openapi writes: every constraint the
/// server enforces by hand (the forms of ids, `If-Match`, cursors and content types; closed
/// request bodies; the beacon batch's full schema; the largest source), and, with
/// authentication off, no security requirement (there is none).
pub fn describe(document: &mut Value, facts: &Facts) {
    let string = |min: usize, max: usize, pattern: Option<&str>| {
        let mut schema = serde_json::json!({ "type": "string", "minLength": min, "maxLength": max });
        if let Some(pattern) = pattern {
            schema["pattern"] = Value::String(pattern.to_owned());
        }
        schema
    };
    if let Some(schemas) = document
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        for name in CLOSED {
            if let Some(schema) = schemas.get_mut(*name).and_then(Value::as_object_mut) {
                schema.insert("additionalProperties".into(), Value::Bool(false));
            }
        }
        schemas.extend(vodsource_app::webhooks::contract::json_schemas());
        if let Some(event) = schemas
            .get_mut("WebhookTestResult")
            .and_then(|s| s.pointer_mut("/properties/event"))
        {
            *event = serde_json::json!({ "$ref": "#/components/schemas/WebhookEvent" });
        }
        let (batch, event) = vodsource_qoe::json_schemas();
        schemas.insert("BeaconBatch".into(), batch);
        schemas.insert("BeaconEvent".into(), event);
        for body in ["RegisterVideo", "UpdateVideo"] {
            let Some(properties) = schemas.get_mut(body).and_then(|s| s.get_mut("properties")) else {
                continue;
            };
            if let Some(title) = properties.get_mut("title") {
                title["pattern"] = TEXT_PATTERN.into();
            }
            if let Some(tags) = properties.get_mut("tags") {
                tags["items"] = string(1, 40, Some(TEXT_PATTERN));
            }
        }
        if let Some(register) = schemas.get_mut("RegisterVideo").and_then(|s| s.get_mut("properties")) {
            register["content_type"]["pattern"] = vodsource_domain::VIDEO_TYPE_PATTERN.into();
            register["filename"]["pattern"] = FILENAME_PATTERN.into();
            register["size_bytes"]["maximum"] = facts.max_source_bytes.into();
        }
        if let Some(replay) = schemas.get_mut("ReplayWebhook") {
            replay["minProperties"] = 1.into();
            replay["maxProperties"] = 1.into();
            replay["properties"]["from_position"]["maximum"] = u64::MAX.into();
        }
        for update in ["UpdateVideo", "UpdateWebhook"] {
            if let Some(update) = schemas.get_mut(update) {
                update["minProperties"] = 1.into();
            }
        }
        let event_types: Vec<&str> = vodsource_app::webhooks::EVENT_TYPES.iter().map(|(t, _)| *t).collect();
        for body in ["CreateWebhook", "UpdateWebhook"] {
            if let Some(types) = schemas
                .get_mut(body)
                .and_then(|s| s.pointer_mut("/properties/event_types"))
            {
                types["items"] = serde_json::json!({ "type": "string", "enum": event_types });
                types["uniqueItems"] = true.into();
            }
            if let Some(description) = schemas
                .get_mut(body)
                .and_then(|s| s.pointer_mut("/properties/description"))
            {
                description["pattern"] = NO_CONTROL_PATTERN.into();
            }
        }
    }
    let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(methods) = item.as_object_mut() else {
            continue;
        };
        for operation in methods.values_mut() {
            if !facts.authentication {
                if let Some(op) = operation.as_object_mut() {
                    op.remove("security");
                }
                if let Some(responses) = operation.get_mut("responses").and_then(Value::as_object_mut) {
                    responses.remove("401");
                }
            }
            if let Some(content) = operation
                .pointer_mut("/requestBody/content")
                .and_then(Value::as_object_mut)
            {
                if path == "/v1/playback/beacons" {
                    for media in content.values_mut() {
                        media["schema"] = serde_json::json!({ "$ref": "#/components/schemas/BeaconBatch" });
                    }
                }
            }
            let Some(parameters) = operation.get_mut("parameters").and_then(Value::as_array_mut) else {
                continue;
            };
            for parameter in parameters {
                let name = parameter["name"].as_str().unwrap_or_default().to_owned();
                let place = parameter["in"].as_str().unwrap_or_default().to_owned();
                let schema = &mut parameter["schema"];
                match (place.as_str(), name.as_str()) {
                    ("path", "id") => {
                        *schema = string(1, vodsource_app::videos::MAX_ID, Some(super::videos::ID_PATTERN))
                    }
                    ("path", "upload_id") => {
                        *schema = string(32, 32, Some(vodsource_app::resumable::UPLOAD_ID_PATTERN));
                    }
                    ("path", "grant") => {
                        *schema = string(3, 1024, Some(vodsource_app::resumable::DIRECT_GRANT_PATTERN));
                    }
                    ("header", "Tus-Resumable") => {
                        *schema =
                            serde_json::json!({ "type": "string", "enum": [vodsource_app::resumable::TUS_VERSION] });
                    }
                    ("header", "Upload-Metadata") => {
                        *schema = string(
                            1,
                            vodsource_app::resumable::MAX_METADATA_CHARS,
                            Some(vodsource_app::resumable::METADATA_PATTERN),
                        );
                    }
                    ("header", "Upload-Checksum") => {
                        // The pattern fixes the length (a maxLength past it would only tell
                        // generators to try lengths no valid value has).
                        *schema = serde_json::json!({
                            "type": "string",
                            "pattern": vodsource_app::resumable::CHECKSUM_PATTERN,
                        });
                    }
                    ("header", "Upload-Length") => {
                        *schema = serde_json::json!({
                            "type": "integer", "format": "uint64", "minimum": 1, "maximum": facts.max_source_bytes
                        });
                    }
                    ("path", "webhook_id") => {
                        *schema = string(35, 35, Some(vodsource_app::webhooks::WEBHOOK_ID_PATTERN));
                    }
                    ("path", "viewer_id") => *schema = string(1, vodsource_app::viewers::MAX_VIEWER_ID_CHARS, None),
                    ("path", "name") if path.contains("/admin/projections/") => {
                        *schema = serde_json::json!({ "type": "string", "enum": vodsource_projections::PROJECTIONS });
                    }
                    ("header", "If-Match") => *schema = string(1, 43, Some(super::state::IF_MATCH_PATTERN)),
                    ("header", "Idempotency-Key") => *schema = string(1, vodsource_app::MAX_KEY_CHARS, None),
                    ("query", "cursor") => {
                        *schema = string(
                            0,
                            vodsource_app::listing::MAX_CURSOR_CHARS,
                            Some(vodsource_app::listing::CURSOR_PATTERN),
                        );
                    }
                    _ => {}
                }
                // Unsigned numbers say so, and how large they go.
                let format = schema["format"].as_str().unwrap_or_default().to_owned();
                if format.starts_with("uint") && schema.get("minimum").is_none() {
                    schema["minimum"] = 0.into();
                }
                if schema.get("maximum").is_none() {
                    match format.as_str() {
                        "uint64" => schema["maximum"] = u64::MAX.into(),
                        "uint32" => schema["maximum"] = u32::MAX.into(),
                        _ => {}
                    }
                }
            }
        }
    }
    if !facts.authentication {
        if let Some(components) = document.get_mut("components").and_then(Value::as_object_mut) {
            components.remove("securitySchemes");
        }
    }
}

/// What the document depends on, of this server.
#[derive(Debug, Clone, Copy)]
pub struct Facts {
    /// Whether bearer tokens are checked.
    pub authentication: bool,
    /// The largest source a registration may declare.
    pub max_source_bytes: u64,
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
                        || status.starts_with('3')
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
