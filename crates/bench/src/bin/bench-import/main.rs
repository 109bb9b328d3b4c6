//! Import benchmark: `campaignd import` of N Telco-shaped rows on SQLite, against the limit,
//! a plain loop that inserts the same rows with raw SQL in one transaction. Both run as their
//! own process under `/usr/bin/time -v`, so each peak RSS is its own.
//!
//! ```text
//! cargo build --release -p campaignd -p bench
//! target/release/bench-import --rows 1000000
//! ```

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
    /// Internal: run the plain insert loop into this SQLite file.
    #[arg(long, hide = true)]
    plain_into: Option<PathBuf>,
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
    let kb: f64 = err
        .lines()
        .find_map(|l| l.trim().strip_prefix("Maximum resident set size (kbytes):"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no peak RSS in /usr/bin/time output:\n{err}"))?;
    Ok((secs, kb / 1024.0))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(db) = args.plain_into {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        return rt.block_on(plain(&db, args.rows));
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
    write_csv(&csv, args.rows)?;
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
