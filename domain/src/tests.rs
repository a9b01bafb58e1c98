//! Given/when/then tests: one per command outcome, rejections included.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::test::TestFramework;

use crate::aggregate::backoff_secs;
use crate::*;

struct FixedClock(DateTime<Utc>);
impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
    }
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0)
        .single()
        .expect("valid date")
}

fn at(now: DateTime<Utc>) -> TestFramework<Video> {
    TestFramework::with(VideoServices::new(Arc::new(FixedClock(now))))
}

fn video() -> TestFramework<Video> {
    at(t0())
}

const WORKER: &str = "worker-a";

fn register_cmd() -> VideoCommand {
    VideoCommand::Register {
        owner: "alice".into(),
        title: "  Big Buck Bunny ".into(),
        description: "a rabbit".into(),
        tags: vec!["animation".into(), "animation".into(), " open ".into()],
        filename: "bbb.mp4".into(),
        content_type: "video/mp4".into(),
        size_bytes: 1000,
        source_url: None,
        publish_when_playable: false,
    }
}

fn registered() -> Vec<VideoEvent> {
    vec![VideoEvent::VideoRegistered {
        owner: "alice".into(),
        title: "Big Buck Bunny".into(),
        description: "a rabbit".into(),
        tags: vec!["animation".into(), "open".into()],
        filename: "bbb.mp4".into(),
        content_type: "video/mp4".into(),
        size_bytes: 1000,
        source_url: None,
        publish_when_playable: false,
    }]
}

const SOURCE_URL: &str = "https://media.example.com/bbb.mp4";

/// Registered with a source to fetch, of undeclared size.
fn registered_from_url() -> Vec<VideoEvent> {
    let mut events = registered();
    if let Some(VideoEvent::VideoRegistered {
        size_bytes, source_url, ..
    }) = events.first_mut()
    {
        *size_bytes = 0;
        *source_url = Some(SOURCE_URL.into());
    }
    events
}

fn uploaded() -> Vec<VideoEvent> {
    let mut events = registered();
    events.push(VideoEvent::SourceUploaded {
        object_key: "sources/v1".into(),
        size_bytes: 1000,
        checksum: Some("etag".into()),
    });
    events
}

fn queued() -> Vec<VideoEvent> {
    let mut events = uploaded();
    events.push(VideoEvent::EncodingRequested { attempt: 1 });
    events
}

fn claimed() -> Vec<VideoEvent> {
    let mut events = queued();
    events.push(VideoEvent::EncodingClaimed {
        attempt: 1,
        worker_id: WORKER.into(),
        lease_until: t0() + Duration::seconds(30),
    });
    events
}

fn rendition() -> Rendition {
    Rendition {
        name: "720p".into(),
        width: 1280,
        height: 720,
        bitrate_bps: 2_800_000,
        codecs: "avc1.64001f,mp4a.40.2".into(),
        playlist_key: "media/v/1/720p.m3u8".into(),
        bytes: 12345,
    }
}

fn rendition_encoded() -> VideoEvent {
    VideoEvent::RenditionEncoded {
        attempt: 1,
        worker_id: WORKER.into(),
        rendition: rendition(),
    }
}

fn with_rendition() -> Vec<VideoEvent> {
    let mut events = claimed();
    events.push(rendition_encoded());
    events
}

fn manifests() -> Manifests {
    Manifests {
        hls_master_key: "media/v/1/master.m3u8".into(),
        dash_mpd_key: "media/v/1/manifest.mpd".into(),
    }
}

fn completed_event() -> VideoEvent {
    VideoEvent::EncodingCompleted {
        attempt: 1,
        worker_id: WORKER.into(),
        manifests: manifests(),
        poster_key: Some("media/v/1/poster.jpg".into()),
        thumbnails_key: None,
        duration_ms: 20_000,
        cost: EncodingCost::default(),
    }
}

fn complete_cmd(worker: &str, attempt: u32) -> VideoCommand {
    VideoCommand::CompleteEncoding {
        worker_id: worker.into(),
        attempt,
        manifests: manifests(),
        poster_key: Some("media/v/1/poster.jpg".into()),
        thumbnails_key: None,
        duration_ms: 20_000,
        cost: EncodingCost::default(),
    }
}

fn ready() -> Vec<VideoEvent> {
    let mut events = with_rendition();
    events.push(completed_event());
    events
}

fn failed_retryable() -> Vec<VideoEvent> {
    let mut events = claimed();
    events.push(VideoEvent::EncodingFailed {
        attempt: 1,
        worker_id: Some(WORKER.into()),
        reason: "object store timeout".into(),
        retryable: true,
    });
    events
}

fn failed_terminal() -> Vec<VideoEvent> {
    let mut events = claimed();
    events.push(VideoEvent::EncodingFailed {
        attempt: 1,
        worker_id: Some(WORKER.into()),
        reason: "not a video: no video stream".into(),
        retryable: false,
    });
    events
}

fn requeue_cmd(attempt: u32) -> VideoCommand {
    VideoCommand::RequeueEncoding {
        attempt,
        reason: "lease expired".into(),
        max_attempts: 3,
        backoff_base_secs: 10,
        backoff_max_secs: 300,
    }
}

fn deleted() -> Vec<VideoEvent> {
    let mut events = registered();
    events.push(VideoEvent::VideoDeleted { reason: None });
    events
}

// ---- Register ----

#[test]
fn register_records_trimmed_metadata_without_repeated_tags() {
    video()
        .given_no_previous_events()
        .when(register_cmd())
        .then_expect_events(registered());
}

#[test]
fn register_twice_is_rejected() {
    video()
        .given(registered())
        .when(register_cmd())
        .then_expect_error(VideoError::AlreadyRegistered);
}

#[test]
fn register_with_empty_title_is_rejected() {
    let mut cmd = register_cmd();
    if let VideoCommand::Register { title, .. } = &mut cmd {
        *title = "   ".into();
    }
    video()
        .given_no_previous_events()
        .when(cmd)
        .then_expect_error_message("invalid title: must be 1 to 200 characters, got 0");
}

#[test]
fn register_with_a_title_of_201_characters_is_rejected() {
    let mut cmd = register_cmd();
    if let VideoCommand::Register { title, .. } = &mut cmd {
        *title = "x".repeat(201);
    }
    video()
        .given_no_previous_events()
        .when(cmd)
        .then_expect_error_message("invalid title: must be 1 to 200 characters, got 201");
}

#[test]
fn register_with_21_tags_is_rejected() {
    let mut cmd = register_cmd();
    if let VideoCommand::Register { tags, .. } = &mut cmd {
        *tags = (0..21).map(|i| format!("tag{i}")).collect();
    }
    video()
        .given_no_previous_events()
        .when(cmd)
        .then_expect_error_message("invalid tags: at most 20 tags, got 21");
}

#[test]
fn register_with_a_tag_of_41_characters_is_rejected() {
    let mut cmd = register_cmd();
    if let VideoCommand::Register { tags, .. } = &mut cmd {
        *tags = vec!["t".repeat(41)];
    }
    video()
        .given_no_previous_events()
        .when(cmd)
        .then_expect_error_message("invalid tags: each tag must be 1 to 40 characters, got 41");
}

#[test]
fn register_with_a_long_description_is_rejected() {
    let mut cmd = register_cmd();
    if let VideoCommand::Register { description, .. } = &mut cmd {
        *description = "d".repeat(MAX_DESCRIPTION_CHARS + 1);
    }
    video()
        .given_no_previous_events()
        .when(cmd)
        .then_expect_error_message("invalid description: must be at most 5000 characters, got 5001");
}

#[test]
fn register_with_a_path_in_the_filename_is_rejected() {
    let mut cmd = register_cmd();
    if let VideoCommand::Register { filename, .. } = &mut cmd {
        *filename = "../etc/passwd".into();
    }
    video()
        .given_no_previous_events()
        .when(cmd)
        .then_expect_error(VideoError::InvalidSource(
            "filename must not contain path components".into(),
        ));
}

#[test]
fn register_with_a_non_video_content_type_is_rejected() {
    let mut cmd = register_cmd();
    if let VideoCommand::Register { content_type, .. } = &mut cmd {
        *content_type = "text/plain".into();
    }
    video()
        .given_no_previous_events()
        .when(cmd)
        .then_expect_error(VideoError::InvalidSource(
            "content type must be video/*, got \"text/plain\"".into(),
        ));
}

#[test]
fn register_with_zero_or_oversized_source_is_rejected() {
    for size in [0, Policy::default().max_source_bytes + 1] {
        let mut cmd = register_cmd();
        if let VideoCommand::Register { size_bytes, .. } = &mut cmd {
            *size_bytes = size;
        }
        let result = video().given_no_previous_events().when(cmd).inspect_result();
        assert!(
            matches!(result, Err(VideoError::InvalidSource(_))),
            "size {size}: {result:?}"
        );
    }
}

#[test]
fn register_from_a_url_may_leave_the_size_to_the_fetch() {
    let mut cmd = register_cmd();
    if let VideoCommand::Register {
        size_bytes, source_url, ..
    } = &mut cmd
    {
        *size_bytes = 0;
        *source_url = Some(SOURCE_URL.into());
    }
    video()
        .given_no_previous_events()
        .when(cmd)
        .then_expect_events(registered_from_url());
}

#[test]
fn register_with_a_malformed_source_url_is_rejected() {
    for (url, expected) in [
        (String::new(), "1 to 2048 bytes"),
        (format!("https://a.example/{}", "x".repeat(2048)), "1 to 2048 bytes"),
        ("https://a.example/a b.mp4".to_owned(), "spaces or control"),
        ("https://a.example/\n.mp4".to_owned(), "spaces or control"),
    ] {
        let mut cmd = register_cmd();
        if let VideoCommand::Register { source_url, .. } = &mut cmd {
            *source_url = Some(url.clone());
        }
        let result = video().given_no_previous_events().when(cmd).inspect_result();
        assert!(
            matches!(&result, Err(VideoError::InvalidSource(m)) if m.contains(expected)),
            "{url:?}: {result:?}"
        );
    }
}

#[test]
fn a_fetched_source_of_undeclared_size_is_recorded_at_any_size_up_to_the_limit() {
    let complete = |size| VideoCommand::CompleteUpload {
        object_key: "sources/v1".into(),
        size_bytes: size,
        checksum: None,
    };
    video()
        .given(registered_from_url())
        .when(complete(12_345))
        .then_expect_events(vec![VideoEvent::SourceUploaded {
            object_key: "sources/v1".into(),
            size_bytes: 12_345,
            checksum: None,
        }]);
    let max = Policy::default().max_source_bytes;
    video()
        .given(registered_from_url())
        .when(complete(max + 1))
        .then_expect_error(VideoError::SizeMismatch {
            declared: 0,
            actual: max + 1,
        });
}

#[test]
fn a_failed_fetch_is_terminal_and_leaves_nothing_to_retry() {
    let failed = VideoEvent::SourceIngestFailed {
        reason: "refused: 127.0.0.1 is a loopback address".into(),
    };
    video()
        .given(registered_from_url())
        .when(VideoCommand::FailIngest {
            reason: "refused: 127.0.0.1 is a loopback address".into(),
        })
        .then_expect_events(vec![failed.clone()]);
    let mut history = registered_from_url();
    history.push(failed);
    video()
        .given(history.clone())
        .when(VideoCommand::RetryEncoding)
        .then_expect_error(VideoError::SourceNotUploaded);
    video()
        .given(history)
        .when(VideoCommand::CompleteUpload {
            object_key: "sources/v1".into(),
            size_bytes: 10,
            checksum: None,
        })
        .then_expect_error(VideoError::InvalidState {
            action: "complete the upload",
            stage: Stage::Failed,
        });
    // Only a video whose source is fetched can fail its fetch.
    video()
        .given(registered())
        .when(VideoCommand::FailIngest { reason: "x".into() })
        .then_expect_error(VideoError::InvalidState {
            action: "fail the source's fetch",
            stage: Stage::AwaitingUpload,
        });
}

#[test]
fn register_without_owner_is_rejected() {
    let mut cmd = register_cmd();
    if let VideoCommand::Register { owner, .. } = &mut cmd {
        *owner = String::new();
    }
    video()
        .given_no_previous_events()
        .when(cmd)
        .then_expect_error_message("invalid owner: must not be empty");
}

#[test]
fn commands_before_register_are_rejected() {
    video()
        .given_no_previous_events()
        .when(VideoCommand::Publish)
        .then_expect_error(VideoError::NotRegistered);
}

// ---- Upload ----

#[test]
fn complete_upload_records_the_source() {
    video()
        .given(registered())
        .when(VideoCommand::CompleteUpload {
            object_key: "sources/v1".into(),
            size_bytes: 1000,
            checksum: Some("etag".into()),
        })
        .then_expect_events(vec![VideoEvent::SourceUploaded {
            object_key: "sources/v1".into(),
            size_bytes: 1000,
            checksum: Some("etag".into()),
        }]);
}

#[test]
fn complete_upload_with_a_different_size_is_rejected() {
    video()
        .given(registered())
        .when(VideoCommand::CompleteUpload {
            object_key: "sources/v1".into(),
            size_bytes: 999,
            checksum: None,
        })
        .then_expect_error(VideoError::SizeMismatch {
            declared: 1000,
            actual: 999,
        });
}

#[test]
fn complete_upload_repeated_for_the_same_object_changes_nothing() {
    video()
        .given(uploaded())
        .when(VideoCommand::CompleteUpload {
            object_key: "sources/v1".into(),
            size_bytes: 1000,
            checksum: None,
        })
        .then_expect_events(vec![]);
}

#[test]
fn complete_upload_of_another_object_after_upload_is_rejected() {
    video()
        .given(uploaded())
        .when(VideoCommand::CompleteUpload {
            object_key: "sources/other".into(),
            size_bytes: 1000,
            checksum: None,
        })
        .then_expect_error(VideoError::InvalidState {
            action: "complete the upload",
            stage: Stage::Uploaded,
        });
}

// ---- Request / retry ----

#[test]
fn request_encoding_after_upload_starts_attempt_one() {
    video()
        .given(uploaded())
        .when(VideoCommand::RequestEncoding)
        .then_expect_events(vec![VideoEvent::EncodingRequested { attempt: 1 }]);
}

#[test]
fn request_encoding_before_upload_is_rejected() {
    video()
        .given(registered())
        .when(VideoCommand::RequestEncoding)
        .then_expect_error(VideoError::SourceNotUploaded);
}

#[test]
fn request_encoding_delivered_twice_changes_nothing() {
    video()
        .given(queued())
        .when(VideoCommand::RequestEncoding)
        .then_expect_events(vec![]);
}

#[test]
fn retry_after_a_terminal_failure_starts_a_new_round() {
    video()
        .given(failed_terminal())
        .when(VideoCommand::RetryEncoding)
        .then_expect_events(vec![VideoEvent::EncodingRequested { attempt: 2 }]);
}

#[test]
fn retry_while_encoding_is_rejected() {
    video()
        .given(claimed())
        .when(VideoCommand::RetryEncoding)
        .then_expect_error(VideoError::InvalidState {
            action: "retry encoding",
            stage: Stage::Encoding,
        });
}

// ---- Claim ----

#[test]
fn claim_of_a_queued_attempt_takes_a_lease() {
    video()
        .given(queued())
        .when(VideoCommand::ClaimEncoding {
            worker_id: WORKER.into(),
            attempt: 1,
            lease_secs: 30,
        })
        .then_expect_events(vec![VideoEvent::EncodingClaimed {
            attempt: 1,
            worker_id: WORKER.into(),
            lease_until: t0() + Duration::seconds(30),
        }]);
}

#[test]
fn a_second_claim_while_the_lease_is_live_is_rejected() {
    video()
        .given(claimed())
        .when(VideoCommand::ClaimEncoding {
            worker_id: "worker-b".into(),
            attempt: 1,
            lease_secs: 30,
        })
        .then_expect_error(VideoError::LeaseHeld {
            attempt: 1,
            holder: WORKER.into(),
            until: t0() + Duration::seconds(30),
        });
}

#[test]
fn a_claim_on_a_lapsed_lease_is_rejected_until_requeued() {
    at(t0() + Duration::seconds(31))
        .given(claimed())
        .when(VideoCommand::ClaimEncoding {
            worker_id: "worker-b".into(),
            attempt: 1,
            lease_secs: 30,
        })
        .then_expect_error(VideoError::LeaseExpired {
            attempt: 1,
            until: t0() + Duration::seconds(30),
        });
}

#[test]
fn a_claim_for_a_stale_attempt_is_rejected() {
    video()
        .given(queued())
        .when(VideoCommand::ClaimEncoding {
            worker_id: WORKER.into(),
            attempt: 2,
            lease_secs: 30,
        })
        .then_expect_error(VideoError::StaleAttempt { given: 2, current: 1 });
}

#[test]
fn a_claim_with_a_zero_lease_is_rejected() {
    video()
        .given(queued())
        .when(VideoCommand::ClaimEncoding {
            worker_id: WORKER.into(),
            attempt: 1,
            lease_secs: 0,
        })
        .then_expect_error(VideoError::InvalidProgress("lease must be at least 1 second".into()));
}

#[test]
fn a_claim_during_backoff_is_rejected() {
    let mut events = failed_retryable();
    events.push(VideoEvent::EncodingRequeued {
        attempt: 2,
        reason: "object store timeout".into(),
        not_before: t0() + Duration::seconds(10),
    });
    video()
        .given(events)
        .when(VideoCommand::ClaimEncoding {
            worker_id: WORKER.into(),
            attempt: 2,
            lease_secs: 30,
        })
        .then_expect_error(VideoError::BackoffActive {
            attempt: 2,
            until: t0() + Duration::seconds(10),
        });
}

#[test]
fn a_claim_after_backoff_succeeds() {
    let mut events = failed_retryable();
    events.push(VideoEvent::EncodingRequeued {
        attempt: 2,
        reason: "object store timeout".into(),
        not_before: t0() + Duration::seconds(10),
    });
    at(t0() + Duration::seconds(10))
        .given(events)
        .when(VideoCommand::ClaimEncoding {
            worker_id: "worker-b".into(),
            attempt: 2,
            lease_secs: 30,
        })
        .then_expect_events(vec![VideoEvent::EncodingClaimed {
            attempt: 2,
            worker_id: "worker-b".into(),
            lease_until: t0() + Duration::seconds(40),
        }]);
}

#[test]
fn a_claim_before_any_request_is_rejected() {
    video()
        .given(uploaded())
        .when(VideoCommand::ClaimEncoding {
            worker_id: WORKER.into(),
            attempt: 0,
            lease_secs: 30,
        })
        .then_expect_error(VideoError::StaleAttempt { given: 0, current: 0 });
}

// ---- Probe, progress, renditions ----

fn probe() -> SourceProbe {
    SourceProbe {
        duration_ms: 20_000,
        width: 1920,
        height: 1080,
        rotation: 0,
        frame_rate: 30.0,
        variable_frame_rate: false,
        video_codec: Some("h264".into()),
        audio_codec: Some("aac".into()),
    }
}

#[test]
fn the_claim_holder_records_the_probe() {
    video()
        .given(claimed())
        .when(VideoCommand::RecordProbe {
            worker_id: WORKER.into(),
            attempt: 1,
            probe: probe(),
        })
        .then_expect_events(vec![VideoEvent::SourceProbed {
            attempt: 1,
            worker_id: WORKER.into(),
            probe: probe(),
        }]);
}

#[test]
fn a_probe_from_another_worker_is_rejected() {
    video()
        .given(claimed())
        .when(VideoCommand::RecordProbe {
            worker_id: "intruder".into(),
            attempt: 1,
            probe: probe(),
        })
        .then_expect_error(VideoError::NotClaimHolder {
            worker: "intruder".into(),
            attempt: 1,
        });
}

fn progress_cmd(worker: &str, attempt: u32, percent: f64) -> VideoCommand {
    VideoCommand::RecordProgress {
        worker_id: worker.into(),
        attempt,
        stage: EncodeStage::Encode,
        rendition: Some("720p".into()),
        percent,
        fps: Some(120.0),
        eta_seconds: Some(8),
        lease_secs: 30,
    }
}

#[test]
fn progress_from_the_holder_extends_the_lease() {
    at(t0() + Duration::seconds(20))
        .given(claimed())
        .when(progress_cmd(WORKER, 1, 42.5))
        .then_expect_events(vec![VideoEvent::EncodingProgressed {
            attempt: 1,
            worker_id: WORKER.into(),
            stage: EncodeStage::Encode,
            rendition: Some("720p".into()),
            percent: 42.5,
            fps: Some(120.0),
            eta_seconds: Some(8),
            lease_until: t0() + Duration::seconds(50),
        }]);
}

#[test]
fn progress_from_a_worker_without_the_claim_is_rejected() {
    video()
        .given(claimed())
        .when(progress_cmd("worker-b", 1, 10.0))
        .then_expect_error(VideoError::NotClaimHolder {
            worker: "worker-b".into(),
            attempt: 1,
        });
}

#[test]
fn progress_for_a_stale_attempt_is_rejected() {
    let mut events = failed_retryable();
    events.push(VideoEvent::EncodingRequeued {
        attempt: 2,
        reason: "retry".into(),
        not_before: t0(),
    });
    video()
        .given(events)
        .when(progress_cmd(WORKER, 1, 10.0))
        .then_expect_error(VideoError::StaleAttempt { given: 1, current: 2 });
}

#[test]
fn progress_after_the_lease_lapsed_is_rejected() {
    at(t0() + Duration::seconds(31))
        .given(claimed())
        .when(progress_cmd(WORKER, 1, 10.0))
        .then_expect_error(VideoError::LeaseExpired {
            attempt: 1,
            until: t0() + Duration::seconds(30),
        });
}

#[test]
fn progress_above_100_percent_is_rejected() {
    video()
        .given(claimed())
        .when(progress_cmd(WORKER, 1, 100.5))
        .then_expect_error(VideoError::InvalidProgress(
            "percent must be 0 to 100, got 100.5".into(),
        ));
}

#[test]
fn progress_before_any_claim_is_rejected() {
    video()
        .given(queued())
        .when(progress_cmd(WORKER, 1, 10.0))
        .then_expect_error(VideoError::NotClaimHolder {
            worker: WORKER.into(),
            attempt: 1,
        });
}

#[test]
fn the_claim_holder_records_a_rendition() {
    video()
        .given(claimed())
        .when(VideoCommand::RecordRendition {
            worker_id: WORKER.into(),
            attempt: 1,
            rendition: rendition(),
        })
        .then_expect_events(vec![VideoEvent::RenditionEncoded {
            attempt: 1,
            worker_id: WORKER.into(),
            rendition: rendition(),
        }]);
}

#[test]
fn a_rendition_from_another_worker_is_rejected() {
    video()
        .given(claimed())
        .when(VideoCommand::RecordRendition {
            worker_id: "worker-b".into(),
            attempt: 1,
            rendition: rendition(),
        })
        .then_expect_error(VideoError::NotClaimHolder {
            worker: "worker-b".into(),
            attempt: 1,
        });
}

// ---- Complete / fail ----

#[test]
fn the_claim_holder_completes_the_encoding() {
    video()
        .given(with_rendition())
        .when(complete_cmd(WORKER, 1))
        .then_expect_events(vec![completed_event()]);
}

#[test]
fn completion_without_renditions_is_rejected() {
    video()
        .given(claimed())
        .when(complete_cmd(WORKER, 1))
        .then_expect_error(VideoError::NoRenditions);
}

#[test]
fn completion_from_another_worker_is_rejected() {
    video()
        .given(with_rendition())
        .when(complete_cmd("worker-b", 1))
        .then_expect_error(VideoError::NotClaimHolder {
            worker: "worker-b".into(),
            attempt: 1,
        });
}

#[test]
fn completion_for_a_stale_attempt_is_rejected() {
    video()
        .given(with_rendition())
        .when(complete_cmd(WORKER, 7))
        .then_expect_error(VideoError::StaleAttempt { given: 7, current: 1 });
}

#[test]
fn completion_twice_is_rejected() {
    video()
        .given(ready())
        .when(complete_cmd(WORKER, 1))
        .then_expect_error(VideoError::InvalidState {
            action: "report on encoding",
            stage: Stage::Ready,
        });
}

#[test]
fn the_claim_holder_reports_a_failure() {
    video()
        .given(claimed())
        .when(VideoCommand::FailEncoding {
            worker_id: WORKER.into(),
            attempt: 1,
            reason: "object store timeout".into(),
            retryable: true,
        })
        .then_expect_events(vec![VideoEvent::EncodingFailed {
            attempt: 1,
            worker_id: Some(WORKER.into()),
            reason: "object store timeout".into(),
            retryable: true,
        }]);
}

#[test]
fn a_failure_from_another_worker_is_rejected() {
    video()
        .given(claimed())
        .when(VideoCommand::FailEncoding {
            worker_id: "worker-b".into(),
            attempt: 1,
            reason: "x".into(),
            retryable: true,
        })
        .then_expect_error(VideoError::NotClaimHolder {
            worker: "worker-b".into(),
            attempt: 1,
        });
}

// ---- Requeue / give up ----

#[test]
fn a_retryable_failure_is_requeued_with_backoff() {
    video()
        .given(failed_retryable())
        .when(requeue_cmd(1))
        .then_expect_events(vec![VideoEvent::EncodingRequeued {
            attempt: 2,
            reason: "lease expired".into(),
            not_before: t0() + Duration::seconds(10),
        }]);
}

#[test]
fn a_lapsed_lease_is_requeued() {
    at(t0() + Duration::seconds(31))
        .given(claimed())
        .when(requeue_cmd(1))
        .then_expect_events(vec![VideoEvent::EncodingRequeued {
            attempt: 2,
            reason: "lease expired".into(),
            not_before: t0() + Duration::seconds(41),
        }]);
}

#[test]
fn requeue_while_the_lease_is_live_is_rejected() {
    video()
        .given(claimed())
        .when(requeue_cmd(1))
        .then_expect_error(VideoError::LeaseHeld {
            attempt: 1,
            holder: WORKER.into(),
            until: t0() + Duration::seconds(30),
        });
}

#[test]
fn requeue_of_a_stale_attempt_is_rejected() {
    video()
        .given(failed_retryable())
        .when(requeue_cmd(3))
        .then_expect_error(VideoError::StaleAttempt { given: 3, current: 1 });
}

#[test]
fn requeue_of_a_completed_encoding_is_rejected() {
    video()
        .given(ready())
        .when(requeue_cmd(1))
        .then_expect_error(VideoError::InvalidState {
            action: "requeue encoding",
            stage: Stage::Ready,
        });
}

#[test]
fn the_last_attempt_ends_in_a_terminal_failure() {
    let mut events = queued();
    for attempt in 1..=3 {
        if attempt > 1 {
            events.push(VideoEvent::EncodingRequeued {
                attempt,
                reason: "lease expired".into(),
                not_before: t0(),
            });
        }
        events.push(VideoEvent::EncodingClaimed {
            attempt,
            worker_id: WORKER.into(),
            lease_until: t0(),
        });
    }
    at(t0() + Duration::seconds(1))
        .given(events)
        .when(requeue_cmd(3))
        .then_expect_events(vec![VideoEvent::EncodingFailed {
            attempt: 3,
            worker_id: None,
            reason: "gave up after 3 attempts: lease expired".into(),
            retryable: false,
        }]);
}

#[test]
fn backoff_doubles_per_attempt_up_to_the_ceiling() {
    assert_eq!(backoff_secs(1, 10, 300), 10);
    assert_eq!(backoff_secs(2, 10, 300), 20);
    assert_eq!(backoff_secs(3, 10, 300), 40);
    assert_eq!(backoff_secs(9, 10, 300), 300);
    assert_eq!(backoff_secs(200, u32::MAX, u32::MAX), u32::MAX);
}

// ---- Metadata ----

#[test]
fn update_metadata_records_only_changed_fields() {
    video()
        .given(registered())
        .when(VideoCommand::UpdateMetadata {
            title: Some("Big Buck Bunny".into()),
            description: Some("a bigger rabbit".into()),
            tags: None,
        })
        .then_expect_events(vec![VideoEvent::MetadataUpdated {
            title: None,
            description: Some("a bigger rabbit".into()),
            tags: None,
        }]);
}

#[test]
fn update_metadata_with_no_change_records_nothing() {
    video()
        .given(registered())
        .when(VideoCommand::UpdateMetadata {
            title: Some("Big Buck Bunny".into()),
            description: None,
            tags: Some(vec!["animation".into(), "open".into()]),
        })
        .then_expect_events(vec![]);
}

#[test]
fn update_metadata_beyond_limits_is_rejected() {
    video()
        .given(registered())
        .when(VideoCommand::UpdateMetadata {
            title: Some("\u{7}bell".into()),
            description: None,
            tags: None,
        })
        .then_expect_error_message("invalid title: must not contain control characters");
}

// ---- Publish ----

#[test]
fn publish_after_encoding_completes() {
    video()
        .given(ready())
        .when(VideoCommand::Publish)
        .then_expect_events(vec![VideoEvent::VideoPublished {}]);
}

#[test]
fn publish_is_rejected_before_encoding_completes() {
    video()
        .given(claimed())
        .when(VideoCommand::Publish)
        .then_expect_error(VideoError::NotEncoded(Stage::Encoding));
}

fn playable_cmd(worker: &str, attempt: u32) -> VideoCommand {
    VideoCommand::MarkPlayable {
        worker_id: worker.into(),
        attempt,
        manifests: manifests(),
    }
}

fn playable_event() -> VideoEvent {
    VideoEvent::VideoPlayable {
        attempt: 1,
        worker_id: WORKER.into(),
        manifests: manifests(),
    }
}

/// Registered asking for publication as soon as playable, and claimed.
fn claimed_publishing_when_playable() -> Vec<VideoEvent> {
    let mut events = claimed();
    if let Some(VideoEvent::VideoRegistered {
        publish_when_playable, ..
    }) = events.first_mut()
    {
        *publish_when_playable = true;
    }
    events
}

#[test]
fn the_claim_holder_marks_the_attempt_playable_once_and_publish_is_allowed_from_then() {
    video()
        .given(claimed())
        .when(playable_cmd(WORKER, 1))
        .then_expect_events(vec![playable_event()]);
    let mut events = claimed();
    events.push(playable_event());
    video()
        .given(events.clone())
        .when(playable_cmd(WORKER, 1))
        .then_expect_events(vec![]);
    video()
        .given(events.clone())
        .when(VideoCommand::Publish)
        .then_expect_events(vec![VideoEvent::VideoPublished {}]);
    events.push(VideoEvent::VideoPublished {});
    video()
        .given(events)
        .when(VideoCommand::Publish)
        .then_expect_events(vec![]);
}

#[test]
fn only_the_claim_holder_marks_playable() {
    video()
        .given(claimed())
        .when(playable_cmd("worker-b", 1))
        .then_expect_error(VideoError::NotClaimHolder {
            worker: "worker-b".into(),
            attempt: 1,
        });
    video()
        .given(uploaded())
        .when(playable_cmd(WORKER, 1))
        .then_expect_error(VideoError::StaleAttempt { given: 1, current: 0 });
}

#[test]
fn a_failed_attempt_is_no_longer_playable_nor_is_the_next_one() {
    let mut events = claimed();
    events.push(playable_event());
    events.push(VideoEvent::EncodingFailed {
        attempt: 1,
        worker_id: Some(WORKER.into()),
        reason: "lost".into(),
        retryable: true,
    });
    events.push(VideoEvent::EncodingRequeued {
        attempt: 2,
        reason: "lost".into(),
        not_before: t0(),
    });
    events.push(VideoEvent::EncodingClaimed {
        attempt: 2,
        worker_id: WORKER.into(),
        lease_until: t0() + Duration::seconds(30),
    });
    video()
        .given(events)
        .when(VideoCommand::Publish)
        .then_expect_error(VideoError::NotEncoded(Stage::Encoding));
}

#[test]
fn asked_at_registration_the_video_publishes_itself_when_playable_once() {
    let mut cmd = register_cmd();
    if let VideoCommand::Register {
        publish_when_playable, ..
    } = &mut cmd
    {
        *publish_when_playable = true;
    }
    let mut expected = registered();
    if let Some(VideoEvent::VideoRegistered {
        publish_when_playable, ..
    }) = expected.first_mut()
    {
        *publish_when_playable = true;
    }
    video()
        .given_no_previous_events()
        .when(cmd)
        .then_expect_events(expected);
    video()
        .given(claimed_publishing_when_playable())
        .when(playable_cmd(WORKER, 1))
        .then_expect_events(vec![playable_event(), VideoEvent::VideoPublished {}]);
    // Published at playable: the completion does not publish again.
    let mut events = claimed_publishing_when_playable();
    events.extend([playable_event(), VideoEvent::VideoPublished {}]);
    events.push(rendition_encoded());
    video()
        .given(events.clone())
        .when(complete_cmd(WORKER, 1))
        .then_expect_events(vec![completed_event()]);
    // Unpublished by the owner meanwhile: it stays unpublished.
    events.push(VideoEvent::VideoUnpublished {});
    video()
        .given(events)
        .when(complete_cmd(WORKER, 1))
        .then_expect_events(vec![completed_event()]);
    // Never playable before the end: the completion publishes.
    let mut events = claimed_publishing_when_playable();
    events.push(rendition_encoded());
    video()
        .given(events)
        .when(complete_cmd(WORKER, 1))
        .then_expect_events(vec![completed_event(), VideoEvent::VideoPublished {}]);
}

#[test]
fn publish_twice_changes_nothing() {
    let mut events = ready();
    events.push(VideoEvent::VideoPublished {});
    video()
        .given(events)
        .when(VideoCommand::Publish)
        .then_expect_events(vec![]);
}

#[test]
fn unpublish_a_published_video() {
    let mut events = ready();
    events.push(VideoEvent::VideoPublished {});
    video()
        .given(events)
        .when(VideoCommand::Unpublish)
        .then_expect_events(vec![VideoEvent::VideoUnpublished {}]);
}

#[test]
fn unpublish_an_unpublished_video_changes_nothing() {
    video()
        .given(ready())
        .when(VideoCommand::Unpublish)
        .then_expect_events(vec![]);
}

// ---- Delete ----

#[test]
fn delete_records_the_deletion() {
    video()
        .given(claimed())
        .when(VideoCommand::Delete {
            reason: Some("duplicate".into()),
        })
        .then_expect_events(vec![VideoEvent::VideoDeleted {
            reason: Some("duplicate".into()),
        }]);
}

#[test]
fn every_command_after_delete_is_rejected() {
    let commands = vec![
        register_cmd(),
        VideoCommand::CompleteUpload {
            object_key: "k".into(),
            size_bytes: 1000,
            checksum: None,
        },
        VideoCommand::RequestEncoding,
        VideoCommand::RetryEncoding,
        VideoCommand::ClaimEncoding {
            worker_id: WORKER.into(),
            attempt: 1,
            lease_secs: 30,
        },
        progress_cmd(WORKER, 1, 1.0),
        complete_cmd(WORKER, 1),
        requeue_cmd(1),
        VideoCommand::UpdateMetadata {
            title: Some("new".into()),
            description: None,
            tags: None,
        },
        VideoCommand::Publish,
        VideoCommand::Unpublish,
        VideoCommand::Delete { reason: None },
    ];
    for command in commands {
        video()
            .given(deleted())
            .when(command)
            .then_expect_error(VideoError::Deleted);
    }
}

// ---- State ----

#[test]
fn applying_the_whole_lifecycle_gives_a_published_ready_video() {
    let mut video = Video::default();
    let mut events = ready();
    events.push(VideoEvent::VideoPublished {});
    for event in events {
        cqrs_es::Aggregate::apply(&mut video, event);
    }
    assert_eq!(video.stage, Stage::Ready);
    assert!(video.published);
    assert_eq!(video.renditions.len(), 1);
    assert!(video.claim.is_none());
}

#[test]
fn event_type_names_match_the_serialized_tag() {
    let chunked = [chunk_claimed(1, WORKER, t0()), chunk_encoded(1, WORKER)];
    for event in ready().into_iter().chain(deleted()).chain(planned()).chain(chunked) {
        let json = serde_json::to_value(&event).expect("serializes");
        let tag = json
            .as_object()
            .and_then(|o| o.keys().next().cloned())
            .expect("externally tagged");
        assert_eq!(tag, event.type_name());
        assert!(VideoEvent::TYPES.contains(&event.type_name()));
    }
}

#[test]
fn failure_reasons_lose_their_server_paths() {
    use crate::redact_paths;
    assert_eq!(
        redact_paths("/var/lib/vodsource/work/abc-1-w/source: No such file or directory"),
        "source: No such file or directory"
    );
    assert_eq!(
        redact_paths("uploading media/v/1/720p/seg.m4s: object store folder /data/objects/.incoming/x: disk full"),
        "uploading media/v/1/720p/seg.m4s: object store folder x: disk full"
    );
    assert_eq!(
        redact_paths("cannot open \"/tmp/scratch/v-1/out/360p/init.mp4\"."),
        "cannot open \"init.mp4\"."
    );
    for kept in ["content type video/mp4 is fine", "ratio 16/9", "a / b", "no paths here"] {
        assert_eq!(redact_paths(kept), kept);
    }
}

/// One rule for a declared content type, here and in the API (which publishes its pattern):
/// the type's name in any case, a subtype of token characters, parameters without control
/// characters.
#[test]
fn content_types_follow_the_one_published_rule() {
    for good in [
        "video/mp4",
        "VIDEO/MP4",
        "Video/x-matroska",
        "video/mp4; codecs=\"avc1.64001f\"",
    ] {
        assert!(is_video_type(good), "{good}");
        assert_eq!(crate::values::validate_content_type(good), Ok(()), "{good}");
    }
    for bad in [
        "video/",
        "video",
        "video/mp4/x",
        "video/ mp4",
        "video/mp4;\u{7}",
        "audio/mp4",
        "videos/mp4",
    ] {
        assert!(!is_video_type(bad), "{bad}");
        assert!(crate::values::validate_content_type(bad).is_err(), "{bad}");
    }
}

// Chunked attempts.

fn two_runs_and_audio() -> Vec<ChunkSpan> {
    vec![
        ChunkSpan::Audio,
        ChunkSpan::Frames {
            from: 0,
            to: Some(1800),
        },
        ChunkSpan::Frames { from: 1800, to: None },
    ]
}

fn probed() -> Vec<VideoEvent> {
    let mut events = claimed();
    events.push(VideoEvent::SourceProbed {
        attempt: 1,
        worker_id: WORKER.into(),
        probe: probe(),
    });
    events
}

fn planned() -> Vec<VideoEvent> {
    let mut events = probed();
    events.push(VideoEvent::EncodingPlanned {
        attempt: 1,
        worker_id: WORKER.into(),
        chunks: two_runs_and_audio(),
    });
    events
}

fn chunk_claimed(chunk: u32, worker: &str, lease_until: DateTime<Utc>) -> VideoEvent {
    VideoEvent::ChunkClaimed {
        attempt: 1,
        chunk,
        worker_id: worker.into(),
        lease_until,
    }
}

fn chunk_output() -> ChunkOutput {
    ChunkOutput {
        tracks: vec![ChunkTrack {
            name: "720p".into(),
            codecs: "avc1.64001f".into(),
            width: 1280,
            height: 720,
            bitrate_bps: 2_800_000,
            timescale: 15_360,
            first_segment: 1,
            segments: vec![ChunkSegment {
                duration: 4.0,
                bytes: 1000,
            }],
        }],
        sprites: vec![],
        poster: None,
        cost: EncodingCost {
            cpu_seconds: 2.0,
            wall_seconds: 1.0,
            bytes_out: 1000,
        },
    }
}

fn chunk_encoded(chunk: u32, worker: &str) -> VideoEvent {
    VideoEvent::ChunkEncoded {
        attempt: 1,
        chunk,
        worker_id: worker.into(),
        output: chunk_output(),
    }
}

fn claim_chunk(chunk: u32, worker: &str) -> VideoCommand {
    VideoCommand::ClaimChunk {
        worker_id: worker.into(),
        attempt: 1,
        chunk,
        lease_secs: 30,
    }
}

fn evolved(events: Vec<VideoEvent>) -> Video {
    let mut video = Video::default();
    for event in events {
        cqrs_es::Aggregate::apply(&mut video, event);
    }
    video
}

#[test]
fn the_claim_holder_plans_chunks_once_after_the_probe() {
    video()
        .given(probed())
        .when(VideoCommand::PlanChunks {
            worker_id: WORKER.into(),
            attempt: 1,
            chunks: two_runs_and_audio(),
        })
        .then_expect_events(vec![VideoEvent::EncodingPlanned {
            attempt: 1,
            worker_id: WORKER.into(),
            chunks: two_runs_and_audio(),
        }]);
    video()
        .given(claimed())
        .when(VideoCommand::PlanChunks {
            worker_id: WORKER.into(),
            attempt: 1,
            chunks: two_runs_and_audio(),
        })
        .then_expect_error(VideoError::InvalidPlan("the source is not probed yet".into()));
    video()
        .given(planned())
        .when(VideoCommand::PlanChunks {
            worker_id: WORKER.into(),
            attempt: 1,
            chunks: two_runs_and_audio(),
        })
        .then_expect_error(VideoError::InvalidPlan("attempt 1 is already planned".into()));
    video()
        .given(probed())
        .when(VideoCommand::PlanChunks {
            worker_id: "worker-b".into(),
            attempt: 1,
            chunks: two_runs_and_audio(),
        })
        .then_expect_error(VideoError::NotClaimHolder {
            worker: "worker-b".into(),
            attempt: 1,
        });
}

#[test]
fn a_plan_must_cover_the_source_once_in_order() {
    let frames = |from, to| ChunkSpan::Frames { from, to };
    for (chunks, reason) in [
        (vec![], "no run of frames"),
        (vec![ChunkSpan::Audio], "no run of frames"),
        (
            vec![frames(0, Some(10))],
            "the last run ends at frame 10, not at the end",
        ),
        (vec![frames(5, None)], "a run starts at frame 5, not at 0"),
        (
            vec![frames(0, Some(10)), frames(12, None)],
            "a run starts at frame 12, not at 10",
        ),
        (
            vec![frames(0, None), frames(0, None)],
            "a run starts at frame 0 after the run to the end",
        ),
        (
            vec![frames(0, Some(0)), frames(0, None)],
            "the run from frame 0 ends at Some(0)",
        ),
        (
            vec![ChunkSpan::Audio, frames(0, None), ChunkSpan::Audio],
            "the audio is planned more than once",
        ),
    ] {
        assert_eq!(
            crate::values::validate_chunk_plan(&chunks),
            Err(VideoError::InvalidPlan(reason.into())),
            "{chunks:?}"
        );
    }
    let many: Vec<ChunkSpan> = (0..=MAX_CHUNKS as u64)
        .map(|i| frames(i, (i < MAX_CHUNKS as u64).then_some(i + 1)))
        .collect();
    assert!(
        crate::values::validate_chunk_plan(&many).is_err(),
        "more than MAX_CHUNKS"
    );
}

#[test]
fn any_worker_claims_a_free_chunk_and_its_lease_extends_the_attempts() {
    let later = t0() + Duration::seconds(20);
    at(later)
        .given(planned())
        .when(claim_chunk(2, "worker-b"))
        .then_expect_events(vec![chunk_claimed(2, "worker-b", later + Duration::seconds(30))]);
    let mut events = planned();
    events.push(chunk_claimed(2, "worker-b", later + Duration::seconds(30)));
    let state = evolved(events);
    assert_eq!(
        state.claim.as_ref().map(|c| c.lease_until),
        Some(later + Duration::seconds(30)),
        "the attempt lives as long as its chunks"
    );
    assert_eq!(state.claimable_chunk("worker-c", later), Some(0));
}

#[test]
fn a_held_chunk_is_refused_to_others_until_its_lease_lapses_and_then_only_it_is_free() {
    let mut events = planned();
    events.push(chunk_claimed(0, WORKER, t0() + Duration::seconds(30)));
    events.push(chunk_encoded(0, WORKER));
    events.push(chunk_claimed(1, "worker-b", t0() + Duration::seconds(10)));
    events.push(chunk_claimed(2, "worker-c", t0() + Duration::seconds(30)));
    video()
        .given(events.clone())
        .when(claim_chunk(1, "worker-c"))
        .then_expect_error(VideoError::Chunk {
            attempt: 1,
            chunk: 1,
            reason: format!("claimed by worker-b until {}", t0() + Duration::seconds(10)),
        });
    video()
        .given(events.clone())
        .when(claim_chunk(0, "worker-c"))
        .then_expect_error(VideoError::Chunk {
            attempt: 1,
            chunk: 0,
            reason: "already written".into(),
        });
    let lapsed = t0() + Duration::seconds(11);
    assert_eq!(evolved(events.clone()).claimable_chunk("worker-d", t0()), None);
    assert_eq!(evolved(events.clone()).claimable_chunk("worker-d", lapsed), Some(1));
    at(lapsed)
        .given(events.clone())
        .when(claim_chunk(1, "worker-c"))
        .then_expect_events(vec![chunk_claimed(1, "worker-c", lapsed + Duration::seconds(30))]);
    // The lapsed holder can no longer record the chunk.
    at(lapsed)
        .given(events)
        .when(VideoCommand::CompleteChunk {
            worker_id: "worker-b".into(),
            attempt: 1,
            chunk: 1,
            output: chunk_output(),
        })
        .then_expect_error(VideoError::Chunk {
            attempt: 1,
            chunk: 1,
            reason: format!("the lease lapsed at {}", t0() + Duration::seconds(10)),
        });
}

#[test]
fn only_a_chunks_holder_releases_it_and_then_any_worker_claims_it_before_the_lease_would_lapse() {
    let release = |chunk: u32, worker: &str| VideoCommand::ReleaseChunk {
        worker_id: worker.into(),
        attempt: 1,
        chunk,
        reason: "the worker is shutting down".into(),
    };
    let mut events = planned();
    events.push(chunk_claimed(0, WORKER, t0() + Duration::seconds(30)));
    events.push(chunk_encoded(0, WORKER));
    events.push(chunk_claimed(1, "worker-b", t0() + Duration::seconds(3600)));
    video()
        .given(events.clone())
        .when(release(1, "worker-c"))
        .then_expect_error(VideoError::Chunk {
            attempt: 1,
            chunk: 1,
            reason: "worker-c does not hold it".into(),
        });
    video()
        .given(events.clone())
        .when(release(2, "worker-b"))
        .then_expect_error(VideoError::Chunk {
            attempt: 1,
            chunk: 2,
            reason: "worker-b does not hold it".into(),
        });
    video()
        .given(events.clone())
        .when(release(0, WORKER))
        .then_expect_error(VideoError::Chunk {
            attempt: 1,
            chunk: 0,
            reason: "already written".into(),
        });
    let released = VideoEvent::ChunkReleased {
        attempt: 1,
        chunk: 1,
        worker_id: "worker-b".into(),
        reason: "the worker is shutting down".into(),
    };
    video()
        .given(events.clone())
        .when(release(1, "worker-b"))
        .then_expect_events(vec![released.clone()]);
    assert_eq!(evolved(events.clone()).claimable_chunk("worker-c", t0()), Some(2));
    events.push(chunk_claimed(2, "worker-c", t0() + Duration::seconds(30)));
    events.push(released);
    // Free at once, an hour before its lease would have lapsed.
    assert_eq!(evolved(events.clone()).claimable_chunk("worker-d", t0()), Some(1));
    video()
        .given(events)
        .when(claim_chunk(1, "worker-d"))
        .then_expect_events(vec![chunk_claimed(1, "worker-d", t0() + Duration::seconds(30))]);
}

#[test]
fn only_a_chunks_holder_records_it_once_and_the_attempt_completes_only_when_all_are_written() {
    let mut events = planned();
    events.push(chunk_claimed(1, "worker-b", t0() + Duration::seconds(30)));
    video()
        .given(events.clone())
        .when(VideoCommand::CompleteChunk {
            worker_id: "worker-c".into(),
            attempt: 1,
            chunk: 1,
            output: chunk_output(),
        })
        .then_expect_error(VideoError::Chunk {
            attempt: 1,
            chunk: 1,
            reason: "worker-c does not hold it".into(),
        });
    video()
        .given(events.clone())
        .when(VideoCommand::CompleteChunk {
            worker_id: "worker-b".into(),
            attempt: 1,
            chunk: 1,
            output: chunk_output(),
        })
        .then_expect_events(vec![chunk_encoded(1, "worker-b")]);
    events.push(chunk_encoded(1, "worker-b"));
    events.push(rendition_encoded_by("worker-b"));
    // A worker that took part may complete, but not before every chunk is written.
    video()
        .given(events.clone())
        .when(complete_cmd("worker-b", 1))
        .then_expect_error(VideoError::Chunk {
            attempt: 1,
            chunk: 0,
            reason: "not written yet: the attempt cannot complete".into(),
        });
    for chunk in [0, 2] {
        events.push(chunk_claimed(chunk, WORKER, t0() + Duration::seconds(30)));
        events.push(chunk_encoded(chunk, WORKER));
    }
    let mut completed = completed_event();
    if let VideoEvent::EncodingCompleted { worker_id, .. } = &mut completed {
        *worker_id = "worker-b".into();
    }
    video()
        .given(events.clone())
        .when(complete_cmd("worker-b", 1))
        .then_expect_events(vec![completed]);
    // A worker that took no part may not.
    video()
        .given(events)
        .when(complete_cmd("worker-z", 1))
        .then_expect_error(VideoError::NotClaimHolder {
            worker: "worker-z".into(),
            attempt: 1,
        });
}

#[test]
fn a_chunk_holders_progress_extends_its_chunk_and_the_attempt() {
    let mut events = planned();
    events.push(chunk_claimed(1, "worker-b", t0() + Duration::seconds(30)));
    let later = t0() + Duration::seconds(25);
    at(later)
        .given(events.clone())
        .when(VideoCommand::RecordProgress {
            worker_id: "worker-b".into(),
            attempt: 1,
            stage: EncodeStage::Encode,
            rendition: None,
            percent: 50.0,
            fps: None,
            eta_seconds: None,
            lease_secs: 30,
        })
        .then_expect_events(vec![VideoEvent::EncodingProgressed {
            attempt: 1,
            worker_id: "worker-b".into(),
            stage: EncodeStage::Encode,
            rendition: None,
            percent: 50.0,
            fps: None,
            eta_seconds: None,
            lease_until: later + Duration::seconds(30),
        }]);
    events.push(VideoEvent::EncodingProgressed {
        attempt: 1,
        worker_id: "worker-b".into(),
        stage: EncodeStage::Encode,
        rendition: None,
        percent: 50.0,
        fps: None,
        eta_seconds: None,
        lease_until: later + Duration::seconds(30),
    });
    let state = evolved(events);
    assert_eq!(
        state.chunks[1].claim.as_ref().map(|c| c.lease_until),
        Some(later + Duration::seconds(30))
    );
    assert_eq!(
        state.claim.as_ref().map(|c| c.lease_until),
        Some(later + Duration::seconds(30))
    );
    assert_eq!(
        state.chunks[2].claim, None,
        "another chunk is not extended by a worker that does not hold it"
    );
}

#[test]
fn a_split_attempt_is_never_requeued_whole_and_a_worker_that_lost_its_chunk_cannot_report() {
    let mut events = planned();
    events.push(chunk_claimed(1, "worker-b", t0() + Duration::seconds(10)));
    // Every lease long lapsed: the chunks wait for a worker, the attempt is not redone.
    at(t0() + Duration::seconds(600))
        .given(events.clone())
        .when(requeue_cmd(1))
        .then_expect_error(VideoError::InvalidState {
            action: "requeue an attempt split into chunks",
            stage: Stage::Encoding,
        });
    events.push(chunk_claimed(1, "worker-c", t0() + Duration::seconds(60)));
    let progress = |worker: &str| VideoCommand::RecordProgress {
        worker_id: worker.into(),
        attempt: 1,
        stage: EncodeStage::Encode,
        rendition: None,
        percent: 10.0,
        fps: None,
        eta_seconds: None,
        lease_secs: 30,
    };
    at(t0() + Duration::seconds(20))
        .given(events)
        .when(progress("worker-b"))
        .then_expect_error(VideoError::NotClaimHolder {
            worker: "worker-b".into(),
            attempt: 1,
        });
}

#[test]
fn a_split_attempt_written_but_never_completed_lapses_like_any_other() {
    let mut events = planned();
    for chunk in 0..3 {
        events.push(chunk_claimed(chunk, WORKER, t0() + Duration::seconds(30)));
        events.push(chunk_encoded(chunk, WORKER));
    }
    at(t0() + Duration::seconds(20))
        .given(events.clone())
        .when(requeue_cmd(1))
        .then_expect_error(VideoError::LeaseHeld {
            attempt: 1,
            holder: WORKER.into(),
            until: t0() + Duration::seconds(30),
        });
    at(t0() + Duration::seconds(31))
        .given(events)
        .when(requeue_cmd(1))
        .then_expect_events(vec![VideoEvent::EncodingRequeued {
            attempt: 2,
            reason: "lease expired".into(),
            not_before: t0() + Duration::seconds(31 + 10),
        }]);
}

#[test]
fn a_new_attempt_starts_without_chunks() {
    let mut events = planned();
    events.push(VideoEvent::EncodingFailed {
        attempt: 1,
        worker_id: None,
        reason: "lapsed".into(),
        retryable: true,
    });
    events.push(VideoEvent::EncodingRequeued {
        attempt: 2,
        reason: "lapsed".into(),
        not_before: t0(),
    });
    let state = evolved(events);
    assert!(state.chunks.is_empty());
    assert_eq!(state.claimable_chunk(WORKER, t0()), None);
}

fn rendition_encoded_by(worker: &str) -> VideoEvent {
    VideoEvent::RenditionEncoded {
        attempt: 1,
        worker_id: worker.into(),
        rendition: rendition(),
    }
}
