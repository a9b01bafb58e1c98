//! Viewers' watch state: where each viewer is in each video (resume positions) and the
//! "continue watching" list, newest first, as the `watch-state` consumer group keeps them.
//! A viewer sees their own; an admin anyone's.

use vodsource_projections::{viewer_partition, WATCH_STATE};
use vodsource_qoe::WatchState;

use crate::error::AppError;
use crate::listing::{decode_cursor, encode_cursor};
use crate::principal::{Principal, Role};
use crate::Core;

/// Longest viewer id, in characters.
pub const MAX_VIEWER_ID_CHARS: usize = 128;

/// A page of videos to continue.
#[derive(Debug, Clone, PartialEq)]
pub struct ContinuePage {
    /// Unfinished videos, most recently watched first.
    pub items: Vec<WatchState>,
    /// Where the next page starts, when there may be one.
    pub next_cursor: Option<String>,
}

/// The queries of viewers.
pub struct Viewers<'a> {
    core: &'a Core,
}

impl<'a> Viewers<'a> {
    pub(crate) fn new(core: &'a Core) -> Self {
        Self { core }
    }

    /// The viewer's unfinished videos. A page may hold fewer than `limit` items (finished
    /// videos are skipped); follow `next_cursor` until it is `None`.
    ///
    /// # Errors
    /// VALIDATION_FAILED, FORBIDDEN, UNAVAILABLE.
    pub async fn continue_watching(
        &self,
        principal: &Principal,
        viewer_id: &str,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<ContinuePage, AppError> {
        check(principal, viewer_id)?;
        if !(1..=100).contains(&limit) {
            return Err(AppError::invalid("limit", "must be 1 to 100"));
        }
        let before = cursor.map(decode_cursor).transpose()?;
        let page = self
            .core
            .ports
            .views
            .query(WATCH_STATE, &viewer_partition(viewer_id), before.as_ref(), limit)
            .await
            .map_err(|e| AppError::store("listing watch state", &e))?;
        let next_cursor = (page.len() == limit)
            .then(|| page.last().map(|entry| encode_cursor(&entry.cursor())))
            .flatten();
        let mut items = Vec::with_capacity(page.len());
        for entry in page {
            let state = parse(&entry.doc.body)?;
            if !state.completed {
                items.push(state);
            }
        }
        Ok(ContinuePage { items, next_cursor })
    }

    /// Where the viewer is in one video.
    ///
    /// # Errors
    /// NOT_FOUND before the viewer's first event about it; VALIDATION_FAILED, FORBIDDEN,
    /// UNAVAILABLE.
    pub async fn watch_state(
        &self,
        principal: &Principal,
        viewer_id: &str,
        video_id: &str,
    ) -> Result<WatchState, AppError> {
        check(principal, viewer_id)?;
        let key = WatchState::key(viewer_id, video_id);
        let doc = self
            .core
            .ports
            .views
            .get(WATCH_STATE, &key)
            .await
            .map_err(|e| AppError::store("reading watch state", &e))?;
        match doc {
            Some(doc) => parse(&doc.body),
            None => Err(AppError::new(
                crate::ErrorKind::NotFound,
                "NOT_FOUND",
                format!("no watch state of {viewer_id:?} in {video_id:?}"),
                serde_json::Value::Null,
            )),
        }
    }
}

fn check(principal: &Principal, viewer_id: &str) -> Result<(), AppError> {
    if viewer_id.is_empty() || viewer_id.chars().count() > MAX_VIEWER_ID_CHARS {
        return Err(AppError::invalid(
            "viewer_id",
            format!("must be 1 to {MAX_VIEWER_ID_CHARS} characters"),
        ));
    }
    if principal.subject == viewer_id || principal.role == Role::Admin {
        Ok(())
    } else {
        Err(AppError::forbidden("viewers see their own watch state only"))
    }
}

fn parse(text: &str) -> Result<WatchState, AppError> {
    serde_json::from_str(text).map_err(|e| AppError::internal("reading a watch state", &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn viewers_reach_their_own_watch_state_and_admins_anyones() {
        let who = |subject: &str, role| Principal::new(subject, role);
        assert!(check(&who("ann", Role::Viewer), "ann").is_ok());
        let refused = check(&who("bob", Role::Creator), "ann").err().map(|e| e.code);
        assert_eq!(refused.as_deref(), Some("FORBIDDEN"));
        assert!(check(&who("root", Role::Admin), "ann").is_ok());
        for bad in [String::new(), "x".repeat(MAX_VIEWER_ID_CHARS + 1)] {
            assert_eq!(
                check(&who(&bad, Role::Viewer), &bad).err().map(|e| e.code).as_deref(),
                Some("VALIDATION_FAILED")
            );
        }
    }
}
