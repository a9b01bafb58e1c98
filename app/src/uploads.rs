//! One upload of a video's source at a time, in this process: the embedded upload endpoint
//! holds a video's turn while it writes, and recording the upload waits for it (it would
//! record bytes about to be replaced).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::AppError;

/// Videos whose source this process is writing (a local upload) or recording.
#[derive(Debug, Clone, Default)]
pub struct Uploads(Arc<Mutex<HashSet<String>>>);

/// The right to write or record one video's source, until dropped.
pub struct UploadTurn {
    uploads: Uploads,
    video: String,
}

impl Uploads {
    /// Takes `video`'s turn.
    ///
    /// # Errors
    /// UPLOAD_IN_PROGRESS (409) while another request holds it.
    pub fn begin(&self, video: &str) -> Result<UploadTurn, AppError> {
        let mut busy = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if !busy.insert(video.to_owned()) {
            return Err(AppError::conflict(
                "UPLOAD_IN_PROGRESS",
                "another upload of this video's source is in progress; wait for it to end",
                serde_json::json!({ "video_id": video }),
            ));
        }
        Ok(UploadTurn {
            uploads: self.clone(),
            video: video.to_owned(),
        })
    }
}

impl Drop for UploadTurn {
    fn drop(&mut self) {
        self.uploads
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.video);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_upload_per_video_at_a_time() {
        let uploads = Uploads::default();
        let turn = uploads.begin("v1").expect("first");
        assert_eq!(
            uploads.begin("v1").err().map(|e| e.code),
            Some("UPLOAD_IN_PROGRESS".to_owned())
        );
        assert!(uploads.begin("v2").is_ok());
        drop(turn);
        assert!(uploads.begin("v1").is_ok());
    }
}
