use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;
use vodsource_domain::VideoEvent;

/// What a projector may know about an event besides its payload.
#[derive(Debug, Clone, Copy)]
pub struct EventMeta<'a> {
    /// The video id.
    pub stream_id: &'a str,
    /// Stream version of the event.
    pub version: u64,
    /// Global position.
    pub position: u64,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
}

/// What an event does to one document.
#[derive(Debug, Clone, PartialEq)]
pub enum ViewChange<V> {
    /// Nothing: the document as it was, handed back.
    Unchanged(Option<V>),
    /// The document becomes `V`.
    Put(V),
    /// The document goes away.
    Delete,
}

/// One entry of a document in a secondary index: listed in `partition`, ordered by `sort`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IndexKey {
    /// Which list, for example `status:encoded`.
    pub partition: String,
    /// The order within it; queries return the greatest first.
    pub sort: String,
}

/// A pure function from an event and the current document to a change of that document.
/// The document and the event are passed by value and the document handed back (changed or
/// not), so folding an event copies neither. Documents are keyed by video id.
pub trait Projector: Clone + Send + Sync + 'static {
    /// The document type.
    type View: Serialize + DeserializeOwned + Clone + Send + Sync;

    /// The projection's (and its view's) name.
    fn name(&self) -> &'static str;

    /// Whether events of this type can change the view. Others are skipped without being
    /// decoded, so a payload this projection does not read cannot stop it.
    fn handles(&self, event_type: &str) -> bool {
        let _ = event_type;
        true
    }

    /// The secondary keys a document is listed under (the shape of a DynamoDB global
    /// secondary index: a partition and a sort key). `None`: this view is only read by key.
    fn index(&self, view: &Self::View) -> Option<Vec<IndexKey>> {
        let _ = view;
        None
    }

    /// The change `event` makes to `current`.
    fn project(&self, current: Option<Self::View>, event: VideoEvent, meta: EventMeta<'_>) -> ViewChange<Self::View>;
}
