//! CRM objects as HubSpot's v3 API shapes them, and the batch operations:
//! upsert by a unique property (contacts by email), read, and create deals
//! with their associations (v4 association types).

use std::collections::{BTreeMap, HashMap};

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{HubSpotClient, error::HubSpotError, limiter::RequestKind};
use crate::{
    domain::Timestamp,
    error::{FieldError, ValidationErrors},
};

/// The most inputs HubSpot takes in one batch call; longer inputs are split.
pub const BATCH_LIMIT: usize = 100;

/// A CRM object type: its path segment and its last-modified property.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ObjectType {
    /// `contacts`.
    Contacts,
    /// `companies`.
    Companies,
    /// `deals`.
    Deals,
    /// Another object type, by its path segment or object type id (`2-123456`).
    Other(String),
}

impl ObjectType {
    /// The segment in `/crm/v3/objects/{segment}`.
    pub fn as_str(&self) -> &str {
        match self {
            ObjectType::Contacts => "contacts",
            ObjectType::Companies => "companies",
            ObjectType::Deals => "deals",
            ObjectType::Other(s) => s,
        }
    }

    /// The property that holds when a record last changed: `lastmodifieddate`
    /// for contacts, `hs_lastmodifieddate` for every other type.
    pub fn last_modified_property(&self) -> &'static str {
        match self {
            ObjectType::Contacts => "lastmodifieddate",
            _ => "hs_lastmodifieddate",
        }
    }
}

/// A CRM record as HubSpot returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HubSpotRecord {
    /// HubSpot's id of the record (`hs_object_id`).
    pub id: String,
    /// The properties asked for (a property without a value is `None`).
    /// HubSpot sends every value as a string; a number or a boolean sent
    /// instead is read as its JSON text, so that one odd record does not
    /// stop the decoding of its whole page (its value is then checked with
    /// the rest of the record). An object or an array is refused.
    #[serde(default, deserialize_with = "lenient_properties")]
    pub properties: BTreeMap<String, Option<String>>,
    /// When the record was created.
    #[serde(default)]
    pub created_at: Option<Timestamp>,
    /// When the record last changed.
    #[serde(default)]
    pub updated_at: Option<Timestamp>,
    /// True for a record in the recycle bin.
    #[serde(default)]
    pub archived: bool,
}

/// A record's properties: strings, or numbers and booleans as their JSON
/// text (see [`HubSpotRecord::properties`]).
fn lenient_properties<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, Option<String>>, D::Error> {
    use serde::de::Error as _;
    let raw = BTreeMap::<String, Option<serde_json::Value>>::deserialize(d)?;
    raw.into_iter()
        .map(|(name, value)| {
            let text = match value {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::String(s)) => Some(s),
                Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => {
                    Some(v.to_string())
                }
                Some(_) => {
                    return Err(D::Error::custom(format!(
                        "property {name:?} holds an object or an array, not a value"
                    )));
                }
            };
            Ok((name, text))
        })
        .collect()
}

impl HubSpotRecord {
    /// The value of `name`, when set.
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties.get(name).and_then(|v| v.as_deref())
    }

    /// When the record last changed, from its last-modified property
    /// (ISO 8601 or epoch milliseconds), else `updatedAt`.
    pub fn last_modified(&self, object_type: &ObjectType) -> Option<Timestamp> {
        self.property(object_type.last_modified_property())
            .and_then(parse_hubspot_time)
            .or(self.updated_at)
    }
}

/// A HubSpot date-time property: ISO 8601, or milliseconds since the epoch.
pub fn parse_hubspot_time(value: &str) -> Option<Timestamp> {
    if let Ok(ms) = value.parse::<i64>() {
        return chrono::DateTime::from_timestamp_millis(ms);
    }
    chrono::DateTime::parse_from_rfc3339(value)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// One record to upsert: the value of the unique property (the email for
/// contacts) and the properties to set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpsertInput {
    /// The value of the unique property that finds the record.
    pub id: String,
    /// The properties to set.
    pub properties: BTreeMap<String, String>,
}

impl UpsertInput {
    /// An upsert of the record whose unique property is `id`.
    pub fn new(id: impl Into<String>) -> Self {
        UpsertInput {
            id: id.into(),
            properties: BTreeMap::new(),
        }
    }

    /// Sets one property.
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(name.into(), value.into());
        self
    }
}

/// A failure HubSpot reported for some inputs of a batch (`errors[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InputError {
    /// `"error"`.
    #[serde(default)]
    pub status: Option<String>,
    /// The category (`VALIDATION_ERROR`, `OBJECT_NOT_FOUND`, …).
    #[serde(default)]
    pub category: Option<String>,
    /// What went wrong, in words.
    #[serde(default)]
    pub message: Option<String>,
    /// Which inputs: lists of ids, emails or `objectWriteTraceId`s by name.
    #[serde(default)]
    pub context: Value,
}

impl InputError {
    /// The input indexes in `range` that the error names by
    /// `objectWriteTraceId`.
    pub(crate) fn trace_indexes(
        &self,
        range: std::ops::Range<usize>,
    ) -> impl Iterator<Item = usize> + '_ {
        self.named()
            .filter(|(k, _)| *k == "objectWriteTraceId")
            .filter_map(|(_, v)| v.parse::<usize>().ok())
            .filter(move |i| range.contains(i))
    }

    /// Every string in the error's context (the ids it names).
    fn named(&self) -> impl Iterator<Item = (&str, &str)> {
        self.context
            .as_object()
            .into_iter()
            .flat_map(|m| m.iter())
            .flat_map(|(k, v)| {
                let items: Vec<&str> = match v {
                    Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                    Value::String(s) => vec![s.as_str()],
                    _ => Vec::new(),
                };
                items.into_iter().map(move |s| (k.as_str(), s))
            })
    }
}

/// What became of one input of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum InputOutcome {
    /// HubSpot wrote it. `created` is HubSpot's `new` flag where it sends
    /// one (upserts): true when the record did not exist.
    Written {
        /// The record as HubSpot holds it now.
        record: HubSpotRecord,
        /// Whether the upsert created the record.
        created: Option<bool>,
    },
    /// HubSpot refused it, saying why.
    Rejected(InputError),
    /// HubSpot accepted the batch, but its answer names the input neither
    /// among the results nor among the errors: treat it as not done.
    Unconfirmed,
    /// Not sent: an earlier part of the batch failed ([`BatchOutcome::stopped_by`]).
    NotSent,
}

/// The outcome of a batch call, one entry per input, in input order.
#[derive(Debug)]
pub struct BatchOutcome {
    /// What became of each input, by its index in the input.
    pub outcomes: Vec<InputOutcome>,
    /// The failure that stopped the call (after its retries): inputs from
    /// the failed part on are [`InputOutcome::NotSent`]. `None` when every
    /// part was answered.
    pub stopped_by: Option<HubSpotError>,
}

impl BatchOutcome {
    /// True when every input was written.
    pub fn all_written(&self) -> bool {
        self.stopped_by.is_none()
            && self
                .outcomes
                .iter()
                .all(|o| matches!(o, InputOutcome::Written { .. }))
    }

    /// The records written, with their input index.
    pub fn written(&self) -> impl Iterator<Item = (usize, &HubSpotRecord)> {
        self.outcomes
            .iter()
            .enumerate()
            .filter_map(|(i, o)| match o {
                InputOutcome::Written { record, .. } => Some((i, record)),
                _ => None,
            })
    }

    /// The refused inputs, with their index and HubSpot's reason.
    pub fn rejected(&self) -> impl Iterator<Item = (usize, &InputError)> {
        self.outcomes
            .iter()
            .enumerate()
            .filter_map(|(i, o)| match o {
                InputOutcome::Rejected(e) => Some((i, e)),
                _ => None,
            })
    }
}

/// Records found by a batch read, and the ids HubSpot did not find.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchRead {
    /// The records found.
    pub found: Vec<HubSpotRecord>,
    /// The ids asked for that HubSpot does not hold.
    pub missing: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct BatchResponse<R> {
    #[serde(default = "Vec::new")]
    pub(crate) results: Vec<R>,
    #[serde(default)]
    pub(crate) errors: Vec<InputError>,
}

#[derive(Debug, Deserialize)]
struct UpsertResult {
    #[serde(flatten)]
    record: HubSpotRecord,
    #[serde(default, rename = "new")]
    created: Option<bool>,
}

impl HubSpotClient {
    /// Upserts contacts by email (`POST /crm/v3/objects/contacts/batch/upsert`
    /// with `idProperty: email`), 100 per call. See [`batch_upsert`](Self::batch_upsert).
    pub async fn upsert_contacts_by_email(
        &self,
        inputs: &[UpsertInput],
    ) -> Result<BatchOutcome, HubSpotError> {
        self.batch_upsert(&ObjectType::Contacts, "email", inputs)
            .await
    }

    /// Upserts records of `object_type` by the unique property `id_property`,
    /// 100 inputs per call, in order. Each input's outcome is matched back
    /// by its unique value (emails without regard to case) and, for errors,
    /// by the `objectWriteTraceId` (its index) sent with it.
    ///
    /// Errors before sending ([`HubSpotError::InvalidRequest`]): an empty
    /// id, or two inputs with the same id. A call that fails after its
    /// retries stops the batch: see [`BatchOutcome::stopped_by`].
    pub async fn batch_upsert(
        &self,
        object_type: &ObjectType,
        id_property: &str,
        inputs: &[UpsertInput],
    ) -> Result<BatchOutcome, HubSpotError> {
        let key = |s: &str| s.trim().to_lowercase();
        let mut errors = ValidationErrors::new();
        let mut seen = HashMap::new();
        for (i, input) in inputs.iter().enumerate() {
            if input.id.trim().is_empty() {
                errors.push(FieldError::new(
                    format!("inputs[{i}].id"),
                    "required",
                    "is empty",
                ));
            } else if let Some(first) = seen.insert(key(&input.id), i) {
                errors.push(FieldError::new(
                    format!("inputs[{i}].id"),
                    "duplicate",
                    format!("the same {id_property} as inputs[{first}]"),
                ));
            }
        }
        if !errors.is_empty() {
            return Err(HubSpotError::InvalidRequest(errors));
        }
        let path = format!("/crm/v3/objects/{}/batch/upsert", object_type.as_str());
        let mut outcomes = vec![InputOutcome::NotSent; inputs.len()];
        for (chunk_no, chunk) in inputs.chunks(BATCH_LIMIT).enumerate() {
            let base = chunk_no * BATCH_LIMIT;
            let body = json!({
                "inputs": chunk.iter().enumerate().map(|(j, input)| {
                    let mut props = input.properties.clone();
                    props.entry(id_property.to_string()).or_insert_with(|| input.id.clone());
                    json!({
                        "idProperty": id_property,
                        "id": input.id,
                        "properties": props,
                        "objectWriteTraceId": (base + j).to_string(),
                    })
                }).collect::<Vec<_>>()
            });
            let answer = match self
                .send::<_, BatchResponse<UpsertResult>>(
                    Method::POST,
                    &path,
                    Some(&body),
                    RequestKind::Standard,
                )
                .await
            {
                Ok(a) => a,
                Err(e) => {
                    return Ok(BatchOutcome {
                        outcomes,
                        stopped_by: Some(e),
                    });
                }
            };
            let by_id: HashMap<String, usize> = chunk
                .iter()
                .enumerate()
                .map(|(j, input)| (key(&input.id), base + j))
                .collect();
            let mut unmatched_results = Vec::new();
            for r in answer.body.results {
                let idx = r
                    .record
                    .property(id_property)
                    .and_then(|v| by_id.get(&key(v)));
                match idx {
                    Some(&i) => {
                        outcomes[i] = InputOutcome::Written {
                            record: r.record,
                            created: r.created,
                        }
                    }
                    None => unmatched_results.push(r),
                }
            }
            for e in answer.body.errors {
                let targets: Vec<usize> = e
                    .named()
                    .filter_map(|(k, v)| {
                        if k == "objectWriteTraceId" {
                            v.parse::<usize>()
                                .ok()
                                .filter(|i| (base..base + chunk.len()).contains(i))
                        } else {
                            by_id.get(&key(v)).copied()
                        }
                    })
                    .collect();
                for i in targets {
                    outcomes[i] = InputOutcome::Rejected(e.clone());
                }
            }
            for slot in &mut outcomes[base..base + chunk.len()] {
                if matches!(slot, InputOutcome::NotSent) {
                    *slot = InputOutcome::Unconfirmed;
                }
            }
            // A lone result without the unique property goes to the lone
            // input without an outcome.
            let open: Vec<usize> = (base..base + chunk.len())
                .filter(|&i| outcomes[i] == InputOutcome::Unconfirmed)
                .collect();
            if let ([i], [_]) = (open.as_slice(), unmatched_results.as_slice())
                && let Some(r) = unmatched_results.pop()
            {
                outcomes[*i] = InputOutcome::Written {
                    record: r.record,
                    created: r.created,
                };
            }
        }
        Ok(BatchOutcome {
            outcomes,
            stopped_by: None,
        })
    }

    /// Updates records of `object_type` by HubSpot id (`POST
    /// …/batch/update`; each input's `id` is HubSpot's id), 100 per call, in
    /// order. Outcomes are matched by id; refusals also by the
    /// `objectWriteTraceId` (the input's index) sent with each input. A
    /// call that fails after its retries stops the batch: see
    /// [`BatchOutcome::stopped_by`].
    pub async fn batch_update(
        &self,
        object_type: &ObjectType,
        inputs: &[UpsertInput],
    ) -> Result<BatchOutcome, HubSpotError> {
        let path = format!("/crm/v3/objects/{}/batch/update", object_type.as_str());
        let mut outcomes = vec![InputOutcome::NotSent; inputs.len()];
        for (chunk_no, chunk) in inputs.chunks(BATCH_LIMIT).enumerate() {
            let base = chunk_no * BATCH_LIMIT;
            let body = json!({
                "inputs": chunk.iter().enumerate().map(|(j, input)| json!({
                    "id": input.id,
                    "properties": input.properties,
                    "objectWriteTraceId": (base + j).to_string(),
                })).collect::<Vec<_>>()
            });
            let answer = match self
                .send::<_, BatchResponse<HubSpotRecord>>(
                    Method::POST,
                    &path,
                    Some(&body),
                    RequestKind::Standard,
                )
                .await
            {
                Ok(a) => a,
                Err(e) => {
                    return Ok(BatchOutcome {
                        outcomes,
                        stopped_by: Some(e),
                    });
                }
            };
            let by_id: HashMap<&str, usize> = chunk
                .iter()
                .enumerate()
                .map(|(j, input)| (input.id.as_str(), base + j))
                .collect();
            for record in answer.body.results {
                if let Some(&i) = by_id.get(record.id.as_str()) {
                    outcomes[i] = InputOutcome::Written {
                        record,
                        created: Some(false),
                    };
                }
            }
            for e in answer.body.errors {
                let mut targets: Vec<usize> = e.trace_indexes(base..base + chunk.len()).collect();
                targets.extend(
                    e.named()
                        .filter(|(k, _)| *k == "ids")
                        .filter_map(|(_, v)| by_id.get(v).copied()),
                );
                for i in targets {
                    outcomes[i] = InputOutcome::Rejected(e.clone());
                }
            }
            for slot in &mut outcomes[base..base + chunk.len()] {
                if matches!(slot, InputOutcome::NotSent) {
                    *slot = InputOutcome::Unconfirmed;
                }
            }
        }
        Ok(BatchOutcome {
            outcomes,
            stopped_by: None,
        })
    }

    /// Reads records of `object_type` by HubSpot id, or by the unique
    /// property `id_property` when given (`POST …/batch/read`), 100 per
    /// call, with `properties`. Ids HubSpot does not hold come back in
    /// [`BatchRead::missing`].
    pub async fn batch_read(
        &self,
        object_type: &ObjectType,
        ids: &[String],
        id_property: Option<&str>,
        properties: &[&str],
    ) -> Result<BatchRead, HubSpotError> {
        let path = format!("/crm/v3/objects/{}/batch/read", object_type.as_str());
        let mut out = BatchRead::default();
        for chunk in ids.chunks(BATCH_LIMIT) {
            let mut body = json!({
                "properties": properties,
                "inputs": chunk.iter().map(|id| json!({"id": id})).collect::<Vec<_>>(),
            });
            if let Some(p) = id_property {
                body["idProperty"] = json!(p);
            }
            let answer = self
                .send::<_, BatchResponse<HubSpotRecord>>(
                    Method::POST,
                    &path,
                    Some(&body),
                    RequestKind::Standard,
                )
                .await?;
            out.found.extend(answer.body.results);
            for e in &answer.body.errors {
                out.missing.extend(
                    e.named()
                        .filter(|(k, _)| *k == "ids")
                        .map(|(_, v)| v.to_string()),
                );
            }
        }
        Ok(out)
    }
}
