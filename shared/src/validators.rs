//! HTTP cache validators (`ETag`, `Last-Modified`) of a stored document.
//!
//! Their own module because two sides meet here without either owning them: the HTTP client
//! (`pokeapi`) reads them from a response and sends them back as a conditional request, and
//! `store` keeps them per item. Living in either would make the other depend on it, and
//! `pokeapi → rate → store` already runs the other way.

use reqwest::header::{ETAG, HeaderMap, HeaderValue, LAST_MODIFIED};

/// HTTP cache validators of a document, kept per item so a refresh can ask "has it changed?"
/// instead of downloading it again, as PokeAPI's fair-use policy asks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

impl Validators {
    /// The validators a response carries.
    pub(crate) fn of(headers: &HeaderMap) -> Self {
        let text = |name| {
            headers
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        Self {
            etag: text(ETAG),
            last_modified: text(LAST_MODIFIED),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.etag.is_none() && self.last_modified.is_none()
    }
}
