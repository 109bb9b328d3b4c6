//! Located diagnostics: every problem in a workflow file is reported as `file:line:column: message`.

use std::fmt;

use serde_saphyr::{Location, Spanned};

/// One problem found in an input file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    /// 1-based; 0 when the problem concerns the file as a whole.
    pub line: u64,
    /// 1-based, in characters.
    pub column: u64,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )
        }
    }
}

/// Collects diagnostics for one file.
pub(crate) struct Sink<'a> {
    pub(crate) file: &'a str,
    pub(crate) source: &'a str,
    pub(crate) out: Vec<Diagnostic>,
}

impl<'a> Sink<'a> {
    pub(crate) fn new(file: &'a str, source: &'a str) -> Self {
        Sink {
            file,
            source,
            out: Vec::new(),
        }
    }

    pub(crate) fn at(&mut self, loc: &Location, message: impl Into<String>) {
        self.out.push(Diagnostic {
            file: self.file.to_owned(),
            line: loc.line(),
            column: loc.column(),
            message: message.into(),
        });
    }

    pub(crate) fn at_spanned<T>(&mut self, s: &Spanned<T>, message: impl Into<String>) {
        self.at(&s.referenced, message)
    }

    /// Points inside a string scalar: `offset` is a byte offset into the string's value.
    /// Quoted scalars start one column after their quote.
    pub(crate) fn inside(
        &mut self,
        s: &Spanned<String>,
        offset: usize,
        message: impl Into<String>,
    ) {
        let loc = &s.referenced;
        let line_text = self
            .source
            .lines()
            .nth(loc.line().saturating_sub(1) as usize)
            .unwrap_or("");
        let first = line_text
            .chars()
            .nth(loc.column().saturating_sub(1) as usize);
        let quote = u64::from(matches!(first, Some('"') | Some('\'')));
        let prefix = s
            .value
            .get(..offset)
            .map(|p| p.chars().count())
            .unwrap_or(0) as u64;
        self.out.push(Diagnostic {
            file: self.file.to_owned(),
            line: loc.line(),
            column: loc.column() + quote + prefix,
            message: message.into(),
        });
    }
}

/// Turns a YAML parse error into a diagnostic.
pub(crate) fn from_yaml_error(file: &str, err: &serde_saphyr::Error) -> Diagnostic {
    let (line, column) = err
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((0, 0));
    let full = err.without_snippet().to_string();
    // The crate prefixes its own "line N column M:" text; we print the location ourselves.
    let message = strip_location_prefix(&full).trim().to_owned();
    Diagnostic {
        file: file.to_owned(),
        line,
        column,
        message,
    }
}

fn strip_location_prefix(s: &str) -> &str {
    let first_line = s.lines().next().unwrap_or(s);
    if let Some(rest) = first_line.strip_prefix("line ")
        && let Some(idx) = rest.find(": ")
    {
        return &rest[idx + 2..];
    }
    first_line
}
