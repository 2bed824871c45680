//! CRM search (`POST /crm/v3/objects/{type}/search`) with HubSpot's bounds
//! checked before sending, and the incremental pull built on it.

use std::collections::HashSet;

use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::{
    HubSpotClient,
    error::HubSpotError,
    limiter::RequestKind,
    objects::{HubSpotRecord, ObjectType},
};
use crate::{
    domain::Timestamp,
    error::{FieldError, ValidationErrors},
};

/// The most results one page of a search holds.
pub const MAX_PAGE_SIZE: u32 = 200;
/// The most results one search query reaches, however it is paged.
pub const MAX_RESULTS_PER_QUERY: usize = 10_000;
/// The most filter groups of one search (ORed).
pub const MAX_FILTER_GROUPS: usize = 5;
/// The most filters of one group (ANDed).
pub const MAX_FILTERS_PER_GROUP: usize = 10;
/// The most filters of one search, all groups together.
pub const MAX_FILTERS: usize = 25;
/// How far before the stored window a pull starts, for records whose
/// change became searchable late.
pub const PULL_OVERLAP: chrono::TimeDelta = chrono::TimeDelta::seconds(30);

/// A filter operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum FilterOperator {
    /// Equal to `value`.
    Eq,
    /// Not equal to `value`.
    Neq,
    /// Less than `value`.
    Lt,
    /// Less than or equal to `value`.
    Lte,
    /// Greater than `value`.
    Gt,
    /// Greater than or equal to `value`.
    Gte,
    /// From `value` to `high_value`.
    Between,
    /// One of `values`.
    In,
    /// None of `values`.
    NotIn,
    /// The property has a value.
    HasProperty,
    /// The property has no value.
    NotHasProperty,
    /// The property contains the token `value`.
    ContainsToken,
    /// The property does not contain the token `value`.
    NotContainsToken,
}

/// One condition of a search.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Filter {
    /// The property compared.
    pub property_name: String,
    /// How.
    pub operator: FilterOperator,
    /// The value compared with (dates as epoch milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The upper bound of `BETWEEN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high_value: Option<String>,
    /// The values of `IN` / `NOT_IN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
}

impl Filter {
    /// `property operator value`.
    pub fn new(
        property: impl Into<String>,
        operator: FilterOperator,
        value: impl Into<String>,
    ) -> Self {
        Filter {
            property_name: property.into(),
            operator,
            value: Some(value.into()),
            high_value: None,
            values: None,
        }
    }
}

/// Filters that must all hold (a search ORs its groups).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterGroup {
    /// The filters, ANDed.
    pub filters: Vec<Filter>,
}

/// The direction of a sort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SortDirection {
    /// Smallest first.
    Ascending,
    /// Largest first.
    Descending,
}

/// A sort of search results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sort {
    /// The property sorted on.
    pub property_name: String,
    /// Which way.
    pub direction: SortDirection,
}

/// One page of a search.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchRequest {
    /// ORed groups of ANDed filters (at most 5 groups, 10 filters each, 25 in all).
    #[serde(default)]
    pub filter_groups: Vec<FilterGroup>,
    /// Sorts.
    #[serde(default)]
    pub sorts: Vec<Sort>,
    /// Properties to return.
    #[serde(default)]
    pub properties: Vec<String>,
    /// Page size, 1 to 200.
    pub limit: u32,
    /// The cursor of the page to read (from [`SearchPage::next_after`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    /// A text query over the default searchable properties.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
}

impl Default for SearchRequest {
    fn default() -> Self {
        SearchRequest {
            filter_groups: Vec::new(),
            sorts: Vec::new(),
            properties: Vec::new(),
            limit: MAX_PAGE_SIZE,
            after: None,
            query: None,
        }
    }
}

impl SearchRequest {
    /// Every way the request exceeds HubSpot's bounds, at once.
    pub fn check(&self) -> Result<(), ValidationErrors> {
        let mut errors = ValidationErrors::new();
        if self.filter_groups.len() > MAX_FILTER_GROUPS {
            errors.push(FieldError::new(
                "filterGroups",
                "too_long",
                format!(
                    "at most {MAX_FILTER_GROUPS} filter groups, got {}",
                    self.filter_groups.len()
                ),
            ));
        }
        for (i, g) in self.filter_groups.iter().enumerate() {
            if g.filters.len() > MAX_FILTERS_PER_GROUP {
                errors.push(FieldError::new(
                    format!("filterGroups[{i}].filters"),
                    "too_long",
                    format!(
                        "at most {MAX_FILTERS_PER_GROUP} filters per group, got {}",
                        g.filters.len()
                    ),
                ));
            }
        }
        let total: usize = self.filter_groups.iter().map(|g| g.filters.len()).sum();
        if total > MAX_FILTERS {
            errors.push(FieldError::new(
                "filterGroups",
                "too_long",
                format!("at most {MAX_FILTERS} filters in all, got {total}"),
            ));
        }
        if self.limit == 0 || self.limit > MAX_PAGE_SIZE {
            errors.push(FieldError::new(
                "limit",
                "out_of_range",
                format!("must be from 1 to {MAX_PAGE_SIZE}, got {}", self.limit),
            ));
        }
        if let Some(after) = &self.after
            && let Ok(offset) = after.parse::<usize>()
            && offset >= MAX_RESULTS_PER_QUERY
        {
            errors.push(FieldError::new(
                "after",
                "out_of_range",
                format!("a search reaches at most {MAX_RESULTS_PER_QUERY} results"),
            ));
        }
        errors.finish(|| ())
    }
}

/// A page of search results.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchPage {
    /// How many records match the query in all.
    pub total: u64,
    /// This page's records.
    pub results: Vec<HubSpotRecord>,
    /// The cursor of the next page, when there is one.
    pub next_after: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawPage {
    #[serde(default)]
    total: u64,
    #[serde(default)]
    results: Vec<HubSpotRecord>,
    #[serde(default)]
    paging: Option<Paging>,
}

#[derive(Debug, Deserialize)]
struct Paging {
    next: Option<Next>,
}

#[derive(Debug, Deserialize)]
struct Next {
    after: String,
}

impl HubSpotClient {
    /// One page of a search of `object_type`. The request is checked first
    /// ([`SearchRequest::check`]); a request out of bounds is
    /// [`HubSpotError::InvalidRequest`] and nothing is sent. Searches spend
    /// the search endpoints' per-second budget too.
    pub async fn search(
        &self,
        object_type: &ObjectType,
        request: &SearchRequest,
    ) -> Result<SearchPage, HubSpotError> {
        request.check().map_err(HubSpotError::InvalidRequest)?;
        let path = format!("/crm/v3/objects/{}/search", object_type.as_str());
        let answer = self
            .send::<_, RawPage>(Method::POST, &path, Some(request), RequestKind::Search)
            .await?;
        let page = answer.body;
        Ok(SearchPage {
            total: page.total,
            results: page.results,
            next_after: page.paging.and_then(|p| p.next).map(|n| n.after),
        })
    }

    /// An incremental pull of the records of `object_type` changed since
    /// `window_start` (minus [`PULL_OVERLAP`]), with `properties`: call
    /// [`ModifiedSincePull::next_page`] until it gives `None`, then store
    /// [`ModifiedSincePull::window`] as the next run's `window_start`.
    ///
    /// Each record changed in the window comes exactly once (records that
    /// change again during the pull may come again, newer), however many
    /// there are and however many share one last-modified time: a query
    /// that nears the 10,000-result ceiling at time `T`, or whose whole
    /// page shares the time `T`, goes on with `lastmodified == T AND
    /// hs_object_id > last id` (sorted by id, restarted the same way every
    /// 10,000; ties given out before are not given again) and then
    /// `lastmodified > T`.
    pub fn pull_modified_since(
        &self,
        object_type: ObjectType,
        window_start: Timestamp,
        properties: &[&str],
    ) -> ModifiedSincePull {
        let mut props: Vec<String> = properties.iter().map(|p| p.to_string()).collect();
        for p in [object_type.last_modified_property(), "hs_object_id"] {
            if !props.iter().any(|q| q == p) {
                props.push(p.to_string());
            }
        }
        let from = (window_start - PULL_OVERLAP).timestamp_millis();
        ModifiedSincePull {
            client: self.clone(),
            object_type,
            properties: props,
            phase: Phase::Main {
                from,
                inclusive: true,
            },
            after: None,
            cursors: HashSet::new(),
            in_query: 0,
            window: window_start,
            max_ms: None,
            seen_at_max: HashSet::new(),
            page_size: MAX_PAGE_SIZE,
            done: false,
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// `lastmodified >= from` (or `> from`), sorted by lastmodified.
    Main { from: i64, inclusive: bool },
    /// `lastmodified == at AND hs_object_id > after_id`, sorted by id.
    Ties { at: i64, after_id: u64 },
}

/// An incremental pull under way: see [`HubSpotClient::pull_modified_since`].
/// It holds a clone of the client (sharing its budget and breaker), so it
/// can move into a task.
#[derive(Debug)]
pub struct ModifiedSincePull {
    client: HubSpotClient,
    object_type: ObjectType,
    properties: Vec<String>,
    phase: Phase,
    after: Option<String>,
    /// The cursors the current query has given: one given again means the
    /// query goes round in a circle.
    cursors: HashSet<String>,
    /// Results received by the current query.
    in_query: usize,
    window: Timestamp,
    max_ms: Option<i64>,
    /// Ids given out whose last-modified time is `max_ms`.
    seen_at_max: HashSet<u64>,
    page_size: u32,
    done: bool,
}

impl ModifiedSincePull {
    /// Pages of at most this many records (1 to 200; default 200).
    pub fn with_page_size(mut self, n: u32) -> Self {
        self.page_size = n.clamp(1, MAX_PAGE_SIZE);
        self
    }

    /// The new window start: the latest last-modified time seen so far (the
    /// old window start while none was seen).
    pub fn window(&self) -> Timestamp {
        self.window
    }

    /// The next page of changed records, `None` when the pull is complete.
    /// A failed request (after the client's retries) is returned as is; the
    /// pull can be resumed by calling `next_page` again.
    pub async fn next_page(&mut self) -> Result<Option<Vec<HubSpotRecord>>, HubSpotError> {
        let lm = self.object_type.last_modified_property();
        while !self.done {
            let (filters, sort) = match self.phase {
                Phase::Main { from, inclusive } => (
                    vec![Filter::new(
                        lm,
                        if inclusive {
                            FilterOperator::Gte
                        } else {
                            FilterOperator::Gt
                        },
                        from.to_string(),
                    )],
                    lm,
                ),
                Phase::Ties { at, after_id } => (
                    vec![
                        Filter::new(lm, FilterOperator::Eq, at.to_string()),
                        Filter::new("hs_object_id", FilterOperator::Gt, after_id.to_string()),
                    ],
                    "hs_object_id",
                ),
            };
            let request = SearchRequest {
                filter_groups: vec![FilterGroup { filters }],
                sorts: vec![Sort {
                    property_name: sort.to_string(),
                    direction: SortDirection::Ascending,
                }],
                properties: self.properties.clone(),
                limit: self.page_size,
                after: self.after.clone(),
                query: None,
            };
            let page = self.client.search(&self.object_type, &request).await?;
            self.in_query += page.results.len();
            let full = page.results.len() == self.page_size as usize;
            let mut page_times: Option<(i64, i64)> = None;
            let mut out = Vec::with_capacity(page.results.len());
            let mut last_id = None;
            for record in page.results {
                let id: u64 = record.id.parse().map_err(|_| {
                    HubSpotError::Decode(format!("record id {:?} is not a number", record.id))
                })?;
                let ms = record
                    .last_modified(&self.object_type)
                    .map(|t| t.timestamp_millis())
                    .ok_or_else(|| HubSpotError::Decode(format!("record {id} has no {lm}")))?;
                // A record the query's filter excludes: the answer is not
                // to this query, and going on could ask it again for good.
                let excluded = match self.phase {
                    Phase::Main { from, inclusive } => ms < from || (!inclusive && ms == from),
                    Phase::Ties { at, after_id } => ms != at || id <= after_id,
                };
                if excluded {
                    return Err(stuck(format!(
                        "a query with record {id} (modified at {ms} ms), which its filter excludes"
                    )));
                }
                last_id = Some(id);
                page_times = Some(page_times.map_or((ms, ms), |(lo, hi)| (lo.min(ms), hi.max(ms))));
                match self.phase {
                    Phase::Main { .. } => {
                        if self.max_ms.is_none_or(|m| ms > m) {
                            self.max_ms = Some(ms);
                            self.seen_at_max.clear();
                        }
                        if Some(ms) == self.max_ms {
                            self.seen_at_max.insert(id);
                        }
                    }
                    // Ties given out by the query before: not again.
                    Phase::Ties { .. } => {
                        if self.seen_at_max.contains(&id) {
                            continue;
                        }
                    }
                }
                // The window never passes the clock: a record stamped in
                // the future (a year 9999, a clock far ahead) would move
                // the next pull's start past every change made meanwhile,
                // or past the years a store keeps. Capped, the record is
                // only read again by the next pull.
                if let Some(t) = chrono::DateTime::from_timestamp_millis(ms) {
                    let t = t.min(chrono::Utc::now());
                    if t > self.window {
                        self.window = t;
                    }
                }
                out.push(record);
            }
            let near_ceiling = self.in_query + self.page_size as usize > MAX_RESULTS_PER_QUERY;
            // A whole page at one time: many records share it, and paging
            // them by id now costs fewer searches than at the ceiling.
            let one_time = full && page_times.is_some_and(|(lo, hi)| lo == hi);
            match (page.next_after, self.phase) {
                (None, Phase::Main { .. }) => self.done = true,
                (None, Phase::Ties { at, .. }) => {
                    self.restart(Phase::Main {
                        from: at,
                        inclusive: false,
                    });
                    self.seen_at_max.clear();
                }
                (Some(_), Phase::Main { .. }) if near_ceiling || one_time => match self.max_ms {
                    Some(at) => {
                        tracing::debug!(
                            at,
                            near_ceiling,
                            "HubSpot pull pages by id at one last-modified time"
                        );
                        self.restart(Phase::Ties { at, after_id: 0 })
                    }
                    None => self.done = true,
                },
                (Some(_), Phase::Ties { at, after_id }) if near_ceiling => {
                    // Ids past `after_id` only, as the query asked: else the
                    // next query is this one again.
                    match last_id.filter(|id| *id > after_id) {
                        Some(last) => self.restart(Phase::Ties { at, after_id: last }),
                        None => {
                            return Err(stuck(format!(
                                "a query for ids after {after_id} with none past it"
                            )));
                        }
                    }
                }
                // A cursor the query gave before (a proxy serving one page
                // again, cursors cycling, an API fault) would have the pull
                // ask for the same pages for good.
                (Some(after), _) if !self.cursors.insert(after.clone()) => {
                    return Err(stuck(format!(
                        "a query with cursor {after:?} a second time"
                    )));
                }
                (Some(after), _) => self.after = Some(after),
            }
            if !out.is_empty() {
                return Ok(Some(out));
            }
        }
        Ok(None)
    }

    fn restart(&mut self, phase: Phase) {
        self.phase = phase;
        self.after = None;
        self.cursors.clear();
        self.in_query = 0;
    }

    /// Every remaining page, gathered (for small pulls and tests).
    pub async fn collect_all(mut self) -> Result<(Vec<HubSpotRecord>, Timestamp), HubSpotError> {
        let mut all = Vec::new();
        while let Some(page) = self.next_page().await? {
            all.extend(page);
        }
        Ok((all, self.window))
    }
}

/// A search answer that would have the pull ask for what it just asked
/// for, again and again.
fn stuck(what: String) -> HubSpotError {
    HubSpotError::Decode(format!(
        "HubSpot's search answered {what}: the pull does not advance"
    ))
}
