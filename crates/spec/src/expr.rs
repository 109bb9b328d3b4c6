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

use crate::fields::{self, Field, FieldType, SUBSCRIBER_FIELDS};

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
                Expr::Cmp { field: f1, op: o1, value: v1, .. },
                Expr::Cmp { field: f2, op: o2, value: v2, .. },
            ) => f1 == f2 && o1 == o2 && v1 == v2,
            (
                Expr::In { field: f1, values: v1, negated: n1, .. },
                Expr::In { field: f2, values: v2, negated: n2, .. },
            ) => f1 == f2 && v1 == v2 && n1 == n2,
            (
                Expr::IsNull { field: f1, negated: n1, .. },
                Expr::IsNull { field: f2, negated: n2, .. },
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
        Self { span, message: message.into() }
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

/// Type-checks a filter against [`SUBSCRIBER_FIELDS`], returning every problem found.
pub fn check(expr: &Expr) -> Vec<ExprError> {
    let mut errors = Vec::new();
    check_into(expr, &mut errors);
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
        Expr::Cmp { field, op, value, .. } => {
            let actual = get(field)?;
            compare(&actual, value).map(|ord| op.holds(ord))
        }
        Expr::In { field, values, negated, .. } => {
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
            Expr::And(xs) => write_chain(f, xs, " and ", |x| matches!(x, Expr::And(_) | Expr::Or(_))),
            Expr::Or(xs) => write_chain(f, xs, " or ", |x| matches!(x, Expr::Or(_))),
            Expr::Not(x) => {
                f.write_str("not ")?;
                write_operand(f, x, matches!(**x, Expr::And(_) | Expr::Or(_)))
            }
            Expr::Cmp { field, op: CmpOp::Eq, value: Literal::Bool(true), .. } => f.write_str(field),
            Expr::Cmp { field, op, value, .. } => write!(f, "{field} {op} {value}"),
            Expr::In { field, values, negated, .. } => {
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
    if parens { write!(f, "({x})") } else { write!(f, "{x}") }
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
        KEYWORDS.iter().find(|(k, _)| k.eq_ignore_ascii_case(ident)).map(|&(_, kw)| kw)
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
        if self.peek_char().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
            self.eat_while(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
            let text = &self.src[start..self.pos];
            return Err(ExprError::new(
                Span::new(start, self.pos),
                format!("invalid number `{text}`; write numbers as digits with an optional decimal point, e.g. 120 or 0.5"),
            ));
        }
        let text = &self.src[start..self.pos];
        let span = Span::new(start, self.pos);
        if decimal {
            match text.parse::<f64>() {
                Ok(n) if n.is_finite() => Ok(Tok::Num(n)),
                _ => Err(ExprError::new(span, format!("number `{text}` is out of range"))),
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
        Ok(Self { lexer, tok, span, depth: 0 })
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
        ExprError::new(self.span, format!("expected {expected}, found {}", self.found()))
    }

    fn enter(&mut self) -> Result<(), ExprError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ExprError::new(
                self.span,
                format!("expression is nested too deeply (more than {MAX_DEPTH} levels of parentheses or `not`)"),
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
        Ok(if operands.len() == 1 { operands.remove(0) } else { Expr::Or(operands) })
    }

    fn parse_and(&mut self) -> Result<Expr, ExprError> {
        let mut operands = vec![self.parse_unary()?];
        while self.tok == Tok::Kw(Kw::And) {
            self.bump()?;
            operands.push(self.parse_unary()?);
        }
        Ok(if operands.len() == 1 { operands.remove(0) } else { Expr::And(operands) })
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
                Ok(Expr::Cmp { field, field_span, op, value, value_span })
            }
            Tok::Kw(Kw::In) => {
                self.bump()?;
                let values = self.list()?;
                Ok(Expr::In { field, field_span, values, negated: false })
            }
            Tok::Kw(Kw::Not) => {
                self.bump()?;
                if self.tok != Tok::Kw(Kw::In) {
                    return Err(self.unexpected("`in` after `not`"));
                }
                self.bump()?;
                let values = self.list()?;
                Ok(Expr::In { field, field_span, values, negated: true })
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
                Ok(Expr::IsNull { field, field_span, negated })
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
                err.message.push_str("; use `is null` or `is not null` to test for a missing value");
                return Err(err);
            }
            Tok::Ident(word) => {
                let mut err = self.unexpected(VALUE_EXPECTED);
                err.message.push_str(&format!("; text values must be quoted, e.g. '{word}'"));
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
                err.message.push_str("; lists use square brackets, e.g. ['gotone', 'mzone']");
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

fn check_into(expr: &Expr, errors: &mut Vec<ExprError>) {
    match expr {
        Expr::And(xs) | Expr::Or(xs) => xs.iter().for_each(|x| check_into(x, errors)),
        Expr::Not(x) => check_into(x, errors),
        Expr::Cmp { field, field_span, op, value, value_span } => {
            let Some(def) = known_field(field, *field_span, errors) else { return };
            let bare = value_span == field_span;
            if bare && def.ty != FieldType::Bool {
                errors.push(ExprError::new(
                    *field_span,
                    format!(
                        "`{field}` is {} field, so it cannot stand alone as a condition; compare it with a value, e.g. `{field} == {}`",
                        type_phrase(def.ty),
                        example_value(def),
                    ),
                ));
                return;
            }
            check_literal(def, value, *value_span, errors);
            if op.is_ordering() && def.ty == FieldType::Bool {
                errors.push(ExprError::new(
                    field_span.to(*value_span),
                    format!("`{op}` does not apply to bool field `{field}`; use `==` or `!=`"),
                ));
            }
        }
        Expr::In { field, field_span, values, .. } => {
            let Some(def) = known_field(field, *field_span, errors) else { return };
            // The AST keeps no span per list element, so list problems point at the field.
            for v in values {
                check_literal(def, v, *field_span, errors);
            }
        }
        Expr::IsNull { field, field_span, negated } => {
            let Some(def) = known_field(field, *field_span, errors) else { return };
            if !def.nullable {
                let nullable: Vec<&str> =
                    SUBSCRIBER_FIELDS.iter().filter(|f| f.nullable).map(|f| f.name).collect();
                let (test, outcome) =
                    if *negated { ("is not null", "true") } else { ("is null", "false") };
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

fn known_field(name: &str, span: Span, errors: &mut Vec<ExprError>) -> Option<&'static Field> {
    let def = fields::field(name);
    if def.is_none() {
        let hint = match closest_field(name) {
            Some(close) => format!("; did you mean `{close}`?"),
            None => ".".to_owned(),
        };
        errors.push(ExprError::new(
            span,
            format!(
                "unknown field `{name}`{hint} The full list of fields is shown by `campaignd schema`."
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
    }
}

fn example_value(def: &Field) -> String {
    match def.ty {
        FieldType::Text => format!("'{}'", def.values.first().copied().unwrap_or("...")),
        FieldType::Integer => "10".to_owned(),
        FieldType::Number => "10.5".to_owned(),
        FieldType::Bool => "true".to_owned(),
    }
}

fn check_literal(def: &Field, value: &Literal, span: Span, errors: &mut Vec<ExprError>) {
    let fits = matches!(
        (def.ty, value),
        (FieldType::Text, Literal::Str(_))
            | (FieldType::Integer, Literal::Int(_))
            | (FieldType::Number, Literal::Int(_) | Literal::Num(_))
            | (FieldType::Bool, Literal::Bool(_))
    );
    if !fits {
        let expected = match def.ty {
            FieldType::Text => "a 'quoted string'",
            FieldType::Integer => "a whole number",
            FieldType::Number => "a number",
            FieldType::Bool => "true or false",
        };
        errors.push(ExprError::new(
            span,
            format!(
                "`{}` is {} field; expected {expected}, found `{value}`",
                def.name,
                type_phrase(def.ty)
            ),
        ));
        return;
    }
    if let Literal::Str(s) = value
        && !def.values.is_empty()
        && !def.values.contains(&s.as_str())
    {
        errors.push(ExprError::new(
            span,
            format!(
                "`{}` has no value {value}; expected one of {}",
                def.name,
                def.values.join(", ")
            ),
        ));
    }
}

/// The catalogue field most like `name`, if any is close enough to be a plausible typo.
fn closest_field(name: &str) -> Option<&'static str> {
    let wanted = name.to_ascii_lowercase();
    let limit = (wanted.chars().count() / 3).max(2);
    SUBSCRIBER_FIELDS
        .iter()
        .map(|f| (levenshtein(&wanted, f.name), f.name))
        .filter(|&(dist, candidate)| {
            dist <= limit
                || (wanted.len() >= 3 && (candidate.contains(&wanted) || wanted.contains(candidate)))
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
            row[j + 1] = (above + 1).min(row[j] + 1).min(diagonal + usize::from(ca != cb));
            diagonal = above;
        }
    }
    row[b.len()]
}
