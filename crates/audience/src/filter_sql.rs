//! Compiles target-selection filters ([`spec::expr`]) to SQL conditions on the `subscriber`
//! table, through sea-query so that every literal is a bound parameter.
//!
//! The SQL means what [`spec::expr::eval`] computes: both use SQL's three-valued logic, and
//! the tests below hold the two to the same answers on the backend named by
//! `CAMPAIGND_TEST_BACKEND` (SQLite, or PostgreSQL). `<`/`>` on text compare bytes on both:
//! SQLite's default, and the `subscriber` text columns are `COLLATE "C"` on PostgreSQL
//! (migration `m20261125_000006_subscriber_byte_order`).

use sea_orm::sea_query::{Condition, Expr as SqlExpr, ExprTrait};
use spec::expr::{CmpOp, Expr, Literal};
use store::derived::FieldSql;

/// Compiles a checked filter to a condition on the `subscriber` table: a stored attribute is
/// its column (unqualified), a derived one its expression ([`FieldSql`]). Filters that fail
/// [`spec::expr::check`] still compile, but may compare a column with a value of another type.
pub fn to_condition(expr: &Expr, fields: &FieldSql<'_>) -> Condition {
    match expr {
        Expr::And(xs) => xs
            .iter()
            .fold(Condition::all(), |c, x| c.add(to_condition(x, fields))),
        Expr::Or(xs) => xs
            .iter()
            .fold(Condition::any(), |c, x| c.add(to_condition(x, fields))),
        Expr::Not(x) => to_condition(x, fields).not(),
        Expr::Cmp {
            field, op, value, ..
        } => {
            let column = fields.field(field);
            let value = sql_value(value);
            Condition::all().add(match op {
                CmpOp::Eq => column.eq(value),
                CmpOp::Ne => column.ne(value),
                CmpOp::Lt => column.lt(value),
                CmpOp::Le => column.lte(value),
                CmpOp::Gt => column.gt(value),
                CmpOp::Ge => column.gte(value),
            })
        }
        Expr::In {
            field,
            values,
            negated,
            ..
        } => {
            let values = values.iter().map(sql_value);
            let column = fields.field(field);
            Condition::all().add(if *negated {
                column.is_not_in(values)
            } else {
                column.is_in(values)
            })
        }
        Expr::IsNull { field, negated, .. } => {
            let column = fields.field(field);
            Condition::all().add(if *negated {
                column.is_not_null()
            } else {
                column.is_null()
            })
        }
    }
}

/// A literal as a bound parameter. Numbers carry their type in the SQL text
/// (`CAST($1 AS BIGINT)`, `CAST($1 AS DOUBLE PRECISION)`): PostgreSQL's driver caches one
/// prepared statement per connection and SQL text, with the parameter types of its first
/// use, so `churn_risk <= 10` and then `churn_risk <= 10.0` with the same text would bind
/// the float's bytes to a BIGINT parameter and select the wrong rows. Text and booleans need
/// no cast: a field's literals are all of one of those types (`spec::expr::check`).
fn sql_value(literal: &Literal) -> SqlExpr {
    match literal {
        Literal::Str(s) => SqlExpr::val(s.clone()),
        Literal::Int(i) => SqlExpr::val(*i).cast_as("BIGINT"),
        Literal::Num(n) => SqlExpr::val(*n).cast_as("DOUBLE PRECISION"),
        // Bound as a bool: SQLite stores it as 0/1, PostgreSQL as boolean.
        Literal::Bool(b) => SqlExpr::val(*b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sea_orm::sea_query::{
        ColumnDef, PostgresQueryBuilder, Query, SelectStatement, SqliteQueryBuilder, Table, Value,
        Values,
    };
    use sea_orm::{ConnectionTrait, Database, DatabaseConnection};
    use spec::expr::{self, Span};
    use store::testing::{Backend, RawDb as _};

    /// Every field as a column of the test table (`value_tier` too, which the shipped
    /// catalogue derives): these tests hold the filter language's SQL to `eval`; derived
    /// attributes' SQL is tested on real history in store `tests/derived.rs`.
    fn test_fields() -> FieldSql<'static> {
        static CAT: std::sync::OnceLock<spec::fields::Catalogue> = std::sync::OnceLock::new();
        let cat = CAT.get_or_init(spec::fields::Catalogue::core_only);
        FieldSql::new(
            cat,
            store::derived::AsOf {
                month: None,
                day: None,
                now: 0,
            },
        )
    }

    fn select(filter: &str) -> SelectStatement {
        let expr = expr::parse(filter).unwrap_or_else(|e| panic!("`{filter}`: {e}"));
        Query::select()
            .column("id")
            .from("subscriber")
            .cond_where(to_condition(&expr, &test_fields()))
            .to_owned()
    }

    #[test]
    fn literals_become_bound_parameters() {
        let (sql, values) =
            select("arpu_3m >= 10 and brand != 'gotone' and churn_risk < 0.5 and not opt_out")
                .build(SqliteQueryBuilder);
        assert_eq!(
            sql,
            r#"SELECT "id" FROM "subscriber" WHERE "arpu_3m" >= CAST(? AS BIGINT) AND "brand" <> ? AND "churn_risk" < CAST(? AS DOUBLE PRECISION) AND (NOT "opt_out" = ?)"#
        );
        assert_eq!(
            values,
            Values(vec![
                10_i64.into(),
                "gotone".to_owned().into(),
                0.5_f64.into(),
                true.into()
            ])
        );
    }

    #[test]
    fn hostile_text_stays_a_value() {
        let (sql, values) =
            select(r#"campus == "x' or 1=1 --" or name == '北京"; drop table subscriber'"#)
                .build(PostgresQueryBuilder);
        assert_eq!(
            sql,
            r#"SELECT "id" FROM "subscriber" WHERE "campus" = $1 OR "name" = $2"#
        );
        assert_eq!(
            values,
            Values(vec![
                "x' or 1=1 --".to_owned().into(),
                "北京\"; drop table subscriber".to_owned().into()
            ])
        );
    }

    #[test]
    fn lists_and_null_tests() {
        let (sql, values) =
            select("brand in ['gotone', 'mzone'] and age not in [18] or campus is null or timezone is not null")
                .build(SqliteQueryBuilder);
        assert_eq!(
            sql,
            r#"SELECT "id" FROM "subscriber" WHERE ("brand" IN (?, ?) AND "age" NOT IN (CAST(? AS BIGINT))) OR "campus" IS NULL OR "timezone" IS NOT NULL"#
        );
        assert_eq!(
            values,
            Values(vec![
                "gotone".to_owned().into(),
                "mzone".to_owned().into(),
                18_i64.into()
            ])
        );
    }

    #[test]
    fn negation_keeps_grouping() {
        let (sql, _) = select("not (opt_out or do_not_disturb) and not (age > 1 and age < 9)")
            .build(SqliteQueryBuilder);
        assert_eq!(
            sql,
            r#"SELECT "id" FROM "subscriber" WHERE (NOT ("opt_out" = ? OR "do_not_disturb" = ?)) AND (NOT ("age" > CAST(? AS BIGINT) AND "age" < CAST(? AS BIGINT)))"#
        );
    }

    // ---- equivalence with `expr::eval` on a real database ----------------------------

    const CAMPUSES: &[&str] = &[
        "北京大学",
        "清华大学",
        "北京",
        "campus a",
        "Campus A",
        "",
        "O'Brien",
    ];
    const NUMBERS: &[f64] = &[-1.0, 0.0, 9.5, 10.0, 10.5, 120.0, 200.0, 500.25];
    const INTEGERS: &[i64] = &[-1, 0, 1, 2, 3, 17, 18, 19, 25, 60];

    /// One subscriber row, restricted to the columns the test table has. Every column may be
    /// NULL here, even where the catalogue forbids it, to exercise three-valued logic.
    #[derive(Debug, Clone)]
    struct Row {
        brand: Option<String>,
        value_tier: Option<String>,
        student_stage: Option<String>,
        campus: Option<String>,
        arpu_3m: Option<f64>,
        churn_risk: Option<f64>,
        age: Option<i64>,
        complaints_30d: Option<i64>,
        opt_out: Option<bool>,
        do_not_disturb: Option<bool>,
    }

    impl Row {
        fn get(&self, field: &str) -> Option<expr::Value> {
            use expr::Value as V;
            match field {
                "brand" => self.brand.clone().map(V::Str),
                "value_tier" => self.value_tier.clone().map(V::Str),
                "student_stage" => self.student_stage.clone().map(V::Str),
                "campus" => self.campus.clone().map(V::Str),
                "arpu_3m" => self.arpu_3m.map(V::Num),
                "churn_risk" => self.churn_risk.map(V::Num),
                "age" => self.age.map(V::Int),
                "complaints_30d" => self.complaints_30d.map(V::Int),
                "opt_out" => self.opt_out.map(V::Bool),
                "do_not_disturb" => self.do_not_disturb.map(V::Bool),
                other => panic!("no column {other}"),
            }
        }
    }

    fn text(pool: &'static [&'static str]) -> impl Strategy<Value = String> {
        proptest::sample::select(pool).prop_map(str::to_owned)
    }

    /// The values of an enum attribute of the shipped catalogue.
    fn values_of(name: &str) -> Vec<String> {
        spec::catalogue::shipped()
            .field(name)
            .map(|a| a.kind.values().to_vec())
            .unwrap_or_default()
    }

    fn one_of(name: &str) -> impl Strategy<Value = String> + use<> {
        proptest::sample::select(values_of(name))
    }

    fn nullable<T: std::fmt::Debug>(
        s: impl Strategy<Value = T>,
    ) -> impl Strategy<Value = Option<T>> {
        proptest::option::weighted(0.8, s)
    }

    fn arb_row() -> impl Strategy<Value = Row> {
        (
            (
                nullable(one_of("brand")),
                nullable(one_of("value_tier")),
                nullable(one_of("student_stage")),
                nullable(text(CAMPUSES)),
            ),
            (
                nullable(proptest::sample::select(NUMBERS)),
                nullable(proptest::sample::select(NUMBERS)),
                nullable(proptest::sample::select(INTEGERS)),
                nullable(proptest::sample::select(INTEGERS)),
            ),
            (nullable(any::<bool>()), nullable(any::<bool>())),
        )
            .prop_map(
                |(
                    (brand, value_tier, student_stage, campus),
                    (arpu_3m, churn_risk, age, complaints_30d),
                    (opt_out, do_not_disturb),
                )| Row {
                    brand,
                    value_tier,
                    student_stage,
                    campus,
                    arpu_3m,
                    churn_risk,
                    age,
                    complaints_30d,
                    opt_out,
                    do_not_disturb,
                },
            )
    }

    fn any_op() -> impl Strategy<Value = CmpOp> {
        proptest::sample::select(vec![
            CmpOp::Eq,
            CmpOp::Ne,
            CmpOp::Lt,
            CmpOp::Le,
            CmpOp::Gt,
            CmpOp::Ge,
        ])
    }

    fn cmp(field: &'static str, op: CmpOp, value: Literal) -> Expr {
        Expr::Cmp {
            field: field.into(),
            field_span: Span::default(),
            op,
            value,
            value_span: Span::default(),
        }
    }

    fn list(field: &'static str, values: Vec<Literal>, negated: bool) -> Expr {
        Expr::In {
            field: field.into(),
            field_span: Span::default(),
            values,
            negated,
        }
    }

    /// Comparisons, lists and null tests on one column, with values of the column's type.
    /// `unordered` columns (bools, enumerated text) only get `==` and `!=`, as `check` demands.
    fn leaf_on(
        field: &'static str,
        value: BoxedStrategy<Literal>,
        unordered: bool,
    ) -> BoxedStrategy<Expr> {
        let op = if unordered {
            proptest::sample::select(vec![CmpOp::Eq, CmpOp::Ne]).boxed()
        } else {
            any_op().boxed()
        };
        let mut leaves = vec![
            (op, value.clone())
                .prop_map(move |(op, v)| cmp(field, op, v))
                .boxed(),
            (proptest::collection::vec(value, 1..4), any::<bool>())
                .prop_map(move |(values, negated)| list(field, values, negated))
                .boxed(),
        ];
        if field == "campus" {
            leaves.push(
                any::<bool>()
                    .prop_map(|negated| Expr::IsNull {
                        field: "campus".into(),
                        field_span: Span::default(),
                        negated,
                    })
                    .boxed(),
            );
        }
        proptest::strategy::Union::new(leaves).boxed()
    }

    fn arb_leaf() -> BoxedStrategy<Expr> {
        let str_of = |pool: &'static [&'static str]| text(pool).prop_map(Literal::Str).boxed();
        let enum_of = |name: &str| one_of(name).prop_map(Literal::Str).boxed();
        let number = prop_oneof![
            proptest::sample::select(NUMBERS).prop_map(Literal::Num),
            proptest::sample::select(INTEGERS).prop_map(Literal::Int),
        ]
        .boxed();
        let integer = proptest::sample::select(INTEGERS)
            .prop_map(Literal::Int)
            .boxed();
        let boolean = any::<bool>().prop_map(Literal::Bool).boxed();
        prop_oneof![
            leaf_on("brand", enum_of("brand"), true),
            leaf_on("value_tier", enum_of("value_tier"), true),
            leaf_on("student_stage", enum_of("student_stage"), true),
            leaf_on("campus", str_of(CAMPUSES), false),
            leaf_on("arpu_3m", number.clone(), false),
            leaf_on("churn_risk", number, false),
            leaf_on("age", integer.clone(), false),
            leaf_on("complaints_30d", integer, false),
            leaf_on("opt_out", boolean.clone(), true),
            leaf_on("do_not_disturb", boolean, true),
        ]
        .boxed()
    }

    fn arb_filter() -> impl Strategy<Value = Expr> {
        arb_leaf().prop_recursive(4, 24, 3, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 2..4).prop_map(Expr::And),
                proptest::collection::vec(inner.clone(), 2..4).prop_map(Expr::Or),
                inner.prop_map(|x| Expr::Not(Box::new(x))),
            ]
        })
    }

    /// The test's own database with an empty `subscriber` table: in memory on SQLite, in a new
    /// schema on PostgreSQL (returned, for [`drop_database`]).
    async fn database(backend: Backend) -> (DatabaseConnection, Option<String>) {
        let (db, schema) = match backend {
            Backend::Sqlite => (Database::connect("sqlite::memory:").await.unwrap(), None),
            Backend::Postgres => {
                let schema = store::testing::fresh_pg_schema().await.unwrap();
                let store = store::Store::connect(&store::testing::pg_url(), Some(&schema))
                    .await
                    .unwrap();
                (store.db().clone(), Some(schema))
            }
        };
        // Column types as the migration declares them (`id` is a BIGINT there, and PostgreSQL
        // will not read an INTEGER as i64).
        let text = |name: &str| {
            let mut col = ColumnDef::new(name.to_owned());
            col.string();
            // Byte order, as migration `m20261125_000006_subscriber_byte_order` declares.
            if backend == Backend::Postgres {
                col.extra("COLLATE \"C\"");
            }
            col
        };
        let table = Table::create()
            .table("subscriber")
            .col(ColumnDef::new("id").big_integer().not_null().primary_key())
            .col(text("brand"))
            .col(text("value_tier"))
            .col(text("student_stage"))
            .col(text("campus"))
            .col(ColumnDef::new("arpu_3m").double())
            .col(ColumnDef::new("churn_risk").double())
            .col(ColumnDef::new("age").integer())
            .col(ColumnDef::new("complaints_30d").integer())
            .col(ColumnDef::new("opt_out").boolean())
            .col(ColumnDef::new("do_not_disturb").boolean())
            .to_owned();
        db.execute(&table).await.unwrap();
        (db, schema)
    }

    /// Drops the test's PostgreSQL schema, which would otherwise stay in the shared server.
    async fn drop_database(db: DatabaseConnection, schema: Option<String>) {
        if let Some(schema) = schema {
            db.execute_unprepared(&format!("DROP SCHEMA {schema} CASCADE"))
                .await
                .unwrap();
        }
        db.close().await.unwrap();
    }

    /// Makes `rows` the table's contents, with ids 1, 2, ...
    async fn replace_rows(db: &DatabaseConnection, rows: &[Row]) {
        db.execute(&Query::delete().from_table("subscriber").to_owned())
            .await
            .unwrap();
        let mut insert = Query::insert()
            .into_table("subscriber")
            .columns([
                "id",
                "brand",
                "value_tier",
                "student_stage",
                "campus",
                "arpu_3m",
                "churn_risk",
                "age",
                "complaints_30d",
                "opt_out",
                "do_not_disturb",
            ])
            .to_owned();
        for (id, row) in (1_i64..).zip(rows) {
            let values: [Value; 11] = [
                id.into(),
                row.brand.clone().into(),
                row.value_tier.clone().into(),
                row.student_stage.clone().into(),
                row.campus.clone().into(),
                row.arpu_3m.into(),
                row.churn_risk.into(),
                row.age.into(),
                row.complaints_30d.into(),
                row.opt_out.into(),
                row.do_not_disturb.into(),
            ];
            insert.values_panic(values.map(SqlExpr::from));
        }
        db.execute(&insert).await.unwrap();
    }

    async fn selected_ids<C: ConnectionTrait>(db: &C, filter: &Expr) -> Vec<i64> {
        let query = Query::select()
            .column("id")
            .from("subscriber")
            .cond_where(to_condition(filter, &test_fields()))
            .order_by("id", sea_orm::sea_query::Order::Asc)
            .to_owned();
        db.query_all(&query)
            .await
            .unwrap()
            .iter()
            .map(|row| row.try_get::<i64>("", "id").unwrap())
            .collect()
    }

    /// What `proptest!` expands to, written out so that all cases share one database: on
    /// PostgreSQL, a connection and a schema per case cost more than the case itself.
    #[test]
    fn sql_selects_exactly_what_eval_selects() {
        let backend = store::testing::backend().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (db, schema) = runtime.block_on(database(backend));
        let mut config = proptest::test_runner::contextualize_config(testkit::proptest_config(64));
        config.test_name = Some(concat!(
            module_path!(),
            "::sql_selects_exactly_what_eval_selects"
        ));
        config.source_file = Some(file!());
        let mut runner = proptest::test_runner::TestRunner::new(config);
        let result = runner.run(
            &(
                proptest::collection::vec(arb_row(), 50),
                proptest::collection::vec(arb_filter(), 8),
            ),
            |(rows, filters)| {
                runtime.block_on(async {
                    replace_rows(&db, &rows).await;
                    check_filters(&db, &rows, &filters).await
                })
            },
        );
        runtime.block_on(drop_database(db, schema));
        if let Err(e) = result {
            panic!("{e}\n{runner}");
        }
    }

    async fn check_filters(
        db: &DatabaseConnection,
        rows: &[Row],
        filters: &[Expr],
    ) -> Result<(), TestCaseError> {
        for built in filters {
            // Through the printer and parser, so the filter is one an operator could write.
            let filter = expr::parse(&built.to_string()).unwrap();
            prop_assert_eq!(&filter, built);
            prop_assert_eq!(expr::check(&filter, &spec::catalogue::shipped()), vec![]);
            let expected: Vec<i64> = (1_i64..)
                .zip(rows)
                .filter(|(_, row)| expr::eval(&filter, &|f: &str| row.get(f)))
                .map(|(id, _)| id)
                .collect();
            let actual = selected_ids(db, &filter).await;
            prop_assert_eq!(actual, expected, "filter: {}", filter);
        }
        Ok(())
    }

    /// The same filter text with an integer and then a decimal literal (`churn_risk <= 10`,
    /// `churn_risk <= 10.0`) compiles to the same SQL text. PostgreSQL's driver caches a
    /// prepared statement per connection by its text, with the parameter types of its first
    /// use; binding a float's bytes to a parameter prepared as BIGINT reads them as a huge
    /// integer and selects the wrong rows. One transaction pins one connection, so this
    /// checks the reuse deterministically (the property test only met it by chance).
    #[test]
    fn integer_and_decimal_literals_select_the_same_on_one_connection() {
        let backend = store::testing::backend().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (db, schema) = database(backend).await;
            let row = |churn_risk: Option<f64>, age: Option<i64>| Row {
                brand: None,
                value_tier: None,
                student_stage: None,
                campus: None,
                arpu_3m: None,
                churn_risk,
                age,
                complaints_30d: None,
                opt_out: None,
                do_not_disturb: None,
            };
            let rows = vec![
                row(Some(-1.0), Some(17)),
                row(Some(19.0), Some(18)),
                row(Some(2.5), Some(60)),
                row(None, None),
            ];
            replace_rows(&db, &rows).await;
            let tx = sea_orm::TransactionTrait::begin(&db).await.unwrap();
            for filter in [
                "churn_risk <= 10",
                "churn_risk <= 10.0",
                "churn_risk <= 10",
                "churn_risk in [-1, 19]",
                "churn_risk in [-1.0, 19.0]",
                "churn_risk not in [-1, 19]",
                "churn_risk not in [-1.0, 19.5]",
                "age >= 18",
                "age >= 17.5",
                "age in [17, 60]",
                "age in [17.0, 60.5]",
            ] {
                let parsed = expr::parse(filter).unwrap();
                let expected: Vec<i64> = (1_i64..)
                    .zip(&rows)
                    .filter(|(_, r)| expr::eval(&parsed, &|f: &str| r.get(f)))
                    .map(|(id, _)| id)
                    .collect();
                assert_eq!(
                    selected_ids(&tx, &parsed).await,
                    expected,
                    "filter: {filter}"
                );
            }
            tx.rollback().await.unwrap();
            drop_database(db, schema).await;
        });
    }
}
