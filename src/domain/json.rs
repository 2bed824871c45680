//! JSON a caller hands the crate (custom fields, event payloads, stored
//! results): nesting bounded before anything recurses over it, and numbers
//! only where every backend keeps them exactly.
//!
//! serde_json serializes, clones and drops a [`Value`] recursively, one
//! stack frame per level: a value nested ten thousand levels deep, built
//! by a caller in memory (text parsed by serde_json stops at 128 levels),
//! overflows the stack and aborts the process. The functions here walk a
//! value with a loop instead, and [`to_value_within`] stops serializing a
//! caller's type past a depth, so that no recursion in the crate goes
//! deeper than a limit it sets.

use std::io;

use serde::Serialize;
use serde_json::{Number, Value};

/// The deepest nesting serde_json parses from JSON text (127 levels of
/// arrays and objects; it refuses 128): no value read from text nests
/// deeper, so a value built in memory is held to it too.
pub const TEXT_DEPTH: usize = 127;

/// The deepest nesting of arrays and objects the crate takes in JSON it
/// fingerprints or stores (an event payload, a handler's result): a
/// scalar is depth 0, `[]` depth 1, `[[]]` depth 2.
pub const MAX_DEPTH: usize = 64;

/// The nesting depth of `v` (a scalar is 0), counted without recursion.
pub fn depth(v: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(v, 0_usize)];
    while let Some((v, d)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(fields) => Box::new(fields.values()),
            _ => continue,
        };
        let d = d + 1;
        deepest = deepest.max(d);
        stack.extend(children.map(|c| (c, d)));
    }
    deepest
}

/// True when `v` nests deeper than `max`, found without recursion (and
/// without walking further than `max + 1` levels).
pub fn deeper_than(v: &Value, max: usize) -> bool {
    let mut stack = vec![(v, 0_usize)];
    while let Some((v, d)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Array(items) => Box::new(items.iter()),
            Value::Object(fields) => Box::new(fields.values()),
            _ => continue,
        };
        if d + 1 > max {
            return true;
        }
        stack.extend(children.map(|c| (c, d + 1)));
    }
    false
}

/// Drops `v` without recursion (serde_json's own drop recurses once per
/// level): for values a caller handed over, which may be nested deeply.
pub fn dispose(v: Value) {
    let mut stack = match v {
        Value::Array(_) | Value::Object(_) => vec![v],
        _ => return,
    };
    while let Some(v) = stack.pop() {
        match v {
            Value::Array(items) => stack.extend(items),
            Value::Object(fields) => stack.extend(fields.into_iter().map(|(_, v)| v)),
            _ => {}
        }
    }
}

/// Why [`to_value_within`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ToValueError {
    /// The value nests deeper than the limit.
    #[error("is nested more than {0} levels deep")]
    TooDeep(usize),
    /// The value does not serialize to JSON (a map with keys that are not
    /// strings, a serializer error of its own).
    #[error("does not serialize to JSON: {0}")]
    NotJson(String),
}

/// `value` as a JSON [`Value`], as `serde_json::to_value` makes it, but
/// failing once the nesting passes `max_depth` (at most 127, the depth
/// serde_json reads back): the recursion of serializing stops there,
/// whatever the caller's type does.
pub fn to_value_within<T: Serialize + ?Sized>(
    value: &T,
    max_depth: usize,
) -> Result<Value, ToValueError> {
    let max_depth = max_depth.min(TEXT_DEPTH);
    let mut out = Limited {
        out: Vec::with_capacity(128),
        depth: 0,
        max: max_depth,
        in_string: false,
        escaped: false,
        exceeded: false,
    };
    if let Err(e) = serde_json::to_writer(&mut out, value) {
        return Err(if out.exceeded {
            ToValueError::TooDeep(max_depth)
        } else {
            ToValueError::NotJson(e.to_string())
        });
    }
    serde_json::from_slice(&out.out).map_err(|e| ToValueError::NotJson(e.to_string()))
}

/// A writer of JSON text that tracks the nesting of what passes through
/// it and fails past `max`, which makes the serializer unwind.
struct Limited {
    out: Vec<u8>,
    depth: usize,
    max: usize,
    in_string: bool,
    escaped: bool,
    exceeded: bool,
}

impl io::Write for Limited {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for &b in buf {
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'[' | b'{' => {
                    self.depth += 1;
                    if self.depth > self.max {
                        self.exceeded = true;
                        return Err(io::Error::other("nested too deep"));
                    }
                }
                b']' | b'}' => self.depth = self.depth.saturating_sub(1),
                _ => {}
            }
        }
        self.out.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The largest magnitude from which a float holds no longer every integer:
/// 2^53.
const EXACT_FLOAT_LIMIT: f64 = 9_007_199_254_740_992.0;

/// Why `n` would not be kept exactly by every backend, if it would not.
///
/// The in-memory store keeps a JSON number as serde_json holds it (a
/// 64-bit integer, or else a double); PostgreSQL's `jsonb` keeps the
/// decimal it is sent, and drops the sign of a zero. They agree on every
/// integer of 64 bits and every double below 2^53 in magnitude. Past that,
/// a double is a rounded integer (an integer of more than 64 bits arrives
/// as one): no backend can know what was sent, so the number is refused
/// and should be sent as a string. A negative zero comes back from
/// PostgreSQL as `0`: refused too, so that both stores hold the same.
pub fn inexact_number(n: &Number) -> Option<&'static str> {
    if n.is_i64() || n.is_u64() {
        return None;
    }
    let f = n.as_f64()?;
    if f == 0.0 && f.is_sign_negative() {
        Some("holds a negative zero, which PostgreSQL keeps as 0: send 0")
    } else if f.abs() >= EXACT_FLOAT_LIMIT {
        Some(
            "holds a number too large to be kept exactly (a float of magnitude 2^53 or more, \
             or an integer beyond 64 bits): send it as a string",
        )
    } else {
        None
    }
}

/// True when `v` holds a number that JSON text read back can only have
/// rounded: an integer beyond 64 bits (read as the nearest float), or a
/// float of magnitude 2^63 or more, which no 64-bit integer tells apart.
/// Found without recursion.
pub fn holds_integer_beyond_64_bits(v: &Value) -> bool {
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::Array(items) => stack.extend(items),
            Value::Object(fields) => stack.extend(fields.values()),
            Value::Number(n)
                if !(n.is_i64() || n.is_u64()) && n.as_f64().is_some_and(|f| f.abs() >= TWO_63) =>
            {
                return true;
            }
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn nested(depth: usize) -> Value {
        let mut v = json!(0);
        for _ in 0..depth {
            v = Value::Array(vec![v]);
        }
        v
    }

    #[test]
    fn depth_counts_containers_without_recursing() {
        assert_eq!(depth(&json!(1)), 0);
        assert_eq!(depth(&json!([])), 1);
        assert_eq!(depth(&json!({"a": [1, {"b": []}]})), 4);
        let deep = nested(200_000);
        assert_eq!(depth(&deep), 200_000);
        assert!(deeper_than(&deep, 64));
        assert!(!deeper_than(&json!({"a": [1]}), 2));
        assert!(deeper_than(&json!({"a": [1]}), 1));
        dispose(deep);
    }

    #[test]
    fn to_value_within_stops_at_the_limit_and_ignores_brackets_in_strings() {
        let deep = nested(200_000);
        assert!(matches!(
            to_value_within(&deep, MAX_DEPTH),
            Err(ToValueError::TooDeep(64))
        ));
        dispose(deep);
        let v = json!({"s": "[[[[\"{{", "e": "\\\"[", "n": [1.5, -2, 18446744073709551615u64]});
        assert_eq!(to_value_within(&v, 2).unwrap(), v);
        assert!(to_value_within(&nested(64), 64).is_ok());
        assert!(to_value_within(&nested(65), 64).is_err());
        let mut keys = std::collections::BTreeMap::new();
        keys.insert(vec![1u8], 1);
        assert!(matches!(
            to_value_within(&keys, 8),
            Err(ToValueError::NotJson(_))
        ));
    }
}
