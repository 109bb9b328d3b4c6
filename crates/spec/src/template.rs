//! Message templates: text with `{field}` placeholders for subscriber fields; `{{` and `}}`
//! stand for literal braces.

use crate::fields::Catalogue;

/// A checked template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    /// Path as written in the workflow (relative to the workflow file).
    pub path: String,
    parts: Vec<Part>,
    /// An e-mail template's subject line ([`Template::parse_mail`]); `None` otherwise.
    subject: Option<Vec<Part>>,
}

/// How an e-mail template's first line starts.
const SUBJECT: &str = "Subject:";

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Field(String),
}

/// A problem in a template, at 1-based line and column of the template file.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateError {
    pub line: u64,
    pub column: u64,
    pub message: String,
}

impl Template {
    /// Parses and checks every placeholder against the subscriber fields; returns every error.
    pub fn parse(path: &str, text: &str, cat: &Catalogue) -> Result<Template, Vec<TemplateError>> {
        let mut parts = Vec::new();
        let mut errors = Vec::new();
        let mut lit = String::new();
        let mut it = text.char_indices().peekable();
        let pos = |offset: usize| {
            let before = &text[..offset];
            let line = before.matches('\n').count() as u64 + 1;
            let col = before.rsplit('\n').next().unwrap_or("").chars().count() as u64 + 1;
            (line, col)
        };
        while let Some((i, ch)) = it.next() {
            match ch {
                '{' if it.peek().map(|(_, c)| *c) == Some('{') => {
                    it.next();
                    lit.push('{');
                }
                '}' if it.peek().map(|(_, c)| *c) == Some('}') => {
                    it.next();
                    lit.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    let mut closed = false;
                    for (_, c) in it.by_ref() {
                        if c == '}' {
                            closed = true;
                            break;
                        }
                        name.push(c);
                    }
                    let (line, column) = pos(i);
                    if !closed {
                        errors.push(TemplateError {
                            line,
                            column,
                            message:
                                "unclosed `{`: expected `{field}`, or `{{` for a literal brace"
                                    .into(),
                        });
                        break;
                    }
                    let name = name.trim();
                    match cat.field(name) {
                        Some(f) => {
                            if !lit.is_empty() {
                                parts.push(Part::Text(std::mem::take(&mut lit)));
                            }
                            parts.push(Part::Field(f.name.clone()));
                        }
                        None => errors.push(TemplateError {
                            line,
                            column,
                            message: format!(
                                "`{{{name}}}` is not a subscriber field; expected one of {}",
                                cat.field_names().join(", ")
                            ),
                        }),
                    }
                }
                '}' => {
                    let (line, column) = pos(i);
                    errors.push(TemplateError {
                        line,
                        column,
                        message: "stray `}`: write `}}` for a literal brace".into(),
                    });
                }
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Text(lit));
        }
        if errors.is_empty() {
            Ok(Template {
                path: path.to_owned(),
                parts,
                subject: None,
            })
        } else {
            Err(errors)
        }
    }

    /// Parses an e-mail template: a first line `Subject: <subject>`, a blank line, then the
    /// body. Placeholders work in both; every error is located in the template file.
    pub fn parse_mail(
        path: &str,
        text: &str,
        cat: &Catalogue,
    ) -> Result<Template, Vec<TemplateError>> {
        let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
        let first = first.strip_suffix('\r').unwrap_or(first);
        let Some(subject) = first.strip_prefix(SUBJECT) else {
            return Err(vec![TemplateError {
                line: 1,
                column: 1,
                message: format!(
                    "an e-mail template starts with its subject line, `{SUBJECT} <subject>`, then a blank line, then the body"
                ),
            }]);
        };
        let lead = SUBJECT.chars().count()
            + (subject.chars().count() - subject.trim_start().chars().count());
        let subject = subject.trim();
        let mut errors = Vec::new();
        if subject.is_empty() {
            errors.push(TemplateError {
                line: 1,
                column: 1,
                message: "the e-mail subject is empty: write it after `Subject:`".into(),
            });
        }
        let (blank, body) = rest.split_once('\n').unwrap_or((rest, ""));
        if !blank.trim().is_empty() {
            errors.push(TemplateError {
                line: 2,
                column: 1,
                message: "expected a blank line between the subject and the body".into(),
            });
        }
        if body.trim().is_empty() {
            errors.push(TemplateError {
                line: 3,
                column: 1,
                message: "the e-mail body is empty: write it after the blank line".into(),
            });
        }
        let subject_parts = match Template::parse(path, subject, cat) {
            Ok(t) => Some(t.parts),
            Err(es) => {
                errors.extend(es.into_iter().map(|e| TemplateError {
                    column: e.column + lead as u64,
                    ..e
                }));
                None
            }
        };
        let body = match Template::parse(path, body, cat) {
            Ok(t) => Some(t),
            Err(es) => {
                errors.extend(es.into_iter().map(|e| TemplateError {
                    line: e.line + 2,
                    ..e
                }));
                None
            }
        };
        match (subject_parts, body) {
            (Some(subject), Some(body)) if errors.is_empty() => Ok(Template {
                subject: Some(subject),
                ..body
            }),
            _ => Err(errors),
        }
    }

    /// Whether this is an e-mail template (it has a subject).
    pub fn is_mail(&self) -> bool {
        self.subject.is_some()
    }

    /// Renders the subject of an e-mail template; `None` for other templates.
    pub fn render_subject(&self, get: impl Fn(&str) -> String) -> Option<String> {
        self.subject
            .as_deref()
            .map(|parts| render_parts(parts, get))
    }

    /// Fields the template uses (an e-mail template's subject first).
    pub fn fields(&self) -> Vec<&str> {
        self.subject
            .iter()
            .flatten()
            .chain(&self.parts)
            .filter_map(|p| {
                if let Part::Field(f) = p {
                    Some(f.as_str())
                } else {
                    None
                }
            })
            .collect()
    }

    /// Renders with `get` giving each field's value as text.
    pub fn render(&self, get: impl Fn(&str) -> String) -> String {
        render_parts(&self.parts, get)
    }
}

fn render_parts(parts: &[Part], get: impl Fn(&str) -> String) -> String {
    let mut out = String::new();
    for p in parts {
        match p {
            Part::Text(t) => out.push_str(t),
            Part::Field(f) => out.push_str(&get(f)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_fields_and_escapes() {
        let t = Template::parse(
            "t.txt",
            "Hi {name}, {{50%}} off at {campus}",
            &crate::catalogue::shipped(),
        )
        .unwrap();
        assert_eq!(
            t.render(|f| f.to_uppercase()),
            "Hi NAME, {50%} off at CAMPUS"
        );
        assert_eq!(t.fields(), vec!["name", "campus"]);
    }

    #[test]
    fn a_mail_template_has_a_subject_a_blank_line_and_a_body() {
        let cat = crate::catalogue::shipped();
        let t = Template::parse_mail("m.txt", "Subject: For {name}\n\nDear {name},\nbye", &cat)
            .unwrap();
        assert!(t.is_mail());
        assert_eq!(
            t.render_subject(|f| f.to_uppercase()).as_deref(),
            Some("For NAME")
        );
        assert_eq!(t.render(|f| f.to_uppercase()), "Dear NAME,\nbye");
        assert_eq!(t.fields(), vec!["name", "name"]);

        let errs = Template::parse_mail("m.txt", "Hello {name}", &cat).unwrap_err();
        assert_eq!((errs[0].line, errs[0].column), (1, 1));
        assert!(errs[0].message.contains("`Subject: <subject>`"), "{errs:?}");

        // Placeholder errors where they are in the file: column past `Subject: `, line
        // past the subject and the blank line.
        let errs = Template::parse_mail("m.txt", "Subject: Hi {nme}\n\nbody\n{balanse}", &cat)
            .unwrap_err();
        let at: Vec<_> = errs.iter().map(|e| (e.line, e.column)).collect();
        assert_eq!(at, vec![(1, 13), (4, 1)], "{errs:?}");

        let errs = Template::parse_mail("m.txt", "Subject: Hi\nbody", &cat).unwrap_err();
        assert!(
            errs.iter()
                .any(|e| e.line == 2 && e.message.contains("blank line"))
        );
        assert!(
            !Template::parse("t.txt", "Subject: x\n\ny", &cat)
                .unwrap()
                .is_mail()
        );
    }

    #[test]
    fn reports_every_unknown_field_with_position() {
        let errs = Template::parse(
            "t.txt",
            "Hi {nme}\nbal {balanse} {",
            &crate::catalogue::shipped(),
        )
        .unwrap_err();
        assert_eq!(errs.len(), 3);
        assert_eq!((errs[0].line, errs[0].column), (1, 4));
        assert!(
            errs[0]
                .message
                .contains("`{nme}` is not a subscriber field")
        );
        assert_eq!((errs[1].line, errs[1].column), (2, 5));
        assert!(errs[2].message.contains("unclosed"));
    }
}
