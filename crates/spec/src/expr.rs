//! The target-selection filter language used by `where:` keys and segment definitions, e.g.
//! `arpu_3m >= 10 and brand != 'gotone'`.
//!
//! ```text
//! expr    := or
//! or      := and ('or' and)*
//! and     := unary ('and' unary)*
//! unary   := 'not' unary | primary
//! primary := '(' expr ')'
//!          | field cmpop literal            cmpop: == = != <> < <= > >=
//!          | field ['not'] 'in' '[' literal (',' literal)* ']'
//!          | field 'is' ['not'] 'null'
//!          | field                          (a bool field alone means field == true)
//! literal := integer | decimal | 'single-quoted' | "double-quoted" | true | false
//! ```
//!
//! Keywords are case-insensitive; field names are not. Numbers may carry a leading `-`.
//! Inside quotes, `\\`, `\'`, `\"`, `\n` and `\t` are the only escapes.
//!
//! [`parse`] only checks syntax; [`check`] checks field names and value types against the
//! subscriber catalogue ([`crate::fields`]). [`eval`] evaluates a filter in memory with the same
//! three-valued logic SQL uses, so that it agrees with the SQL the `audience` crate compiles.

use std::cmp::Ordering;
use std::fmt;

use crate::fields::{self, Attribute, Catalogue, FieldType, field_type};

/// Byte offsets into the expression source, always on `char` boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    fn new(start: usize, end: usize) -> Self {
        Self { start, end }
    }

    fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }
}

/// A constant written in a filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Str(String),
    Int(i64),
    Num(f64),
    Bool(bool),
}

/// A comparison operator. `=` parses as [`CmpOp::Eq`] and `<>` as [`CmpOp::Ne`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    /// The canonical spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }

    /// Whether the operator relies on an ordering of values, which bool fields lack.
    pub fn is_ordering(self) -> bool {
        matches!(self, CmpOp::Lt | CmpOp::Le | CmpOp::Gt | CmpOp::Ge)
    }

    fn holds(self, ord: Ordering) -> bool {
        match self {
            CmpOp::Eq => ord == Ordering::Equal,
            CmpOp::Ne => ord != Ordering::Equal,
            CmpOp::Lt => ord == Ordering::Less,
            CmpOp::Le => ord != Ordering::Greater,
            CmpOp::Gt => ord == Ordering::Greater,
            CmpOp::Ge => ord != Ordering::Less,
        }
    }
}

impl fmt::Display for CmpOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed filter.
///
/// Equality ignores spans: two filters are equal when they mean the same thing written the
/// same way, wherever they sit in their sources. This is what lets a printed filter re-parse
/// to an equal AST. Compare spans explicitly where they matter.
///
/// A bool field standing alone (`opt_out`) parses as `Cmp { op: Eq, value: Bool(true) }`
/// whose `value_span` equals its `field_span`, as there is no literal to point at.
#[derive(Debug, Clone)]
pub enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
    Cmp {
        field: String,
        field_span: Span,
        op: CmpOp,
        value: Literal,
        value_span: Span,
    },
    In {
        field: String,
        field_span: Span,
        values: Vec<Literal>,
        negated: bool,
    },
    IsNull {
        field: String,
        field_span: Span,
        negated: bool,
    },
}

impl PartialEq for Expr {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Expr::And(a), Expr::And(b)) | (Expr::Or(a), Expr::Or(b)) => a == b,
            (Expr::Not(a), Expr::Not(b)) => a == b,
            (
                Expr::Cmp {
                    field: f1,
                    op: o1,
                    value: v1,
                    ..
                },
                Expr::Cmp {
                    field: f2,
                    op: o2,
                    value: v2,
                    ..
                },
            ) => f1 == f2 && o1 == o2 && v1 == v2,
            (
                Expr::In {
                    field: f1,
                    values: v1,
                    negated: n1,
                    ..
                },
                Expr::In {
                    field: f2,
                    values: v2,
                    negated: n2,
                    ..
                },
            ) => f1 == f2 && v1 == v2 && n1 == n2,
            (
                Expr::IsNull {
                    field: f1,
                    negated: n1,
                    ..
                },
                Expr::IsNull {
                    field: f2,
                    negated: n2,
                    ..
                },
            ) => f1 == f2 && n1 == n2,
            _ => false,
        }
    }
}

/// A syntax or type error, located in the expression source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ExprError {
    pub span: Span,
    pub message: String,
}

impl ExprError {
    fn new(span: Span, message: impl Into<String>) -> Self {
        Self {
            span,
            message: message.into(),
        }
    }
}

/// A subscriber's field value, for [`eval`].
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Num(f64),
    Bool(bool),
}

// Parentheses and `not` recurse; the cap keeps hostile input from overflowing the stack.
const MAX_DEPTH: usize = 64;

/// Parses a filter. Never panics, whatever the input.
pub fn parse(src: &str) -> Result<Expr, ExprError> {
    let mut parser = Parser::new(src)?;
    let expr = parser.parse_or()?;
    if parser.tok != Tok::Eof {
        return Err(parser.unexpected("`and`, `or` or end of expression"));
    }
    Ok(expr)
}

/// Type-checks a filter against the attribute catalogue, returning every problem found.
pub fn check(expr: &Expr, cat: &Catalogue) -> Vec<ExprError> {
    let mut errors = Vec::new();
    check_into(cat, expr, &mut errors);
    errors
}

/// The fields a filter references, each once, in order of first appearance.
pub fn fields(expr: &Expr) -> Vec<&str> {
    fn walk<'a>(expr: &'a Expr, out: &mut Vec<&'a str>) {
        match expr {
            Expr::And(xs) | Expr::Or(xs) => xs.iter().for_each(|x| walk(x, out)),
            Expr::Not(x) => walk(x, out),
            Expr::Cmp { field, .. } | Expr::In { field, .. } | Expr::IsNull { field, .. } => {
                if !out.contains(&field.as_str()) {
                    out.push(field);
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(expr, &mut out);
    out
}

/// Evaluates a filter for one subscriber; `get` returns `None` for NULL.
///
/// Follows SQL's three-valued logic: a comparison with NULL is unknown, `not unknown` is
/// unknown, and the subscriber is selected only when the whole filter is definitely true.
/// A value whose type cannot be compared with the literal (which [`check`] rules out for
/// catalogue-typed data) also counts as unknown, so it never selects anyone by accident.
/// Text compares byte-wise, as SQLite's default collation does.
pub fn eval(expr: &Expr, get: &dyn Fn(&str) -> Option<Value>) -> bool {
    eval3(expr, get) == Some(true)
}

fn eval3(expr: &Expr, get: &dyn Fn(&str) -> Option<Value>) -> Option<bool> {
    match expr {
        Expr::And(xs) => {
            let mut result = Some(true);
            for x in xs {
                match eval3(x, get) {
                    Some(false) => return Some(false),
                    None => result = None,
                    Some(true) => {}
                }
            }
            result
        }
        Expr::Or(xs) => {
            let mut result = Some(false);
            for x in xs {
                match eval3(x, get) {
                    Some(true) => return Some(true),
                    None => result = None,
                    Some(false) => {}
                }
            }
            result
        }
        Expr::Not(x) => eval3(x, get).map(|b| !b),
        Expr::Cmp {
            field, op, value, ..
        } => {
            let actual = get(field)?;
            compare(&actual, value).map(|ord| op.holds(ord))
        }
        Expr::In {
            field,
            values,
            negated,
            ..
        } => {
            let actual = get(field)?;
            // `x in [a, b]` is `x == a or x == b`, unknowns included.
            let mut result = Some(false);
            for v in values {
                match compare(&actual, v) {
                    Some(Ordering::Equal) => {
                        result = Some(true);
                        break;
                    }
                    None => result = None,
                    Some(_) => {}
                }
            }
            result.map(|b| b != *negated)
        }
        Expr::IsNull { field, negated, .. } => Some(get(field).is_none() != *negated),
    }
}

fn compare(actual: &Value, lit: &Literal) -> Option<Ordering> {
    match (actual, lit) {
        (Value::Str(a), Literal::Str(b)) => Some(a.as_str().cmp(b.as_str())),
        (Value::Int(a), Literal::Int(b)) => Some(a.cmp(b)),
        (Value::Int(a), Literal::Num(b)) => cmp_int_float(*a, *b),
        (Value::Num(a), Literal::Int(b)) => cmp_int_float(*b, *a).map(Ordering::reverse),
        (Value::Num(a), Literal::Num(b)) => a.partial_cmp(b),
        (Value::Bool(a), Literal::Bool(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

/// Compares exactly, as SQLite does, rather than rounding the integer to `f64` first.
fn cmp_int_float(i: i64, f: f64) -> Option<Ordering> {
    const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
    if f.is_nan() {
        return None;
    }
    if f >= TWO_POW_63 {
        return Some(Ordering::Less);
    }
    if f < -TWO_POW_63 {
        return Some(Ordering::Greater);
    }
    let whole = f.trunc();
    // In range by the checks above, so the cast is exact.
    let whole_int = whole as i64;
    Some(i.cmp(&whole_int).then_with(|| {
        if f > whole {
            Ordering::Less
        } else if f < whole {
            Ordering::Greater
        } else {
            Ordering::Equal
        }
    }))
}

// ---------------------------------------------------------------------------------------
// Printing

impl fmt::Display for Literal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Str(s) => {
                f.write_str("'")?;
                for c in s.chars() {
                    match c {
                        '\\' => f.write_str("\\\\")?,
                        '\'' => f.write_str("\\'")?,
                        c => fmt::Write::write_char(f, c)?,
                    }
                }
                f.write_str("'")
            }
            Literal::Int(i) => write!(f, "{i}"),
            Literal::Num(n) => {
                // `f64`'s Display is the shortest text that reads back to the same value and
                // never uses an exponent; it only needs a point so it does not read back as
                // an integer. Infinities and NaN have no source form.
                let text = n.to_string();
                if n.is_finite() && !text.contains('.') {
                    write!(f, "{text}.0")
                } else {
                    f.write_str(&text)
                }
            }
            Literal::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// Canonical form: lowercase keywords, `==`/`!=`, single-quoted strings, parentheses only
/// where the structure needs them. It parses back to an equal AST, except for `And`/`Or` with
/// fewer than two operands (which the parser never builds) and non-finite numbers.
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::And(xs) => {
                write_chain(f, xs, " and ", |x| matches!(x, Expr::And(_) | Expr::Or(_)))
            }
            Expr::Or(xs) => write_chain(f, xs, " or ", |x| matches!(x, Expr::Or(_))),
            Expr::Not(x) => {
                f.write_str("not ")?;
                write_operand(f, x, matches!(**x, Expr::And(_) | Expr::Or(_)))
            }
            Expr::Cmp {
                field,
                op: CmpOp::Eq,
                value: Literal::Bool(true),
                ..
            } => f.write_str(field),
            Expr::Cmp {
                field, op, value, ..
            } => write!(f, "{field} {op} {value}"),
            Expr::In {
                field,
                values,
                negated,
                ..
            } => {
                write!(f, "{field} {}in [", if *negated { "not " } else { "" })?;
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_str("]")
            }
            Expr::IsNull { field, negated, .. } => {
                write!(f, "{field} is {}null", if *negated { "not " } else { "" })
            }
        }
    }
}

fn write_chain(
    f: &mut fmt::Formatter<'_>,
    xs: &[Expr],
    sep: &str,
    needs_parens: impl Fn(&Expr) -> bool,
) -> fmt::Result {
    // A lone or missing operand has no source form; parentheses keep the meaning visible.
    let degenerate = xs.len() < 2;
    if degenerate {
        f.write_str("(")?;
    }
    for (i, x) in xs.iter().enumerate() {
        if i > 0 {
            f.write_str(sep)?;
        }
        write_operand(f, x, needs_parens(x))?;
    }
    if degenerate {
        f.write_str(")")?;
    }
    Ok(())
}

fn write_operand(f: &mut fmt::Formatter<'_>, x: &Expr, parens: bool) -> fmt::Result {
    if parens {
        write!(f, "({x})")
    } else {
        write!(f, "{x}")
    }
}

// ---------------------------------------------------------------------------------------
// Lexing

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kw {
    And,
    Or,
    Not,
    In,
    Is,
    Null,
    True,
    False,
}

impl Kw {
    fn from_ident(ident: &str) -> Option<Kw> {
        const KEYWORDS: [(&str, Kw); 8] = [
            ("and", Kw::And),
            ("or", Kw::Or),
            ("not", Kw::Not),
            ("in", Kw::In),
            ("is", Kw::Is),
            ("null", Kw::Null),
            ("true", Kw::True),
            ("false", Kw::False),
        ];
        KEYWORDS
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(ident))
            .map(|&(_, kw)| kw)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok<'a> {
    Ident(&'a str),
    Kw(Kw),
    Int(i64),
    Num(f64),
    Str(String),
    Op(CmpOp),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Eof,
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
}

impl<'a> Lexer<'a> {
    fn peek_char(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn bump_char(&mut self) -> Option<char> {
        let c = self.peek_char()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn eat_while(&mut self, pred: impl Fn(char) -> bool) {
        while self.peek_char().is_some_and(&pred) {
            self.bump_char();
        }
    }

    fn next_token(&mut self) -> Result<(Tok<'a>, Span), ExprError> {
        self.eat_while(char::is_whitespace);
        let start = self.pos;
        let Some(c) = self.bump_char() else {
            return Ok((Tok::Eof, Span::new(start, start)));
        };
        let tok = match c {
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            '[' => Tok::LBracket,
            ']' => Tok::RBracket,
            ',' => Tok::Comma,
            '=' => {
                if self.peek_char() == Some('=') {
                    self.bump_char();
                }
                Tok::Op(CmpOp::Eq)
            }
            '!' => {
                if self.peek_char() != Some('=') {
                    return Err(ExprError::new(
                        Span::new(start, self.pos),
                        "unexpected character `!`; did you mean `!=` or `not`?",
                    ));
                }
                self.bump_char();
                Tok::Op(CmpOp::Ne)
            }
            '<' => match self.peek_char() {
                Some('=') => {
                    self.bump_char();
                    Tok::Op(CmpOp::Le)
                }
                Some('>') => {
                    self.bump_char();
                    Tok::Op(CmpOp::Ne)
                }
                _ => Tok::Op(CmpOp::Lt),
            },
            '>' => {
                if self.peek_char() == Some('=') {
                    self.bump_char();
                    Tok::Op(CmpOp::Ge)
                } else {
                    Tok::Op(CmpOp::Gt)
                }
            }
            '\'' | '"' => Tok::Str(self.string(start, c)?),
            '-' | '0'..='9' => self.number(start, c)?,
            c if c.is_ascii_alphabetic() || c == '_' => {
                self.eat_while(|c| c.is_ascii_alphanumeric() || c == '_');
                let ident = &self.src[start..self.pos];
                Kw::from_ident(ident).map_or(Tok::Ident(ident), Tok::Kw)
            }
            c => {
                let hint = if c.is_alphabetic() {
                    "; field names are ASCII, and text values must be quoted, e.g. '北京大学'"
                } else {
                    ""
                };
                return Err(ExprError::new(
                    Span::new(start, self.pos),
                    format!("unexpected character `{c}`{hint}"),
                ));
            }
        };
        Ok((tok, Span::new(start, self.pos)))
    }

    fn string(&mut self, start: usize, quote: char) -> Result<String, ExprError> {
        let mut out = String::new();
        loop {
            let here = self.pos;
            match self.bump_char() {
                None => {
                    return Err(ExprError::new(
                        Span::new(start, self.pos),
                        format!("unterminated string: expected a closing `{quote}`"),
                    ));
                }
                Some(c) if c == quote => return Ok(out),
                Some('\\') => match self.bump_char() {
                    Some(c @ ('\\' | '\'' | '"')) => out.push(c),
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    None => {
                        return Err(ExprError::new(
                            Span::new(start, self.pos),
                            format!("unterminated string: expected a closing `{quote}`"),
                        ));
                    }
                    Some(c) => {
                        return Err(ExprError::new(
                            Span::new(here, self.pos),
                            format!(
                                "unknown escape `\\{c}`; the escapes are \\\\, \\', \\\", \\n and \\t"
                            ),
                        ));
                    }
                },
                Some(c) => out.push(c),
            }
        }
    }

    fn number(&mut self, start: usize, first: char) -> Result<Tok<'a>, ExprError> {
        let is_digit = |c: char| c.is_ascii_digit();
        if first == '-' && !self.peek_char().is_some_and(is_digit) {
            return Err(ExprError::new(
                Span::new(start, self.pos),
                "expected a digit after `-`",
            ));
        }
        self.eat_while(is_digit);
        let mut decimal = false;
        if self.peek_char() == Some('.') {
            decimal = true;
            self.bump_char();
            if !self.peek_char().is_some_and(is_digit) {
                return Err(ExprError::new(
                    Span::new(start, self.pos),
                    "expected a digit after the decimal point",
                ));
            }
            self.eat_while(is_digit);
        }
        // `1e5` or `10abc` would otherwise lex as a number followed by a name, which reads
        // as a confusing syntax error further on.
        if self
            .peek_char()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        {
            self.eat_while(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
            let text = &self.src[start..self.pos];
            return Err(ExprError::new(
                Span::new(start, self.pos),
                format!(
                    "invalid number `{text}`; write numbers as digits with an optional decimal point, e.g. 120 or 0.5"
                ),
            ));
        }
        let text = &self.src[start..self.pos];
        let span = Span::new(start, self.pos);
        if decimal {
            match text.parse::<f64>() {
                Ok(n) if n.is_finite() => Ok(Tok::Num(n)),
                _ => Err(ExprError::new(
                    span,
                    format!("number `{text}` is out of range"),
                )),
            }
        } else {
            text.parse::<i64>().map(Tok::Int).map_err(|_| {
                ExprError::new(
                    span,
                    format!("integer `{text}` is out of range (it must fit in 64 bits)"),
                )
            })
        }
    }
}

// ---------------------------------------------------------------------------------------
// Parsing

struct Parser<'a> {
    lexer: Lexer<'a>,
    tok: Tok<'a>,
    span: Span,
    depth: usize,
}

const VALUE_EXPECTED: &str = "a value (a number, a 'quoted string', true or false)";

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Result<Self, ExprError> {
        let mut lexer = Lexer { src, pos: 0 };
        let (tok, span) = lexer.next_token()?;
        Ok(Self {
            lexer,
            tok,
            span,
            depth: 0,
        })
    }

    /// Moves to the next token, returning the current one.
    fn bump(&mut self) -> Result<(Tok<'a>, Span), ExprError> {
        let (tok, span) = self.lexer.next_token()?;
        let prev_tok = std::mem::replace(&mut self.tok, tok);
        let prev_span = std::mem::replace(&mut self.span, span);
        Ok((prev_tok, prev_span))
    }

    fn found(&self) -> String {
        if self.tok == Tok::Eof {
            return "end of expression".to_owned();
        }
        let text = &self.lexer.src[self.span.start..self.span.end];
        const MAX_CHARS: usize = 40;
        match text.char_indices().nth(MAX_CHARS) {
            Some((cut, _)) => format!("`{}…`", &text[..cut]),
            None => format!("`{text}`"),
        }
    }

    fn unexpected(&self, expected: &str) -> ExprError {
        ExprError::new(
            self.span,
            format!("expected {expected}, found {}", self.found()),
        )
    }

    fn enter(&mut self) -> Result<(), ExprError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ExprError::new(
                self.span,
                format!(
                    "expression is nested too deeply (more than {MAX_DEPTH} levels of parentheses or `not`)"
                ),
            ));
        }
        Ok(())
    }

    fn parse_or(&mut self) -> Result<Expr, ExprError> {
        let mut operands = vec![self.parse_and()?];
        while self.tok == Tok::Kw(Kw::Or) {
            self.bump()?;
            operands.push(self.parse_and()?);
        }
        Ok(if operands.len() == 1 {
            operands.remove(0)
        } else {
            Expr::Or(operands)
        })
    }

    fn parse_and(&mut self) -> Result<Expr, ExprError> {
        let mut operands = vec![self.parse_unary()?];
        while self.tok == Tok::Kw(Kw::And) {
            self.bump()?;
            operands.push(self.parse_unary()?);
        }
        Ok(if operands.len() == 1 {
            operands.remove(0)
        } else {
            Expr::And(operands)
        })
    }

    fn parse_unary(&mut self) -> Result<Expr, ExprError> {
        if self.tok != Tok::Kw(Kw::Not) {
            return self.parse_primary();
        }
        self.bump()?;
        self.enter()?;
        let operand = self.parse_unary()?;
        self.depth -= 1;
        Ok(Expr::Not(Box::new(operand)))
    }

    fn parse_primary(&mut self) -> Result<Expr, ExprError> {
        let field = match self.tok {
            Tok::LParen => {
                self.bump()?;
                self.enter()?;
                let inner = self.parse_or()?;
                if self.tok != Tok::RParen {
                    return Err(self.unexpected("`and`, `or` or `)`"));
                }
                self.bump()?;
                self.depth -= 1;
                return Ok(inner);
            }
            Tok::Ident(name) => name.to_owned(),
            _ => return Err(self.unexpected("a field name, `not` or `(`")),
        };
        let (_, field_span) = self.bump()?;
        match self.tok {
            Tok::Op(op) => {
                self.bump()?;
                let (value, value_span) = self.literal()?;
                Ok(Expr::Cmp {
                    field,
                    field_span,
                    op,
                    value,
                    value_span,
                })
            }
            Tok::Kw(Kw::In) => {
                self.bump()?;
                let values = self.list()?;
                Ok(Expr::In {
                    field,
                    field_span,
                    values,
                    negated: false,
                })
            }
            Tok::Kw(Kw::Not) => {
                self.bump()?;
                if self.tok != Tok::Kw(Kw::In) {
                    return Err(self.unexpected("`in` after `not`"));
                }
                self.bump()?;
                let values = self.list()?;
                Ok(Expr::In {
                    field,
                    field_span,
                    values,
                    negated: true,
                })
            }
            Tok::Kw(Kw::Is) => {
                self.bump()?;
                let negated = self.tok == Tok::Kw(Kw::Not);
                if negated {
                    self.bump()?;
                }
                if self.tok != Tok::Kw(Kw::Null) {
                    return Err(self.unexpected(if negated {
                        "`null` after `is not`"
                    } else {
                        "`null` or `not null` after `is`"
                    }));
                }
                self.bump()?;
                Ok(Expr::IsNull {
                    field,
                    field_span,
                    negated,
                })
            }
            Tok::Kw(Kw::And | Kw::Or) | Tok::RParen | Tok::Eof => Ok(Expr::Cmp {
                field,
                field_span,
                op: CmpOp::Eq,
                value: Literal::Bool(true),
                value_span: field_span,
            }),
            _ => Err(self.unexpected("a comparison operator (==, !=, <, <=, >, >=), `in` or `is`")),
        }
    }

    fn literal(&mut self) -> Result<(Literal, Span), ExprError> {
        let value = match &self.tok {
            Tok::Int(i) => Literal::Int(*i),
            Tok::Num(n) => Literal::Num(*n),
            Tok::Str(s) => Literal::Str(s.clone()),
            Tok::Kw(Kw::True) => Literal::Bool(true),
            Tok::Kw(Kw::False) => Literal::Bool(false),
            Tok::Kw(Kw::Null) => {
                let mut err = self.unexpected(VALUE_EXPECTED);
                err.message
                    .push_str("; use `is null` or `is not null` to test for a missing value");
                return Err(err);
            }
            Tok::Ident(word) => {
                let mut err = self.unexpected(VALUE_EXPECTED);
                err.message
                    .push_str(&format!("; text values must be quoted, e.g. '{word}'"));
                return Err(err);
            }
            _ => return Err(self.unexpected(VALUE_EXPECTED)),
        };
        let (_, span) = self.bump()?;
        Ok((value, span))
    }

    fn list(&mut self) -> Result<Vec<Literal>, ExprError> {
        if self.tok != Tok::LBracket {
            let mut err = self.unexpected("`[` after `in`");
            if self.tok == Tok::LParen {
                err.message
                    .push_str("; lists use square brackets, e.g. ['gotone', 'mzone']");
            }
            return Err(err);
        }
        self.bump()?;
        let mut values = vec![self.literal()?.0];
        loop {
            match self.tok {
                Tok::Comma => {
                    self.bump()?;
                    values.push(self.literal()?.0);
                }
                Tok::RBracket => {
                    self.bump()?;
                    return Ok(values);
                }
                _ => return Err(self.unexpected("`,` or `]`")),
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Type checking

fn check_into(cat: &Catalogue, expr: &Expr, errors: &mut Vec<ExprError>) {
    match expr {
        Expr::And(xs) | Expr::Or(xs) => xs.iter().for_each(|x| check_into(cat, x, errors)),
        Expr::Not(x) => check_into(cat, x, errors),
        Expr::Cmp {
            field,
            field_span,
            op,
            value,
            value_span,
        } => {
            let Some(def) = known_field(cat, field, *field_span, errors) else {
                return;
            };
            // Only the parser builds a bare field, and a parsed span is never empty; built
            // ASTs with default spans must not be mistaken for one.
            let bare = value_span == field_span
                && field_span.start < field_span.end
                && *op == CmpOp::Eq
                && *value == Literal::Bool(true);
            if bare && field_type(def) != FieldType::Bool {
                errors.push(ExprError::new(
                    *field_span,
                    format!(
                        "`{field}` is {} field, so it cannot stand alone as a condition; compare it with a value, e.g. `{field} == {}`",
                        type_phrase(field_type(def)),
                        example_value(def),
                    ),
                ));
                return;
            }
            check_literal(def, value, *value_span, errors);
            if op.is_ordering() && field_type(def) == FieldType::Bool {
                errors.push(ExprError::new(
                    field_span.to(*value_span),
                    format!("`{op}` does not apply to bool field `{field}`; use `==` or `!=`"),
                ));
            } else if op.is_ordering() && !def.kind.values().is_empty() {
                // Enumerated values compare alphabetically in SQL, so `value_tier > 'gold'`
                // would select silver and not diamond: no operator means that.
                errors.push(ExprError::new(
                    field_span.to(*value_span),
                    format!(
                        "`{op}` does not apply to `{field}`, whose values have no order; list the ones you mean, e.g. `{field} in [{}]`",
                        def.kind.values().iter().take(2).map(|v| format!("'{v}'")).collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
        Expr::In {
            field,
            field_span,
            values,
            ..
        } => {
            if values.len() > crate::rules::MAX_IN_LIST {
                errors.push(ExprError::new(
                    *field_span,
                    format!(
                        "`{field} in [...]` lists {} values, more than {} can be planned; define a segment on a field instead",
                        values.len(),
                        crate::rules::MAX_IN_LIST
                    ),
                ));
                return;
            }
            let Some(def) = known_field(cat, field, *field_span, errors) else {
                return;
            };
            // The AST keeps no span per list element, so list problems point at the field.
            for v in values {
                check_literal(def, v, *field_span, errors);
            }
        }
        Expr::IsNull {
            field,
            field_span,
            negated,
        } => {
            let Some(def) = known_field(cat, field, *field_span, errors) else {
                return;
            };
            if !fields::nullable(def) {
                let nullable: Vec<&str> = cat
                    .all()
                    .iter()
                    .filter(|f| fields::nullable(f))
                    .map(|f| f.name.as_str())
                    .collect();
                let (test, outcome) = if *negated {
                    ("is not null", "true")
                } else {
                    ("is null", "false")
                };
                errors.push(ExprError::new(
                    *field_span,
                    format!(
                        "`{field}` is never null, so `{field} {test}` is always {outcome}; the fields that may be null are {}",
                        nullable.join(", ")
                    ),
                ));
            }
        }
    }
}

fn known_field<'c>(
    cat: &'c Catalogue,
    name: &str,
    span: Span,
    errors: &mut Vec<ExprError>,
) -> Option<&'c Attribute> {
    let def = cat.field(name);
    if def.is_none() {
        let hint = match closest_field(cat, name) {
            Some(close) => format!("; did you mean `{close}`?"),
            None => ".".to_owned(),
        };
        errors.push(ExprError::new(
            span,
            format!(
                "unknown field `{name}`{hint} The full list of fields is shown by `campaignd schema --attributes`."
            ),
        ));
    }
    def
}

fn type_phrase(ty: FieldType) -> &'static str {
    match ty {
        FieldType::Text => "a text",
        FieldType::Integer => "an integer",
        FieldType::Number => "a number",
        FieldType::Bool => "a bool",
        FieldType::Date => "a date",
        FieldType::Timestamp => "a timestamp",
    }
}

fn example_value(def: &Attribute) -> String {
    match field_type(def) {
        FieldType::Text => format!(
            "'{}'",
            def.kind.values().first().map_or("...", String::as_str)
        ),
        FieldType::Integer => "10".to_owned(),
        FieldType::Number => "10.5".to_owned(),
        FieldType::Bool => "true".to_owned(),
        FieldType::Date => "'2026-09-01'".to_owned(),
        FieldType::Timestamp => "'2026-09-01T08:00:00Z'".to_owned(),
    }
}

fn check_literal(def: &Attribute, value: &Literal, span: Span, errors: &mut Vec<ExprError>) {
    let ty = field_type(def);
    let fits = matches!(
        (ty, value),
        (
            FieldType::Text | FieldType::Date | FieldType::Timestamp,
            Literal::Str(_)
        ) | (FieldType::Integer, Literal::Int(_))
            | (FieldType::Number, Literal::Int(_) | Literal::Num(_))
            | (FieldType::Bool, Literal::Bool(_))
    );
    if !fits {
        let expected = match ty {
            FieldType::Text => "a 'quoted string'",
            FieldType::Integer => "a whole number",
            FieldType::Number => "a number",
            FieldType::Bool => "true or false",
            FieldType::Date => "a 'YYYY-MM-DD' date",
            FieldType::Timestamp => "a 'YYYY-MM-DDTHH:MM:SSZ' timestamp",
        };
        errors.push(ExprError::new(
            span,
            format!(
                "`{}` is {} field; expected {expected}, found `{value}`",
                def.name,
                type_phrase(ty)
            ),
        ));
        return;
    }
    if let Literal::Str(s) = value {
        let problem = match ty {
            FieldType::Date if !fields::is_date(s) => Some("a 'YYYY-MM-DD' date"),
            FieldType::Timestamp if !fields::is_timestamp(s) => {
                Some("a 'YYYY-MM-DDTHH:MM:SSZ' timestamp (UTC)")
            }
            _ => None,
        };
        if let Some(expected) = problem {
            errors.push(ExprError::new(
                span,
                format!(
                    "`{}` is {} field; expected {expected}, found {value}",
                    def.name,
                    type_phrase(ty)
                ),
            ));
            return;
        }
    }
    if let Literal::Str(s) = value
        && !def.kind.values().is_empty()
        && !def.kind.values().contains(s)
    {
        errors.push(ExprError::new(
            span,
            format!(
                "`{}` has no value {value}; expected one of {}",
                def.name,
                def.kind.values().join(", ")
            ),
        ));
    }
}

/// The catalogue field most like `name`, if any is close enough to be a plausible typo.
fn closest_field<'c>(cat: &'c Catalogue, name: &str) -> Option<&'c str> {
    let wanted = name.to_ascii_lowercase();
    let limit = (wanted.chars().count() / 3).max(2);
    cat.field_names()
        .into_iter()
        .map(|f| (levenshtein(&wanted, f), f))
        .filter(|&(dist, candidate)| {
            dist <= limit
                || (wanted.len() >= 3
                    && (candidate.contains(&wanted) || wanted.contains(candidate)))
        })
        .min_by_key(|&(dist, _)| dist)
        .map(|(_, candidate)| candidate)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    #[test]
    fn ordering_on_enumerated_fields_is_rejected() {
        let errs = super::check(
            &super::parse("value_tier > 'gold'").unwrap(),
            &crate::catalogue::shipped(),
        );
        assert_eq!(errs.len(), 1);
        assert!(
            errs[0].message.contains("values have no order"),
            "{}",
            errs[0].message
        );
        assert!(
            super::check(
                &super::parse("region > 'a'").unwrap(),
                &crate::catalogue::shipped()
            )
            .is_empty(),
            "free text still orders"
        );
    }

    use super::*;
    use proptest::prelude::*;

    fn cmp(field: &str, op: CmpOp, value: Literal) -> Expr {
        Expr::Cmp {
            field: field.into(),
            field_span: Span::default(),
            op,
            value,
            value_span: Span::default(),
        }
    }

    fn is_true(field: &str) -> Expr {
        cmp(field, CmpOp::Eq, Literal::Bool(true))
    }

    fn in_list(field: &str, values: Vec<Literal>, negated: bool) -> Expr {
        Expr::In {
            field: field.into(),
            field_span: Span::default(),
            values,
            negated,
        }
    }

    fn is_null(field: &str, negated: bool) -> Expr {
        Expr::IsNull {
            field: field.into(),
            field_span: Span::default(),
            negated,
        }
    }

    fn s(text: &str) -> Literal {
        Literal::Str(text.into())
    }

    /// The span of the first occurrence of `needle` in `src`.
    fn at(src: &str, needle: &str) -> Span {
        let start = src
            .find(needle)
            .unwrap_or_else(|| panic!("`{needle}` not in `{src}`"));
        Span::new(start, start + needle.len())
    }

    /// The span of the last occurrence of `needle` in `src`.
    fn at_last(src: &str, needle: &str) -> Span {
        let start = src
            .rfind(needle)
            .unwrap_or_else(|| panic!("`{needle}` not in `{src}`"));
        Span::new(start, start + needle.len())
    }

    fn parse_err(src: &str) -> ExprError {
        match parse(src) {
            Ok(expr) => panic!("`{src}` parsed as {expr:?}"),
            Err(e) => e,
        }
    }

    fn check_src(src: &str) -> Vec<ExprError> {
        check(
            &parse(src).unwrap_or_else(|e| panic!("`{src}`: {e}")),
            &crate::catalogue::shipped(),
        )
    }

    fn single_check_error(src: &str) -> ExprError {
        let mut errors = check_src(src);
        assert_eq!(errors.len(), 1, "`{src}`: {errors:?}");
        errors.remove(0)
    }

    #[test]
    fn parses_a_typical_filter_with_spans() {
        let src = "arpu_3m >= 10 and brand != 'gotone'";
        let expr = parse(src).unwrap();
        let Expr::And(parts) = &expr else {
            panic!("{expr:?}")
        };
        let [
            Expr::Cmp {
                field: f1,
                field_span: fs1,
                op: o1,
                value: v1,
                value_span: vs1,
            },
            Expr::Cmp {
                field: f2,
                field_span: fs2,
                op: o2,
                value: v2,
                value_span: vs2,
            },
        ] = parts.as_slice()
        else {
            panic!("{parts:?}")
        };
        assert_eq!(
            (f1.as_str(), *o1, v1),
            ("arpu_3m", CmpOp::Ge, &Literal::Int(10))
        );
        assert_eq!((*fs1, *vs1), (at(src, "arpu_3m"), at(src, "10")));
        assert_eq!((f2.as_str(), *o2, v2), ("brand", CmpOp::Ne, &s("gotone")));
        assert_eq!((*fs2, *vs2), (at(src, "brand"), at(src, "'gotone'")));
    }

    #[test]
    fn every_operator_spelling() {
        for (text, op) in [
            ("==", CmpOp::Eq),
            ("=", CmpOp::Eq),
            ("!=", CmpOp::Ne),
            ("<>", CmpOp::Ne),
            ("<", CmpOp::Lt),
            ("<=", CmpOp::Le),
            (">", CmpOp::Gt),
            (">=", CmpOp::Ge),
        ] {
            assert_eq!(
                parse(&format!("age {text} 3")).unwrap(),
                cmp("age", op, Literal::Int(3)),
                "{text}"
            );
            assert_eq!(
                parse(&format!("age{text}3")).unwrap(),
                cmp("age", op, Literal::Int(3)),
                "{text}"
            );
        }
    }

    #[test]
    fn and_binds_tighter_than_or() {
        assert_eq!(
            parse("a or b and c").unwrap(),
            Expr::Or(vec![
                is_true("a"),
                Expr::And(vec![is_true("b"), is_true("c")])
            ])
        );
        assert_eq!(
            parse("a and b or c").unwrap(),
            Expr::Or(vec![
                Expr::And(vec![is_true("a"), is_true("b")]),
                is_true("c")
            ])
        );
        assert_eq!(
            parse("(a or b) and c").unwrap(),
            Expr::And(vec![
                Expr::Or(vec![is_true("a"), is_true("b")]),
                is_true("c")
            ])
        );
    }

    #[test]
    fn not_binds_tighter_than_and() {
        assert_eq!(
            parse("not a and b").unwrap(),
            Expr::And(vec![Expr::Not(Box::new(is_true("a"))), is_true("b")])
        );
        assert_eq!(
            parse("not not a").unwrap(),
            Expr::Not(Box::new(Expr::Not(Box::new(is_true("a")))))
        );
        assert_eq!(
            parse("not age > 3").unwrap(),
            Expr::Not(Box::new(cmp("age", CmpOp::Gt, Literal::Int(3))))
        );
    }

    #[test]
    fn chains_are_flat_and_parentheses_nest() {
        assert_eq!(
            parse("a and b and c").unwrap(),
            Expr::And(vec![is_true("a"), is_true("b"), is_true("c")])
        );
        assert_eq!(
            parse("a and (b and c)").unwrap(),
            Expr::And(vec![
                is_true("a"),
                Expr::And(vec![is_true("b"), is_true("c")])
            ])
        );
        assert_eq!(parse("((a))").unwrap(), is_true("a"));
    }

    #[test]
    fn in_not_in_and_null_tests() {
        assert_eq!(
            parse("brand in ['gotone', \"mzone\"]").unwrap(),
            in_list("brand", vec![s("gotone"), s("mzone")], false)
        );
        assert_eq!(
            parse("age not in [1,2]").unwrap(),
            in_list("age", vec![Literal::Int(1), Literal::Int(2)], true)
        );
        assert_eq!(parse("campus is null").unwrap(), is_null("campus", false));
        assert_eq!(
            parse("campus is not null").unwrap(),
            is_null("campus", true)
        );
        let src = "campus IS NOT NULL";
        let Expr::IsNull { field_span, .. } = parse(src).unwrap() else {
            panic!()
        };
        assert_eq!(field_span, at(src, "campus"));
    }

    #[test]
    fn keywords_are_case_insensitive() {
        assert_eq!(
            parse("NOT opt_out AND brand In ['mzone'] Or campus IS not NULL and do_not_disturb == FALSE").unwrap(),
            Expr::Or(vec![
                Expr::And(vec![Expr::Not(Box::new(is_true("opt_out"))), in_list("brand", vec![s("mzone")], false)]),
                Expr::And(vec![is_null("campus", true), cmp("do_not_disturb", CmpOp::Eq, Literal::Bool(false))]),
            ])
        );
    }

    #[test]
    fn bare_field_means_true_and_points_at_itself() {
        let src = "opt_out";
        let Expr::Cmp {
            field_span,
            value_span,
            op,
            value,
            ..
        } = parse(src).unwrap()
        else {
            panic!()
        };
        assert_eq!((op, value), (CmpOp::Eq, Literal::Bool(true)));
        assert_eq!(field_span, Span::new(0, 7));
        assert_eq!(value_span, field_span);
    }

    #[test]
    fn chinese_string_literals() {
        let src = "campus == '北京大学' and region in [\"广州\", '深圳']";
        let expr = parse(src).unwrap();
        assert_eq!(
            expr,
            Expr::And(vec![
                cmp("campus", CmpOp::Eq, s("北京大学")),
                in_list("region", vec![s("广州"), s("深圳")], false),
            ])
        );
        let Expr::And(parts) = &expr else { panic!() };
        let Expr::Cmp { value_span, .. } = &parts[0] else {
            panic!()
        };
        assert_eq!(*value_span, at(src, "'北京大学'"));
        let Expr::In { field_span, .. } = &parts[1] else {
            panic!()
        };
        assert_eq!(*field_span, at(src, "region"));
        assert_eq!(
            expr.to_string(),
            "campus == '北京大学' and region in ['广州', '深圳']"
        );

        let src = "campus == '北京' 大学";
        let err = parse_err(src);
        assert_eq!(err.span, at(src, "大"));
        assert!(src.is_char_boundary(err.span.end));
        assert!(
            err.message.starts_with("unexpected character `大`"),
            "{}",
            err.message
        );
    }

    #[test]
    fn string_escapes() {
        assert_eq!(
            parse(r"name == 'O\'Brien'").unwrap(),
            cmp("name", CmpOp::Eq, s("O'Brien"))
        );
        assert_eq!(
            parse(r#"name == "say \"hi\"""#).unwrap(),
            cmp("name", CmpOp::Eq, s("say \"hi\""))
        );
        assert_eq!(
            parse(r#"name == "it's""#).unwrap(),
            cmp("name", CmpOp::Eq, s("it's"))
        );
        assert_eq!(
            parse(r"name == 'a\\b\n\t'").unwrap(),
            cmp("name", CmpOp::Eq, s("a\\b\n\t"))
        );
        let printed = cmp("name", CmpOp::Eq, s("a\\'b\"")).to_string();
        assert_eq!(printed, r#"name == 'a\\\'b"'"#);
    }

    #[test]
    fn numbers() {
        assert_eq!(
            parse("balance < -5").unwrap(),
            cmp("balance", CmpOp::Lt, Literal::Int(-5))
        );
        assert_eq!(
            parse("balance < -0.25").unwrap(),
            cmp("balance", CmpOp::Lt, Literal::Num(-0.25))
        );
        assert_eq!(
            parse("age > -9223372036854775808").unwrap(),
            cmp("age", CmpOp::Gt, Literal::Int(i64::MIN))
        );
        assert_eq!(
            parse("arpu_3m >= 120.0").unwrap(),
            cmp("arpu_3m", CmpOp::Ge, Literal::Num(120.0))
        );
    }

    #[test]
    fn display_is_canonical() {
        let cases = [
            (
                "a = 1 AND (b <> 'x' OR NOT c)",
                "a == 1 and (b != 'x' or not c)",
            ),
            ("arpu_3m >= 120.0", "arpu_3m >= 120.0"),
            ("arpu_3m >= 1.50", "arpu_3m >= 1.5"),
            ("a or (b or c)", "a or (b or c)"),
            ("(a or b) or c", "(a or b) or c"),
            ("a or b and c", "a or b and c"),
            ("(a and b) and c", "(a and b) and c"),
            ("not (a and b)", "not (a and b)"),
            ("not (not a)", "not not a"),
            ("opt_out == true", "opt_out"),
            ("opt_out == false", "opt_out == false"),
            (
                "x not in [1, 2.5, \"s\", TRUE]",
                "x not in [1, 2.5, 's', true]",
            ),
            ("campus IS NOT NULL", "campus is not null"),
        ];
        for (src, canonical) in cases {
            let expr = parse(src).unwrap();
            assert_eq!(expr.to_string(), canonical, "{src}");
            assert_eq!(parse(canonical).unwrap(), expr, "{src}");
        }
        assert_eq!(Literal::Num(1e20).to_string(), "100000000000000000000.0");
        assert_eq!(Literal::Num(-0.0).to_string(), "-0.0");
    }

    #[test]
    fn degenerate_chains_print_without_changing_meaning() {
        assert_eq!(Expr::And(vec![is_true("a")]).to_string(), "(a)");
        assert_eq!(Expr::Or(vec![]).to_string(), "()");
        assert!(parse("()").is_err());
    }

    #[test]
    fn equality_ignores_spans_but_not_content() {
        let a = parse("age > 3").unwrap();
        let b = parse("  age   >   3  ").unwrap();
        assert_eq!(a, b);
        assert_ne!(a, parse("age > 4").unwrap());
        assert_ne!(a, parse("age >= 3").unwrap());
        assert_ne!(a, parse("aga > 3").unwrap());
        assert_ne!(parse("age > 3.0").unwrap(), a);
        assert_ne!(parse("x in [1]").unwrap(), parse("x not in [1]").unwrap());
        assert_ne!(parse("x is null").unwrap(), parse("x is not null").unwrap());
        assert_ne!(parse("a and b").unwrap(), parse("a or b").unwrap());
    }

    #[test]
    fn syntax_errors_say_what_was_expected_and_where() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "brand foo 'x'",
                "foo",
                "expected a comparison operator (==, !=, <, <=, >, >=), `in` or `is`, found `foo`",
            ),
            (
                "age > 1 age",
                "age",
                "expected `and`, `or` or end of expression, found `age`",
            ),
            (
                "age > 1)",
                ")",
                "expected `and`, `or` or end of expression, found `)`",
            ),
            (
                "== 1",
                "==",
                "expected a field name, `not` or `(`, found `==`",
            ),
            (
                "age > 1 and or b",
                "or",
                "expected a field name, `not` or `(`, found `or`",
            ),
            (
                "brand in ['a' 'b']",
                "'b'",
                "expected `,` or `]`, found `'b'`",
            ),
            (
                "brand in []",
                "]",
                "expected a value (a number, a 'quoted string', true or false), found `]`",
            ),
            (
                "brand not == 'a'",
                "==",
                "expected `in` after `not`, found `==`",
            ),
            (
                "campus is nul",
                "nul",
                "expected `null` or `not null` after `is`, found `nul`",
            ),
            (
                "campus is not 1",
                "1",
                "expected `null` after `is not`, found `1`",
            ),
            (
                "age ! 1",
                "!",
                "unexpected character `!`; did you mean `!=` or `not`?",
            ),
            ("age > 1.", "1.", "expected a digit after the decimal point"),
            ("age > - 1", "-", "expected a digit after `-`"),
            (
                "name == 'abc",
                "'abc",
                "unterminated string: expected a closing `'`",
            ),
            (
                "name == \"abc\\",
                "\"abc\\",
                "unterminated string: expected a closing `\"`",
            ),
            (
                "name == 'a\\qb'",
                "\\q",
                "unknown escape `\\q`; the escapes are \\\\, \\', \\\", \\n and \\t",
            ),
            ("age @ 1", "@", "unexpected character `@`"),
            (
                "age > 99999999999999999999",
                "99999999999999999999",
                "integer `99999999999999999999` is out of range (it must fit in 64 bits)",
            ),
        ];
        for &(src, culprit, message) in cases {
            let err = parse_err(src);
            assert_eq!(err.message, message, "`{src}`");
            assert_eq!(err.span, at_last(src, culprit), "`{src}`");
        }
    }

    #[test]
    fn errors_at_the_end_point_past_the_last_byte() {
        for (src, message) in [
            (
                "",
                "expected a field name, `not` or `(`, found end of expression",
            ),
            (
                "age >",
                "expected a value (a number, a 'quoted string', true or false), found end of expression",
            ),
            (
                "(age > 1",
                "expected `and`, `or` or `)`, found end of expression",
            ),
            (
                "age > 1 and",
                "expected a field name, `not` or `(`, found end of expression",
            ),
            (
                "brand in ['a'",
                "expected `,` or `]`, found end of expression",
            ),
        ] {
            let err = parse_err(src);
            assert_eq!(err.message, message, "`{src}`");
            assert_eq!(err.span, Span::new(src.len(), src.len()), "`{src}`");
        }
    }

    #[test]
    fn errors_carry_hints_for_likely_slips() {
        let src = "brand == gotone";
        let err = parse_err(src);
        assert_eq!(err.span, at(src, "gotone"));
        assert!(
            err.message
                .ends_with("text values must be quoted, e.g. 'gotone'"),
            "{}",
            err.message
        );

        let src = "campus == null";
        let err = parse_err(src);
        assert_eq!(err.span, at(src, "null"));
        assert!(err.message.contains("use `is null`"), "{}", err.message);

        let src = "brand in ('gotone')";
        let err = parse_err(src);
        assert_eq!(err.span, at(src, "("));
        assert!(
            err.message
                .starts_with("expected `[` after `in`, found `(`; lists use square brackets"),
            "{}",
            err.message
        );

        let src = "age > 1e5";
        let err = parse_err(src);
        assert_eq!(err.span, at(src, "1e5"));
        assert!(
            err.message.starts_with("invalid number `1e5`"),
            "{}",
            err.message
        );

        let src = "城市 == 'x'";
        let err = parse_err(src);
        assert_eq!(err.span, Span::new(0, "城".len()));
        assert!(
            err.message.contains("text values must be quoted"),
            "{}",
            err.message
        );
    }

    #[test]
    fn long_tokens_are_shortened_in_messages() {
        let long = format!("'{}'", "长".repeat(100));
        let src = format!("brand {long}");
        let err = parse_err(&src);
        assert_eq!(err.span, Span::new(6, src.len()));
        assert!(err.message.ends_with("…`"), "{}", err.message);
        assert!(err.message.chars().count() < 150, "{}", err.message);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let ok = format!("{}a{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert_eq!(parse(&ok).unwrap(), is_true("a"));
        let deep = format!(
            "{}a{}",
            "(".repeat(MAX_DEPTH + 1),
            ")".repeat(MAX_DEPTH + 1)
        );
        assert!(parse_err(&deep).message.contains("nested too deeply"));
        let nots = format!("{}a", "not ".repeat(100_000));
        assert!(parse_err(&nots).message.contains("nested too deeply"));
        let parens = "(".repeat(100_000);
        assert!(parse_err(&parens).message.contains("nested too deeply"));
    }

    #[test]
    fn unknown_fields_suggest_the_closest_name() {
        let src = "brnd == 'gotone'";
        let err = single_check_error(src);
        assert_eq!(err.span, at(src, "brnd"));
        assert_eq!(
            err.message,
            "unknown field `brnd`; did you mean `brand`? The full list of fields is shown by `campaignd schema --attributes`."
        );
        assert!(
            single_check_error("arpu > 1")
                .message
                .contains("did you mean `arpu_3m`?")
        );
        assert!(
            single_check_error("Opt_Out")
                .message
                .contains("did you mean `opt_out`?")
        );
        assert!(
            single_check_error("value_teir == 'gold'")
                .message
                .contains("did you mean `value_tier`?")
        );
        assert_eq!(
            single_check_error("zzzzzzzz == 1").message,
            "unknown field `zzzzzzzz`. The full list of fields is shown by `campaignd schema --attributes`."
        );
        for kind in ["x in [1]", "x is null"] {
            assert!(
                single_check_error(kind)
                    .message
                    .starts_with("unknown field `x`"),
                "{kind}"
            );
        }
    }

    #[test]
    fn literals_must_fit_the_field_type() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "age > 20.5",
                "20.5",
                "`age` is an integer field; expected a whole number, found `20.5`",
            ),
            (
                "age == '20'",
                "'20'",
                "`age` is an integer field; expected a whole number, found `'20'`",
            ),
            (
                "arpu_3m > 'x'",
                "'x'",
                "`arpu_3m` is a number field; expected a number, found `'x'`",
            ),
            (
                "name == 1",
                "1",
                "`name` is a text field; expected a 'quoted string', found `1`",
            ),
            (
                "opt_out == 1",
                "1",
                "`opt_out` is a bool field; expected true or false, found `1`",
            ),
            (
                "complaints_30d != false",
                "false",
                "`complaints_30d` is an integer field; expected a whole number, found `false`",
            ),
        ];
        for &(src, culprit, message) in cases {
            let err = single_check_error(src);
            assert_eq!(err.message, message, "`{src}`");
            assert_eq!(err.span, at(src, culprit), "`{src}`");
        }
        for ok in [
            "arpu_3m > 10",
            "arpu_3m > 10.5",
            "age >= 18",
            "name == 'x'",
            "opt_out == false",
            "churn_risk < 1",
        ] {
            assert_eq!(check_src(ok), vec![], "{ok}");
        }
    }

    #[test]
    fn enumerated_fields_accept_only_their_values() {
        let src = "brand == 'gotne'";
        let err = single_check_error(src);
        assert_eq!(
            err.message,
            "`brand` has no value 'gotne'; expected one of gotone, mzone, easyown"
        );
        assert_eq!(err.span, at(src, "'gotne'"));

        let src = "value_tier in ['gold', 'platinum', 'silver', 'Gold']";
        let errors = check_src(src);
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(
            errors[0]
                .message
                .starts_with("`value_tier` has no value 'platinum'")
        );
        assert!(
            errors[1]
                .message
                .starts_with("`value_tier` has no value 'Gold'")
        );
        assert!(errors.iter().all(|e| e.span == at(src, "value_tier")));

        let err = single_check_error("brand in ['mzone', 3]");
        assert_eq!(
            err.message,
            "`brand` is a text field; expected a 'quoted string', found `3`"
        );

        assert_eq!(
            check_src("student_stage in ['freshman', 'student'] and first_channel == 'sms'"),
            vec![]
        );
    }

    #[test]
    fn bool_fields_have_no_order() {
        let src = "opt_out < true";
        let err = single_check_error(src);
        assert_eq!(
            err.message,
            "`<` does not apply to bool field `opt_out`; use `==` or `!=`"
        );
        assert_eq!(err.span, Span::new(0, src.len()));
        assert_eq!(check_src("do_not_disturb >= false").len(), 1);
        assert_eq!(check_src("opt_out != true"), vec![]);
    }

    #[test]
    fn null_tests_need_a_nullable_field() {
        let src = "age > 1 and brand is null";
        let err = single_check_error(src);
        assert_eq!(err.span, at(src, "brand"));
        assert_eq!(
            err.message,
            "`brand` is never null, so `brand is null` is always false; the fields that may be null are external_id, timezone, campus, email"
        );
        assert!(
            single_check_error("brand is not null")
                .message
                .contains("is always true")
        );
        assert_eq!(
            check_src("campus is null or timezone is not null or external_id is null"),
            vec![]
        );
    }

    #[test]
    fn only_bool_fields_stand_alone() {
        let src = "opt_out or brand";
        let err = single_check_error(src);
        assert_eq!(err.span, at(src, "brand"));
        assert_eq!(
            err.message,
            "`brand` is a text field, so it cannot stand alone as a condition; compare it with a value, e.g. `brand == 'gotone'`"
        );
        assert!(
            single_check_error("age")
                .message
                .contains("e.g. `age == 10`")
        );
        // Built ASTs carry default spans, which must not read as a bare field.
        assert_eq!(
            check(
                &cmp("age", CmpOp::Gt, Literal::Int(3)),
                &crate::catalogue::shipped()
            ),
            vec![]
        );
        assert_eq!(
            check(
                &cmp("brand", CmpOp::Eq, s("mzone")),
                &crate::catalogue::shipped()
            ),
            vec![]
        );
        // Written out, a non-bool compared with `true` is a type error, not a bare field.
        let src = "age == true";
        assert_eq!(single_check_error(src).span, at(src, "true"));
    }

    #[test]
    fn check_reports_every_problem_in_source_order() {
        let src =
            "brnd == 'x' or (age > 'y' and not opt_out < true) or campus is null or region is null";
        let errors = check_src(src);
        let spans: Vec<Span> = errors.iter().map(|e| e.span).collect();
        assert_eq!(
            spans,
            vec![
                at(src, "brnd"),
                at(src, "'y'"),
                at(src, "opt_out < true"),
                at(src, "region")
            ],
            "{errors:?}"
        );
        assert_eq!(
            check_src("arpu_3m >= 10 and brand != 'gotone' and not opt_out and campus is not null"),
            vec![]
        );
    }

    #[test]
    fn fields_are_listed_once_in_order() {
        let expr = parse("brand == 'mzone' and (age > 1 or brand in ['gotone']) and not campus is null and age < 9").unwrap();
        assert_eq!(fields(&expr), vec!["brand", "age", "campus"]);
    }

    fn subscriber<'a>(values: &'a [(&'a str, Value)]) -> impl Fn(&str) -> Option<Value> + 'a {
        move |name| {
            values
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn eval_compares_values() {
        let row = [
            ("brand", Value::Str("mzone".into())),
            ("age", Value::Int(20)),
            ("arpu_3m", Value::Num(10.0)),
            ("opt_out", Value::Bool(false)),
            ("campus", Value::Str("北京大学".into())),
        ];
        let get = subscriber(&row);
        let holds = |src: &str| eval(&parse(src).unwrap(), &get);
        for src in [
            "brand == 'mzone'",
            "brand != 'gotone'",
            "brand in ['gotone', 'mzone']",
            "brand not in ['gotone']",
            "age >= 20 and age <= 20 and age > 19 and age < 21",
            "arpu_3m == 10",
            "arpu_3m > 9.99",
            "not opt_out",
            "opt_out == false",
            "campus == '北京大学'",
            "campus > '北京'",
            "campus is not null",
            "age > 100 or brand == 'mzone'",
        ] {
            assert!(holds(src), "{src}");
        }
        for src in [
            "brand == 'gotone'",
            "brand in ['gotone', 'easyown']",
            "brand not in ['mzone']",
            "age > 20",
            "arpu_3m != 10",
            "opt_out",
            "campus is null",
            "age > 1 and brand == 'gotone'",
        ] {
            assert!(!holds(src), "{src}");
        }
    }

    #[test]
    fn eval_uses_three_valued_logic() {
        let row = [("age", Value::Int(5))];
        let get = subscriber(&row);
        let holds = |src: &str| eval(&parse(src).unwrap(), &get);
        // `campus` is NULL: every comparison with it is unknown, and so is its negation.
        for src in [
            "campus == 'x'",
            "campus != 'x'",
            "not campus == 'x'",
            "campus in ['x']",
            "campus not in ['x']",
            "not campus in ['x']",
            "campus == 'x' or age > 100",
            "not (campus == 'x' or age < 100)",
            "not (campus == 'x' and age < 100)",
            "opt_out",
            "not opt_out",
        ] {
            assert!(!holds(src), "{src}");
        }
        for src in [
            "campus is null",
            "not campus is not null",
            "campus == 'x' or age < 100",
            "not (campus == 'x' and age > 100)",
            "not (campus is not null)",
        ] {
            assert!(holds(src), "{src}");
        }
    }

    #[test]
    fn eval_treats_mismatched_types_as_unknown() {
        let row = [
            ("brand", Value::Str("mzone".into())),
            ("age", Value::Int(5)),
        ];
        let get = subscriber(&row);
        let holds = |src: &str| eval(&parse(src).unwrap(), &get);
        assert!(!holds("brand == 1"));
        assert!(!holds("not brand == 1"));
        assert!(!holds("brand not in [1, 'x']"));
        assert!(holds("brand in [1, 'mzone']"));
        assert!(holds("age == 5.0"));
    }

    #[test]
    fn integers_and_floats_compare_exactly() {
        let big = (1_i64 << 53) + 1;
        assert_eq!(
            cmp_int_float(big, (1_i64 << 53) as f64),
            Some(Ordering::Greater)
        );
        assert_eq!(
            cmp_int_float(i64::MAX, 9_223_372_036_854_775_808.0),
            Some(Ordering::Less)
        );
        assert_eq!(
            cmp_int_float(i64::MIN, -9_223_372_036_854_775_808.0),
            Some(Ordering::Equal)
        );
        assert_eq!(cmp_int_float(i64::MIN, -1e19), Some(Ordering::Greater));
        assert_eq!(cmp_int_float(2, 2.5), Some(Ordering::Less));
        assert_eq!(cmp_int_float(-2, -2.5), Some(Ordering::Greater));
        assert_eq!(cmp_int_float(3, 3.0), Some(Ordering::Equal));
        assert_eq!(cmp_int_float(0, -0.0), Some(Ordering::Equal));
        assert_eq!(cmp_int_float(0, f64::NAN), None);
        assert_eq!(cmp_int_float(0, f64::INFINITY), Some(Ordering::Less));
    }

    #[test]
    fn errors_display_their_message() {
        let err = parse_err("age >");
        assert_eq!(err.to_string(), err.message);
    }

    // ---- property tests ----------------------------------------------------------------

    fn arb_field() -> impl Strategy<Value = String> {
        let catalogue: Vec<String> = crate::catalogue::shipped()
            .names()
            .into_iter()
            .map(str::to_owned)
            .collect();
        prop_oneof![
            proptest::sample::select(catalogue),
            "[A-Za-z_][A-Za-z0-9_]{0,10}".prop_filter("keywords are not field names", |s| {
                Kw::from_ident(s).is_none()
            }),
        ]
    }

    fn arb_literal() -> impl Strategy<Value = Literal> {
        prop_oneof![
            any::<String>().prop_map(Literal::Str),
            "[\\\\'\"中文 a-z\n]{0,8}".prop_map(Literal::Str),
            any::<i64>().prop_map(Literal::Int),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Literal::Num),
            (-1000i32..1000, 0u32..4)
                .prop_map(|(m, e)| Literal::Num(f64::from(m) / 10f64.powi(e as i32))),
            any::<bool>().prop_map(Literal::Bool),
        ]
    }

    fn arb_op() -> impl Strategy<Value = CmpOp> {
        proptest::sample::select(vec![
            CmpOp::Eq,
            CmpOp::Ne,
            CmpOp::Lt,
            CmpOp::Le,
            CmpOp::Gt,
            CmpOp::Ge,
        ])
    }

    fn arb_expr() -> impl Strategy<Value = Expr> {
        let leaf = prop_oneof![
            (arb_field(), arb_op(), arb_literal()).prop_map(|(f, op, v)| cmp(&f, op, v)),
            (
                arb_field(),
                proptest::collection::vec(arb_literal(), 1..4),
                any::<bool>()
            )
                .prop_map(|(f, values, negated)| in_list(&f, values, negated)),
            (arb_field(), any::<bool>()).prop_map(|(f, negated)| is_null(&f, negated)),
        ];
        leaf.prop_recursive(5, 40, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 2..4).prop_map(Expr::And),
                proptest::collection::vec(inner.clone(), 2..4).prop_map(Expr::Or),
                inner.prop_map(|x| Expr::Not(Box::new(x))),
            ]
        })
    }

    /// Checks that every span of a parsed AST points at the text it came from.
    fn assert_spans_match(src: &str, expr: &Expr) {
        match expr {
            Expr::And(xs) | Expr::Or(xs) => xs.iter().for_each(|x| assert_spans_match(src, x)),
            Expr::Not(x) => assert_spans_match(src, x),
            Expr::Cmp {
                field,
                field_span,
                value,
                value_span,
                ..
            } => {
                assert_eq!(&src[field_span.start..field_span.end], field);
                if value_span != field_span {
                    let text = &src[value_span.start..value_span.end];
                    assert_eq!(
                        parse(&format!("f == {text}")).unwrap(),
                        cmp("f", CmpOp::Eq, value.clone())
                    );
                }
            }
            Expr::In {
                field, field_span, ..
            }
            | Expr::IsNull {
                field, field_span, ..
            } => {
                assert_eq!(&src[field_span.start..field_span.end], field);
            }
        }
    }

    fn assert_error_well_formed(src: &str, err: &ExprError) {
        assert!(
            err.span.start <= err.span.end && err.span.end <= src.len(),
            "{err:?} in {src:?}"
        );
        assert!(
            src.is_char_boundary(err.span.start) && src.is_char_boundary(err.span.end),
            "{err:?} in {src:?}"
        );
        assert!(!err.message.is_empty());
    }

    proptest! {
        #![proptest_config(testkit::proptest_config(512))]

        #[test]
        fn parse_never_panics_on_any_text(src in any::<String>()) {
            if let Err(err) = parse(&src) {
                assert_error_well_formed(&src, &err);
            }
        }

        #[test]
        fn parse_never_panics_on_token_soup(
            src in "([a-z_]{1,6}|and|or|not|in|is|null|true|NOT|[()\\[\\],]|==?|!=?|<[=>]?|>=?|-?[0-9]{1,3}(\\.[0-9]?)?|'[^']{0,4}'?|\"[中文\\\\\"]{0,3}\"?|\\\\|[ 　\t]){0,24}"
        ) {
            match parse(&src) {
                Err(err) => assert_error_well_formed(&src, &err),
                Ok(expr) => {
                    assert_spans_match(&src, &expr);
                    let printed = expr.to_string();
                    prop_assert_eq!(parse(&printed).unwrap(), expr);
                    for err in check(&parse(&src).unwrap(), &crate::catalogue::shipped()) {
                        assert_error_well_formed(&src, &err);
                    }
                }
            }
        }

        #[test]
        fn near_valid_filters_never_panic(
            expr in arb_expr(),
            at in any::<proptest::sample::Index>(),
            cut in 0usize..3,
            insert in proptest::sample::select(vec![
                "", "(", ")", "[", "]", ",", "'", "\"", "\\", "not ", " and ", " or ", " in ", " is ",
                "null", "==", "!", "<", "-", ".", "5", "中", " ", "e",
            ]),
        ) {
            let printed = expr.to_string();
            let boundaries: Vec<usize> =
                (0..=printed.len()).filter(|&i| printed.is_char_boundary(i)).collect();
            let start = boundaries[at.index(boundaries.len())];
            let end = boundaries.iter().copied().filter(|&i| i >= start).nth(cut).unwrap_or(printed.len());
            let src = format!("{}{insert}{}", &printed[..start], &printed[end..]);
            match parse(&src) {
                Err(err) => assert_error_well_formed(&src, &err),
                Ok(parsed) => {
                    assert_spans_match(&src, &parsed);
                    prop_assert_eq!(parse(&parsed.to_string()).unwrap(), parsed.clone());
                    for err in check(&parsed, &crate::catalogue::shipped()) {
                        assert_error_well_formed(&src, &err);
                    }
                }
            }
        }

        #[test]
        fn printed_asts_parse_back_equal(expr in arb_expr()) {
            let printed = expr.to_string();
            let reparsed = parse(&printed).unwrap_or_else(|e| panic!("{printed:?}: {e}"));
            assert_spans_match(&printed, &reparsed);
            prop_assert_eq!(reparsed.to_string(), printed);
            prop_assert_eq!(reparsed, expr);
        }
    }
}
