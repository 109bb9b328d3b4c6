//! Fuzzing the workflow parser with a fixed budget (issue 7, item 6): the shipped workflow and
//! segments files, mutated (byte flips, line deletions and duplications, truncation, inserted
//! YAML tokens), and arbitrary text, go through `compile`. It must never panic, and every
//! rejection must point inside the file it names (line 1.. and a column on that line).
//!
//! Seeds follow `testkit::proptest_config` (fixed under CI=true). Inputs are bounded by the
//! corpus size (a few kB), so no case can take long.

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;

fn repo(rel: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

struct Corpus {
    workflow: String,
    segments: String,
    templates: BTreeMap<String, String>,
}

fn corpus() -> Corpus {
    let mut templates = BTreeMap::new();
    for t in ["freshman-offer.txt", "campus-bundle-call.txt"] {
        templates.insert(
            format!("templates/{t}"),
            repo(&format!("workflows/templates/{t}")),
        );
    }
    Corpus {
        workflow: repo("workflows/autumn-enrollment.yaml"),
        segments: repo("workflows/segments.yaml"),
        templates,
    }
}

/// One mutation of a text, as bytes (then read back lossily, as a file would be).
#[derive(Debug, Clone)]
enum Mutation {
    FlipByte {
        at: prop::sample::Index,
        bit: u8,
    },
    DeleteLine(prop::sample::Index),
    DuplicateLine(prop::sample::Index),
    SwapLines(prop::sample::Index, prop::sample::Index),
    Truncate(prop::sample::Index),
    Insert {
        at: prop::sample::Index,
        text: &'static str,
    },
}

const TOKENS: &[&str] = &[
    ":",
    "- ",
    "{",
    "}",
    "[",
    "]",
    "\"",
    "'",
    "\n",
    "  ",
    "\t",
    "&a ",
    "*a",
    "!!str ",
    "? ",
    "|\n",
    ">-\n",
    "#",
    "---\n",
    "...\n",
    ",",
    "~",
    "null",
    "0",
    "-1",
    "1e999",
    "99999999999w",
    "..",
    "/",
    "../../etc/passwd",
    "0 0 30 2 *",
    "td",
    "reply: ",
    "outcome: ",
    "event: ",
    "{ type: reply }",
    "exclud: ",
    "where: \"",
    "' or '",
    " in [",
    "中",
    "\u{0}",
    "\u{feff}",
];

fn mutation() -> impl Strategy<Value = Mutation> {
    use prop::sample::Index;
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipByte { at, bit }),
        any::<Index>().prop_map(Mutation::DeleteLine),
        any::<Index>().prop_map(Mutation::DuplicateLine),
        (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), prop::sample::select(TOKENS))
            .prop_map(|(at, text)| Mutation::Insert { at, text }),
    ]
}

fn apply(text: &str, m: &Mutation) -> String {
    let mut bytes = text.as_bytes().to_vec();
    let mut lines: Vec<&str> = text.split_inclusive('\n').collect();
    match m {
        Mutation::FlipByte { at, bit } => {
            if !bytes.is_empty() {
                let i = at.index(bytes.len());
                bytes[i] ^= 1 << bit;
            }
            String::from_utf8_lossy(&bytes).into_owned()
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
        Mutation::SwapLines(a, b) if !lines.is_empty() => {
            let (a, b) = (a.index(lines.len()), b.index(lines.len()));
            lines.swap(a, b);
            lines.concat()
        }
        Mutation::Truncate(at) => {
            bytes.truncate(at.index(bytes.len() + 1));
            String::from_utf8_lossy(&bytes).into_owned()
        }
        Mutation::Insert { at, text: t } => {
            bytes.splice(
                at.index(bytes.len() + 1)..at.index(bytes.len() + 1),
                t.bytes(),
            );
            String::from_utf8_lossy(&bytes).into_owned()
        }
        _ => text.to_owned(),
    }
}

fn mutate(text: &str, ms: &[Mutation]) -> String {
    ms.iter().fold(text.to_owned(), |t, m| apply(&t, m))
}

/// Every diagnostic names one of the bundle's files and a place inside it.
fn assert_located(bundle: &spec::Bundle, diags: &[spec::Diagnostic]) {
    assert!(!diags.is_empty(), "a rejection says why");
    for d in diags {
        let source = if d.file == bundle.path {
            bundle.workflow.as_str()
        } else if d.file.ends_with("segments.yaml") {
            bundle.segments.as_deref().unwrap_or("")
        } else {
            let name = d.file.trim_start_matches("workflows/");
            bundle
                .templates
                .get(name)
                .map(String::as_str)
                .unwrap_or_else(|| panic!("{d} names a file not in the bundle"))
        };
        assert!(!d.message.is_empty(), "{d}");
        assert!(d.line >= 1, "not located: {d}\n--- input ---\n{source}");
        // A parser may point one past the last line (end of input).
        // YAML's line breaks: \r\n, \r and \n.
        let normalized = source.replace("\r\n", "\n").replace('\r', "\n");
        let lines: Vec<&str> = normalized.split('\n').collect();
        assert!(
            d.line as usize <= lines.len() + 1,
            "line beyond the input: {d}\n--- input ---\n{source}"
        );
        let line_chars = lines
            .get(d.line as usize - 1)
            .map_or(0, |l| l.chars().count());
        assert!(
            d.column >= 1 && d.column as usize <= line_chars + 2,
            "column beyond the line ({line_chars} chars): {d}\n--- input ---\n{source}"
        );
    }
}

fn compile(workflow: String, segments: String, templates: &BTreeMap<String, String>) {
    let bundle = spec::Bundle {
        path: "workflows/autumn-enrollment.yaml".to_owned(),
        workflow,
        segments: Some(segments),
        templates: templates.clone(),
        attributes: None,
        monitors: Default::default(),
        periods: Default::default(),
        staff: None,
    };
    if let Err(diags) = spec::compile(&bundle, Some(&["cn-holidays".to_owned()])) {
        assert_located(&bundle, &diags);
    }
}

#[test]
fn the_unmutated_corpus_compiles() {
    let c = corpus();
    let bundle = spec::Bundle {
        path: "workflows/autumn-enrollment.yaml".to_owned(),
        workflow: c.workflow,
        segments: Some(c.segments),
        templates: c.templates,
        attributes: None,
        monitors: Default::default(),
        periods: Default::default(),
        staff: None,
    };
    spec::compile(&bundle, Some(&["cn-holidays".to_owned()])).unwrap();
}

proptest! {
    #![proptest_config(testkit::proptest_config(400))]

    #[test]
    fn mutated_workflows_never_panic_and_every_rejection_is_located(
        ms in prop::collection::vec(mutation(), 1..6),
    ) {
        let c = corpus();
        compile(mutate(&c.workflow, &ms), c.segments, &c.templates);
    }

    #[test]
    fn mutated_segments_never_panic_and_every_rejection_is_located(
        ms in prop::collection::vec(mutation(), 1..6),
    ) {
        let c = corpus();
        compile(c.workflow, mutate(&c.segments, &ms), &c.templates);
    }

    #[test]
    fn arbitrary_text_never_panics_and_every_rejection_is_located(
        text in "(.|\n){0,400}",
    ) {
        let c = corpus();
        compile(text, c.segments, &c.templates);
    }

    #[test]
    fn yaml_token_soup_never_panics_and_every_rejection_is_located(
        parts in prop::collection::vec(
            prop_oneof![
                prop::sample::select(TOKENS).prop_map(str::to_owned),
                prop::sample::select(&[
                    "campaign", "timezone", "waves", "id", "channel", "template", "respond_within",
                    "send_within", "audience", "schedule", "cron", "season", "policy", "evaluate",
                    "responses", "goal", "email", "team", "after", "control", "share", "hold",
                ][..]).prop_map(|k| format!("{k}: ")),
                "[a-z0-9 ]{0,8}",
            ],
            0..60,
        ),
    ) {
        let c = corpus();
        compile(parts.concat(), c.segments, &c.templates);
    }
}
