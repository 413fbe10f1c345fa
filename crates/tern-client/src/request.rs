//! Request/response (placeholder).
#[derive(Debug, Default)]
pub(crate) struct Replies;
