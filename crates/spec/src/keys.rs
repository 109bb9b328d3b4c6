//! Unknown keys, all of them, before the typed parse.
//!
//! serde stops at the first error, so a misspelt key used to hide every other mistake in the
//! file (and the other misspelt keys). The file structs therefore accept unknown keys, and
//! this pass walks the YAML event stream beside the JSON Schema of those same structs
//! ([`crate::schema_json`]), reporting every key the schema does not list, with its location.
//! The schema is generated from the structs, so the two cannot drift apart.
//!
//! Iterative over events (no recursion), so hostile nesting cannot overflow the stack; a file
//! that does not parse yields nothing here, as the typed parse reports the syntax error.

use serde_json::Value;
use serde_saphyr::granit_parser::{Event, Parser};

use crate::diag::Diagnostic;

/// How many `$ref` / `anyOf` levels are followed when resolving a schema.
const MAX_RESOLVE: usize = 8;

struct Frame<'s> {
    /// The schema branches a mapping's keys are checked against; empty means unchecked.
    branches: Vec<&'s Value>,
    is_map: bool,
    /// For a mapping: whether the next node is a key.
    key_next: bool,
    /// For a mapping: the schema of the value after the key just read.
    value_schema: Option<&'s Value>,
    /// This collection is itself a mapping key (YAML allows that); its end is not a value's.
    is_key: bool,
}

/// Every key of `source` the schema does not allow, as located diagnostics.
pub(crate) fn unknown_keys(file: &str, source: &str, schema: &Value) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let mut stack: Vec<Frame<'_>> = Vec::new();
    let mut started = false;
    for event in Parser::new_from_str(source) {
        let Ok((event, span)) = event else {
            return out;
        };
        // The schema of the node this event starts, and whether it is a key (whose text is
        // checked) or a value.
        let (node_schema, is_key) = match stack.last() {
            None => (if started { None } else { Some(schema) }, false),
            Some(f) if f.is_map && f.key_next => (None, true),
            Some(f) if f.is_map => (f.value_schema, false),
            Some(f) => (f.branches.iter().find_map(|b| b.get("items")), false),
        };
        match event {
            Event::Scalar(text, ..) => {
                if is_key {
                    if let Some(f) = stack.last_mut() {
                        let at = (span.start.line(), span.start.col());
                        f.value_schema = check_key(file, &text, at, &f.branches, &mut out);
                        f.key_next = false;
                    }
                } else {
                    value_done(&mut stack);
                }
            }
            Event::Alias(..) => {
                if let Some(f) = stack.last_mut().filter(|f| f.is_map && f.key_next) {
                    f.value_schema = None;
                    f.key_next = false;
                } else {
                    value_done(&mut stack);
                }
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                started = true;
                let is_map = matches!(event, Event::MappingStart(..));
                // A collection used as a key is not checked, nor is its value.
                let branches = if is_key {
                    Vec::new()
                } else {
                    node_schema.map(|s| resolve(schema, s)).unwrap_or_default()
                };
                if is_key && let Some(f) = stack.last_mut() {
                    // The key is consumed; its value follows the collection's end.
                    f.value_schema = None;
                    f.key_next = false;
                }
                stack.push(Frame {
                    branches,
                    is_map,
                    key_next: true,
                    value_schema: None,
                    is_key,
                });
            }
            // The guard pops the collection either way; a key's end is not a value's.
            Event::MappingEnd | Event::SequenceEnd if stack.pop().is_some_and(|f| !f.is_key) => {
                value_done(&mut stack);
            }
            // Only the first document is the workflow.
            Event::DocumentEnd if started => return out,
            _ => {}
        }
    }
    out
}

/// A node finished: in a mapping, the next node is a key again.
fn value_done(stack: &mut [Frame<'_>]) {
    if let Some(f) = stack.last_mut()
        && f.is_map
    {
        f.key_next = true;
        f.value_schema = None;
    }
}

/// The schema of `key`'s value, reporting the key if the mapping's schema is closed and does
/// not list it.
fn check_key<'s>(
    file: &str,
    key: &str,
    (line, col): (usize, usize),
    branches: &[&'s Value],
    out: &mut Vec<Diagnostic>,
) -> Option<&'s Value> {
    let mut known: Vec<&str> = Vec::new();
    let mut closed = false;
    for b in branches {
        if let Some(props) = b.get("properties").and_then(Value::as_object) {
            if let Some(s) = props.get(key) {
                return Some(s);
            }
            known.extend(props.keys().map(String::as_str));
            closed |= b.get("additionalProperties") == Some(&Value::Bool(false));
        }
        if let Some(extra @ Value::Object(_)) = b.get("additionalProperties") {
            return Some(extra);
        }
    }
    if closed {
        let listed = known
            .iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let hint = known
            .iter()
            .filter(|k| edit_distance(k, key) <= 2)
            .min_by_key(|k| edit_distance(k, key))
            .map(|k| format!(" (did you mean `{k}`?)"))
            .unwrap_or_default();
        out.push(Diagnostic {
            file: file.to_owned(),
            line: line as u64,
            column: col as u64 + 1,
            message: format!(
                "unknown field `{}`{hint}, expected one of {listed}",
                key.escape_debug()
            ),
        });
    }
    None
}

/// The object schemas `s` stands for: `$ref`s followed, `anyOf`/`oneOf`/`allOf` flattened.
fn resolve<'s>(root: &'s Value, s: &'s Value) -> Vec<&'s Value> {
    let mut out = Vec::new();
    let mut todo = vec![(s, 0)];
    while let Some((s, depth)) = todo.pop() {
        if depth > MAX_RESOLVE {
            continue;
        }
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            if let Some(target) = r
                .strip_prefix("#/")
                .and_then(|p| root.pointer(&format!("/{p}")))
            {
                todo.push((target, depth + 1));
            }
            continue;
        }
        for key in ["anyOf", "oneOf", "allOf"] {
            if let Some(xs) = s.get(key).and_then(Value::as_array) {
                // Reversed onto the stack, so branches come out in the schema's order.
                todo.extend(xs.iter().rev().map(|x| (x, depth + 1)));
            }
        }
        out.push(s);
    }
    out
}

/// Levenshtein distance over chars; keys are short, so quadratic is fine.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(edit_distance("exclude", "exclud"), 1);
        assert_eq!(edit_distance("where", "wehre"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
