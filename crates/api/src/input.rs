//! Request input: query strings, JSON objects and phone numbers, checked before anything is
//! stored. Every rejection names the field and what was expected.

use serde_json::{Map, Value};

use crate::error::{ApiError, bad};

/// A decoded query string. Values stay bytes until a handler says how to read them, because
/// Kannel may send an SMS text as raw UTF-16BE (`charset=UTF-16BE` without `mo-recode`).
pub(crate) struct Query {
    pairs: Vec<(String, Vec<u8>)>,
}

impl Query {
    pub(crate) fn parse(raw: Option<&str>) -> Result<Query, ApiError> {
        let mut pairs: Vec<(String, Vec<u8>)> = Vec::new();
        for part in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            let name = String::from_utf8(percent_decode(k)).map_err(|_| {
                bad(
                    "query",
                    "a parameter name is not valid UTF-8; expected names such as key or from",
                )
            })?;
            if name.is_empty() {
                return Err(bad(
                    "query",
                    "a parameter without a name; expected name=value pairs",
                ));
            }
            if pairs.iter().any(|(n, _)| *n == name) {
                return Err(bad(
                    name,
                    "given more than once; expected at most one value",
                ));
            }
            pairs.push((name, percent_decode(v)));
        }
        Ok(Query { pairs })
    }

    fn bytes(&self, name: &str) -> Option<&[u8]> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// A UTF-8 parameter. Empty counts as absent: Kannel fills an escape it has no value for
    /// (e.g. `%F` on an SMSC ACK) with nothing.
    pub(crate) fn text(&self, name: &str) -> Result<Option<String>, ApiError> {
        match self.bytes(name) {
            None | Some([]) => Ok(None),
            Some(b) => String::from_utf8(b.to_vec())
                .map(Some)
                .map_err(|_| bad(name, "not valid UTF-8 after %-decoding")),
        }
    }

    pub(crate) fn required(&self, name: &str, expected: &str) -> Result<String, ApiError> {
        self.text(name)?
            .ok_or_else(|| bad(name, format!("missing; expected {expected}")))
    }

    /// The SMS text in the charset Kannel says it used.
    pub(crate) fn sms_text(
        &self,
        name: &str,
        charset: Option<&str>,
    ) -> Result<Option<String>, ApiError> {
        let Some(bytes) = self.bytes(name).filter(|b| !b.is_empty()) else {
            return Ok(None);
        };
        let charset = charset.unwrap_or("UTF-8").to_ascii_uppercase();
        let text = match charset.as_str() {
            "UTF-8" | "UTF8" => String::from_utf8(bytes.to_vec()).ok(),
            "UTF-16BE" | "UCS-2" | "UCS2" if bytes.len() % 2 == 0 => {
                let units: Vec<u16> = bytes
                    .chunks_exact(2)
                    .map(|p| u16::from_be_bytes([p[0], p[1]]))
                    .collect();
                String::from_utf16(&units).ok()
            }
            "UTF-16BE" | "UCS-2" | "UCS2" => None,
            "ISO-8859-1" | "LATIN1" => Some(bytes.iter().map(|b| char::from(*b)).collect()),
            _ => {
                return Err(bad(
                    "charset",
                    "unsupported; expected UTF-8, UTF-16BE or ISO-8859-1 (set mo-recode = true in Kannel's smsbox group)",
                ));
            }
        };
        text.map(Some)
            .ok_or_else(|| bad(name, format!("not valid {charset} after %-decoding")))
    }

    /// `key`: one of `all` (named by `name`), `default` when absent.
    pub(crate) fn choice<T: Copy>(
        &self,
        key: &str,
        default: T,
        all: &[T],
        name: fn(T) -> &'static str,
    ) -> Result<T, ApiError> {
        match self.text(key)? {
            None => Ok(default),
            Some(s) => all.iter().copied().find(|v| name(*v) == s).ok_or_else(|| {
                let names: Vec<&str> = all.iter().map(|v| name(*v)).collect();
                bad(key, format!("expected one of {}", names.join(", ")))
            }),
        }
    }

    /// The worklist `key` (a team, a staff id) the caller may read: checked as a name, and
    /// for an agent its own whatever it asked (another one is refused: worklists name
    /// subscribers).
    pub(crate) fn worklist(
        &self,
        key: &str,
        expected: &str,
        who: &store::auth::Principal,
    ) -> Result<Option<String>, ApiError> {
        let asked = self.text(key)?;
        if let Some(v) = &asked {
            line(key, v, 64, expected)?;
        }
        if who.role != store::auth::Role::Agent {
            return Ok(asked);
        }
        let own = who.team.clone().unwrap_or_default();
        if asked.as_deref().is_some_and(|v| v != own) {
            return Err(ApiError::Forbidden(format!(
                "agent {} may read {key} {own}'s worklist only",
                who.name
            )));
        }
        Ok(Some(own))
    }

    /// `limit`: a whole number from 1 to `max`, `default` when absent.
    pub(crate) fn limit(&self, default: u64, max: u64) -> Result<u64, ApiError> {
        match self.text("limit")? {
            None => Ok(default),
            Some(l) => l
                .parse::<u64>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| bad("limit", format!("expected a whole number from 1 to {max}"))),
        }
    }

    pub(crate) fn reject_unknown(&self, known: &[&str]) -> Result<(), ApiError> {
        match self
            .pairs
            .iter()
            .find(|(n, _)| !known.contains(&n.as_str()))
        {
            Some((n, _)) => Err(bad(
                n.clone(),
                format!("unknown parameter; expected one of {}", known.join(", ")),
            )),
            None => Ok(()),
        }
    }

    /// The query as a JSON object, kept as the inbound row's raw payload. `decoded` replaces
    /// values that were read in another charset.
    /// `skip`: a parameter left out (a credential the URL carried).
    pub(crate) fn to_json(&self, decoded: &[(&str, &str)], skip: Option<&str>) -> String {
        let mut map = Map::new();
        for (name, value) in &self.pairs {
            if skip == Some(name.as_str()) {
                continue;
            }
            let value = match decoded.iter().find(|(n, _)| n == name) {
                Some((_, v)) => (*v).to_owned(),
                None => String::from_utf8_lossy(value).into_owned(),
            };
            map.insert(name.clone(), Value::String(value));
        }
        Value::Object(map).to_string()
    }
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte, and a `%`
/// that starts no escape is kept as is.
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => match (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) {
                (Some(high), Some(low)) => {
                    out.push(high << 4 | low);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    out
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Checks a phone number by the one rule of [`domain::Msisdn`] (the import's too) and brings it
/// to the national form subscribers are stored in (`+8613800138000` becomes `13800138000`).
/// The answer is the stored form, for the inbound row; log it only through [`mask`].
pub(crate) fn msisdn(field: &str, raw: &str) -> Result<String, ApiError> {
    domain::Msisdn::parse(raw)
        .map(domain::Msisdn::into_exposed)
        .map_err(|e| bad(field, e.to_string()))
}

/// Phone numbers never appear in logs in full (`13800138000` → `138****8000`): the one mask.
pub(crate) use domain::mask;

/// A bounded single-line string: no control characters, `max` characters at most.
pub(crate) fn line(field: &str, value: &str, max: usize, expected: &str) -> Result<(), ApiError> {
    if value.is_empty() || value.chars().count() > max || value.chars().any(char::is_control) {
        return Err(bad(
            field,
            format!("expected {expected}: 1 to {max} characters, no control characters"),
        ));
    }
    Ok(())
}

/// Where a JSON field sits in the body: `msisdn` for a single object, `[3].msisdn` in a batch.
/// A person's id as staff and agents report it (`agent`, `by`): 1 to 64 of A-Z, a-z, 0-9,
/// `_ - . @`. The store writes it into JSON by hand; a plain id keeps that valid.
pub(crate) fn person_id(field: &str, value: &str, who: &str) -> Result<(), ApiError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.@".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(bad(
            field,
            format!("expected the {who}'s id: 1 to 64 of A-Z, a-z, 0-9, _ - . @"),
        ))
    }
}

pub(crate) fn json_path(prefix: &str, field: &str) -> String {
    match (prefix.is_empty(), field.is_empty()) {
        (true, true) => "body".to_owned(),
        (true, false) => field.to_owned(),
        (false, true) => prefix.to_owned(),
        (false, false) => format!("{prefix}.{field}"),
    }
}

/// Checks the shape of a JSON object before serde reads it, so every rejection can name the
/// field: unknown fields, missing required ones, and values that are not strings.
/// `fields` lists (name, required); optional fields may be null.
pub(crate) fn check_object<'a>(
    value: &'a Value,
    prefix: &str,
    fields: &[(&str, bool)],
    what: &str,
) -> Result<&'a Map<String, Value>, ApiError> {
    let Some(obj) = value.as_object() else {
        return Err(bad(
            json_path(prefix, ""),
            format!("expected a JSON object {what}"),
        ));
    };
    let names: Vec<&str> = fields.iter().map(|(n, _)| *n).collect();
    if let Some(unknown) = obj.keys().find(|k| !names.contains(&k.as_str())) {
        return Err(bad(
            json_path(prefix, unknown),
            format!("unknown field; expected one of {}", names.join(", ")),
        ));
    }
    for (name, required) in fields {
        match obj.get(*name) {
            None if *required => {
                return Err(bad(json_path(prefix, name), "missing; expected a string"));
            }
            None | Some(Value::String(_)) => {}
            Some(Value::Null) if !required => {}
            Some(_) => return Err(bad(json_path(prefix, name), "expected a string")),
        }
    }
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(e: ApiError) -> String {
        match e {
            ApiError::BadRequest { field, .. } => field,
            other => panic!("expected a bad request, got {other:?}"),
        }
    }

    #[test]
    fn query_is_form_decoded() {
        let q = Query::parse(Some("text=YES+please&to=%2B8613800138000&odd=100%&pct=%4")).unwrap();
        assert_eq!(q.text("text").unwrap().as_deref(), Some("YES please"));
        assert_eq!(q.text("to").unwrap().as_deref(), Some("+8613800138000"));
        assert_eq!(q.text("odd").unwrap().as_deref(), Some("100%"));
        assert_eq!(q.text("pct").unwrap().as_deref(), Some("%4"));
        assert_eq!(q.text("missing").unwrap(), None);
    }

    #[test]
    fn duplicate_and_unknown_parameters_are_named() {
        assert_eq!(
            field(Query::parse(Some("from=1&from=2")).err().unwrap()),
            "from"
        );
        let q = Query::parse(Some("team=a&colour=red")).unwrap();
        assert_eq!(
            field(q.reject_unknown(&["team", "state"]).unwrap_err()),
            "colour"
        );
    }

    #[test]
    fn sms_text_follows_the_charset() {
        let q = Query::parse(Some("a=%60%A8%59%7D&b=%E9%80%80%E8%AE%A2&c=%E9&d=%60")).unwrap();
        assert_eq!(
            q.sms_text("a", Some("UTF-16BE")).unwrap().as_deref(),
            Some("您好")
        );
        assert_eq!(q.sms_text("b", None).unwrap().as_deref(), Some("退订"));
        assert_eq!(
            q.sms_text("c", Some("ISO-8859-1")).unwrap().as_deref(),
            Some("é")
        );
        assert_eq!(field(q.sms_text("c", Some("UTF-8")).unwrap_err()), "c");
        assert_eq!(field(q.sms_text("d", Some("UTF-16BE")).unwrap_err()), "d");
        assert_eq!(field(q.sms_text("a", Some("GSM")).unwrap_err()), "charset");
    }

    #[test]
    fn msisdns_are_checked_and_made_national() {
        assert_eq!(msisdn("from", "+8613800138000").unwrap(), "13800138000");
        assert_eq!(msisdn("from", "8613800138000").unwrap(), "13800138000");
        assert_eq!(msisdn("from", "13800138000").unwrap(), "13800138000");
        assert_eq!(msisdn("from", "86123456789").unwrap(), "86123456789");
        assert_eq!(msisdn("from", "+447911123456").unwrap(), "+447911123456");
        assert_eq!(msisdn("from", "10086").unwrap(), "10086");
        for bad in [
            "1234",
            "+",
            "",
            "138-0013-8000",
            "1234567890123456",
            "12345678901234567890123",
            "1380013800a",
            "++13800138000",
        ] {
            assert_eq!(field(msisdn("from", bad).unwrap_err()), "from", "{bad}");
        }
    }

    #[test]
    fn msisdn_is_masked() {
        assert_eq!(mask("13800138000"), "138****8000");
        assert_eq!(mask("10086"), "****");
    }

    #[test]
    fn object_check_names_the_field() {
        let fields = [("msisdn", true), ("value", false)];
        let ok = serde_json::json!({"msisdn": "1", "value": null});
        assert!(check_object(&ok, "", &fields, "").is_ok());
        let cases = [
            (
                serde_json::json!({"msisdn": "1", "colour": "red"}),
                "[2]",
                "[2].colour",
            ),
            (serde_json::json!({"value": "x"}), "", "msisdn"),
            (serde_json::json!({"msisdn": 5}), "", "msisdn"),
            (serde_json::json!({"msisdn": null}), "", "msisdn"),
            (
                serde_json::json!({"msisdn": "1", "value": 3}),
                "[0]",
                "[0].value",
            ),
            (serde_json::json!([1]), "", "body"),
            (serde_json::json!("x"), "[4]", "[4]"),
        ];
        for (value, prefix, want) in cases {
            assert_eq!(
                field(check_object(&value, prefix, &fields, "").unwrap_err()),
                want,
                "{value}"
            );
        }
    }
}
