//! Fuzzing the import with a fixed budget (issue 7, item 6): the shipped mapping file and the
//! first records of the shipped Telco export, mutated (byte flips, line deletions and
//! duplications, truncation, inserted CSV/YAML tokens), and arbitrary bytes, go through
//! `parse_mapping` and `read_csv`. Neither may panic, and every rejection must be located
//! inside its input: a mapping error at a line and column of the mapping, a CSV error at a
//! line of the file (and, for a cell, a column of that record).
//!
//! Seeds follow `testkit::proptest_config` (fixed under CI=true). The CSV corpus is the header
//! and 40 records, so every case is small.

use std::path::PathBuf;

use proptest::prelude::*;
use subscribers::{ImportError, Mapping, read_csv};

fn parse_mapping(file: &str, yaml: &str) -> Result<Mapping, ImportError> {
    subscribers::parse_mapping(&catalogue::shipped(), file, yaml)
}

fn repo_file(relative: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn mapping_text() -> String {
    repo_file("../../workflows/imports/telco-ibm.mapping.yaml")
}

fn telco_mapping() -> Mapping {
    parse_mapping("telco-ibm.mapping.yaml", &mapping_text()).unwrap_or_else(|e| panic!("{e}"))
}

/// The header and the first 40 records of the shipped export.
fn csv_corpus() -> Vec<u8> {
    let text = repo_file("tests/fixtures/Telco-Customer-Churn.csv");
    let lines: Vec<&str> = text.split_inclusive('\n').take(41).collect();
    lines.concat().into_bytes()
}

#[derive(Debug, Clone)]
enum Mutation {
    FlipByte {
        at: prop::sample::Index,
        bit: u8,
    },
    DeleteLine(prop::sample::Index),
    DuplicateLine(prop::sample::Index),
    Truncate(prop::sample::Index),
    Insert {
        at: prop::sample::Index,
        text: &'static [u8],
    },
}

const TOKENS: &[&[u8]] = &[
    b",",
    b"\"",
    b"\n",
    b"\r\n",
    b"\r",
    b",,",
    b"\"\"",
    b" ",
    b"\t",
    b"\x00",
    b"\xff",
    b"\xe4\xb8",
    b"\xef\xbb\xbf",
    b"1e999",
    b"NaN",
    b"-1",
    b"99999999999",
    b"Yes",
    b"Female",
    b"\x1b[2J",
    b": ",
    b"- ",
    b"{",
    b"}",
    b"[",
    b"]",
    b"column: ",
    b"value: ",
    b"map: ",
    b"scale: ",
    b"synthesize: ",
    b"default: ",
    b"prefix: \"\"",
    b"&a ",
    b"*a",
    b"#",
];

fn mutation() -> impl Strategy<Value = Mutation> {
    use prop::sample::Index;
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipByte { at, bit }),
        any::<Index>().prop_map(Mutation::DeleteLine),
        any::<Index>().prop_map(Mutation::DuplicateLine),
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), prop::sample::select(TOKENS))
            .prop_map(|(at, text)| Mutation::Insert { at, text }),
    ]
}

fn apply(bytes: &[u8], m: &Mutation) -> Vec<u8> {
    let mut out = bytes.to_vec();
    let mut lines: Vec<&[u8]> = bytes.split_inclusive(|b| *b == b'\n').collect();
    match m {
        Mutation::FlipByte { at, bit } if !out.is_empty() => {
            let i = at.index(out.len());
            out[i] ^= 1 << bit;
            out
        }
        Mutation::DeleteLine(i) if !lines.is_empty() => {
            lines.remove(i.index(lines.len()));
            lines.concat()
        }
        Mutation::DuplicateLine(i) if !lines.is_empty() => {
            let i = i.index(lines.len());
            lines.insert(i, lines[i]);
            lines.concat()
        }
        Mutation::Truncate(at) => {
            out.truncate(at.index(out.len() + 1));
            out
        }
        Mutation::Insert { at, text } => {
            let i = at.index(out.len() + 1);
            out.splice(i..i, text.iter().copied());
            out
        }
        _ => out,
    }
}

fn mutate(bytes: &[u8], ms: &[Mutation]) -> Vec<u8> {
    ms.iter().fold(bytes.to_vec(), |b, m| apply(&b, m))
}

/// Lines as the CSV reader counts them (`\n`, `\r\n` and a lone `\r` each end one).
fn csv_lines(bytes: &[u8]) -> usize {
    let text = String::from_utf8_lossy(bytes)
        .replace("\r\n", "\n")
        .replace('\r', "\n");
    text.split('\n').count()
}

fn import(mapping: &Mapping, bytes: &[u8]) {
    let Err(errors) = read_csv(mapping, "data.csv", bytes) else {
        return;
    };
    assert!(errors.total() > 0 && !errors.errors().is_empty());
    let lines = csv_lines(bytes) as u64;
    let input = String::from_utf8_lossy(bytes);
    for e in errors.errors() {
        match e {
            ImportError::Cell { line, column, .. } => {
                assert!(
                    (2..=lines + 1).contains(line) && *column >= 1,
                    "{e}\n--- input ---\n{input}"
                );
            }
            ImportError::Line { line, .. } => {
                assert!(
                    (1..=lines + 1).contains(line),
                    "{e}\n--- input ---\n{input}"
                );
            }
            other => panic!("not located: {other}\n--- input ---\n{input}"),
        }
    }
}

#[test]
fn the_unmutated_corpus_imports() {
    let rows = read_csv(&telco_mapping(), "data.csv", csv_corpus().as_slice()).unwrap();
    assert_eq!(rows.len(), 40);
}

proptest! {
    #![proptest_config(testkit::proptest_config(400))]

    #[test]
    fn mutated_exports_never_panic_and_every_rejection_is_located(
        ms in prop::collection::vec(mutation(), 1..6),
    ) {
        import(&telco_mapping(), &mutate(&csv_corpus(), &ms));
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_every_rejection_is_located(
        bytes in prop::collection::vec(any::<u8>(), 0..600),
        after_header in any::<bool>(),
    ) {
        // Behind a valid header the bytes reach the record and cell checks.
        let mut input = Vec::new();
        if after_header {
            input.extend_from_slice(csv_corpus().split(|b| *b == b'\n').next().unwrap());
            input.push(b'\n');
        }
        input.extend_from_slice(&bytes);
        import(&telco_mapping(), &input);
    }

    #[test]
    fn mutated_mappings_never_panic_and_every_rejection_is_located(
        ms in prop::collection::vec(mutation(), 1..6),
    ) {
        let bytes = mutate(mapping_text().as_bytes(), &ms);
        let text = String::from_utf8_lossy(&bytes).into_owned();
        match parse_mapping("m.yaml", &text) {
            Ok(mapping) => import(&mapping, &csv_corpus()),
            Err(ImportError::Mapping { line, column, .. }) => {
                let normalized = text.replace("\r\n", "\n").replace('\r', "\n");
                let lines: Vec<&str> = normalized.split('\n').collect();
                prop_assert!(
                    line >= 1 && line as usize <= lines.len() + 1,
                    "line {line} outside the mapping:\n{text}"
                );
                let chars = lines.get(line as usize - 1).map_or(0, |l| l.chars().count());
                prop_assert!(
                    column >= 1 && column as usize <= chars + 2,
                    "column {column} outside line {line} ({chars} chars):\n{text}"
                );
            }
            Err(other) => panic!("a mapping error that is not located: {other}"),
        }
    }
}
