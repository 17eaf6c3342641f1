//! The paginated list endpoints' query parsing and JSON, shaped like the live API:
//! `{"count":N,"next":..,"previous":..,"results":[{"name":..,"url":..}]}` with absolute URLs
//! (evolution chains have no names, and their entries only a `url`).

use std::borrow::Cow;
use std::collections::HashMap;

use serde::Serialize;

use crate::dataset::Dataset;
use crate::faults::ListFault;
use crate::resource::Resource;

/// Page size when `limit` is absent, as on pokeapi.co.
pub(crate) const DEFAULT_LIMIT: usize = 20;

#[derive(Serialize)]
struct Page<'a> {
    count: usize,
    next: Option<String>,
    previous: Option<String>,
    results: Vec<Entry<'a>>,
}

#[derive(Serialize)]
struct Entry<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<Cow<'a, str>>,
    url: String,
}

/// `(offset, limit)` from a raw query string. Absent values take the defaults; present but
/// invalid ones (not a non-negative integer, or `limit=0`, which would never advance) are
/// rejected with a message for a 400. Unknown parameters are ignored.
pub(crate) fn parse_query(query: Option<&str>) -> Result<(usize, usize), String> {
    let mut offset = 0;
    let mut limit = DEFAULT_LIMIT;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match key {
            "offset" => &mut offset,
            "limit" => &mut limit,
            _ => continue,
        };
        *slot = value
            .parse::<usize>()
            .map_err(|_| format!("invalid {key} {value:?}: expected a non-negative integer"))?;
    }
    if limit == 0 {
        return Err("invalid limit \"0\": expected a positive integer".to_owned());
    }
    Ok((offset, limit))
}

/// The JSON of one page of `resource`, with URLs under `http://<host>/api/v2/`, and the entries
/// of the ids in `faults` spoilt as they say.
pub(crate) fn render_page(
    dataset: &Dataset,
    resource: Resource,
    host: &str,
    offset: usize,
    limit: usize,
    faults: &HashMap<i32, ListFault>,
) -> serde_json::Result<Vec<u8>> {
    let ids = dataset.resource_ids(resource);
    let count = ids.len();
    let end = offset.saturating_add(limit).min(count);
    let start = offset.min(end);
    let path = resource.name();
    let page_url =
        |offset: usize| format!("http://{host}/api/v2/{path}?offset={offset}&limit={limit}");
    let page = Page {
        count,
        next: (offset.saturating_add(limit) < count).then(|| page_url(offset + limit)),
        previous: (offset > 0).then(|| page_url(offset.saturating_sub(limit))),
        results: (start..end)
            .map(|pos| {
                let id = ids[pos];
                let name = dataset.resource_name_at(resource, pos);
                Entry {
                    name: name.map(|name| match faults.get(&id) {
                        Some(ListFault::NulInName) => Cow::Owned(format!("{name}\u{0}")),
                        None => Cow::Borrowed(name),
                    }),
                    url: format!("http://{host}/api/v2/{path}/{id}/"),
                }
            })
            .collect(),
    };
    serde_json::to_vec(&page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_defaults_and_errors() {
        assert_eq!(parse_query(None), Ok((0, 20)));
        assert_eq!(parse_query(Some("")), Ok((0, 20)));
        assert_eq!(parse_query(Some("offset=40&limit=10&x=y")), Ok((40, 10)));
        assert_eq!(parse_query(Some("limit=5")), Ok((0, 5)));
        for bad in ["offset=-1", "limit=abc", "limit=0", "offset=", "limit=1.5"] {
            assert!(parse_query(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn pages_link_like_the_live_api() {
        let d = Dataset::synthetic(45, 1);
        let v: serde_json::Value = serde_json::from_slice(
            &render_page(&d, Resource::Pokemon, "h:1", 0, 20, &HashMap::new()).expect("render"),
        )
        .expect("json");
        assert_eq!(v["count"], 45);
        assert_eq!(v["next"], "http://h:1/api/v2/pokemon?offset=20&limit=20");
        assert!(v["previous"].is_null());
        assert_eq!(v["results"][0]["url"], "http://h:1/api/v2/pokemon/1/");
        let v: serde_json::Value = serde_json::from_slice(
            &render_page(&d, Resource::Pokemon, "h", 40, 20, &HashMap::new()).expect("render"),
        )
        .expect("json");
        assert!(v["next"].is_null());
        assert_eq!(v["previous"], "http://h/api/v2/pokemon?offset=20&limit=20");
        assert_eq!(v["results"].as_array().map(Vec::len), Some(5));
        let v: serde_json::Value = serde_json::from_slice(
            &render_page(&d, Resource::Pokemon, "h", 2000, 20, &HashMap::new()).expect("render"),
        )
        .expect("json");
        assert_eq!(v["results"].as_array().map(Vec::len), Some(0));
        assert_eq!(
            v["previous"],
            "http://h/api/v2/pokemon?offset=1980&limit=20"
        );
    }
}
