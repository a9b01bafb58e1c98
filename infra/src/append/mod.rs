//! The append path both event stores share: which appends of a batch succeed and where their
//! events land ([`plan`], pure), and the group commit that gathers concurrent appends into one
//! transaction ([`group`]).

pub(crate) mod group;
pub(crate) mod plan;
