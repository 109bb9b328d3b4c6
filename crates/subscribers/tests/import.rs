use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use catalogue::{Catalogue, Value};
use store::subscribers::NewSubscriber;
use subscribers::{ImportError, ImportErrors, Mapping, read_csv};

/// Parses a mapping against the shipped catalogue.
fn parse_mapping(file: &str, yaml: &str) -> Result<Mapping, ImportError> {
    subscribers::parse_mapping(&catalogue::shipped(), file, yaml)
}

fn dec(s: &NewSubscriber, name: &str) -> f64 {
    match s.get(name) {
        Some(Value::Dec(d)) => d,
        other => panic!("{name} is {other:?}, not a decimal"),
    }
}

fn int(s: &NewSubscriber, name: &str) -> i64 {
    match s.get(name) {
        Some(Value::Int(i)) => i,
        other => panic!("{name} is {other:?}, not an integer"),
    }
}

fn repo_file(relative: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn telco_mapping() -> Mapping {
    let yaml = repo_file("../../workflows/imports/telco-ibm.mapping.yaml");
    parse_mapping("telco-ibm.mapping.yaml", &yaml).unwrap_or_else(|e| panic!("{e}"))
}

fn telco_csv() -> String {
    repo_file("tests/fixtures/Telco-Customer-Churn.csv")
}

/// Replaces one cell of the Telco fixture. `line` is the CSV line (header = 1), `column` 1-based.
fn telco_with(line: usize, column: usize, value: &str) -> String {
    let mut lines: Vec<String> = telco_csv().lines().map(str::to_owned).collect();
    let mut cells: Vec<&str> = lines[line - 1].split(',').collect();
    cells[column - 1] = value;
    lines[line - 1] = cells.join(",");
    lines.join("\n")
}

fn import_errors(mapping: &Mapping, csv: &str) -> ImportErrors {
    match read_csv(mapping, "data.csv", csv.as_bytes()) {
        Ok(rows) => panic!("expected errors, imported {} rows", rows.len()),
        Err(e) => e,
    }
}

fn messages(errors: &ImportErrors) -> Vec<String> {
    errors.errors().iter().map(ToString::to_string).collect()
}

fn mapping_error(yaml: &str) -> String {
    match parse_mapping("m.yaml", yaml) {
        Ok(_) => panic!("expected a mapping error for:\n{yaml}"),
        Err(e @ ImportError::Mapping { .. }) => e.to_string(),
        Err(other) => panic!("not a mapping error: {other}"),
    }
}

/// A small mapping reading `phone`, `name`, `spend` and `flag` columns; the rest constant.
const SMALL: &str = "\
fields:
  msisdn: { column: phone }
  name: { column: name }
  gender: { value: unknown }
  age: { value: 30 }
  region: { value: xian }
  brand: { value: gotone }
  arpu_3m: { column: spend }
  balance: { value: 50 }
  tenure_months: { value: 12 }
  student_stage: { value: none }
  first_channel: { value: sms }
  first_channel_slot: { value: '09:00-12:00' }
  second_channel: { value: email }
  second_channel_slot: { value: '18:00-21:00' }
  complaints_30d: { value: 0 }
  do_not_disturb: { column: flag }
  churn_risk: { value: 0.2 }
  opt_out: { value: false }
";

fn small() -> Mapping {
    parse_mapping("small.yaml", SMALL).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_telco_export_imports_completely() {
    let rows = read_csv(
        &telco_mapping(),
        "Telco-Customer-Churn.csv",
        telco_csv().as_bytes(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rows.len(), 7_043);

    let first = &rows[0];
    assert_eq!(first.external_id.as_deref(), Some("7590-VHVEG"));
    assert_eq!(first.text("gender"), "female");
    assert_eq!(int(first, "age"), 40);
    assert_eq!(int(first, "tenure_months"), 1);
    assert_eq!(dec(first, "arpu_3m"), 208.95, "29.85 dollars × 7");
    assert_eq!(
        first.get("value_tier"),
        None,
        "derived in SQL, never imported"
    );
    assert_eq!(dec(first, "churn_risk"), 0.1);
    assert_eq!(first.text("name"), "Customer");
    assert_eq!(first.text("region"), "xian");
    assert_eq!(first.text("brand"), "gotone");
    assert_eq!(first.text("student_stage"), "none");
    assert_eq!(first.get("campus"), Some(Value::Null));
    assert_eq!(first.timezone, None);
    assert_eq!(first.text("first_channel_slot"), "18:00-21:00");

    let msisdns: HashSet<&str> = rows.iter().map(|s| s.msisdn.as_str()).collect();
    assert_eq!(msisdns.len(), 7_043);
    assert!(
        rows.iter()
            .all(|s| s.msisdn.len() == 11 && s.msisdn.starts_with("139"))
    );
    assert_eq!(
        rows.iter().filter(|s| dec(s, "churn_risk") == 0.9).count(),
        1_869
    );
    assert_eq!(rows.iter().filter(|s| int(s, "age") == 70).count(), 1_142);
    assert_eq!(
        rows.iter().filter(|s| s.text("gender") == "male").count(),
        3_555
    );

    // Synthesized numbers are stable: importing again gives the same msisdns.
    let again = read_csv(&telco_mapping(), "x.csv", telco_csv().as_bytes()).expect("imports");
    assert_eq!(rows, again);
}

#[test]
fn a_bad_number_is_reported_at_its_line_and_column() {
    let errors = import_errors(&telco_mapping(), &telco_with(12, 19, "abc"));
    assert_eq!(
        messages(&errors),
        [
            r#"data.csv:12:19 (MonthlyCharges): expected a decimal number, found "abc" (for arpu_3m)"#
        ]
    );
    assert_eq!(
        errors.errors()[0],
        ImportError::Cell {
            file: "data.csv".into(),
            line: 12,
            column: 19,
            header: "MonthlyCharges".into(),
            message: r#"expected a decimal number, found "abc" (for arpu_3m)"#.into(),
        }
    );
}

#[test]
fn every_bad_row_is_reported_and_nothing_imported() {
    let csv = telco_with(3, 19, "NaN");
    let mut lines: Vec<&str> = csv.lines().collect();
    let line_99 = lines[98]
        .replacen(",Male,", ",M,", 1)
        .replacen(",Female,", ",F,", 1);
    lines[98] = &line_99;
    let errors = import_errors(&telco_mapping(), &lines.join("\n"));
    let got = messages(&errors);
    assert_eq!(errors.total(), 2, "{got:#?}");
    assert!(
        got[0].starts_with("data.csv:3:19 (MonthlyCharges): expected a finite decimal number"),
        "{got:#?}"
    );
    assert!(got[1].starts_with("data.csv:99:2 (gender): "), "{got:#?}");
    assert!(got[1].contains(r#""Female", "Male""#), "{got:#?}");
}

#[test]
fn the_error_list_is_capped() {
    let mut csv = String::from("phone,name,spend,flag\n");
    for i in 0..60 {
        csv.push_str(&format!("139000000{i:02},A,lots,no\n"));
    }
    let errors = import_errors(&small(), &csv);
    assert_eq!(errors.total(), 60);
    assert_eq!(errors.errors().len(), ImportErrors::SHOWN);
    let text = errors.to_string();
    assert_eq!(text.lines().count(), ImportErrors::SHOWN + 1);
    assert!(text.ends_with("\nand 10 more"), "{text}");
    assert!(text.starts_with("data.csv:2:3 (spend): "), "{text}");
}

#[test]
fn a_missing_column_is_named_with_the_headers_found() {
    let yaml = SMALL.replace("column: spend", "column: Spend");
    let mapping = parse_mapping("small.yaml", &yaml).expect("valid mapping");
    let errors = import_errors(&mapping, "phone,name,spend,flag\n13900000000,A,1,no\n");
    assert_eq!(
        messages(&errors),
        [
            r#"data.csv:1: no column "Spend" in the header (named at small.yaml:8:22 for arpu_3m); the header has "phone", "name", "spend", "flag""#
        ]
    );
}

// Guards: import.rs `Row::msisdn`, the duplicate message formats the `Msisdn` (masked by its
// Display), not the cell. Before, it printed `msisdn 13900000001 is also on line 2`.
#[test]
fn duplicate_msisdns_name_both_lines_with_the_number_masked() {
    // The international form of a number in the file is the same subscriber.
    let csv =
        "phone,name,spend,flag\n13900000001,A,1,no\n13900000002,B,1,no\n+8613900000001,C,1,no\n";
    let errors = import_errors(&small(), csv);
    assert_eq!(
        messages(&errors),
        ["data.csv:4:1 (phone): msisdn 139****0001 is also on line 2"]
    );
    let text = errors.to_string();
    assert!(!text.contains("13900000001"), "{text}");
}

#[test]
fn a_repeated_source_of_synthesized_msisdns_names_both_lines() {
    let csv = telco_with(7, 1, "7590-VHVEG");
    let errors = import_errors(&telco_mapping(), &csv);
    let got = messages(&errors);
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(
        got[0].starts_with(r#"data.csv:7:1 (customerID): msisdn 139****"#)
            && got[0].contains(r#"synthesized from "7590-VHVEG" is also synthesized on line 2"#),
        "{got:#?}"
    );
}

#[test]
fn blank_cells_need_a_default() {
    // TotalCharges is a single space on 11 lines of the export, the first on line 490.
    let yaml = repo_file("../../workflows/imports/telco-ibm.mapping.yaml").replace(
        "balance:\n    value: 100",
        "balance:\n    column: TotalCharges",
    );
    let mapping = parse_mapping("m.yaml", &yaml).expect("valid mapping");
    let errors = import_errors(&mapping, &telco_csv());
    assert_eq!(errors.total(), 11);
    assert_eq!(
        messages(&errors)[0],
        "data.csv:490:20 (TotalCharges): blank, and the mapping of balance has no `default` for blank cells"
    );

    let yaml = yaml.replace(
        "column: TotalCharges",
        "column: TotalCharges\n    default: 0",
    );
    let mapping = parse_mapping("m.yaml", &yaml).expect("valid mapping");
    let rows = read_csv(&mapping, "data.csv", telco_csv().as_bytes()).expect("imports");
    assert_eq!(rows.iter().filter(|s| dec(s, "balance") == 0.0).count(), 11);
    assert_eq!(
        dec(&rows[0], "balance"),
        29.85,
        "TotalCharges is not scaled"
    );
}

#[test]
fn malformed_records_and_values_are_reported() {
    let csv = "phone,name,spend,flag\n\
               13900000001,A,1\n\
               139-0000-0000,B,1,no\n\
               13900000003,C,inf,no\n\
               13900000004,D,2,perhaps\n\
               13900000005, ,2,no\n";
    let errors = import_errors(&small(), csv);
    assert_eq!(
        messages(&errors),
        [
            "data.csv:2: expected 4 cells like the header, found 3",
            "data.csv:3:1 (phone): expected a phone number: an optional leading + and 5 to 15 digits, nothing else (found 13 characters with '-') (for msisdn)",
            r#"data.csv:4:3 (spend): expected a finite decimal number, found "inf" (for arpu_3m)"#,
            r#"data.csv:5:4 (flag): expected true or false (or yes/no, 1/0), found "perhaps" (for do_not_disturb)"#,
            "data.csv:6:2 (name): blank, and the mapping of name has no `default` for blank cells",
        ]
    );
}

#[test]
fn a_small_file_imports() {
    let csv = "phone,name,spend,flag\n13900000001,Wang Wei,650,yes\n13900000002,Li Na, 99.5 ,0\n";
    let rows = read_csv(&small(), "data.csv", csv.as_bytes()).expect("imports");
    assert_eq!(rows.len(), 2);
    assert_eq!(dec(&rows[0], "arpu_3m"), 650.0);
    assert!(rows[0].do_not_disturb);
    assert_eq!(dec(&rows[1], "arpu_3m"), 99.5);
    assert!(!rows[1].do_not_disturb);
    assert_eq!(rows[1].text("name"), "Li Na");
}

#[test]
fn an_unknown_mapping_key_is_located() {
    let yaml = SMALL.replace(
        "  arpu_3m: { column: spend }",
        "  arpu_3m: { colunm: spend }",
    );
    assert_eq!(
        mapping_error(&yaml),
        "m.yaml:8:14: unknown field `colunm`, expected one of column, map, scale, default, round, value, synthesize, date_format"
    );
    let yaml = SMALL.replace("  region:", "  regoin:");
    let e = mapping_error(&yaml);
    assert!(
        e.starts_with(
            "m.yaml:6:3: unknown attribute `regoin` (did you mean `region`?), expected one of msisdn, "
        ),
        "{e}"
    );
    let e = mapping_error(&format!("{SMALL}delimiter: ';'\n"));
    assert!(
        e.starts_with("m.yaml:20:1: unknown field `delimiter`"),
        "{e}"
    );
}

#[test]
fn a_required_field_left_out_is_named() {
    let yaml = SMALL.replace("  region: { value: xian }\n", "");
    assert_eq!(
        mapping_error(&yaml),
        "m.yaml:2:3: required field not mapped: region; map each with `column:`, `value:` or, for msisdn, `synthesize:`"
    );
    let yaml = yaml.replace("  msisdn: { column: phone }\n", "");
    assert!(
        mapping_error(&yaml).contains("required fields not mapped: msisdn, region;"),
        "{}",
        mapping_error(&yaml)
    );
}

#[test]
fn enumerated_values_in_the_mapping_are_checked_against_the_catalogue() {
    let e = mapping_error(&SMALL.replace("brand: { value: gotone }", "brand: { value: GoTone }"));
    assert_eq!(
        e,
        r#"m.yaml:7:19: expected one of gotone, mzone, easyown, found "GoTone" (for brand)"#
    );
    let e = mapping_error(&SMALL.replace(
        "gender: { value: unknown }",
        "gender: { column: g, map: { F: female, M: man } }",
    ));
    assert_eq!(
        e,
        r#"m.yaml:4:45: expected one of female, male, unknown, found "man" (for gender)"#
    );
    let e = mapping_error(&SMALL.replace("'09:00-12:00'", "morning"));
    assert!(
        e.starts_with("m.yaml:13:32: expected a time slot HH:MM-HH:MM"),
        "{e}"
    );
}

#[test]
fn mapping_shapes_that_cannot_work_are_refused() {
    for (from, to, expected) in [
        (
            "name: { column: name }",
            "name: { column: name, scale: 2 }",
            "m.yaml:3:32: `scale` applies only to number fields",
        ),
        (
            "age: { value: 30 }",
            "age: { value: 30, default: 1 }",
            "m.yaml:5:30: `default` applies only with `column`",
        ),
        (
            "msisdn: { column: phone }",
            "msisdn: { value: '13900000000' }",
            "m.yaml:2:20: msisdn cannot be a constant `value`",
        ),
        (
            "name: { column: name }",
            "name: { synthesize: { from: id, prefix: '139' } }",
            "m.yaml:3:23: `synthesize` applies only to msisdn",
        ),
        (
            "msisdn: { column: phone }",
            "msisdn: { synthesize: { from: id, prefix: '239' } }",
            "m.yaml:2:45: expected a prefix of 1 to 10 digits starting with 1",
        ),
        (
            "name: { column: name }",
            "name: { column: name, value: x }",
            "m.yaml:3:32: name has both `column` and `value`",
        ),
        (
            "arpu_3m: { column: spend }",
            "arpu_3m: { column: spend, scale: .nan }",
            "m.yaml:8:36: ",
        ),
        (
            "churn_risk: { value: 0.2 }",
            "churn_risk: { value: 1.5 }",
            "m.yaml:18:24: expected a number from 0 to 1, found 1.5 (for churn_risk)",
        ),
        (
            "age: { value: 30 }",
            "age: {}",
            "m.yaml:5:8: age needs a `column:` or a `value:`",
        ),
        ("fields:", "fields: [", "m.yaml:"),
        (
            "do_not_disturb: { column: flag }",
            "do_not_disturb: { column: flag, map: { Y: true, Y: false } }",
            "m.yaml:17:51: duplicate mapping key: Y",
        ),
        (
            "do_not_disturb: { column: flag }",
            "do_not_disturb: { column: flag, map: { Y: true, ' Y': false } }",
            "m.yaml:17:45: the `map` of do_not_disturb lists \"Y\" twice",
        ),
    ] {
        let yaml = SMALL.replace(from, to);
        assert_ne!(yaml, SMALL, "{from}");
        let e = mapping_error(&yaml);
        assert!(
            e.starts_with(expected),
            "{to}\n  got: {e}\n  expected: {expected}"
        );
    }
}

#[test]
fn scaled_values_are_range_checked_after_scaling() {
    let yaml = SMALL.replace(
        "churn_risk: { value: 0.2 }",
        "churn_risk: { column: spend, scale: 0.01 }",
    );
    let mapping = parse_mapping("m.yaml", &yaml).expect("valid mapping");
    let rows = read_csv(
        &mapping,
        "d.csv",
        "phone,name,spend,flag\n13900000001,A,45,no\n".as_bytes(),
    )
    .expect("imports");
    assert_eq!(dec(&rows[0], "churn_risk"), 0.45);
    let errors = import_errors(&mapping, "phone,name,spend,flag\n13900000001,A,145,no\n");
    assert_eq!(
        messages(&errors),
        [
            r#"data.csv:2:3 (spend): expected a number from 0 to 1, found 1.45 after scaling "145" by 0.01 (for churn_risk)"#
        ]
    );
}

#[test]
fn an_empty_file_and_a_header_only_file_are_errors() {
    let errors = import_errors(&small(), "");
    assert!(messages(&errors)[0].starts_with("data.csv:1: the file is empty"));
    // An export cut off after its header must not pass as "the base has nobody".
    for csv in ["phone,name,spend,flag\n", "phone,name,spend,flag"] {
        let errors = import_errors(&small(), csv);
        assert_eq!(
            messages(&errors),
            ["data.csv:2: no records after the header: expected at least one subscriber"]
        );
    }
}

#[test]
fn text_cells_with_control_characters_or_too_long_are_refused() {
    let long = "x".repeat(201);
    let csv = format!(
        "phone,name,spend,flag\n13900000001,\"A\nB\",1,no\n13900000002,\"C\x1b[2J\",1,no\n13900000003,{long},1,no\n13900000004,{},1,no\n",
        "名".repeat(200)
    );
    let errors = import_errors(&small(), &csv);
    assert_eq!(
        messages(&errors),
        [
            r#"data.csv:2:2 (name): expected text without control characters, found '\n' in "A\nB" (for name)"#,
            r#"data.csv:4:2 (name): expected text without control characters, found '\u{1b}' in "C\u{1b}[2J" (for name)"#,
            "data.csv:5:2 (name): expected at most 200 characters, found 201 (for name)",
        ]
    );
}

#[test]
fn excel_exports_with_bom_and_crlf_import() {
    let csv = "\u{feff}phone,name,spend,flag\r\n13900000001,A,1,no\r\n13900000002,B,2,no\r\n";
    let rows = read_csv(&small(), "d.csv", csv.as_bytes()).expect("imports");
    assert_eq!(rows.len(), 2);
}

#[test]
fn line_numbers_count_newlines_inside_quoted_cells() {
    // The quoted line break is in a column the mapping does not read (a name may not hold one).
    let csv = "phone,name,spend,flag,note\n13900000001,A,1,no,\"x\ny\"\n13900000002,C,x,no,z\n";
    let errors = import_errors(&small(), csv);
    let got = messages(&errors);
    assert_eq!(got.len(), 1);
    assert!(got[0].starts_with("data.csv:4:3 (spend): "), "{got:#?}");
}

fn bigml_mapping() -> Mapping {
    let yaml = repo_file("../../workflows/imports/churn-bigml.mapping.yaml");
    parse_mapping("churn-bigml.mapping.yaml", &yaml).unwrap_or_else(|e| panic!("{e}"))
}

/// The 20% file with what real exports do to cells: `NA`, `?` and `-` for unknown values,
/// monthly averages (fractions) in count columns, padded cells. Lines are CSV lines.
fn bigml_untidy() -> String {
    let mut lines: Vec<String> = repo_file("tests/fixtures/churn-bigml-20.csv")
        .lines()
        .map(str::to_owned)
        .collect();
    let mut set = |line: usize, column: usize, value: &str| {
        let mut cells: Vec<String> = lines[line - 1].split(',').map(str::to_owned).collect();
        cells[column - 1] = value.to_owned();
        lines[line - 1] = cells.join(",");
    };
    // Column 19 is "Customer service calls", 2 "Account length".
    set(2, 19, "NA");
    set(3, 19, "2.5");
    set(4, 19, " 1.4 ");
    set(5, 19, "?");
    set(6, 2, "-");
    set(7, 2, "117.6");
    lines.join("\n")
}

#[test]
fn the_bigml_export_imports_with_numbers_that_never_collide() {
    let csv = repo_file("tests/fixtures/churn-bigml-80.csv");
    let rows = read_csv(&bigml_mapping(), "churn-bigml-80.csv", csv.as_bytes()).expect("imports");
    assert_eq!(rows.len(), 2666);
    let numbers: HashSet<&str> = rows.iter().map(|s| s.msisdn.as_str()).collect();
    assert_eq!(numbers.len(), 2666);
    assert_eq!(rows[0].msisdn, "13700000001");
    assert_eq!(rows[2665].msisdn, "13700002666");
    // KS,128,415,No,Yes,25,265.1,110,45.07,...,1,False
    assert_eq!(rows[0].text("region"), "KS");
    assert_eq!(int(&rows[0], "tenure_months"), 128);
    assert_eq!(int(&rows[0], "complaints_30d"), 1);
    assert_eq!(dec(&rows[0], "arpu_3m"), 315.49);
    assert_eq!(dec(&rows[0], "churn_risk"), 0.1);
    let churners = rows.iter().filter(|s| dec(s, "churn_risk") == 0.9).count();
    assert_eq!(churners, 388, "14.5% churn");
}

// Guards: import.rs `Row::cell` (null tokens become blank) and value.rs
// `i32::parse_rounded` (rounding as declared).
#[test]
fn null_tokens_fractions_and_padding_import_as_the_mapping_declares() {
    let rows = read_csv(&bigml_mapping(), "untidy.csv", bigml_untidy().as_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rows.len(), 667);
    let calls: Vec<i64> = rows[..4].iter().map(|s| int(s, "complaints_30d")).collect();
    // NA -> default 0; 2.5 -> 3 (nearest, halves away from zero); " 1.4 " -> 1; ? -> 0.
    assert_eq!(calls, [0, 3, 1, 0]);
    assert_eq!(int(&rows[4], "tenure_months"), 0, "- is blank, default 0");
    assert_eq!(int(&rows[5], "tenure_months"), 118);

    // Without `round` a fraction is refused, located; without the null tokens NA is an error.
    let yaml = repo_file("../../workflows/imports/churn-bigml.mapping.yaml");
    let strict = yaml
        .replace("    round: nearest\n", "")
        .replace("  null_tokens: [\"\", NA, \"N/A\", \"?\", \"-\"]\n", "");
    let mapping = parse_mapping("strict.yaml", &strict).expect("valid mapping");
    let errors = import_errors(&mapping, &bigml_untidy());
    let got = messages(&errors);
    assert_eq!(
        got,
        [
            r#"data.csv:2:19 (Customer service calls): expected a whole number of at least 0, found "NA" (for complaints_30d)"#,
            r#"data.csv:3:19 (Customer service calls): expected a whole number of at least 0, found "2.5" (for complaints_30d)"#,
            r#"data.csv:4:19 (Customer service calls): expected a whole number of at least 0, found "1.4" (for complaints_30d)"#,
            r#"data.csv:5:19 (Customer service calls): expected a whole number of at least 0, found "?" (for complaints_30d)"#,
            r#"data.csv:6:2 (Account length): expected a whole number of at least 0, found "-" (for tenure_months)"#,
            r#"data.csv:7:2 (Account length): expected a whole number of at least 0, found "117.6" (for tenure_months)"#,
        ]
    );
    // `round: refuse` says how to accept fractions.
    let refuse = yaml.replace("round: nearest", "round: refuse");
    let mapping = parse_mapping("refuse.yaml", &refuse).expect("valid mapping");
    let got = messages(&import_errors(&mapping, &bigml_untidy()));
    assert_eq!(got.len(), 3, "{got:#?}");
    assert!(
        got[2]
            .starts_with("data.csv:7:2 (Account length): expected a whole number, found \"117.6\""),
        "{got:#?}"
    );
    assert!(got[0].starts_with("data.csv:3:19 (Customer service calls): expected a whole number, found \"2.5\" (`round: nearest`"), "{got:#?}");

    // With `trim: false` padded cells are taken as they are, and refused.
    let untrimmed = yaml.replace("  trim: true", "  trim: false");
    let mapping = parse_mapping("untrimmed.yaml", &untrimmed).expect("valid mapping");
    let got = messages(&import_errors(&mapping, &bigml_untidy()));
    assert_eq!(got.len(), 1, "{got:#?}");
    assert!(got[0].starts_with("data.csv:4:19 "), "{got:#?}");
}

#[test]
fn cell_options_round_and_synthesis_methods_are_checked_in_the_mapping() {
    let yaml = repo_file("../../workflows/imports/churn-bigml.mapping.yaml");
    for (from, to, expected) in [
        (
            "round: nearest\n    default: 0\n  # Calls",
            "round: sometimes\n    default: 0\n  # Calls",
            "m.yaml:46:12: expected `round` to be nearest, floor, ceil or refuse",
        ),
        (
            "column: Total day charge\n    scale: 7",
            "column: Total day charge\n    round: floor",
            "m.yaml:39:12: `round` applies only to whole-number fields",
        ),
        (
            "{ method: row, prefix: \"137\" }",
            "{ method: row, from: State, prefix: \"137\" }",
            "m.yaml:20:38: `method: row` numbers records in file order",
        ),
        (
            "{ method: row, prefix: \"137\" }",
            "{ method: random, prefix: \"137\" }",
            "m.yaml:20:27: expected `method` to be hash, digits or row",
        ),
        (
            "{ method: row, prefix: \"137\" }",
            "{ method: digits, prefix: \"137\" }",
            "m.yaml:20:17: `synthesize` needs `from: <column>`",
        ),
        ("  trim: true", "  trim: maybe", "m.yaml:17:9: "),
    ] {
        let changed = yaml.replace(from, to);
        assert_ne!(changed, yaml, "{from}");
        let e = mapping_error(&changed);
        assert!(
            e.starts_with(expected),
            "{to}\n  got: {e}\n  expected: {expected}"
        );
    }
}

// Guards: import.rs `synthesize_from_digits` / `synthesize_numbered` (one-to-one). The hash
// method (the only one before) collides birthday-style at this size.
#[test]
fn numbers_synthesized_from_digit_ids_are_unique_where_hashes_collide() {
    let n = 200_000;
    let mut csv = String::from("customerID,MonthlyCharges\n");
    for i in 0..n {
        csv.push_str(&format!("{i:07}-TLCO,29.85\n"));
    }
    let base = "fields:
  msisdn: { synthesize: { from: customerID, prefix: '139', method: digits } }
  external_id: { column: customerID }
  name: { value: Customer }
  gender: { value: unknown }
  age: { value: 40 }
  region: { value: xian }
  brand: { value: gotone }
  arpu_3m: { column: MonthlyCharges, scale: 7 }
  balance: { value: 100 }
  tenure_months: { value: 1 }
  student_stage: { value: none }
  first_channel: { value: sms }
  first_channel_slot: { value: '18:00-21:00' }
  second_channel: { value: email }
  second_channel_slot: { value: '09:00-12:00' }
  complaints_30d: { value: 0 }
  do_not_disturb: { value: false }
  churn_risk: { value: 0.1 }
  opt_out: { value: false }
";
    let mapping = parse_mapping("digits.yaml", base).expect("valid mapping");
    let rows = read_csv(&mapping, "big.csv", csv.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rows.len(), n);
    assert_eq!(rows[123].msisdn, "13900000123");
    // The same ids hashed: birthday odds give about n²/2/10⁸ = 200 meetings.
    let hashed =
        parse_mapping("hash.yaml", &base.replace(", method: digits", "")).expect("valid mapping");
    let errors = import_errors(&hashed, &csv);
    assert!(errors.total() > 50, "{}", errors.total());
    // Ids with more digits than the prefix leaves are refused, located.
    let errors = import_errors(&mapping, "customerID,MonthlyCharges\n123456789-X,1\n");
    assert_eq!(
        messages(&errors),
        [
            r#"data.csv:2:1 (customerID): 123456789 does not fit in the 8 digits prefix "139" leaves (at most 99999999); use a shorter prefix"#
        ]
    );
}

/// A catalogue unlike the shipped one: a decimal with a floor, an enum, a date, a timestamp,
/// an integer with a range, a required text and an optional one.
fn custom_catalogue() -> Arc<Catalogue> {
    let yaml = "\
attributes:
  - name: data_gb_month
    type: decimal
    min: 0
    required: true
  - name: plan
    type: enum
    values: [a, b]
    required: true
  - name: last_recharge
    type: date
  - name: activated_at
    type: timestamp
  - name: lines
    type: integer
    min: 1
    max: 5
  - name: nickname
    type: text
    required: true
  - name: note
    type: text
";
    Arc::new(
        spec::catalogue::compile_catalogue("attributes.yaml", yaml)
            .unwrap_or_else(|d| panic!("{d:?}")),
    )
}

const CUSTOM: &str = "\
fields:
  msisdn: { column: phone }
  data_gb_month: { column: data, scale: 0.001 }
  plan: { column: plan, map: { A: a, B: b } }
  last_recharge: { column: recharged, date_format: '%d/%m/%Y' }
  activated_at: { column: since }
  lines: { column: lines, default: 1 }
  nickname: { column: nick }
  opt_out: { value: false }
  do_not_disturb: { column: dnd }
";

fn custom_mapping(yaml: &str) -> Result<Mapping, ImportError> {
    subscribers::parse_mapping(&custom_catalogue(), "custom.yaml", yaml)
}

#[test]
fn a_custom_catalogue_imports_into_its_own_attributes() {
    let mapping = custom_mapping(CUSTOM).unwrap_or_else(|e| panic!("{e}"));
    let csv = "phone,data,plan,recharged,since,lines,nick,dnd\n\
               13900000001,2500,A,03/02/2026,2026-02-03T09:30:00+08:00,2,Wei,no\n\
               13900000002,0,B,,2026-02-03T01:30:00Z,,Na,yes\n";
    let rows = read_csv(&mapping, "custom.csv", csv.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(rows.len(), 2);
    let first = &rows[0];
    assert_eq!(first.get("data_gb_month"), Some(Value::Dec(2.5)));
    assert_eq!(first.get("plan"), Some(Value::Text("a".into())));
    assert_eq!(
        first.get("last_recharge"),
        Some(Value::Text("2026-02-03".into()))
    );
    assert_eq!(
        first.get("activated_at"),
        Some(Value::Text("2026-02-03T01:30:00Z".into())),
        "stored in UTC"
    );
    assert_eq!(first.get("lines"), Some(Value::Int(2)));
    assert_eq!(first.get("nickname"), Some(Value::Text("Wei".into())));
    assert_eq!(
        first.get("note"),
        Some(Value::Null),
        "optional and not mapped"
    );
    assert!(!first.do_not_disturb && !first.opt_out);
    assert_eq!(first.get("value_tier"), None, "not in this catalogue");
    assert_eq!(first.attrs.catalogue(), &custom_catalogue());

    let second = &rows[1];
    assert_eq!(
        second.get("last_recharge"),
        Some(Value::Null),
        "optional, blank"
    );
    assert_eq!(second.get("lines"), Some(Value::Int(1)), "the default");
    assert!(second.do_not_disturb);
}

// Guards: value.rs `Rule::check` and `Rule::parse` (min/max from the catalogue).
#[test]
fn values_outside_the_catalogue_range_are_refused_at_their_cell() {
    let mapping = custom_mapping(CUSTOM).unwrap_or_else(|e| panic!("{e}"));
    let csv = "phone,data,plan,recharged,since,lines,nick,dnd\n\
               13900000001,-5,A,,2026-02-03T09:30:00Z,6,Wei,no\n\
               13900000002,1,C,31/02/2026,yesterday,0,Na,no\n";
    let errors = import_errors(&mapping, csv);
    assert_eq!(
        messages(&errors),
        [
            r#"data.csv:2:2 (data): expected a number of at least 0, found -0.005 after scaling "-5" by 0.001 (for data_gb_month)"#,
            r#"data.csv:2:6 (lines): expected a whole number from 1 to 5, found "6" (for lines)"#,
            r#"data.csv:3:3 (plan): expected one of "A", "B" (the `map` of plan), found "C""#,
            r#"data.csv:3:4 (recharged): expected a date in the form "%d/%m/%Y" (the mapping's `date_format`), found "31/02/2026" (for last_recharge)"#,
            r#"data.csv:3:5 (since): expected a timestamp such as 2026-09-01T08:00:00Z or 2026-09-01T16:00:00+08:00 (RFC 3339, with its offset), found "yesterday" (for activated_at)"#,
            r#"data.csv:3:6 (lines): expected a whole number from 1 to 5, found "0" (for lines)"#,
        ]
    );
    // Constants in the mapping are checked against the same range, located in the mapping.
    let e = match custom_mapping(&CUSTOM.replace("{ column: lines, default: 1 }", "{ value: 9 }")) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a constant out of range was accepted"),
    };
    assert_eq!(
        e,
        r#"custom.yaml:7:19: expected a whole number from 1 to 5, found "9" (for lines)"#
    );
}

#[test]
fn an_unknown_attribute_in_a_mapping_is_located_with_the_names_there_are() {
    let yaml = CUSTOM.replace("  plan:", "  plna:");
    let e = match custom_mapping(&yaml) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("an unknown attribute was accepted"),
    };
    assert_eq!(
        e,
        "custom.yaml:4:3: unknown attribute `plna` (did you mean `plan`?), expected one of msisdn, external_id, timezone, opt_out, do_not_disturb, data_gb_month, plan, last_recharge, activated_at, lines, nickname, note (the attribute catalogue, workflows/attributes.yaml)"
    );
    // An attribute of the shipped catalogue is unknown to this one, with no close name.
    let e = match custom_mapping(&format!("{CUSTOM}  churn_risk: {{ value: 0.2 }}\n")) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("an unknown attribute was accepted"),
    };
    assert!(
        e.starts_with("custom.yaml:11:3: unknown attribute `churn_risk`, expected one of msisdn, "),
        "{e}"
    );
}

#[test]
fn required_attributes_of_the_catalogue_must_be_mapped() {
    let yaml = CUSTOM
        .replace("  nickname: { column: nick }\n", "")
        .replace("  do_not_disturb: { column: dnd }\n", "");
    let e = match custom_mapping(&yaml) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("required attributes left out were accepted"),
    };
    assert_eq!(
        e,
        "custom.yaml:2:3: required fields not mapped: do_not_disturb, nickname; map each with `column:`, `value:` or, for msisdn, `synthesize:`"
    );
    // Optional ones may be left out.
    let yaml = CUSTOM
        .replace(
            "  last_recharge: { column: recharged, date_format: '%d/%m/%Y' }\n",
            "",
        )
        .replace("  activated_at: { column: since }\n", "")
        .replace("  lines: { column: lines, default: 1 }\n", "");
    custom_mapping(&yaml).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn options_that_do_not_fit_the_attribute_kind_are_refused() {
    for (from, to, expected) in [
        (
            "plan: { column: plan, map: { A: a, B: b } }",
            "plan: { column: plan, map: { A: a, B: c } }",
            r#"custom.yaml:4:41: expected one of a, b, found "c" (for plan)"#,
        ),
        (
            "nickname: { column: nick }",
            "nickname: { column: nick, date_format: '%d/%m/%Y' }",
            "custom.yaml:8:42: `date_format` applies only to date attributes, not to nickname (text)",
        ),
        (
            "date_format: '%d/%m/%Y'",
            "date_format: '%d/%m'",
            r#"custom.yaml:5:52: `date_format` "%d/%m" cannot read a whole date"#,
        ),
        (
            "lines: { column: lines, default: 1 }",
            "lines: { column: lines, scale: 2 }",
            "custom.yaml:7:34: `scale` applies only to number fields (decimal attributes), not to lines (integer)",
        ),
        (
            "data_gb_month: { column: data, scale: 0.001 }",
            "data_gb_month: { column: data, round: floor }",
            "custom.yaml:3:41: `round` applies only to whole-number fields (integer attributes), not to data_gb_month (decimal)",
        ),
        (
            "activated_at: { column: since }",
            "activated_at: { value: '2026-02-03' }",
            r#"custom.yaml:6:26: expected a timestamp such as"#,
        ),
        (
            "  nickname: { column: nick }\n",
            "  nickname: { column: nick }\n  plan: { value: a }\n",
            "custom.yaml:9:3: duplicate mapping key: plan",
        ),
    ] {
        let yaml = CUSTOM.replace(from, to);
        assert_ne!(yaml, CUSTOM, "{from}");
        let e = match custom_mapping(&yaml) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted: {to}"),
        };
        assert!(
            e.starts_with(expected),
            "{to}\n  got: {e}\n  expected: {expected}"
        );
    }
}

/// `CsvImport::streaming` with the numbers kept outside (here a map standing in for the
/// store's temporary table): the same rows, and the same problems in the same order, as
/// `read_csv`, whatever the chunk size.
fn streamed(
    mapping: &Mapping,
    csv: &str,
    chunk: usize,
) -> Result<Vec<NewSubscriber>, ImportErrors> {
    let mut import = subscribers::CsvImport::streaming(mapping, "data.csv", csv.as_bytes())?;
    let mut lines: std::collections::HashMap<i64, u64> = Default::default();
    let mut rows = Vec::new();
    let mut chunk_rows = Vec::new();
    loop {
        let more = import.read_chunk(&mut chunk_rows, chunk);
        let earlier: Vec<Option<u64>> = import
            .numbers()
            .iter()
            .map(|&(key, line)| match lines.entry(key) {
                std::collections::hash_map::Entry::Occupied(o) => Some(*o.get()),
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(line);
                    None
                }
            })
            .collect();
        import.duplicates(&earlier);
        if !import.failed() {
            rows.append(&mut chunk_rows);
        }
        chunk_rows.clear();
        if !more {
            break;
        }
    }
    import.finish()?;
    Ok(rows)
}

// Guards: import.rs `CsvImport::duplicates` (each duplicate placed among the other problems
// in line order, first of its record) and `msisdn_of_key`.
#[test]
fn streamed_imports_report_what_whole_file_imports_report() {
    let mut lines: Vec<String> = telco_csv().lines().map(str::to_owned).collect();
    // A repeated id across chunks, twice more, and bad cells before, beside and after.
    let id_2 = lines[1].split(',').next().unwrap().to_owned();
    for at in [30, 31, 60] {
        let rest = lines[at][lines[at].find(',').unwrap()..].to_owned();
        lines[at] = format!("{id_2}{rest}");
    }
    lines[10] = lines[10]
        .replacen(",Female,", ",F,", 1)
        .replacen(",Male,", ",M,", 1);
    lines[31] = lines[31]
        .replacen(",Female,", ",F,", 1)
        .replacen(",Male,", ",M,", 1);
    lines[45].push_str(",extra");
    let csv = lines.join("\n");
    let whole = import_errors(&telco_mapping(), &csv);
    assert_eq!(whole.total(), 6, "{whole}");
    for chunk in [1, 7, 25, 5_000] {
        match streamed(&telco_mapping(), &csv, chunk) {
            Ok(rows) => panic!("chunk {chunk}: imported {} rows", rows.len()),
            Err(e) => assert_eq!(messages(&e), messages(&whole), "chunk {chunk}"),
        }
    }
    // Numbers with a plus and leading zeros come back from their keys as they were.
    let csv = "phone,name,spend,flag\n+8613900000001,A,1,no\n013900000002,B,1,no\n13900000001,C,1,no\n013900000002,D,1,no\n";
    let whole = import_errors(&small(), csv);
    assert_eq!(
        messages(&streamed(&small(), csv, 1).unwrap_err()),
        messages(&whole)
    );
    assert_eq!(whole.total(), 2, "{whole}");
    let clean = telco_csv();
    let rows = streamed(&telco_mapping(), &clean, 1_000).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        rows,
        read_csv(&telco_mapping(), "data.csv", clean.as_bytes()).unwrap()
    );
}
