use std::fmt;

/// One problem in a mapping file or a CSV file, located so that editors and terminals can jump
/// to it (`file:line:column: message`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// A problem in the mapping file. `line` and `column` are 1-based positions in the YAML.
    #[error("{file}:{line}:{column}: {message}")]
    Mapping {
        file: String,
        line: u64,
        column: u64,
        message: String,
    },
    /// A CSV cell that cannot become a field value. `line` is the CSV line the record starts on
    /// (the header is line 1); `column` is the 1-based position of the cell in the record and
    /// `header` its column name.
    #[error("{file}:{line}:{column} ({header}): {message}")]
    Cell {
        file: String,
        line: u64,
        column: usize,
        header: String,
        message: String,
    },
    /// A problem with a whole CSV line: the header lacks a mapped column, or a record has the
    /// wrong number of cells or is not UTF-8.
    #[error("{file}:{line}: {message}")]
    Line {
        file: String,
        line: u64,
        message: String,
    },
    /// The CSV input could not be read at all.
    #[error("{file}: {message}")]
    Read { file: String, message: String },
}

impl ImportError {
    /// The CSV line a problem is on, if it has one.
    fn line(&self) -> Option<u64> {
        match self {
            ImportError::Cell { line, .. } | ImportError::Line { line, .. } => Some(*line),
            ImportError::Mapping { .. } | ImportError::Read { .. } => None,
        }
    }
}

/// Every problem an import found, in file order. An import with any problem produces no rows,
/// so the whole list is reported at once rather than one fix-and-retry round per mistake.
///
/// Only the first [`ImportErrors::SHOWN`] are kept: a systematically wrong mapping would
/// otherwise produce one error per row of a large file.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
pub struct ImportErrors {
    errors: Vec<ImportError>,
    total: usize,
}

impl ImportErrors {
    /// How many errors are kept and displayed.
    pub const SHOWN: usize = 50;

    /// The errors kept, at most [`ImportErrors::SHOWN`].
    pub fn errors(&self) -> &[ImportError] {
        &self.errors
    }

    /// How many errors were found, including those not kept.
    pub fn total(&self) -> usize {
        self.total
    }

    pub(crate) fn push(&mut self, error: ImportError) {
        self.total += 1;
        if self.errors.len() < Self::SHOWN {
            self.errors.push(error);
        }
    }

    /// Adds a problem found after later ones were pushed, as the first problem of its line
    /// (a duplicate number is its record's first problem). The kept problems stay the first [`ImportErrors::SHOWN`] in line order,
    /// because any problem dropped so far came after every kept one.
    pub(crate) fn insert_in_line_order(&mut self, error: ImportError) {
        let line = error.line().unwrap_or(u64::MAX);
        let at = self
            .errors
            .iter()
            .position(|e| e.line().is_none_or(|l| l >= line))
            .unwrap_or(self.errors.len());
        self.total += 1;
        if at < Self::SHOWN {
            self.errors.insert(at, error);
            self.errors.truncate(Self::SHOWN);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.total == 0
    }
}

impl From<ImportError> for ImportErrors {
    fn from(error: ImportError) -> Self {
        let mut errors = ImportErrors::default();
        errors.push(error);
        errors
    }
}

impl fmt::Display for ImportErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        let more = self.total - self.errors.len();
        if more > 0 {
            write!(f, "\nand {more} more")?;
        }
        Ok(())
    }
}
