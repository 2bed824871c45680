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
        let mut hits: Vec<&FakeRecord> = records
            .values()
            .filter(|r| {
                req.filter_groups.is_empty()
                    || req.filter_groups.iter().any(|g| {
                        g.filters.iter().all(|f| {
                            let v = r.value(object_type, &f.property_name);
                            matches(f.operator, v.as_deref(), f)
                        })
                    })
            })
            .collect();
        if let Some(sort) = req.sorts.first() {
            hits.sort_by(|a, b| {
                let o = compare(
                    a.value(object_type, &sort.property_name).as_deref(),
                    b.value(object_type, &sort.property_name).as_deref(),
                );
                let o = match sort.direction {
                    crate::hubspot::SortDirection::Ascending => o,
                    crate::hubspot::SortDirection::Descending => o.reverse(),
                };
                // Ties come in an order of HubSpot's, not by id.
                o.then_with(|| scramble(a.id).cmp(&scramble(b.id)))
            });
        }
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

fn compare(a: Option<&str>, b: Option<&str>) -> Ordering {
    match (a, b) {
        (Some(a), Some(b)) => match (number(a), number(b)) {
            (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
            _ => a.to_lowercase().cmp(&b.to_lowercase()),
        },
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (None, None) => Ordering::Equal,
    }
}

fn matches(op: FilterOperator, value: Option<&str>, f: &crate::hubspot::Filter) -> bool {
    let cmp = |with: &Option<String>| match (value, with) {
        (Some(_), Some(w)) => Some(compare(value, Some(w))),
        _ => None,
    };
    match op {
        FilterOperator::Eq => cmp(&f.value) == Some(Ordering::Equal),
        FilterOperator::Neq => cmp(&f.value) != Some(Ordering::Equal),
        FilterOperator::Lt => cmp(&f.value) == Some(Ordering::Less),
        FilterOperator::Lte => matches!(cmp(&f.value), Some(Ordering::Less | Ordering::Equal)),
        FilterOperator::Gt => cmp(&f.value) == Some(Ordering::Greater),
        FilterOperator::Gte => matches!(cmp(&f.value), Some(Ordering::Greater | Ordering::Equal)),
        FilterOperator::Between => {
            matches!(cmp(&f.value), Some(Ordering::Greater | Ordering::Equal))
                && matches!(cmp(&f.high_value), Some(Ordering::Less | Ordering::Equal))
        }
        FilterOperator::In => f
            .values
            .iter()
            .flatten()
            .any(|w| value.is_some() && compare(value, Some(w)) == Ordering::Equal),
        FilterOperator::NotIn => !f
            .values
            .iter()
            .flatten()
            .any(|w| value.is_some() && compare(value, Some(w)) == Ordering::Equal),
        FilterOperator::HasProperty => value.is_some(),
        FilterOperator::NotHasProperty => value.is_none(),
        FilterOperator::ContainsToken => match (value, &f.value) {
            (Some(v), Some(t)) => v
                .to_lowercase()
                .contains(&t.trim_matches('*').to_lowercase()),
            _ => false,
        },
        FilterOperator::NotContainsToken => match (value, &f.value) {
            (Some(v), Some(t)) => !v
                .to_lowercase()
                .contains(&t.trim_matches('*').to_lowercase()),
            _ => true,
        },
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
