//! Fuzzing of the callback and event parsers with a fixed budget in the normal test command
//! (proptest; seed fixed under `CI=true` through `testkit`): whatever a gateway or a client
//! sends, parsing never panics, and every rejection is a 400 that names a field.

use proptest::prelude::*;
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::input::{Query, msisdn};

/// The field a rejection names; anything but a 400 with a field fails the property.
fn named_field(e: ApiError) -> Result<String, TestCaseError> {
    match e {
        ApiError::BadRequest { field, .. } if !field.is_empty() => Ok(field),
        other => Err(TestCaseError::fail(format!(
            "expected a 400 naming a field, got {other:?}"
        ))),
    }
}

/// Query strings as a gateway or an attacker might send them: names Kannel uses, escapes
/// good and broken, separators, non-ASCII and control characters.
fn raw_query() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("key".to_owned()),
        Just("from".to_owned()),
        Just("text".to_owned()),
        Just("charset".to_owned()),
        Just("type".to_owned()),
        Just("=".to_owned()),
        Just("&".to_owned()),
        Just("+".to_owned()),
        Just("%".to_owned()),
        Just("%FF".to_owned()),
        Just("%C3%A9".to_owned()),
        Just("%00".to_owned()),
        Just("%4".to_owned()),
        Just("退订".to_owned()),
        "[a-zA-Z0-9]{0,6}",
        any::<char>().prop_map(String::from),
    ];
    proptest::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

fn charset() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(prop_oneof![
        Just("UTF-8".to_owned()),
        Just("utf-16be".to_owned()),
        Just("UCS-2".to_owned()),
        Just("ISO-8859-1".to_owned()),
        "[A-Za-z0-9-]{0,12}",
    ])
}

/// `%XX` for every byte: what a well-behaved client sends.
fn encode(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

/// Event bodies: objects with the fields `/events` knows and some it does not, each holding
/// any JSON value, nested a little.
fn event_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
        Just(Value::String("13800138000".into())),
        Just(Value::String("order".into())),
        Just(Value::String("2026-09-01T10:00:00+08:00".into())),
    ];
    let value = leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z]{1,6}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    let key = prop_oneof![
        Just("msisdn".to_owned()),
        Just("type".to_owned()),
        Just("value".to_owned()),
        Just("at".to_owned()),
        "[a-z_]{1,8}",
    ];
    prop_oneof![
        proptest::collection::btree_map(key, value.clone(), 0..6)
            .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        value,
    ]
}

proptest! {
    #![proptest_config(testkit::proptest_config(512))]

    /// Any query string: parsing and every read a handler does either work or name a field.
    #[test]
    fn any_query_parses_or_names_its_field(raw in raw_query(), charset in charset()) {
        match Query::parse(Some(&raw)) {
            Err(e) => { named_field(e)?; }
            Ok(q) => {
                for name in ["key", "from", "type", "charset"] {
                    if let Err(e) = q.text(name) { named_field(e)?; }
                }
                if let Err(e) = q.sms_text("text", charset.as_deref()) { named_field(e)?; }
                if let Ok(Some(from)) = q.text("from")
                    && let Err(e) = msisdn("from", &from)
                {
                    prop_assert_eq!(named_field(e)?, "from");
                }
            }
        }
    }

    /// What a client encodes is what the handler reads back, byte for byte.
    #[test]
    fn encoded_values_come_back_as_sent(
        values in proptest::collection::btree_map("[a-z]{1,8}", ".{0,30}", 0..5)
    ) {
        let raw: Vec<String> = values
            .iter()
            .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
            .collect();
        let q = Query::parse(Some(&raw.join("&"))).map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        for (k, v) in &values {
            let expected = (!v.is_empty()).then(|| v.clone());
            prop_assert_eq!(q.text(k).map_err(|e| TestCaseError::fail(format!("{e:?}")))?, expected);
        }
    }

    /// Any JSON a client posts to `/events`: one event is read or the field at fault is named
    /// (never a panic, never a 500).
    #[test]
    fn any_event_body_is_read_or_names_its_field(body in event_json()) {
        if let Err(e) = crate::events::event(&body, "", 1_790_000_000_000) {
            named_field(e)?;
        }
    }

    /// Task ids from the path: a number or a named rejection.
    #[test]
    fn any_task_id_parses_or_is_refused(raw in ".{0,24}") {
        if let Err(e) = crate::tasks::parse_id(&raw) {
            named_field(e)?;
        }
    }
}
