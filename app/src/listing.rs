//! The catalog listing: which secondary-index partition answers a filter, what else the
//! filter checks, who sees what, and paging through the partition with opaque cursors.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use vodsource_projections::{CatalogProjector, CatalogView, IndexCursor, ViewStore, CATALOG_ALL};

use crate::error::AppError;
use crate::principal::{Principal, Role};
use crate::status::VideoStatus;

/// Partitions read at most per request: past them a page may come back short, with a cursor.
const ROUNDS: usize = 10;

/// What `GET /videos` asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatalogFilter {
    /// Lifecycle status.
    pub status: Option<VideoStatus>,
    /// Published or not.
    pub published: Option<bool>,
    /// Carries this tag (any case).
    pub tag: Option<String>,
    /// Owned by this subject.
    pub owner: Option<String>,
}

impl CatalogFilter {
    /// The filter as `principal` may apply it: admins and owners listing their own videos
    /// see everything; everyone else sees published videos only. `None` when the filter
    /// asks for what the principal cannot see.
    pub fn for_principal(mut self, principal: &Principal) -> Option<Self> {
        self.tag = self.tag.map(|t| t.to_lowercase());
        let own = principal.role == Role::Admin || self.owner.as_deref() == Some(principal.subject.as_str());
        if own {
            return Some(self);
        }
        match self.published {
            Some(false) => None,
            _ => {
                self.published = Some(true);
                Some(self)
            }
        }
    }

    /// The most selective partition the filter names.
    pub fn partition(&self) -> String {
        match (&self.owner, &self.tag, self.status, self.published) {
            (Some(owner), ..) => format!("owner:{owner}"),
            (None, Some(tag), ..) => format!("tag:{tag}"),
            (None, None, Some(status), _) => format!("status:{}", status.as_str()),
            (None, None, None, Some(published)) => format!("published:{published}"),
            (None, None, None, None) => CATALOG_ALL.to_owned(),
        }
    }

    /// Whether a video matches every part of the filter.
    pub fn keeps(&self, v: &CatalogView) -> bool {
        self.status.is_none_or(|s| VideoStatus::from_stage(v.status) == s)
            && self.published.is_none_or(|p| v.published == p)
            && self.owner.as_deref().is_none_or(|o| v.owner == o)
            && self
                .tag
                .as_deref()
                .is_none_or(|t| v.tags.iter().any(|x| x.to_lowercase() == t))
    }
}

/// The opaque form of a place in a partition.
pub fn encode_cursor(cursor: &IndexCursor) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}\n{}", cursor.sort, cursor.key))
}

/// The place a cursor names. Any string of the cursor's form ([`CURSOR_PATTERN`], at most
/// [`MAX_CURSOR_CHARS`]) names a place in the listing — one this API returned, or another:
/// the page simply starts after it.
///
/// # Errors
/// VALIDATION_FAILED for a string that is not of the form.
pub fn decode_cursor(cursor: &str) -> Result<IndexCursor, AppError> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        GeneralPurposeConfig::new()
            .with_encode_padding(false)
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::RequireNone),
    );
    if cursor.len() > MAX_CURSOR_CHARS {
        return Err(AppError::invalid(
            "cursor",
            format!("a cursor is at most {MAX_CURSOR_CHARS} characters"),
        ));
    }
    let bytes = LENIENT
        .decode(cursor)
        .map_err(|_| AppError::invalid("cursor", "a cursor is base64url without padding, as next_cursor is"))?;
    let text = String::from_utf8_lossy(&bytes);
    let (sort, key) = text.split_once('\n').unwrap_or((&text, ""));
    Ok(IndexCursor {
        sort: sort.to_owned(),
        key: key.to_owned(),
    })
}

/// Longest cursor.
pub const MAX_CURSOR_CHARS: usize = 1024;

/// The form of a cursor (base64url, no padding), for the OpenAPI document.
pub const CURSOR_PATTERN: &str = "^([A-Za-z0-9_-]{4})*([A-Za-z0-9_-]{2,3})?$";

/// One page of the catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct CatalogPage {
    /// The videos, newest first.
    pub items: Vec<CatalogView>,
    /// Where the next page starts, when there is one.
    pub next_cursor: Option<String>,
}

/// One page of the catalog, newest first, starting after `cursor`.
///
/// # Errors
/// A bad cursor; the view store's errors.
pub async fn page(
    views: &dyn ViewStore,
    filter: &CatalogFilter,
    cursor: Option<&str>,
    limit: usize,
) -> Result<CatalogPage, AppError> {
    let partition = filter.partition();
    let mut before = cursor.map(decode_cursor).transpose()?;
    let mut items = Vec::with_capacity(limit);
    let mut next_cursor = None;
    let mut last_included: Option<IndexCursor> = None;
    let fetch = (limit + 1).max(20);
    'pages: for round in 0..ROUNDS {
        let page = views
            .query(CatalogProjector::NAME, &partition, before.as_ref(), fetch)
            .await
            .map_err(|e| AppError::store("listing the catalog", &e))?;
        let exhausted = page.len() < fetch;
        for entry in page {
            let view: CatalogView =
                serde_json::from_str(&entry.doc.body).map_err(|e| AppError::internal("a catalog document", &e))?;
            if filter.keeps(&view) {
                if items.len() == limit {
                    // One more exists: the next page starts after the last one given.
                    next_cursor = last_included.as_ref().map(encode_cursor);
                    break 'pages;
                }
                last_included = Some(entry.cursor());
                items.push(view);
            }
            before = Some(entry.cursor());
        }
        if exhausted {
            break;
        }
        if round + 1 == ROUNDS {
            // The filters skipped many documents: hand back where the scan stopped.
            next_cursor = before.as_ref().map(encode_cursor);
        }
    }
    Ok(CatalogPage { items, next_cursor })
}

#[cfg(test)]
mod tests {
    use super::*;

    use Principal as P;

    #[test]
    fn others_see_published_videos_only() {
        let everything = CatalogFilter::default();
        let viewer = P::new("v", Role::Viewer);
        let narrowed = everything.clone().for_principal(&viewer).unwrap_or_default();
        assert_eq!(narrowed.published, Some(true));
        assert_eq!(narrowed.partition(), "published:true");
        let unpublished = CatalogFilter {
            published: Some(false),
            ..CatalogFilter::default()
        };
        assert_eq!(unpublished.clone().for_principal(&viewer), None);
        let admin = P::new("a", Role::Admin);
        assert_eq!(everything.clone().for_principal(&admin), Some(everything));
        let own = CatalogFilter {
            owner: Some("c".into()),
            published: Some(false),
            ..CatalogFilter::default()
        };
        assert_eq!(
            own.clone().for_principal(&P::new("c", Role::Creator)),
            Some(own.clone())
        );
        assert_eq!(own.for_principal(&P::new("d", Role::Creator)), None);
    }

    #[test]
    fn the_most_selective_partition_is_read_and_the_rest_filtered() {
        let filter = CatalogFilter {
            status: Some(VideoStatus::Ready),
            published: Some(true),
            tag: Some("Music".into()),
            owner: None,
        }
        .for_principal(&P::new("a", Role::Admin))
        .unwrap_or_default();
        assert_eq!(filter.partition(), "tag:music");
        let view = |status, published, tags: &[&str]| CatalogView {
            video_id: "v".into(),
            title: "t".into(),
            description: String::new(),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            owner: "o".into(),
            status,
            published,
            playable: false,
            renditions: Vec::new(),
            duration_ms: None,
            thumbnail_key: None,
            thumbnails_vtt_key: None,
            manifests: None,
            created_at: chrono::DateTime::UNIX_EPOCH,
            updated_at: chrono::DateTime::UNIX_EPOCH,
            version: 1,
        };
        use vodsource_domain::Stage;
        assert!(filter.keeps(&view(Stage::Ready, true, &["MUSIC"])));
        assert!(!filter.keeps(&view(Stage::Queued, true, &["music"])));
        assert!(!filter.keeps(&view(Stage::Ready, false, &["music"])));
        assert!(!filter.keeps(&view(Stage::Ready, true, &["talk"])));
    }

    #[test]
    fn cursors_round_trip_and_strings_of_another_form_are_refused() {
        let place = IndexCursor {
            sort: "2026-11-23T01:07:32.949718Z".into(),
            key: "01a205f1".into(),
        };
        assert_eq!(decode_cursor(&encode_cursor(&place)).ok(), Some(place));
        // Any string of the form names a place: the page starts after it.
        assert_eq!(
            decode_cursor(&URL_SAFE_NO_PAD.encode("no separator"))
                .ok()
                .map(|c| c.sort),
            Some("no separator".to_owned())
        );
        assert!(decode_cursor(&URL_SAFE_NO_PAD.encode([0xff, 0xfe])).is_ok());
        assert!(decode_cursor("AB").is_ok(), "trailing bits are allowed");
        for bad in ["%%%", "A", "AAAAA", "a=="] {
            assert!(decode_cursor(bad).is_err(), "{bad}");
        }
        assert!(decode_cursor(&"A".repeat(MAX_CURSOR_CHARS + 4)).is_err());
    }
}
