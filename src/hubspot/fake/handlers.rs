//! The fake's request handling: counting, authentication, its own budget,
//! injected faults and latency, then the endpoints.

use std::{collections::HashSet, sync::Arc, time::Duration};

use axum::{
    Json,
    body::Bytes,
    extract::State,
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{
    Fault, Shared, lock,
    store::{Data, FakeRecord, correlation_id, validation},
};
use crate::hubspot::{BATCH_LIMIT, SearchRequest};

pub(super) async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let endpoint = format!("{method} {path}");
    let number = {
        let mut c = lock(&shared.counters);
        c.total += 1;
        *c.per_endpoint.entry(endpoint).or_default() += 1;
        c.total
    };
    let (config, fault, outage) = {
        let mut s = lock(&shared.settings);
        let fault = match s.scheduled.remove(&number) {
            Some(f) => Some(f),
            None => s.faults.pop_front(),
        };
        (s.config.clone(), fault, s.outage)
    };

    // The token belongs in the Authorization header, never in the URL.
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let query = uri.query().unwrap_or("");
    if query.to_ascii_lowercase().contains("hapikey")
        || bearer
            .as_deref()
            .is_some_and(|t| !t.is_empty() && uri.to_string().contains(t))
    {
        lock(&shared.counters).secrets_in_url += 1;
    }
    let authorized = match (&bearer, &config.token) {
        (Some(b), Some(t)) => b == t,
        (Some(b), None) => !b.is_empty(),
        (None, _) => false,
    };
    if !authorized {
        lock(&shared.counters).unauthorized += 1;
        return error(
            StatusCode::UNAUTHORIZED,
            json!({"status": "error", "message": "Authentication credentials not found.",
                   "correlationId": correlation_id(), "category": "INVALID_AUTHENTICATION"}),
        );
    }

    // Its own rolling budget, as HubSpot keeps it.
    let now = Instant::now();
    let mut remaining = None;
    if let Some(budget) = config.budget {
        let mut arrivals = lock(&shared.arrivals);
        while arrivals
            .front()
            .is_some_and(|t| now.duration_since(*t) >= config.window)
        {
            arrivals.pop_front();
        }
        if arrivals.len() >= budget as usize {
            drop(arrivals);
            {
                let mut c = lock(&shared.counters);
                c.rate_limited += 1;
                c.budget_exceeded += 1;
            }
            return rate_limited("TEN_SECONDLY_ROLLING", None);
        }
        arrivals.push_back(now);
        let n = arrivals.len();
        drop(arrivals);
        let mut c = lock(&shared.counters);
        c.peak_in_window = c.peak_in_window.max(n);
        remaining = Some((budget as usize - n, budget));
    }
    if path.ends_with("/search")
        && let Some(per_second) = config.search_per_second
    {
        let mut arrivals = lock(&shared.search_arrivals);
        while arrivals
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(1))
        {
            arrivals.pop_front();
        }
        if arrivals.len() >= per_second as usize {
            drop(arrivals);
            let mut c = lock(&shared.counters);
            c.rate_limited += 1;
            c.budget_exceeded += 1;
            return rate_limited("SECONDLY", None);
        }
        arrivals.push_back(now);
    }

    if !config.latency.is_zero() {
        tokio::time::sleep(config.latency).await;
    }
    if let Some(fault) = fault {
        lock(&shared.counters).faults += 1;
        match fault {
            Fault::RateLimited {
                policy,
                retry_after_secs,
            } => {
                lock(&shared.counters).rate_limited += 1;
                return rate_limited(&policy, retry_after_secs);
            }
            Fault::Status(status) => {
                return server_error(status);
            }
            Fault::Delay(d) => tokio::time::sleep(d).await,
        }
    }
    if let Some(status) = outage {
        return server_error(status);
    }

    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    validation(&format!("Invalid input JSON: {e}")),
                );
            }
        }
    };
    let rejected = lock(&shared.settings).rejected_emails.clone();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (status, answer) = {
        let mut data = lock(&shared.data);
        match (method.as_str(), segments.as_slice()) {
            ("POST", ["crm", "v3", "objects", t, "batch", "upsert"]) => {
                upsert(&mut data, t, &body, &rejected)
            }
            ("POST", ["crm", "v3", "objects", t, "batch", "read"]) => read(&data, t, &body),
            ("POST", ["crm", "v3", "objects", t, "batch", "update"]) => update(&mut data, t, &body),
            ("POST", ["crm", "v3", "objects", t, "batch", "create"]) => create(&mut data, t, &body),
            ("POST", ["crm", "v3", "objects", t, "search"]) => {
                match serde_json::from_value::<SearchRequest>(body) {
                    Ok(req) => match data.search(t, &req) {
                        Ok(v) => (StatusCode::OK, v),
                        Err(v) => (StatusCode::BAD_REQUEST, v),
                    },
                    Err(e) => (StatusCode::BAD_REQUEST, validation(&e.to_string())),
                }
            }
            ("GET", ["crm", "v4", "associations", from, to, "labels"]) => labels(from, to),
            (
                "POST",
                [
                    "crm",
                    "v4",
                    "associations",
                    from,
                    to,
                    "batch",
                    "associate",
                    "default",
                ],
            ) => associate_default(&mut data, from, to, &body),
            ("POST", ["crm", "v4", "associations", from, to, "batch", "archive"]) => {
                archive_associations(&mut data, from, to, &body)
            }
            _ => (
                StatusCode::NOT_FOUND,
                json!({"status": "error", "message": "resource not found",
                       "correlationId": correlation_id(), "category": "OBJECT_NOT_FOUND"}),
            ),
        }
    };
    let mut response = (status, Json(answer)).into_response();
    if let Some((left, max)) = remaining {
        let h = response.headers_mut();
        h.insert("x-hubspot-ratelimit-max", HeaderValue::from(max));
        h.insert(
            "x-hubspot-ratelimit-remaining",
            HeaderValue::from(left as u64),
        );
        h.insert(
            "x-hubspot-ratelimit-interval-milliseconds",
            HeaderValue::from(config.window.as_millis() as u64),
        );
    }
    response
}

fn error(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

fn rate_limited(policy: &str, retry_after_secs: Option<u32>) -> Response {
    let body = json!({
        "status": "error",
        "message": format!("You have reached your {} limit.", policy.to_lowercase()),
        "errorType": "RATE_LIMIT",
        "correlationId": correlation_id(),
        "policyName": policy,
        "category": "RATE_LIMITS",
    });
    let mut r = error(StatusCode::TOO_MANY_REQUESTS, body);
    if let Some(s) = retry_after_secs {
        r.headers_mut().insert("retry-after", HeaderValue::from(s));
    }
    r
}

fn server_error(status: u16) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    error(
        status,
        json!({"status": "error", "message": "internal error",
               "correlationId": correlation_id(), "category": "INTERNAL_ERROR"}),
    )
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn inputs(body: &Value) -> Result<&Vec<Value>, (StatusCode, Value)> {
    let inputs = body["inputs"]
        .as_array()
        .ok_or_else(|| (StatusCode::BAD_REQUEST, validation("inputs is required")))?;
    if inputs.len() > BATCH_LIMIT {
        return Err((
            StatusCode::BAD_REQUEST,
            validation(&format!(
                "Batch input of {} exceeds the limit of {BATCH_LIMIT}",
                inputs.len()
            )),
        ));
    }
    Ok(inputs)
}

fn properties_of(input: &Value) -> std::collections::BTreeMap<String, String> {
    input["properties"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| match v {
                    Value::String(s) => Some((k.clone(), s.clone())),
                    Value::Null => None,
                    other => Some((k.clone(), other.to_string())),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn input_error(category: &str, message: &str, trace: Option<&str>, id: &str) -> Value {
    let context = match trace {
        Some(t) => json!({"objectWriteTraceId": [t]}),
        None => json!({"ids": [id]}),
    };
    json!({"status": "error", "category": category, "message": message, "context": context})
}

fn batch_answer(results: Vec<Value>, errors: Vec<Value>) -> (StatusCode, Value) {
    let status = if errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::MULTI_STATUS
    };
    let now = super::store::iso(now_ms());
    let n = errors.len();
    (
        status,
        json!({"status": "COMPLETE", "results": results, "errors": errors, "numErrors": n,
               "startedAt": now, "completedAt": now}),
    )
}

fn upsert(
    data: &mut Data,
    object_type: &str,
    body: &Value,
    rejected: &HashSet<String>,
) -> (StatusCode, Value) {
    let inputs = match inputs(body) {
        Ok(i) => i,
        Err(e) => return e,
    };
    let mut seen = HashSet::new();
    for input in inputs {
        let id = input["id"].as_str().unwrap_or_default().to_lowercase();
        if !seen.insert(id.clone()) {
            return (
                StatusCode::BAD_REQUEST,
                validation(&format!("Duplicate IDs found in batch input: [{id}]")),
            );
        }
    }
    let (mut results, mut errors) = (Vec::new(), Vec::new());
    for input in inputs {
        let id = input["id"].as_str().unwrap_or_default();
        let id_property = input["idProperty"].as_str().unwrap_or("hs_object_id");
        let trace = input["objectWriteTraceId"].as_str();
        if id_property == "email" && (!id.contains('@') || rejected.contains(&id.to_lowercase())) {
            errors.push(input_error(
                "VALIDATION_ERROR",
                &format!("Property values were not valid: email {id:?} is invalid"),
                trace,
                id,
            ));
            continue;
        }
        let existing = if id_property == "email" && object_type == "contacts" {
            data.emails.get(&id.to_lowercase()).copied()
        } else if id_property == "hs_object_id" {
            id.parse()
                .ok()
                .filter(|n| data.get(object_type, *n).is_some())
        } else {
            data.objects.get(object_type).and_then(|m| {
                m.values()
                    .find(|r| r.properties.get(id_property).is_some_and(|v| v == id))
                    .map(|r| r.id)
            })
        };
        let now = now_ms();
        let mut props = properties_of(input);
        if id_property != "hs_object_id" {
            let value = if id_property == "email" {
                id.to_lowercase()
            } else {
                id.to_string()
            };
            props.insert(id_property.to_string(), value);
        }
        let (record, new) = match existing.and_then(|n| data.get(object_type, n).cloned()) {
            Some(mut r) => {
                r.properties.extend(props);
                r.modified_ms = now;
                (r, false)
            }
            None => {
                let rid = data.new_id();
                (
                    FakeRecord {
                        id: rid,
                        properties: props,
                        created_ms: now,
                        modified_ms: now,
                        associations: Vec::new(),
                    },
                    true,
                )
            }
        };
        let names: Vec<String> = record.properties.keys().cloned().collect();
        let mut json = record.to_json(object_type, &names);
        json["new"] = json!(new);
        data.insert(object_type, record);
        results.push(json);
    }
    batch_answer(results, errors)
}

fn update(data: &mut Data, object_type: &str, body: &Value) -> (StatusCode, Value) {
    let inputs = match inputs(body) {
        Ok(i) => i,
        Err(e) => return e,
    };
    let (mut results, mut errors) = (Vec::new(), Vec::new());
    for input in inputs {
        let id = input["id"].as_str().unwrap_or_default();
        let trace = input["objectWriteTraceId"].as_str();
        let found = id
            .parse()
            .ok()
            .and_then(|n| data.get(object_type, n).cloned());
        let Some(mut record) = found else {
            errors.push(input_error(
                "OBJECT_NOT_FOUND",
                &format!("{object_type} {id} does not exist"),
                trace,
                id,
            ));
            continue;
        };
        let props = properties_of(input);
        // HubSpot keeps one contact per email: an email another contact
        // holds is refused, and the old email no longer finds this one.
        if object_type == "contacts"
            && let Some(email) = props.get("email")
        {
            let key = email.to_lowercase();
            if data
                .emails
                .get(&key)
                .is_some_and(|holder| *holder != record.id)
            {
                errors.push(input_error(
                    "CONFLICT",
                    &format!("Contact already exists. Existing ID: {}", data.emails[&key]),
                    trace,
                    id,
                ));
                continue;
            }
            if let Some(old) = record.properties.get("email") {
                data.emails.remove(&old.to_lowercase());
            }
        }
        record.properties.extend(props);
        record.modified_ms = now_ms();
        let names: Vec<String> = record.properties.keys().cloned().collect();
        results.push(record.to_json(object_type, &names));
        data.insert(object_type, record);
    }
    batch_answer(results, errors)
}

fn read(data: &Data, object_type: &str, body: &Value) -> (StatusCode, Value) {
    let inputs = match inputs(body) {
        Ok(i) => i,
        Err(e) => return e,
    };
    let properties: Vec<String> = body["properties"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let id_property = body["idProperty"].as_str();
    let (mut results, mut missing) = (Vec::new(), Vec::new());
    for input in inputs {
        let id = input["id"].as_str().unwrap_or_default();
        let found = match id_property {
            None | Some("hs_object_id") => id.parse().ok().and_then(|n| data.get(object_type, n)),
            Some("email") if object_type == "contacts" => data
                .emails
                .get(&id.to_lowercase())
                .and_then(|n| data.get(object_type, *n)),
            Some(p) => data.objects.get(object_type).and_then(|m| {
                m.values()
                    .find(|r| r.properties.get(p).is_some_and(|v| v == id))
            }),
        };
        match found {
            Some(r) => results.push(r.to_json(object_type, &properties)),
            None => missing.push(id.to_string()),
        }
    }
    let errors = if missing.is_empty() {
        Vec::new()
    } else {
        vec![json!({"status": "error", "category": "OBJECT_NOT_FOUND",
                    "message": "Could not get some objects, they may be deleted or not exist.",
                    "context": {"ids": missing}})]
    };
    batch_answer(results, errors)
}

/// The association type ids the fake knows: (from, to) → [(type id, label)].
fn known_labels(from: &str, to: &str) -> Vec<(u32, Option<&'static str>)> {
    match (from, to) {
        ("deals", "contacts") => vec![(3, None)],
        ("deals", "companies") => vec![(5, Some("Primary")), (341, None)],
        ("contacts", "companies") => vec![(1, Some("Primary")), (279, None)],
        ("contacts", "deals") => vec![(4, None)],
        ("companies", "deals") => vec![(342, None), (6, Some("Primary"))],
        _ => Vec::new(),
    }
}

fn labels(from: &str, to: &str) -> (StatusCode, Value) {
    let results: Vec<Value> = known_labels(from, to)
        .into_iter()
        .map(|(id, label)| json!({"category": "HUBSPOT_DEFINED", "typeId": id, "label": label}))
        .collect();
    (StatusCode::OK, json!({"results": results}))
}

/// `POST /crm/v4/associations/{from}/{to}/batch/associate/default`: the
/// unlabeled HubSpot-defined type between each pair; idempotent.
fn associate_default(data: &mut Data, from: &str, to: &str, body: &Value) -> (StatusCode, Value) {
    let inputs = match inputs(body) {
        Ok(i) => i,
        Err(e) => return e,
    };
    let Some(type_id) = known_labels(from, to)
        .into_iter()
        .find(|(_, label)| label.is_none())
        .map(|(id, _)| id)
    else {
        return (
            StatusCode::BAD_REQUEST,
            validation(&format!("no default association from {from} to {to}")),
        );
    };
    let id = |v: &Value| v["id"].as_str().and_then(|s| s.parse::<u64>().ok());
    let (mut results, mut errors) = (Vec::new(), Vec::new());
    for input in inputs {
        let (Some(a), Some(b)) = (id(&input["from"]), id(&input["to"])) else {
            errors.push(input_error(
                "VALIDATION_ERROR",
                "from.id and to.id are required",
                None,
                "",
            ));
            continue;
        };
        if data.get(to, b).is_none() {
            errors.push(input_error(
                "VALIDATION_ERROR",
                &format!("{to} {b} does not exist"),
                None,
                "",
            ));
            continue;
        }
        let Some(record) = data.objects.get_mut(from).and_then(|m| m.get_mut(&a)) else {
            errors.push(input_error(
                "VALIDATION_ERROR",
                &format!("{from} {a} does not exist"),
                None,
                "",
            ));
            continue;
        };
        let link = (to.to_string(), b, type_id);
        if !record.associations.contains(&link) {
            record.associations.push(link);
        }
        results.push(json!({
            "from": {"id": a.to_string()},
            "to": {"id": b.to_string()},
            "associationSpec": {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id},
        }));
    }
    batch_answer(results, errors)
}

/// `POST /crm/v4/associations/{from}/{to}/batch/archive`: removes every
/// association between each pair; answers 204 without a body.
fn archive_associations(
    data: &mut Data,
    from: &str,
    to: &str,
    body: &Value,
) -> (StatusCode, Value) {
    let inputs = match inputs(body) {
        Ok(i) => i,
        Err(e) => return e,
    };
    let id = |v: &Value| v["id"].as_str().and_then(|s| s.parse::<u64>().ok());
    for input in inputs {
        let Some(a) = id(&input["from"]) else {
            continue;
        };
        let targets: Vec<u64> = input["to"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(id)
            .collect();
        if let Some(record) = data.objects.get_mut(from).and_then(|m| m.get_mut(&a)) {
            record
                .associations
                .retain(|(t, b, _)| !(t == to && targets.contains(b)));
        }
    }
    (StatusCode::NO_CONTENT, Value::Null)
}

fn create(data: &mut Data, object_type: &str, body: &Value) -> (StatusCode, Value) {
    let inputs = match inputs(body) {
        Ok(i) => i,
        Err(e) => return e,
    };
    let (mut results, mut errors) = (Vec::new(), Vec::new());
    'inputs: for input in inputs {
        let trace = input["objectWriteTraceId"].as_str();
        let mut associations = Vec::new();
        for a in input["associations"].as_array().into_iter().flatten() {
            let to: u64 = a["to"]["id"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            for t in a["types"].as_array().into_iter().flatten() {
                let type_id = t["associationTypeId"].as_u64().unwrap_or(0) as u32;
                let target = ["contacts", "companies", "deals"]
                    .into_iter()
                    .find(|target| {
                        known_labels(object_type, target)
                            .iter()
                            .any(|(id, _)| *id == type_id)
                    });
                let Some(target) = target else {
                    errors.push(input_error(
                        "VALIDATION_ERROR",
                        &format!("association type id {type_id} is not valid for {object_type}"),
                        trace,
                        "",
                    ));
                    continue 'inputs;
                };
                if data.get(target, to).is_none() {
                    errors.push(input_error(
                        "VALIDATION_ERROR",
                        &format!("{target} {to} does not exist"),
                        trace,
                        "",
                    ));
                    continue 'inputs;
                }
                associations.push((target.to_string(), to, type_id));
            }
        }
        let now = now_ms();
        let record = FakeRecord {
            id: data.new_id(),
            properties: properties_of(input),
            created_ms: now,
            modified_ms: now,
            associations,
        };
        let names: Vec<String> = record.properties.keys().cloned().collect();
        results.push(record.to_json(object_type, &names));
        data.insert(object_type, record);
    }
    let (status, mut body) = batch_answer(results, errors);
    if status == StatusCode::OK {
        return (StatusCode::CREATED, body);
    }
    body["status"] = json!("COMPLETE");
    (status, body)
}
