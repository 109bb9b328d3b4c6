//! Derived attributes: values computed from attributes, usage-history windows and event
//! counts, declared in the catalogue's `derived:` section and computed in SQL wherever a
//! filter, template or breakdown names them (the store compiles [`DExpr`]).
//!
//! ```text
//! expr    := or
//! or      := and ('or' and)*
//! and     := not ('and' not)*
//! not     := 'not' not | test
//! test    := sum [cmpop sum | 'is' ['not'] 'null' | ['not'] 'in' '[' literal (',' literal)* ']']
//! sum     := product (('+' | '-') product)*
//! product := unary (('*' | '/') unary)*
//! unary   := '-' unary | atom
//! atom    := number | 'text' | true | false | null | '(' expr ')'
//!          | 'case' ('when' expr 'then' expr)+ 'else' expr 'end'
//!          | name                                  an attribute or an earlier derived one
//!          | agg '(' measure ',' window ')'        agg: mean sum min max
//!          | 'last' '(' measure [',' 'skip' ':' n] ')'
//!          | 'count_events' '(' type ',' 'days' ':' n ')'   type: a name or 'quoted'
//!          | 'sum_events' '(' type ',' 'days' ':' n ')'
//!          | 'coalesce' '(' expr (',' expr)+ ')'
//! window  := ('months' | 'days') ':' n [',' 'skip' ':' n]
//! ```
//!
//! A history window counts back from the newest period loaded for its period length: with
//! October the newest month, `mean(arpu, months: 3, skip: 1)` is the mean over July to
//! September. An event window counts back from the moment of evaluation. `/` always divides
//! as decimals and gives null when dividing by zero; any arithmetic with null is null, as in
//! SQL. Keywords and function names are case-insensitive; names are not.

use std::fmt;

use crate::history::Period;
use crate::{Catalogue, Kind};

/// Byte offsets into the expression source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

/// A problem in a derived expression, located in its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerivedError {
    pub span: Span,
    pub message: String,
}

impl fmt::Display for DerivedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DerivedError {}

fn err(span: Span, message: impl Into<String>) -> DerivedError {
    DerivedError {
        span,
        message: message.into(),
    }
}

/// Arithmetic operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// Aggregates over a history window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agg {
    Mean,
    Sum,
    Min,
    Max,
    /// The value of the one period `skip` periods before the newest.
    Last,
}

/// Aggregates over an event window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventAgg {
    /// How many events of the type.
    Count,
    /// The sum of their `value`s (0 when there are none).
    Sum,
}

/// A literal.
#[derive(Debug, Clone, PartialEq)]
pub enum Lit {
    Int(i64),
    Dec(f64),
    Text(String),
    Bool(bool),
    Null,
}

/// A parsed derived expression.
#[derive(Debug, Clone, PartialEq)]
pub enum DExpr {
    Lit(Lit),
    /// An attribute (core or declared) or an earlier derived attribute.
    Field {
        name: String,
        span: Span,
    },
    Neg(Box<DExpr>),
    Arith(ArithOp, Box<DExpr>, Box<DExpr>),
    Cmp(CmpOp, Box<DExpr>, Box<DExpr>),
    And(Vec<DExpr>),
    Or(Vec<DExpr>),
    Not(Box<DExpr>),
    IsNull {
        expr: Box<DExpr>,
        negated: bool,
    },
    In {
        expr: Box<DExpr>,
        values: Vec<Lit>,
        negated: bool,
    },
    Case {
        arms: Vec<(DExpr, DExpr)>,
        otherwise: Box<DExpr>,
    },
    History {
        agg: Agg,
        measure: String,
        span: Span,
        /// Periods in the window (1 for `last`).
        periods: u32,
        /// Newest periods left out before the window.
        skip: u32,
        /// The window key written (`months`/`days`), checked against the measure's period.
        period: Option<Period>,
        window_span: Span,
    },
    Events {
        agg: EventAgg,
        event_type: String,
        span: Span,
        days: u32,
    },
    Coalesce(Vec<DExpr>),
}

/// The type of a derived value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    Integer,
    Decimal,
    Text,
    Bool,
    /// `null` alone: fits any type.
    Null,
}

impl Type {
    fn name(self) -> &'static str {
        match self {
            Type::Integer => "integer",
            Type::Decimal => "decimal",
            Type::Text => "text",
            Type::Bool => "bool",
            Type::Null => "null",
        }
    }

    fn numeric(self) -> bool {
        matches!(self, Type::Integer | Type::Decimal | Type::Null)
    }

    /// The type of an attribute's values as expressions see them.
    pub fn of_kind(kind: &Kind) -> Type {
        match kind {
            Kind::Integer => Type::Integer,
            Kind::Decimal => Type::Decimal,
            Kind::Bool => Type::Bool,
            Kind::Text | Kind::Enum { .. } | Kind::Date | Kind::Timestamp => Type::Text,
        }
    }

    /// The common type of two branches, if they have one.
    fn unify(self, other: Type) -> Option<Type> {
        match (self, other) {
            (a, b) if a == b => Some(a),
            (Type::Null, t) | (t, Type::Null) => Some(t),
            (Type::Integer, Type::Decimal) | (Type::Decimal, Type::Integer) => Some(Type::Decimal),
            _ => None,
        }
    }
}

/// Longest window, in periods or days: ten years of months, two years of days.
pub const MAX_MONTHS: u32 = 120;
pub const MAX_DAYS: u32 = 3660;
/// Longest expression source, in bytes.
pub const MAX_SOURCE: usize = 4000;
const MAX_DEPTH: usize = 48;

/// Parses a derived expression. Never panics, whatever the input.
pub fn parse(src: &str) -> Result<DExpr, DerivedError> {
    if src.len() > MAX_SOURCE {
        return Err(err(
            Span {
                start: 0,
                end: src.len(),
            },
            format!("expression is longer than {MAX_SOURCE} bytes"),
        ));
    }
    let mut p = Parser {
        toks: lex(src)?,
        pos: 0,
        depth: 0,
    };
    let e = p.expr()?;
    match p.peek() {
        Tok::Eof => Ok(e),
        _ => Err(p.unexpected("an operator or the end of the expression")),
    }
}

/// The fields (attributes and derived attributes) an expression names.
pub fn fields(e: &DExpr) -> Vec<&str> {
    let mut out = Vec::new();
    walk(e, &mut |x| {
        if let DExpr::Field { name, .. } = x
            && !out.contains(&name.as_str())
        {
            out.push(name.as_str());
        }
    });
    out
}

/// The attributes, derived attributes and measures an expression names, with their spans,
/// in the order they appear.
pub fn names(e: &DExpr) -> Vec<(&str, Span)> {
    let mut out = Vec::new();
    walk(e, &mut |x| match x {
        DExpr::Field { name, span } => out.push((name.as_str(), *span)),
        DExpr::History { measure, span, .. } => out.push((measure.as_str(), *span)),
        _ => {}
    });
    out
}

/// The event types an expression counts, with their spans.
pub fn event_types(e: &DExpr) -> Vec<(&str, Span)> {
    let mut out = Vec::new();
    walk(e, &mut |x| {
        if let DExpr::Events {
            event_type, span, ..
        } = x
        {
            out.push((event_type.as_str(), *span));
        }
    });
    out
}

fn walk<'a>(e: &'a DExpr, f: &mut dyn FnMut(&'a DExpr)) {
    f(e);
    match e {
        DExpr::Lit(_) | DExpr::Field { .. } | DExpr::History { .. } | DExpr::Events { .. } => {}
        DExpr::Neg(x) | DExpr::Not(x) => walk(x, f),
        DExpr::IsNull { expr, .. } | DExpr::In { expr, .. } => walk(expr, f),
        DExpr::Arith(_, a, b) | DExpr::Cmp(_, a, b) => {
            walk(a, f);
            walk(b, f);
        }
        DExpr::And(xs) | DExpr::Or(xs) | DExpr::Coalesce(xs) => {
            xs.iter().for_each(|x| walk(x, f));
        }
        DExpr::Case { arms, otherwise } => {
            for (c, v) in arms {
                walk(c, f);
                walk(v, f);
            }
            walk(otherwise, f);
        }
    }
}

/// Type-checks an expression against a catalogue (its attributes, measures and the derived
/// attributes declared so far) and returns its type, or every problem found.
pub fn check(e: &DExpr, cat: &Catalogue) -> Result<Type, Vec<DerivedError>> {
    let mut errors = Vec::new();
    let t = type_of(e, cat, &mut errors);
    if errors.is_empty() {
        Ok(t.unwrap_or(Type::Null))
    } else {
        Err(errors)
    }
}

/// Text literals an expression can evaluate to (the results of `case` arms), for checking
/// an enum-typed derived attribute's values.
pub fn result_texts(e: &DExpr) -> Vec<&str> {
    match e {
        DExpr::Lit(Lit::Text(s)) => vec![s.as_str()],
        DExpr::Case { arms, otherwise } => arms
            .iter()
            .flat_map(|(_, v)| result_texts(v))
            .chain(result_texts(otherwise))
            .collect(),
        DExpr::Coalesce(xs) => xs.iter().flat_map(result_texts).collect(),
        _ => Vec::new(),
    }
}

fn span_of(e: &DExpr) -> Span {
    match e {
        DExpr::Field { span, .. } | DExpr::History { span, .. } | DExpr::Events { span, .. } => {
            *span
        }
        DExpr::Neg(x) | DExpr::Not(x) => span_of(x),
        DExpr::IsNull { expr, .. } | DExpr::In { expr, .. } => span_of(expr),
        DExpr::Arith(_, a, _) | DExpr::Cmp(_, a, _) => span_of(a),
        DExpr::And(xs) | DExpr::Or(xs) | DExpr::Coalesce(xs) => {
            xs.first().map(span_of).unwrap_or_default()
        }
        DExpr::Case { arms, .. } => arms.first().map(|(c, _)| span_of(c)).unwrap_or_default(),
        DExpr::Lit(_) => Span::default(),
    }
}

fn lit_type(l: &Lit) -> Type {
    match l {
        Lit::Int(_) => Type::Integer,
        Lit::Dec(_) => Type::Decimal,
        Lit::Text(_) => Type::Text,
        Lit::Bool(_) => Type::Bool,
        Lit::Null => Type::Null,
    }
}

fn type_of(e: &DExpr, cat: &Catalogue, errors: &mut Vec<DerivedError>) -> Option<Type> {
    let want_bool = |t: Option<Type>, x: &DExpr, errors: &mut Vec<DerivedError>| {
        if let Some(t) = t
            && !matches!(t, Type::Bool | Type::Null)
        {
            errors.push(err(
                span_of(x),
                format!("expected a condition (bool), found {}", t.name()),
            ));
        }
    };
    match e {
        DExpr::Lit(l) => Some(lit_type(l)),
        DExpr::Field { name, span } => match cat.field(name) {
            Some(a) => Some(Type::of_kind(&a.kind)),
            None => {
                errors.push(err(
                    *span,
                    format!(
                        "unknown attribute `{name}`: expected one of {}",
                        cat.field_names().join(", ")
                    ),
                ));
                None
            }
        },
        DExpr::Neg(x) => {
            let t = type_of(x, cat, errors)?;
            if !t.numeric() {
                errors.push(err(span_of(x), format!("cannot negate {}", t.name())));
                return None;
            }
            Some(t)
        }
        DExpr::Arith(op, a, b) => {
            let (ta, tb) = (type_of(a, cat, errors), type_of(b, cat, errors));
            let (ta, tb) = (ta?, tb?);
            for (t, x) in [(ta, a), (tb, b)] {
                if !t.numeric() {
                    errors.push(err(
                        span_of(x),
                        format!("arithmetic needs numbers, found {}", t.name()),
                    ));
                    return None;
                }
            }
            Some(match op {
                ArithOp::Div => Type::Decimal,
                _ => ta.unify(tb).unwrap_or(Type::Decimal),
            })
        }
        DExpr::Cmp(op, a, b) => {
            let (ta, tb) = (type_of(a, cat, errors), type_of(b, cat, errors));
            let (ta, tb) = (ta?, tb?);
            if ta.unify(tb).is_none() {
                errors.push(err(
                    span_of(b),
                    format!("cannot compare {} with {}", ta.name(), tb.name()),
                ));
            } else if ta == Type::Bool && !matches!(op, CmpOp::Eq | CmpOp::Ne) {
                errors.push(err(span_of(a), "bool values have no order: use == or !="));
            }
            Some(Type::Bool)
        }
        DExpr::And(xs) | DExpr::Or(xs) => {
            for x in xs {
                let t = type_of(x, cat, errors);
                want_bool(t, x, errors);
            }
            Some(Type::Bool)
        }
        DExpr::Not(x) => {
            let t = type_of(x, cat, errors);
            want_bool(t, x, errors);
            Some(Type::Bool)
        }
        DExpr::IsNull { expr, .. } => {
            type_of(expr, cat, errors);
            Some(Type::Bool)
        }
        DExpr::In { expr, values, .. } => {
            let t = type_of(expr, cat, errors)?;
            for v in values {
                if t.unify(lit_type(v)).is_none() {
                    errors.push(err(
                        span_of(expr),
                        format!(
                            "`in` list holds {} values for {}",
                            lit_type(v).name(),
                            t.name()
                        ),
                    ));
                    break;
                }
            }
            Some(Type::Bool)
        }
        DExpr::Case { arms, otherwise } => {
            let mut out = Some(Type::Null);
            for (c, v) in arms {
                let tc = type_of(c, cat, errors);
                want_bool(tc, c, errors);
                let tv = type_of(v, cat, errors);
                out = unify_branch(out, tv, v, errors);
            }
            let to = type_of(otherwise, cat, errors);
            unify_branch(out, to, otherwise, errors)
        }
        DExpr::Coalesce(xs) => {
            let mut out = Some(Type::Null);
            for x in xs {
                let t = type_of(x, cat, errors);
                out = unify_branch(out, t, x, errors);
            }
            out
        }
        DExpr::History {
            agg,
            measure,
            span,
            periods,
            skip,
            period,
            window_span,
        } => {
            let Some(m) = cat.measure(measure) else {
                let known: Vec<&str> = cat.measures().iter().map(|m| m.name.as_str()).collect();
                errors.push(err(
                    *span,
                    if known.is_empty() {
                        format!(
                            "unknown measure `{measure}`: the catalogue declares no usage history"
                        )
                    } else {
                        format!(
                            "unknown measure `{measure}`: expected one of {}",
                            known.join(", ")
                        )
                    },
                ));
                return None;
            };
            if let Some(p) = period
                && *p != m.period
            {
                errors.push(err(
                    *window_span,
                    format!(
                        "`{measure}` is measured per {}: count its window in `{}:`",
                        m.period,
                        m.period.window_key()
                    ),
                ));
            }
            let kept = cat.retention().periods(m.period);
            if periods.saturating_add(*skip) > kept {
                errors.push(err(
                    *window_span,
                    format!(
                        "the window reaches {} {}s back, but history keeps {kept}",
                        periods + skip,
                        m.period
                    ),
                ));
            }
            Some(match agg {
                Agg::Mean => Type::Decimal,
                _ if m.integer => Type::Integer,
                _ => Type::Decimal,
            })
        }
        DExpr::Events {
            agg, days, span, ..
        } => {
            if *days > cat.retention().event_days {
                errors.push(err(
                    *span,
                    format!(
                        "the window reaches {days} days back, but events are kept {} days",
                        cat.retention().event_days
                    ),
                ));
            }
            Some(match agg {
                EventAgg::Count => Type::Integer,
                EventAgg::Sum => Type::Decimal,
            })
        }
    }
}

fn unify_branch(
    acc: Option<Type>,
    t: Option<Type>,
    x: &DExpr,
    errors: &mut Vec<DerivedError>,
) -> Option<Type> {
    let (a, t) = (acc?, t?);
    match a.unify(t) {
        Some(u) => Some(u),
        None => {
            errors.push(err(
                span_of(x),
                format!(
                    "branches must have one type: this is {}, earlier ones {}",
                    t.name(),
                    a.name()
                ),
            ));
            None
        }
    }
}

// ---- lexer ----

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Int(i64),
    Dec(f64),
    Text(String),
    Ident(String),
    Op(&'static str),
    Eof,
}

struct Token {
    tok: Tok,
    span: Span,
}

fn lex(src: &str) -> Result<Vec<Token>, DerivedError> {
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let tok = if c.is_ascii_digit() {
            while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
                i += 1;
            }
            let text = &src[start..i];
            let span = Span { start, end: i };
            if text.contains('.') {
                match text.parse::<f64>() {
                    Ok(v) if v.is_finite() => Tok::Dec(v),
                    _ => return Err(err(span, format!("`{text}` is not a number"))),
                }
            } else {
                match text.parse::<i64>() {
                    Ok(v) => Tok::Int(v),
                    Err(_) => return Err(err(span, format!("`{text}` is out of range"))),
                }
            }
        } else if c.is_ascii_alphabetic() || c == b'_' {
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            Tok::Ident(src[start..i].to_owned())
        } else if c == b'\'' || c == b'"' {
            i += 1;
            let mut s = String::new();
            loop {
                let Some(ch) = src[i..].chars().next() else {
                    return Err(err(
                        Span { start, end: i },
                        "unterminated text: expected a closing quote",
                    ));
                };
                i += ch.len_utf8();
                if ch as u32 == u32::from(c) {
                    break;
                }
                if ch.is_control() {
                    return Err(err(
                        Span {
                            start: i - 1,
                            end: i,
                        },
                        "text may not contain control characters",
                    ));
                }
                s.push(ch);
            }
            Tok::Text(s)
        } else {
            let two = src.get(i..i + 2).unwrap_or("");
            let op = ["==", "!=", "<>", "<=", ">="]
                .into_iter()
                .find(|o| *o == two)
                .or_else(|| {
                    [
                        "+", "-", "*", "/", "(", ")", "[", "]", ",", ":", "<", ">", "=",
                    ]
                    .into_iter()
                    .find(|o| o.as_bytes()[0] == c)
                });
            match op {
                Some(o) => {
                    i += o.len();
                    Tok::Op(o)
                }
                None => {
                    let ch = src[i..].chars().next().unwrap_or('?');
                    return Err(err(
                        Span {
                            start,
                            end: i + ch.len_utf8(),
                        },
                        format!("unexpected character `{}`", ch.escape_debug()),
                    ));
                }
            }
        };
        out.push(Token {
            tok,
            span: Span { start, end: i },
        });
    }
    out.push(Token {
        tok: Tok::Eof,
        span: Span {
            start: src.len(),
            end: src.len(),
        },
    });
    Ok(out)
}

// ---- parser ----

struct Parser {
    toks: Vec<Token>,
    pos: usize,
    depth: usize,
}

fn is_kw(t: &Tok, kw: &str) -> bool {
    matches!(t, Tok::Ident(s) if s.eq_ignore_ascii_case(kw))
}

const KEYWORDS: [&str; 13] = [
    "and", "or", "not", "is", "null", "in", "case", "when", "then", "else", "end", "true", "false",
];

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos].tok
    }

    fn span(&self) -> Span {
        self.toks[self.pos].span
    }

    fn bump(&mut self) -> Token {
        let t = Token {
            tok: self.toks[self.pos].tok.clone(),
            span: self.toks[self.pos].span,
        };
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
        t
    }

    fn unexpected(&self, expected: &str) -> DerivedError {
        let found = match self.peek() {
            Tok::Eof => "the end of the expression".to_owned(),
            Tok::Int(i) => format!("`{i}`"),
            Tok::Dec(d) => format!("`{d}`"),
            Tok::Text(s) => format!("'{s}'"),
            Tok::Ident(s) => format!("`{s}`"),
            Tok::Op(o) => format!("`{o}`"),
        };
        err(self.span(), format!("expected {expected}, found {found}"))
    }

    fn eat_op(&mut self, op: &str) -> bool {
        if matches!(self.peek(), Tok::Op(o) if *o == op) {
            self.bump();
            true
        } else {
            false
        }
    }

    fn expect_op(&mut self, op: &str) -> Result<(), DerivedError> {
        if self.eat_op(op) {
            Ok(())
        } else {
            Err(self.unexpected(&format!("`{op}`")))
        }
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        if is_kw(self.peek(), kw) {
            self.bump();
            true
        } else {
            false
        }
    }

    fn nest(&mut self) -> Result<(), DerivedError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            Err(err(self.span(), format!("nested deeper than {MAX_DEPTH}")))
        } else {
            Ok(())
        }
    }

    fn expr(&mut self) -> Result<DExpr, DerivedError> {
        self.nest()?;
        let mut xs = vec![self.and()?];
        while self.eat_kw("or") {
            xs.push(self.and()?);
        }
        self.depth -= 1;
        Ok(if xs.len() == 1 {
            xs.pop().expect("one")
        } else {
            DExpr::Or(xs)
        })
    }

    fn and(&mut self) -> Result<DExpr, DerivedError> {
        let mut xs = vec![self.not()?];
        while self.eat_kw("and") {
            xs.push(self.not()?);
        }
        Ok(if xs.len() == 1 {
            xs.pop().expect("one")
        } else {
            DExpr::And(xs)
        })
    }

    fn not(&mut self) -> Result<DExpr, DerivedError> {
        if self.eat_kw("not") {
            self.nest()?;
            let x = self.not()?;
            self.depth -= 1;
            return Ok(DExpr::Not(Box::new(x)));
        }
        self.test()
    }

    fn test(&mut self) -> Result<DExpr, DerivedError> {
        let left = self.sum()?;
        let op = match self.peek() {
            Tok::Op("==") | Tok::Op("=") => Some(CmpOp::Eq),
            Tok::Op("!=") | Tok::Op("<>") => Some(CmpOp::Ne),
            Tok::Op("<") => Some(CmpOp::Lt),
            Tok::Op("<=") => Some(CmpOp::Le),
            Tok::Op(">") => Some(CmpOp::Gt),
            Tok::Op(">=") => Some(CmpOp::Ge),
            _ => None,
        };
        if let Some(op) = op {
            self.bump();
            let right = self.sum()?;
            return Ok(DExpr::Cmp(op, Box::new(left), Box::new(right)));
        }
        if self.eat_kw("is") {
            let negated = self.eat_kw("not");
            if !self.eat_kw("null") {
                return Err(self.unexpected("`null`"));
            }
            return Ok(DExpr::IsNull {
                expr: Box::new(left),
                negated,
            });
        }
        let negated = if is_kw(self.peek(), "not")
            && is_kw(
                &self.toks[(self.pos + 1).min(self.toks.len() - 1)].tok,
                "in",
            ) {
            self.bump();
            true
        } else {
            false
        };
        if self.eat_kw("in") {
            self.expect_op("[")?;
            let mut values = vec![self.literal()?];
            while self.eat_op(",") {
                values.push(self.literal()?);
            }
            self.expect_op("]")?;
            return Ok(DExpr::In {
                expr: Box::new(left),
                values,
                negated,
            });
        }
        Ok(left)
    }

    fn literal(&mut self) -> Result<Lit, DerivedError> {
        let neg = self.eat_op("-");
        let lit = match self.peek().clone() {
            Tok::Int(i) => Lit::Int(if neg { -i } else { i }),
            Tok::Dec(d) => Lit::Dec(if neg { -d } else { d }),
            Tok::Text(s) if !neg => Lit::Text(s),
            Tok::Ident(s) if !neg && s.eq_ignore_ascii_case("true") => Lit::Bool(true),
            Tok::Ident(s) if !neg && s.eq_ignore_ascii_case("false") => Lit::Bool(false),
            _ => return Err(self.unexpected("a number, 'text', true or false")),
        };
        self.bump();
        Ok(lit)
    }

    fn sum(&mut self) -> Result<DExpr, DerivedError> {
        let mut left = self.product()?;
        loop {
            let op = if self.eat_op("+") {
                ArithOp::Add
            } else if self.eat_op("-") {
                ArithOp::Sub
            } else {
                return Ok(left);
            };
            let right = self.product()?;
            left = DExpr::Arith(op, Box::new(left), Box::new(right));
        }
    }

    fn product(&mut self) -> Result<DExpr, DerivedError> {
        let mut left = self.unary()?;
        loop {
            let op = if self.eat_op("*") {
                ArithOp::Mul
            } else if self.eat_op("/") {
                ArithOp::Div
            } else {
                return Ok(left);
            };
            let right = self.unary()?;
            left = DExpr::Arith(op, Box::new(left), Box::new(right));
        }
    }

    fn unary(&mut self) -> Result<DExpr, DerivedError> {
        if self.eat_op("-") {
            self.nest()?;
            let x = self.unary()?;
            self.depth -= 1;
            return Ok(match x {
                DExpr::Lit(Lit::Int(i)) => DExpr::Lit(Lit::Int(-i)),
                DExpr::Lit(Lit::Dec(d)) => DExpr::Lit(Lit::Dec(-d)),
                x => DExpr::Neg(Box::new(x)),
            });
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<DExpr, DerivedError> {
        if matches!(self.peek(), Tok::Eof | Tok::Op(_)) && !matches!(self.peek(), Tok::Op("(")) {
            return Err(self.unexpected("a value: a number, 'text', a name, a function or `(`"));
        }
        let t = self.bump();
        match t.tok {
            Tok::Int(i) => Ok(DExpr::Lit(Lit::Int(i))),
            Tok::Dec(d) => Ok(DExpr::Lit(Lit::Dec(d))),
            Tok::Text(s) => Ok(DExpr::Lit(Lit::Text(s))),
            Tok::Op("(") => {
                let e = self.expr()?;
                self.expect_op(")")?;
                Ok(e)
            }
            Tok::Ident(name) => {
                let lower = name.to_ascii_lowercase();
                match lower.as_str() {
                    "true" => return Ok(DExpr::Lit(Lit::Bool(true))),
                    "false" => return Ok(DExpr::Lit(Lit::Bool(false))),
                    "null" => return Ok(DExpr::Lit(Lit::Null)),
                    "case" => return self.case(),
                    _ => {}
                }
                if self.eat_op("(") {
                    return self.call(&lower, t.span);
                }
                if KEYWORDS.contains(&lower.as_str()) {
                    return Err(err(
                        t.span,
                        format!("expected a value, found the keyword `{name}`"),
                    ));
                }
                Ok(DExpr::Field { name, span: t.span })
            }
            _ => unreachable!("checked above"),
        }
    }

    fn case(&mut self) -> Result<DExpr, DerivedError> {
        self.nest()?;
        let mut arms = Vec::new();
        while self.eat_kw("when") {
            let c = self.expr()?;
            if !self.eat_kw("then") {
                return Err(self.unexpected("`then`"));
            }
            let v = self.expr()?;
            arms.push((c, v));
        }
        if arms.is_empty() {
            return Err(self.unexpected("`when`"));
        }
        if !self.eat_kw("else") {
            return Err(self.unexpected("`when`, or `else` and the value when no case holds"));
        }
        let otherwise = Box::new(self.expr()?);
        if !self.eat_kw("end") {
            return Err(self.unexpected("`end`"));
        }
        self.depth -= 1;
        Ok(DExpr::Case { arms, otherwise })
    }

    fn name_arg(&mut self, what: &str) -> Result<(String, Span), DerivedError> {
        match self.peek().clone() {
            Tok::Ident(s) => {
                let span = self.span();
                self.bump();
                Ok((s, span))
            }
            _ => Err(self.unexpected(what)),
        }
    }

    /// `key: n` with `n` in 0..=max (or 1..=max unless `zero`).
    fn count_arg(&mut self, key: &str, zero: bool, max: u32) -> Result<u32, DerivedError> {
        self.expect_op(":")?;
        let span = self.span();
        match self.peek().clone() {
            Tok::Int(n) if (if zero { 0 } else { 1 }) <= n && n <= i64::from(max) => {
                self.bump();
                Ok(n as u32)
            }
            _ => Err(err(
                span,
                format!(
                    "`{key}:` takes a whole number from {} to {max}",
                    if zero { 0 } else { 1 }
                ),
            )),
        }
    }

    fn call(&mut self, func: &str, fspan: Span) -> Result<DExpr, DerivedError> {
        self.nest()?;
        let out = match func {
            "mean" | "sum" | "min" | "max" | "last" => {
                let agg = match func {
                    "mean" => Agg::Mean,
                    "sum" => Agg::Sum,
                    "min" => Agg::Min,
                    "max" => Agg::Max,
                    _ => Agg::Last,
                };
                let (measure, span) = self.name_arg("a measure of the usage history")?;
                let mut periods = 1;
                let mut skip = 0;
                let mut period = None;
                let mut window_span = span;
                while self.eat_op(",") {
                    let (key, kspan) = self.name_arg("`months:`, `days:` or `skip:`")?;
                    match key.as_str() {
                        "months" | "days" if agg != Agg::Last && period.is_none() => {
                            let p = if key == "months" {
                                Period::Month
                            } else {
                                Period::Day
                            };
                            let max = if p == Period::Month {
                                MAX_MONTHS
                            } else {
                                MAX_DAYS
                            };
                            periods = self.count_arg(&key, false, max)?;
                            period = Some(p);
                            window_span = kspan;
                        }
                        "skip" => {
                            skip = self.count_arg("skip", true, MAX_DAYS)?;
                        }
                        _ => {
                            return Err(err(
                                kspan,
                                if agg == Agg::Last {
                                    format!("expected `skip:`, found `{key}`")
                                } else {
                                    format!("expected `months:`, `days:` or `skip:`, found `{key}`")
                                },
                            ));
                        }
                    }
                }
                if agg != Agg::Last && period.is_none() {
                    return Err(err(
                        fspan,
                        format!("`{func}` needs a window: `{func}({measure}, months: 3)`"),
                    ));
                }
                DExpr::History {
                    agg,
                    measure,
                    span,
                    periods,
                    skip,
                    period,
                    window_span,
                }
            }
            "count_events" | "sum_events" => {
                // Event types may hold `-` and `.` (`top-up`): those are written quoted.
                let (event_type, span) = match self.peek().clone() {
                    Tok::Text(s) => {
                        let span = self.span();
                        self.bump();
                        (s, span)
                    }
                    _ => self.name_arg("an event type")?,
                };
                self.expect_op(",")?;
                let (key, kspan) = self.name_arg("`days:`")?;
                if key != "days" {
                    return Err(err(kspan, format!("expected `days:`, found `{key}`")));
                }
                let days = self.count_arg("days", false, MAX_DAYS)?;
                DExpr::Events {
                    agg: if func == "count_events" {
                        EventAgg::Count
                    } else {
                        EventAgg::Sum
                    },
                    event_type,
                    span,
                    days,
                }
            }
            "coalesce" => {
                let mut xs = vec![self.expr()?];
                while self.eat_op(",") {
                    xs.push(self.expr()?);
                }
                if xs.len() < 2 {
                    return Err(err(fspan, "`coalesce` takes two or more values"));
                }
                DExpr::Coalesce(xs)
            }
            _ => {
                return Err(err(
                    fspan,
                    format!(
                        "unknown function `{func}`: expected mean, sum, min, max, last, count_events, sum_events or coalesce"
                    ),
                ));
            }
        };
        self.expect_op(")")?;
        self.depth -= 1;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_and_windows_parse() {
        let e = parse("mean(arpu, months: 1) / mean(arpu, months: 3, skip: 1) - 1").unwrap();
        let DExpr::Arith(ArithOp::Sub, l, r) = e else {
            panic!("{e:?}")
        };
        assert_eq!(*r, DExpr::Lit(Lit::Int(1)));
        let DExpr::Arith(ArithOp::Div, _, b) = *l else {
            panic!()
        };
        assert!(matches!(
            *b,
            DExpr::History {
                agg: Agg::Mean,
                periods: 3,
                skip: 1,
                period: Some(Period::Month),
                ..
            }
        ));
        let e = parse("case when arpu_3m > 500 then 'diamond' else 'ordinary' end").unwrap();
        assert_eq!(result_texts(&e), ["diamond", "ordinary"]);
        let e = parse("count_events(bill_query, days: 30) + count_events('top-up', days: 7) >= 3")
            .unwrap();
        let types: Vec<&str> = event_types(&e).into_iter().map(|(t, _)| t).collect();
        assert_eq!(types, ["bill_query", "top-up"]);
        assert!(parse("not a is null and b not in [1, 2]").is_ok());
    }

    #[test]
    fn syntax_errors_are_located() {
        let cases = [
            ("mean(arpu)", 0, "needs a window"),
            ("mean(arpu, weeks: 3)", 11, "expected `months:`"),
            ("mean(arpu, months: 0)", 19, "whole number from 1"),
            ("count_events(x, months: 3)", 16, "expected `days:`"),
            ("a +", 3, "expected a value"),
            ("case when a then 1 end", 19, "`else`"),
            ("a $ b", 2, "unexpected character"),
            ("avg(a, months: 1)", 0, "unknown function `avg`"),
            ("(a", 2, "expected `)`"),
            ("'x", 0, "unterminated"),
        ];
        for (src, at, msg) in cases {
            let e = parse(src).unwrap_err();
            assert_eq!(e.span.start, at, "{src}: {e}");
            assert!(e.message.contains(msg), "{src}: {e}");
        }
        let deep = "(".repeat(200) + "1" + &")".repeat(200);
        assert!(parse(&deep).unwrap_err().message.contains("nested"));
    }
}
