//! Message templates: text with `{field}` placeholders for subscriber fields; `{{` and `}}`
//! stand for literal braces.

use crate::fields::Catalogue;

/// A checked template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    /// Path as written in the workflow (relative to the workflow file).
    pub path: String,
    parts: Vec<Part>,
}

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
            })
        } else {
            Err(errors)
        }
    }

    /// Fields the template uses.
    pub fn fields(&self) -> Vec<&str> {
        self.parts
            .iter()
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
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Field(f) => out.push_str(&get(f)),
            }
        }
        out
    }
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
