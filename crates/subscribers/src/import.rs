//! Importing an operator's CSV export through a mapping file.
//!
//! The import is all-or-nothing: [`read_csv`] either returns every row, or every problem it
//! found (each located as `file:line:column`) and no rows, so a half-imported base never
//! reaches the database.

mod error;
mod mapping;
mod value;

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io::Read;

use sha2::{Digest, Sha256};
use store::subscribers::{NewSubscriber, value_tier_for_arpu};

pub use error::{ImportError, ImportErrors};
pub use mapping::{Mapping, parse_mapping};

use mapping::{How, MsisdnSrc, Src};
use value::FieldValue;

/// Reads a CSV export (header line first) and turns each record into a subscriber as
/// `mapping` says. `path_for_messages` only prefixes error messages.
///
/// On any problem, returns all of them (see [`ImportErrors`]) and no rows: header columns the
/// mapping names but the file lacks, malformed records, cells that do not fit their field,
/// blank cells without a `default`, and msisdns used twice (naming both lines).
pub fn read_csv(
    mapping: &Mapping,
    path_for_messages: &str,
    reader: impl Read,
) -> Result<Vec<NewSubscriber>, ImportErrors> {
    let file = path_for_messages;
    let mut errors = ImportErrors::default();
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .from_reader(reader);
    let headers = match csv.headers() {
        Ok(h) => h.clone(),
        Err(e) => return Err(csv_error(file, &e).into()),
    };
    let cols = resolve_columns(mapping, file, &headers, &mut errors);
    if !errors.is_empty() {
        return Err(errors);
    }

    let mut rows = Vec::new();
    // msisdn -> (line, the cell it came from), to name both lines of a duplicate.
    let mut seen: HashMap<String, (u64, String)> = HashMap::new();
    let mut record = csv::StringRecord::new();
    loop {
        match csv.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let row = Row {
                    file,
                    line: record.position().map_or(0, |p| p.line()),
                    record: &record,
                    headers: &headers,
                    cols: &cols,
                };
                if let Some(s) = row.subscriber(mapping, &mut seen, &mut errors)
                    && errors.is_empty()
                {
                    rows.push(s);
                }
            }
            Err(e) => {
                let fatal = matches!(e.kind(), csv::ErrorKind::Io(_));
                errors.push(csv_error(file, &e));
                if fatal {
                    break;
                }
            }
        }
    }
    if errors.is_empty() && rows.is_empty() {
        // An export cut off after its header is a failed export, not an empty base.
        errors.push(ImportError::Line {
            file: file.to_owned(),
            line: 2,
            message: "no records after the header: expected at least one subscriber".to_owned(),
        });
    }
    if errors.is_empty() {
        Ok(rows)
    } else {
        Err(errors)
    }
}

/// The position in the record of each column the mapping reads (indexed like
/// `Mapping::columns`).
fn resolve_columns(
    mapping: &Mapping,
    file: &str,
    headers: &csv::StringRecord,
    errors: &mut ImportErrors,
) -> Vec<usize> {
    let found = || {
        headers
            .iter()
            .map(|h| format!("{:?}", h.trim()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut cols = Vec::with_capacity(mapping.columns.len());
    for c in &mapping.columns {
        let positions: Vec<usize> = headers
            .iter()
            .enumerate()
            .filter(|(_, h)| h.trim() == c.header)
            .map(|(i, _)| i + 1)
            .collect();
        let named_at = format!("{}:{}:{}", mapping.file, c.line, c.column);
        let message = match positions.as_slice() {
            [i] => {
                cols.push(i - 1);
                continue;
            }
            [] if headers.is_empty() => {
                format!(
                    "the file is empty; expected a header line with column {:?} ({named_at}, for {})",
                    c.header, c.field
                )
            }
            [] => format!(
                "no column {:?} in the header (named at {named_at} for {}); the header has {}",
                c.header,
                c.field,
                found()
            ),
            many => format!(
                "column {:?} (named at {named_at} for {}) appears more than once in the header, at columns {}",
                c.header,
                c.field,
                many.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        errors.push(ImportError::Line {
            file: file.to_owned(),
            line: 1,
            message,
        });
    }
    cols
}

fn csv_error(file: &str, e: &csv::Error) -> ImportError {
    let file = file.to_owned();
    match e.kind() {
        csv::ErrorKind::UnequalLengths {
            pos,
            expected_len,
            len,
        } => ImportError::Line {
            file,
            line: pos.as_ref().map_or(0, |p| p.line()),
            message: format!("expected {expected_len} cells like the header, found {len}"),
        },
        csv::ErrorKind::Utf8 { pos, err } => ImportError::Line {
            file,
            line: pos.as_ref().map_or(0, |p| p.line()),
            message: format!("cell {} is not valid UTF-8", err.field() + 1),
        },
        _ => ImportError::Read {
            file,
            message: e.to_string(),
        },
    }
}

/// Synthesized numbers: the prefix, then the hash of prefix and cell reduced to the remaining
/// digits. Hashing the prefix too means another prefix resolves a collision.
fn synthesize_msisdn(prefix: &str, key: &str) -> String {
    let digest = Sha256::new()
        .chain_update(prefix.as_bytes())
        .chain_update([0u8])
        .chain_update(key.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let width = 11 - prefix.len();
    // Checked at mapping time: 1 to 10 digits, so 1 ≤ width ≤ 10 and the power fits.
    let modulus = 10u64.pow(width as u32);
    format!("{prefix}{:0width$}", u64::from_be_bytes(first) % modulus)
}

fn parse_cell<T: FieldValue>(cell: &str, rule: T::Rule, scale: Option<f64>) -> Result<T, String> {
    let value = T::parse(cell, rule)?;
    match scale {
        None => value.check(rule).map(|()| value),
        Some(factor) => {
            let value = value.scaled(factor);
            match value.check(rule) {
                Ok(()) => Ok(value),
                Err(m) => Err(format!("{m} after scaling {cell:?} by {factor}")),
            }
        }
    }
}

struct Row<'a> {
    file: &'a str,
    line: u64,
    record: &'a csv::StringRecord,
    headers: &'a csv::StringRecord,
    cols: &'a [usize],
}

impl Row<'_> {
    /// The trimmed cell of a mapped column, and its 0-based position in the record.
    fn cell(&self, col: usize) -> (&str, usize) {
        let i = self.cols[col];
        // flexible(false) guarantees every record is as long as the header.
        (self.record.get(i).unwrap_or("").trim(), i)
    }

    fn error(&self, index: usize, message: String) -> ImportError {
        ImportError::Cell {
            file: self.file.to_owned(),
            line: self.line,
            column: index + 1,
            header: self.headers.get(index).unwrap_or("").trim().to_owned(),
            message,
        }
    }

    fn get<T: FieldValue>(&self, src: &Src<T>, errors: &mut ImportErrors) -> Option<T> {
        let (col, map, scale, default) = match &src.how {
            How::Constant(v) => return Some(v.clone()),
            How::Column {
                col,
                map,
                scale,
                default,
            } => (*col, map, *scale, default),
        };
        let (cell, index) = self.cell(col);
        let field = src.field;
        let result = if cell.is_empty() {
            default.clone().ok_or_else(|| {
                format!("blank, and the mapping of {field} has no `default` for blank cells")
            })
        } else if let Some(map) = map {
            map.get(cell).cloned().ok_or_else(|| {
                let mut listed: Vec<_> = map.keys().map(|k| format!("{k:?}")).collect();
                listed.sort();
                // A long code list would bury the cell value; the mapping file has them all.
                if listed.len() > 10 {
                    listed.truncate(10);
                    listed.push("...".to_owned());
                }
                format!(
                    "expected one of {} (the `map` of {field}), found {cell:?}",
                    listed.join(", ")
                )
            })
        } else {
            parse_cell(cell, src.rule, scale).map_err(|m| format!("{m} (for {field})"))
        };
        result.map_err(|m| errors.push(self.error(index, m))).ok()
    }

    fn get_optional<T: FieldValue>(
        &self,
        src: Option<&Src<T>>,
        errors: &mut ImportErrors,
    ) -> Option<Option<T>> {
        match src {
            None => Some(None),
            Some(src) => self.get(src, errors).map(Some),
        }
    }

    fn msisdn(
        &self,
        src: &MsisdnSrc,
        seen: &mut HashMap<String, (u64, String)>,
        errors: &mut ImportErrors,
    ) -> Option<String> {
        let (col, prefix) = match src {
            MsisdnSrc::Column { col } => (*col, None),
            MsisdnSrc::Synthesize { col, prefix } => (*col, Some(prefix.as_str())),
        };
        let (cell, index) = self.cell(col);
        let msisdn = match (cell.is_empty(), prefix) {
            (true, None) => Err("blank; every subscriber needs an msisdn".to_owned()),
            (true, Some(_)) => {
                Err("blank; msisdn is synthesized from this column, so it needs a value".to_owned())
            }
            (false, None) => String::parse(cell, value::TextRule::Msisdn)
                .map_err(|m| format!("{m} (for msisdn)")),
            (false, Some(prefix)) => Ok(synthesize_msisdn(prefix, cell)),
        };
        let msisdn = match msisdn {
            Ok(m) => m,
            Err(m) => {
                errors.push(self.error(index, m));
                return None;
            }
        };
        match seen.entry(msisdn) {
            Entry::Vacant(v) => {
                let msisdn = v.key().clone();
                v.insert((self.line, cell.to_owned()));
                Some(msisdn)
            }
            Entry::Occupied(o) => {
                let (line, other) = o.get();
                let msisdn = o.key();
                let message = match prefix {
                    None => format!("msisdn {msisdn} is also on line {line}"),
                    Some(_) if other == cell => format!(
                        "{cell:?} is also on line {line}, so both would get msisdn {msisdn}"
                    ),
                    Some(_) => format!(
                        "msisdn {msisdn} synthesized from {cell:?} is also synthesized from {other:?} on line {line}; choose another prefix"
                    ),
                };
                errors.push(self.error(index, message));
                None
            }
        }
    }

    /// The subscriber of this record, or `None` after pushing every problem of the record.
    fn subscriber(
        &self,
        mapping: &Mapping,
        seen: &mut HashMap<String, (u64, String)>,
        errors: &mut ImportErrors,
    ) -> Option<NewSubscriber> {
        let p = &mapping.plan;
        // Every field is evaluated before any is unwrapped, so one record reports all its
        // problems, not just the first.
        let msisdn = self.msisdn(&p.msisdn, seen, errors);
        let external_id = self.get_optional(p.external_id.as_ref(), errors);
        let name = self.get(&p.name, errors);
        let gender = self.get(&p.gender, errors);
        let age = self.get(&p.age, errors);
        let region = self.get(&p.region, errors);
        let brand = self.get(&p.brand, errors);
        let value_tier = self.get_optional(p.value_tier.as_ref(), errors);
        let arpu_3m = self.get(&p.arpu_3m, errors);
        let balance = self.get(&p.balance, errors);
        let tenure_months = self.get(&p.tenure_months, errors);
        let student_stage = self.get(&p.student_stage, errors);
        let campus = self.get_optional(p.campus.as_ref(), errors);
        let first_channel = self.get(&p.first_channel, errors);
        let first_channel_slot = self.get(&p.first_channel_slot, errors);
        let second_channel = self.get(&p.second_channel, errors);
        let second_channel_slot = self.get(&p.second_channel_slot, errors);
        let complaints_30d = self.get(&p.complaints_30d, errors);
        let do_not_disturb = self.get(&p.do_not_disturb, errors);
        let churn_risk = self.get(&p.churn_risk, errors);
        let timezone = self.get_optional(p.timezone.as_ref(), errors);
        let opt_out = self.get(&p.opt_out, errors);

        let (
            Some(msisdn),
            Some(external_id),
            Some(name),
            Some(gender),
            Some(age),
            Some(region),
            Some(brand),
            Some(value_tier),
            Some(arpu_3m),
            Some(balance),
            Some(tenure_months),
            Some(student_stage),
            Some(campus),
            Some(first_channel),
            Some(first_channel_slot),
            Some(second_channel),
            Some(second_channel_slot),
            Some(complaints_30d),
            Some(do_not_disturb),
            Some(churn_risk),
            Some(timezone),
            Some(opt_out),
        ) = (
            msisdn,
            external_id,
            name,
            gender,
            age,
            region,
            brand,
            value_tier,
            arpu_3m,
            balance,
            tenure_months,
            student_stage,
            campus,
            first_channel,
            first_channel_slot,
            second_channel,
            second_channel_slot,
            complaints_30d,
            do_not_disturb,
            churn_risk,
            timezone,
            opt_out,
        )
        else {
            return None;
        };
        Some(NewSubscriber {
            msisdn,
            external_id,
            name,
            gender,
            age,
            region,
            brand,
            value_tier: value_tier.unwrap_or_else(|| value_tier_for_arpu(arpu_3m).to_owned()),
            arpu_3m,
            balance,
            tenure_months,
            student_stage,
            campus,
            first_channel,
            first_channel_slot,
            second_channel,
            second_channel_slot,
            complaints_30d,
            do_not_disturb,
            churn_risk,
            timezone,
            opt_out,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthesized_numbers_are_eleven_digits_and_depend_on_prefix_and_key() {
        let a = synthesize_msisdn("139", "7590-VHVEG");
        assert_eq!(a.len(), 11);
        assert!(a.starts_with("139"));
        assert!(a.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(a, synthesize_msisdn("139", "7590-VHVEG"));
        assert_ne!(a, synthesize_msisdn("139", "5575-GNVDE"));
        assert_ne!(a[3..], synthesize_msisdn("138", "7590-VHVEG")[3..]);
        let long = synthesize_msisdn("1391234567", "x");
        assert_eq!(long.len(), 11);
        assert!(long.starts_with("1391234567"));
    }
}
