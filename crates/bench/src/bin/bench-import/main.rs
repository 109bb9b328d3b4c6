//! Import benchmark: `campaignd import` of N Telco-shaped rows on SQLite, against the limit,
//! a plain loop that inserts the same rows with raw SQL in one transaction. Both run as their
//! own process under `/usr/bin/time -v`, so each peak RSS is its own.
//!
//! ```text
//! cargo build --release -p campaignd -p bench
//! target/release/bench-import --rows 1000000
//! target/release/bench-import --history --rows 1000000
//! ```
//!
//! `--history`: `campaignd import-history` of N monthly usage rows (12 months each of N/12
//! subscribers imported first, untimed), against a plain loop inserting the same rows into
//! `usage_month`. Run it at two sizes to see whether peak RSS follows the file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use clap::Parser;
use sea_orm::{ConnectionTrait, Statement, TransactionTrait, Value};
use spec::fields::Kind;
use store::testing::RawDb as _;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Args {
    /// Rows of the generated export.
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// Import usage history (`rows` monthly rows) instead of the base.
    #[arg(long)]
    history: bool,
    /// Internal: run the plain insert loop into this SQLite file.
    #[arg(long, hide = true)]
    plain_into: Option<PathBuf>,
}

/// Months of history per subscriber in `--history`.
const MONTHS: u64 = 12;
/// The newest month of the generated history: 2026-10.
const NEWEST: i64 = 2026 * 12 + 9;
/// The measures of the generated history file, all monthly in the shipped catalogue.
const HISTORY_HEADER: &str = "msisdn,period,arpu,voice_minutes,data_mb";

/// Subscriber `s` (0-based, the base's row) of history row `i`, and its month.
fn history_row(i: u64) -> (u64, i64) {
    (i / MONTHS, NEWEST - (i % MONTHS) as i64)
}

fn write_history_csv(path: &Path, rows: u64) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(f, "{HISTORY_HEADER}")?;
    let mut line = String::new();
    for i in 0..rows {
        let (s, period) = history_row(i);
        line.clear();
        let _ = writeln!(
            line,
            "139{s:08},{},{}.5,{},{}",
            catalogue::history::Period::Month.label(period),
            20 + i % 80,
            i % 900,
            i % 5000
        );
        f.write_all(line.as_bytes())?;
    }
    f.flush()?;
    Ok(())
}

/// The history limit: the same rows straight into `usage_month` (subscriber ids are the
/// base's 1..=N in file order), as many per INSERT as the store puts in one, one transaction.
async fn plain_history(db: &Path, rows: u64) -> anyhow::Result<()> {
    let store = store::Store::connect(&format!("sqlite://{}?mode=rwc", db.display()), None).await?;
    let per_insert = 1000u64;
    let conn = store.db();
    let tx = conn.begin().await?;
    let mut i = 0u64;
    while i < rows {
        let n = (rows - i).min(per_insert);
        let mut sql =
            "INSERT INTO usage_month (subscriber_id, period, arpu, voice_minutes, data_mb) VALUES "
                .to_owned();
        let mut values: Vec<Value> = Vec::with_capacity(n as usize * 5);
        for j in 0..n {
            let k = i + j;
            if j > 0 {
                sql.push_str(", ");
            }
            sql.push_str("(?, ?, ?, ?, ?)");
            let (s, period) = history_row(k);
            values.extend([
                (s as i64 + 1).into(),
                period.into(),
                ((20 + k % 80) as f64 + 0.5).into(),
                ((k % 900) as i64).into(),
                ((k % 5000) as f64).into(),
            ]);
        }
        tx.execute_raw(Statement::from_sql_and_values(
            tx.get_database_backend(),
            sql,
            values,
        ))
        .await?;
        i += n;
    }
    tx.commit().await?;
    Ok(())
}

/// The Telco mapping, numbers from the digits of the customer id (one-to-one at any size).
fn mapping() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../workflows/imports/telco-ibm.mapping.yaml");
    std::fs::read_to_string(path)
        .expect("telco mapping")
        .replace(
            r#"synthesize: { from: customerID, prefix: "139" }"#,
            r#"synthesize: { from: customerID, prefix: "139", method: digits }"#,
        )
}

const GENDERS: [&str; 2] = ["Female", "Male"];
const CHARGES: [&str; 5] = ["29.85", "56.95", "53.85", "42.30", "70.70"];

/// Row `i` of the export, Telco's 21 columns.
fn telco_line(i: u64, out: &mut String) {
    use std::fmt::Write;
    let k = i as usize;
    let _ = writeln!(
        out,
        "{i:07}-TLCO,{},{},Yes,No,{},Yes,No,DSL,No,Yes,No,No,No,No,Month-to-month,Yes,Electronic check,{},1889.5,{}",
        GENDERS[k % 2],
        k % 7 / 6,
        k % 72,
        CHARGES[k % 5],
        if k.is_multiple_of(4) { "Yes" } else { "No" }
    );
}

fn write_csv(path: &Path, rows: u64) -> anyhow::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(
        f,
        "customerID,gender,SeniorCitizen,Partner,Dependents,tenure,PhoneService,MultipleLines,InternetService,OnlineSecurity,OnlineBackup,DeviceProtection,TechSupport,StreamingTV,StreamingMovies,Contract,PaperlessBilling,PaymentMethod,MonthlyCharges,TotalCharges,Churn"
    )?;
    let mut line = String::new();
    for i in 0..rows {
        line.clear();
        telco_line(i, &mut line);
        f.write_all(line.as_bytes())?;
    }
    f.flush()?;
    Ok(())
}

/// The limit: the same columns (the core, the catalogue's attributes, `updated_at`), as many
/// rows per INSERT as the store's import puts in one, one transaction, values made on the
/// fly (no CSV, no checks).
async fn plain(db: &Path, rows: u64) -> anyhow::Result<()> {
    let store = store::Store::connect(&format!("sqlite://{}?mode=rwc", db.display()), None).await?;
    store.migrate().await?;
    // The catalogue `campaignd import` uses: the workflows folder has no attributes.yaml.
    let cat = spec::catalogue::shipped();
    store.apply_catalogue(cat.clone()).await?;
    let mut cols: Vec<String> = [
        "msisdn",
        "external_id",
        "timezone",
        "opt_out",
        "do_not_disturb",
    ]
    .map(str::to_owned)
    .to_vec();
    cols.extend(cat.declared().map(|a| format!("\"{}\"", a.name)));
    cols.push("updated_at".to_owned());
    let width = cols.len();
    // The store's own chunking: 30,000 parameters per INSERT, at most 1000 rows.
    let per_insert = (30_000 / width).clamp(1, 1000) as u64;
    let one = format!("({})", vec!["?"; width].join(", "));
    let insert = format!("INSERT INTO subscriber ({}) VALUES ", cols.join(", "));
    let conn = store.db();
    let tx = conn.begin().await?;
    let mut i = 0u64;
    while i < rows {
        let n = (rows - i).min(per_insert);
        let mut sql = insert.clone();
        let mut values: Vec<Value> = Vec::with_capacity(n as usize * width);
        for j in 0..n {
            let k = (i + j) as usize;
            if j > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&one);
            values.extend([
                format!("139{:08}", i + j).into(),
                Some(format!("{:07}-TLCO", i + j)).into(),
                Option::<String>::None.into(),
                false.into(),
                false.into(),
            ]);
            for a in cat.declared() {
                values.push(telco_value(&a.name, k).unwrap_or_else(|| null_of(&a.kind)));
            }
            values.push(0i64.into());
        }
        tx.execute_raw(Statement::from_sql_and_values(
            tx.get_database_backend(),
            sql,
            values,
        ))
        .await?;
        i += n;
    }
    tx.commit().await?;
    Ok(())
}

/// What the Telco mapping gives attribute `name` for row `k`; `None` for an attribute it
/// does not map (stored empty).
fn telco_value(name: &str, k: usize) -> Option<Value> {
    Some(match name {
        "name" => "Customer".into(),
        "gender" => ["female", "male"][k % 2].into(),
        "age" => if k % 7 / 6 == 1 { 70i64 } else { 40 }.into(),
        "region" => "xian".into(),
        "brand" => "gotone".into(),
        "value_tier" => "silver".into(),
        "arpu_3m" => (CHARGES[k % 5].parse::<f64>().unwrap_or(0.0) * 7.0).into(),
        "balance" => 100.0f64.into(),
        "tenure_months" => ((k % 72) as i64).into(),
        "student_stage" => "none".into(),
        "first_channel" => "sms".into(),
        "first_channel_slot" => "18:00-21:00".into(),
        "second_channel" => "outbound_call".into(),
        "second_channel_slot" => "09:00-12:00".into(),
        "complaints_30d" => 0i64.into(),
        "churn_risk" => if k.is_multiple_of(4) { 0.9f64 } else { 0.1 }.into(),
        _ => return None,
    })
}

/// A NULL of the column type an attribute of `kind` is stored in.
fn null_of(kind: &Kind) -> Value {
    match kind {
        Kind::Integer => Value::BigInt(None),
        Kind::Decimal => Value::Double(None),
        Kind::Bool => Value::Bool(None),
        Kind::Text | Kind::Enum { .. } | Kind::Date | Kind::Timestamp => Value::String(None),
    }
}

/// Runs `cmd` under `/usr/bin/time -v`: (wall seconds, peak RSS MB).
fn timed(cmd: &mut Command) -> anyhow::Result<(f64, f64)> {
    let start = Instant::now();
    let out = cmd.output()?;
    let secs = start.elapsed().as_secs_f64();
    let err = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(out.status.success(), "{:?} failed:\n{err}", cmd);
    Ok((secs, peak_rss_mb(&err)?))
}

/// The peak RSS (MB) in `/usr/bin/time -v`'s output.
fn peak_rss_mb(time_output: &str) -> anyhow::Result<f64> {
    let kb: f64 = time_output
        .lines()
        .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes):"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no peak RSS in /usr/bin/time output:\n{time_output}"))?;
    Ok(kb / 1024.0)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(db) = args.plain_into {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        return rt.block_on(async {
            if args.history {
                plain_history(&db, args.rows).await
            } else {
                plain(&db, args.rows).await
            }
        });
    }
    let exe = std::env::current_exe()?;
    let campaignd = exe.with_file_name("campaignd");
    anyhow::ensure!(
        campaignd.exists(),
        "{} not found: cargo build --release -p campaignd -p bench",
        campaignd.display()
    );
    let dir = tempfile::tempdir()?;
    let csv = dir.path().join("telco.csv");
    let subscribers = if args.history {
        args.rows.div_ceil(MONTHS)
    } else {
        args.rows
    };
    write_csv(&csv, subscribers)?;
    let map = dir.path().join("telco.mapping.yaml");
    std::fs::write(&map, mapping())?;
    let db = dir.path().join("import.db");
    let config = dir.path().join("campaignd.toml");
    std::fs::write(
        &config,
        format!(
            "database_url = \"sqlite://{}?mode=rwc\"\nworkflows = \"{}\"\n",
            db.display(),
            dir.path().display()
        ),
    )?;
    // Schema first, so neither side's time includes migrations.
    let status = Command::new(&campaignd)
        .args(["migrate", "--config"])
        .arg(&config)
        .status()?;
    anyhow::ensure!(status.success(), "campaignd migrate failed");
    if args.history {
        return history(&exe, &campaignd, dir.path(), &csv, &map, &config, args.rows);
    }
    let (import_s, import_mb) = timed(
        Command::new("/usr/bin/time")
            .arg("-v")
            .arg(&campaignd)
            .arg("import")
            .arg(&csv)
            .arg("--mapping")
            .arg(&map)
            .arg("--config")
            .arg(&config),
    )?;
    let plain_db = dir.path().join("plain.db");
    let (plain_s, plain_mb) = timed(
        Command::new("/usr/bin/time")
            .arg("-v")
            .arg(&exe)
            .arg("--rows")
            .arg(args.rows.to_string())
            .arg("--plain-into")
            .arg(&plain_db),
    )?;
    let size_mb = std::fs::metadata(&csv)?.len() as f64 / 1e6;
    let n = args.rows as f64;
    println!("rows {}  csv {size_mb:.0} MB  SQLite", args.rows);
    println!(
        "campaignd import   {import_s:7.2} s  {:>9.0} rows/s  peak RSS {import_mb:6.1} MB",
        n / import_s
    );
    println!(
        "plain SQL loop     {plain_s:7.2} s  {:>9.0} rows/s  peak RSS {plain_mb:6.1} MB",
        n / plain_s
    );
    println!(
        "import / plain     {:.2} of the plain loop's rate",
        plain_s / import_s
    );
    Ok(())
}

/// `--history`: the base untimed, then `import-history` against [`plain_history`].
fn history(
    exe: &Path,
    campaignd: &Path,
    dir: &Path,
    base: &Path,
    map: &Path,
    config: &Path,
    rows: u64,
) -> anyhow::Result<()> {
    let out = Command::new(campaignd)
        .arg("import")
        .arg(base)
        .arg("--mapping")
        .arg(map)
        .arg("--config")
        .arg(config)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "base import failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The plain loop writes into a copy of the same base (no WAL is left after a clean exit).
    let plain_db = dir.join("plain.db");
    std::fs::copy(dir.join("import.db"), &plain_db)?;
    let csv = dir.join("history.csv");
    write_history_csv(&csv, rows)?;
    let start = Instant::now();
    let out = Command::new("/usr/bin/time")
        .arg("-v")
        .arg(campaignd)
        .arg("import-history")
        .arg(&csv)
        .arg("--config")
        .arg(config)
        .output()?;
    let import_s = start.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(
        out.status.success(),
        "import-history failed:\n{stdout}{err}"
    );
    // Every row must have been stored: a wrong number would be "left out", not an error.
    anyhow::ensure!(
        stdout.contains(&format!("imported {rows} history rows")),
        "import-history did not store every row:\n{stdout}"
    );
    let import_mb = peak_rss_mb(&err)?;
    let (plain_s, plain_mb) = timed(
        Command::new("/usr/bin/time")
            .arg("-v")
            .arg(exe)
            .arg("--history")
            .arg("--rows")
            .arg(rows.to_string())
            .arg("--plain-into")
            .arg(&plain_db),
    )?;
    let size_mb = std::fs::metadata(&csv)?.len() as f64 / 1e6;
    let n = rows as f64;
    println!(
        "history rows {rows} ({} subscribers x {MONTHS} months)  csv {size_mb:.0} MB  SQLite",
        rows.div_ceil(MONTHS)
    );
    println!(
        "campaignd import-history {import_s:7.2} s  {:>9.0} rows/s  peak RSS {import_mb:6.1} MB",
        n / import_s
    );
    println!(
        "plain SQL loop           {plain_s:7.2} s  {:>9.0} rows/s  peak RSS {plain_mb:6.1} MB",
        n / plain_s
    );
    println!(
        "import / plain           {:.2} of the plain loop's rate",
        plain_s / import_s
    );
    Ok(())
}
