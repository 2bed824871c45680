//! The fake's data: records per object type with ids, properties and
//! last-modified times, an email index for contacts, and search over them
//! the way HubSpot answers it (filters, one sort with ties in no useful
//! order, offset paging, the 10,000-result ceiling).

use std::{
    cmp::Ordering,
    collections::{BTreeMap, HashMap},
};

use serde_json::{Value, json};

use crate::hubspot::{
    FilterOperator, MAX_PAGE_SIZE, MAX_RESULTS_PER_QUERY, SearchRequest, parse_hubspot_time,
};

/// A record the fake holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeRecord {
    /// Its id (`hs_object_id`).
    pub id: u64,
    /// Its properties (dates excluded: see the two fields below).
    pub properties: BTreeMap<String, String>,
    /// Created, in epoch milliseconds.
    pub created_ms: i64,
    /// Last modified, in epoch milliseconds.
    pub modified_ms: i64,
    /// Associations: (object type, id, association type id).
    pub associations: Vec<(String, u64, u32)>,
}

impl FakeRecord {
    fn value(&self, object_type: &str, property: &str) -> Option<String> {
        match property {
            "hs_object_id" => Some(self.id.to_string()),
            "createdate" => Some(self.created_ms.to_string()),
            p if p == modified_property(object_type) => Some(self.modified_ms.to_string()),
            p => self.properties.get(p).cloned(),
        }
    }

    /// The record as HubSpot's JSON, with `properties` (and the defaults).
    pub(crate) fn to_json(&self, object_type: &str, properties: &[String]) -> Value {
        let modified = modified_property(object_type);
        let mut props = serde_json::Map::new();
        let defaults = ["hs_object_id", "createdate", modified];
        for p in properties.iter().map(String::as_str).chain(defaults) {
            let v = match p {
                "createdate" => Some(iso(self.created_ms)),
                p if p == modified => Some(iso(self.modified_ms)),
                p => self.value(object_type, p),
            };
            props.insert(p.to_string(), v.map_or(Value::Null, Value::String));
        }
        json!({
            "id": self.id.to_string(),
            "properties": props,
            "createdAt": iso(self.created_ms),
            "updatedAt": iso(self.modified_ms),
            "archived": false,
        })
    }
}

/// `lastmodifieddate` for contacts, `hs_lastmodifieddate` otherwise.
pub(crate) fn modified_property(object_type: &str) -> &'static str {
    if object_type == "contacts" {
        "lastmodifieddate"
    } else {
        "hs_lastmodifieddate"
    }
}

pub(crate) fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// All the fake's records.
#[derive(Debug, Default)]
pub(crate) struct Data {
    next_id: u64,
    pub(crate) objects: HashMap<String, BTreeMap<u64, FakeRecord>>,
    /// Lower-cased email → contact id.
    pub(crate) emails: HashMap<String, u64>,
}

impl Data {
    pub(crate) fn new_id(&mut self) -> u64 {
        self.next_id += 1;
        1000 + self.next_id
    }

    pub(crate) fn insert(&mut self, object_type: &str, record: FakeRecord) {
        if object_type == "contacts"
            && let Some(email) = record.properties.get("email")
        {
            self.emails.insert(email.to_lowercase(), record.id);
        }
        self.objects
            .entry(object_type.to_string())
            .or_default()
            .insert(record.id, record);
    }

    pub(crate) fn get(&self, object_type: &str, id: u64) -> Option<&FakeRecord> {
        self.objects.get(object_type).and_then(|m| m.get(&id))
    }

    /// Runs a search; `Err` is a 400 body.
    pub(crate) fn search(&self, object_type: &str, req: &SearchRequest) -> Result<Value, Value> {
        if req.limit == 0 || req.limit > MAX_PAGE_SIZE {
            return Err(validation(&format!(
                "limit must be from 1 to {MAX_PAGE_SIZE}"
            )));
        }
        if let Err(e) = req.check() {
            return Err(validation(&format!("{e:?}")));
        }
        let offset: usize = match &req.after {
            None => 0,
            Some(a) => a
                .parse()
                .map_err(|_| validation("after must be a number"))?,
        };
        if offset + req.limit as usize > MAX_RESULTS_PER_QUERY {
            return Err(validation(
                "The search API cannot return more than 10,000 results for a query.",
            ));
        }
        let empty = BTreeMap::new();
        let records = self.objects.get(object_type).unwrap_or(&empty);
        let groups: Vec<Vec<Condition>> = req
            .filter_groups
            .iter()
            .map(|g| g.filters.iter().map(Condition::new).collect())
            .collect();
        let mut hits: Vec<(Key, u64, &FakeRecord)> = records
            .values()
            .filter(|r| {
                groups.is_empty()
                    || groups
                        .iter()
                        .any(|g| g.iter().all(|c| c.holds(r, object_type)))
            })
            .map(|r| {
                let key = req
                    .sorts
                    .first()
                    .map_or(Key::Missing, |s| Key::of(r, object_type, &s.property_name));
                (key, scramble(r.id), r)
            })
            .collect();
        if let Some(sort) = req.sorts.first() {
            let descending = sort.direction == crate::hubspot::SortDirection::Descending;
            hits.sort_by(|a, b| {
                let o = a.0.cmp(&b.0);
                let o = if descending { o.reverse() } else { o };
                // Ties come in an order of HubSpot's, not by id.
                o.then_with(|| a.1.cmp(&b.1))
            });
        }
        let hits: Vec<&FakeRecord> = hits.into_iter().map(|h| h.2).collect();
        let total = hits.len();
        let page: Vec<Value> = hits
            .iter()
            .skip(offset)
            .take(req.limit as usize)
            .map(|r| r.to_json(object_type, &req.properties))
            .collect();
        let next = offset + req.limit as usize;
        let mut body = json!({"total": total, "results": page});
        if next < total {
            body["paging"] = json!({"next": {"after": next.to_string()}});
        }
        Ok(body)
    }
}

/// A fixed permutation of ids, so that ties are neither by id nor random.
fn scramble(id: u64) -> u64 {
    let mut x = id.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 31;
    x.wrapping_mul(0xBF58_476D_1CE4_E5B9)
}

fn number(v: &str) -> Option<f64> {
    v.parse::<f64>()
        .ok()
        .or_else(|| parse_hubspot_time(v).map(|t| t.timestamp_millis() as f64))
}

/// A property's value, compared the way HubSpot does: numbers and dates as
/// numbers, text without regard to case; a missing value sorts last.
#[derive(Debug, Clone, PartialEq)]
enum Key {
    Number(f64),
    Text(String),
    Missing,
}

impl Key {
    fn of(r: &FakeRecord, object_type: &str, property: &str) -> Key {
        match property {
            "hs_object_id" => Key::Number(r.id as f64),
            "createdate" => Key::Number(r.created_ms as f64),
            p if p == modified_property(object_type) => Key::Number(r.modified_ms as f64),
            p => r.properties.get(p).map_or(Key::Missing, |v| Key::parse(v)),
        }
    }

    fn parse(v: &str) -> Key {
        number(v).map_or_else(|| Key::Text(v.to_lowercase()), Key::Number)
    }

    fn cmp(&self, other: &Key) -> Ordering {
        match (self, other) {
            (Key::Number(a), Key::Number(b)) => a.partial_cmp(b).unwrap_or(Ordering::Equal),
            (Key::Number(a), Key::Text(b)) => a.to_string().cmp(b),
            (Key::Text(a), Key::Number(b)) => a.cmp(&b.to_string()),
            (Key::Text(a), Key::Text(b)) => a.cmp(b),
            (Key::Missing, Key::Missing) => Ordering::Equal,
            (Key::Missing, _) => Ordering::Greater,
            (_, Key::Missing) => Ordering::Less,
        }
    }
}

/// A filter with its values parsed once.
struct Condition<'f> {
    filter: &'f crate::hubspot::Filter,
    value: Option<Key>,
    high: Option<Key>,
    values: Vec<Key>,
}

impl<'f> Condition<'f> {
    fn new(filter: &'f crate::hubspot::Filter) -> Self {
        Condition {
            filter,
            value: filter.value.as_deref().map(Key::parse),
            high: filter.high_value.as_deref().map(Key::parse),
            values: filter
                .values
                .iter()
                .flatten()
                .map(|v| Key::parse(v))
                .collect(),
        }
    }

    fn holds(&self, r: &FakeRecord, object_type: &str) -> bool {
        let v = Key::of(r, object_type, &self.filter.property_name);
        let present = v != Key::Missing;
        let cmp = |with: &Option<Key>| match with {
            Some(w) if present => Some(v.cmp(w)),
            _ => None,
        };
        let token = |t: &Option<String>| match (&v, t) {
            (Key::Text(s), Some(t)) => s.contains(&t.trim_matches('*').to_lowercase()),
            _ => false,
        };
        match self.filter.operator {
            FilterOperator::Eq => cmp(&self.value) == Some(Ordering::Equal),
            FilterOperator::Neq => cmp(&self.value) != Some(Ordering::Equal),
            FilterOperator::Lt => cmp(&self.value) == Some(Ordering::Less),
            FilterOperator::Lte => {
                matches!(cmp(&self.value), Some(Ordering::Less | Ordering::Equal))
            }
            FilterOperator::Gt => cmp(&self.value) == Some(Ordering::Greater),
            FilterOperator::Gte => {
                matches!(cmp(&self.value), Some(Ordering::Greater | Ordering::Equal))
            }
            FilterOperator::Between => {
                matches!(cmp(&self.value), Some(Ordering::Greater | Ordering::Equal))
                    && matches!(cmp(&self.high), Some(Ordering::Less | Ordering::Equal))
            }
            FilterOperator::In => {
                present && self.values.iter().any(|w| v.cmp(w) == Ordering::Equal)
            }
            FilterOperator::NotIn => {
                !(present && self.values.iter().any(|w| v.cmp(w) == Ordering::Equal))
            }
            FilterOperator::HasProperty => present,
            FilterOperator::NotHasProperty => !present,
            FilterOperator::ContainsToken => token(&self.filter.value),
            FilterOperator::NotContainsToken => !token(&self.filter.value),
        }
    }
}

/// A 400 validation body, as HubSpot words it.
pub(crate) fn validation(message: &str) -> Value {
    json!({
        "status": "error",
        "message": message,
        "correlationId": correlation_id(),
        "category": "VALIDATION_ERROR",
    })
}

pub(crate) fn correlation_id() -> String {
    uuid::Uuid::now_v7().to_string()
}
