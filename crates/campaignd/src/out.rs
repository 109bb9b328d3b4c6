//! Everything the CLI prints to standard output goes through here.
#![allow(clippy::print_stdout)]

use chrono::{DateTime, SecondsFormat, Utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    Text,
    Json,
    Csv,
    Html,
}

pub(crate) fn line(s: &str) {
    println!("{s}");
}

pub(crate) fn time(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}

/// Time in a zone, for the demo's narration.
pub(crate) fn local(ms: i64, tz: chrono_tz::Tz) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.with_timezone(&tz).format("%a %Y-%m-%d %H:%M").to_string())
        .unwrap_or_default()
}

pub(crate) fn funnel(campaign: &str, wave: &str, funnel: &[(String, u64)]) {
    println!("plan for {campaign}, wave {wave} (nothing written):");
    print_funnel(funnel);
}

pub(crate) fn print_funnel(funnel: &[(String, u64)]) {
    for (stage, n) in funnel {
        let (label, note) = match stage.as_str() {
            "base" => ("subscriber base".to_owned(), ""),
            "audience" => ("after filters".to_owned(), ""),
            "no_response" => ("did not respond to previous wave".to_owned(), ""),
            "previous_wave" => ("targeted by previous wave".to_owned(), ""),
            "opt_out" | "frequency_cap" => (stage.replace('_', " "), "  (left out)"),
            "arbitration" => ("cap taken by higher priority".to_owned(), "  (left out)"),
            store::contacts::CONTROL => {
                ("control group".to_owned(), "  (held out, never contacted)")
            }
            store::contacts::TREATMENT => ("to contact".to_owned(), ""),
            s if s.starts_with("exclude:") => (s.to_owned(), "  (left out)"),
            s => (s.to_owned(), ""),
        };
        println!("    {label:<36} {n:>9}{note}");
    }
}

pub(crate) fn report(r: &evaluate::Report, f: Format) {
    let s = match f {
        Format::Text => evaluate::render_text(r),
        Format::Json => evaluate::render_json(r),
        Format::Csv => evaluate::render_csv(r),
        Format::Html => evaluate::render_html(r),
    };
    println!("{s}");
}

/// A campaign's season roll-up, as text or JSON (a CSV or HTML of it does not exist yet).
pub(crate) fn seasons(r: &evaluate::SeasonReport, f: Format) -> anyhow::Result<()> {
    let s = match f {
        Format::Text => evaluate::render_seasons_text(r),
        Format::Json => evaluate::render_seasons_json(r),
        Format::Csv | Format::Html => {
            anyhow::bail!("--by-season prints `--format text` or `--format json` only")
        }
    };
    println!("{s}");
    Ok(())
}

/// A line diff of two workflow versions (workflow file, segments, templates).
pub(crate) fn diff(a: &spec::Bundle, b: &spec::Bundle) {
    let mut parts: Vec<(String, String, String)> = vec![
        ("workflow".into(), a.workflow.clone(), b.workflow.clone()),
        (
            "segments.yaml".into(),
            a.segments.clone().unwrap_or_default(),
            b.segments.clone().unwrap_or_default(),
        ),
    ];
    let mut names: Vec<&String> = a.templates.keys().chain(b.templates.keys()).collect();
    names.sort();
    names.dedup();
    for n in names {
        parts.push((
            n.clone(),
            a.templates.get(n).cloned().unwrap_or_default(),
            b.templates.get(n).cloned().unwrap_or_default(),
        ));
    }
    let mut same = true;
    for (name, x, y) in parts {
        if x == y {
            continue;
        }
        same = false;
        println!("--- {name}");
        for l in line_diff(&x, &y) {
            println!("{l}");
        }
    }
    if same {
        println!("no differences");
    }
}

/// Longest-common-subsequence line diff; workflow files are small.
fn line_diff(a: &str, b: &str) -> Vec<String> {
    let a: Vec<&str> = a.lines().collect();
    let b: Vec<&str> = b.lines().collect();
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            i += 1;
            j += 1;
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push(format!("+ {}", b[j]));
            j += 1;
        } else {
            out.push(format!("- {}", a[i]));
            i += 1;
        }
    }
    out
}

/// The attribute catalogue as a table: name, type, unit, flags, description.
pub(crate) fn attributes(cat: &catalogue::Catalogue) -> Vec<String> {
    let rows: Vec<[String; 4]> = cat
        .all()
        .iter()
        .map(|a| {
            let ty = match a.kind.values() {
                [] => a.kind.name().to_owned(),
                vs => format!("enum [{}]", vs.join(", ")),
            };
            let mut flags = Vec::new();
            if a.core {
                flags.push("core".to_owned());
            }
            if a.required {
                flags.push("required".to_owned());
            }
            if a.indexed {
                flags.push("indexed".to_owned());
            }
            match (a.min, a.max) {
                (Some(lo), Some(hi)) => flags.push(format!("{lo}..{hi}")),
                (Some(lo), None) => flags.push(format!(">= {lo}")),
                (None, Some(hi)) => flags.push(format!("<= {hi}")),
                (None, None) => {}
            }
            match a.format {
                Some(catalogue::TextFormat::TimeSlot) => flags.push("time_slot".to_owned()),
                Some(catalogue::TextFormat::Email) => flags.push("email".to_owned()),
                None => {}
            }
            if let Some(u) = &a.unit {
                flags.push(u.clone());
            }
            [a.name.clone(), ty, flags.join(", "), a.description.clone()]
        })
        .collect();
    let w0 = rows.iter().map(|r| r[0].len()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r[1].len()).max().unwrap_or(0);
    let w2 = rows.iter().map(|r| r[2].len()).max().unwrap_or(0);
    rows.iter()
        .map(|r| {
            format!("{:w0$}  {:w1$}  {:w2$}  {}", r[0], r[1], r[2], r[3])
                .trim_end()
                .to_owned()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_shows_changed_lines() {
        assert_eq!(
            line_diff("a\nb\nc", "a\nx\nc"),
            vec!["+ x".to_owned(), "- b".to_owned()]
        );
    }
}
