//! The CLI's side of "safe to expose": the daemon refuses to start without the callback
//! secret, tokens are created once and revoked, a version runs only after another
//! principal approved it, and the audit log records who did what. SQLite by default,
//! PostgreSQL with `CAMPAIGND_TEST_BACKEND=postgres`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

struct Cli {
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Cli {
    fn new() -> Cli {
        Cli::with_sms(None)
    }

    /// `sms`: a `[sms]` table instead of the outbox.
    fn with_sms(sms: Option<&str>) -> Cli {
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let db = rt
            .block_on(store::testing::fresh_database(
                store::testing::backend().unwrap(),
                dir.path(),
            ))
            .unwrap();
        let mut toml = format!("database_url = {:?}\n", db.url);
        if let Some(schema) = &db.schema {
            toml.push_str(&format!("database_schema = {schema:?}\n"));
        }
        let outbox = format!(
            "[sms]\ntransport = \"outbox\"\npath = {:?}\n",
            dir.path().join("out.jsonl").display().to_string()
        );
        toml.push_str(&format!(
            "workflows = {:?}\nlisten = \"127.0.0.1:0\"\noperator = \"alice\"\n{}[email]\ntransport = \"file\"\ndir = {:?}\n",
            repo().join("workflows").display().to_string(),
            sms.map(str::to_owned).unwrap_or(outbox),
            dir.path().display().to_string(),
        ));
        let config = dir.path().join("campaignd.toml");
        std::fs::write(&config, toml).unwrap();
        Cli { config, _dir: dir }
    }

    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_campaignd"))
            .args(args)
            .env("CAMPAIGND_CONFIG", &self.config)
            .env_remove("CAMPAIGND_DATABASE_URL")
            .env_remove("CAMPAIGND_CALLBACK_SECRET")
            .env_remove("CAMPAIGND_TOKEN")
            .envs(env.iter().copied())
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let o = self.run(args, env);
        assert!(o.status.success(), "campaignd {args:?}: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn token(&self, name: &str, role: &str) -> String {
        self.ok(&["token", "create", "--name", name, "--role", role], &[])
            .trim()
            .to_owned()
    }
}

/// Guards `callback_auth`: a daemon that sends through Kannel (or runs on PostgreSQL) does
/// not start without `CAMPAIGND_CALLBACK_SECRET`, nor with a short one.
#[test]
fn the_daemon_refuses_to_start_without_the_callback_secret() {
    let cli = Cli::with_sms(Some(
        "[sms]\ntransport = \"http\"\nusername = \"campaignd\"\nfrom = \"10086\"\ndlr_url = \"http://127.0.0.1:9/callbacks/kannel/dlr\"\n",
    ));
    let pw = ("CAMPAIGND_KANNEL_PASSWORD", "kannel-password");
    let o = cli.run(&["run", "--exit-after", "1"], &[pw]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("CAMPAIGND_CALLBACK_SECRET"),
        "{}",
        text(&o)
    );
    let o = cli.run(
        &["run", "--exit-after", "1"],
        &[pw, ("CAMPAIGND_CALLBACK_SECRET", "short")],
    );
    assert_eq!(o.status.code(), Some(1), "a short secret: {}", text(&o));
    assert!(text(&o).contains("at least 16"), "{}", text(&o));

    let outbox = Cli::new();
    let o = outbox.run(
        &["run", "--exit-after", "1"],
        &[("CAMPAIGND_CALLBACK_SECRET", "a-long-enough-callback-secret")],
    );
    assert!(o.status.success(), "{}", text(&o));
}

/// The embedded defaults (SQLite, SMS outbox) start without the variable, on a secret
/// generated for the database; PostgreSQL never does.
#[test]
fn embedded_defaults_start_on_a_secret_of_their_own() {
    let cli = Cli::new();
    let o = cli.run(&["run", "--exit-after", "1"], &[]);
    if store::testing::backend().unwrap() == store::testing::Backend::Postgres {
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(
            text(&o).contains("CAMPAIGND_CALLBACK_SECRET"),
            "{}",
            text(&o)
        );
    } else {
        assert!(o.status.success(), "{}", text(&o));
        assert!(
            text(&o).contains("generated for this database"),
            "{}",
            text(&o)
        );
    }
}

#[test]
fn tokens_are_shown_once_listed_without_secrets_and_revoked() {
    let cli = Cli::new();
    let token = cli.token("bob", "operator");
    assert!(token.starts_with("cdt_") && token.len() == 68, "{token}");
    let o = cli.run(
        &["token", "create", "--name", "carol", "--role", "agent"],
        &[],
    );
    assert!(!o.status.success(), "an agent without a team: {}", text(&o));
    cli.token_team("campus-agent-01", "campus-callcentre");
    let list = cli.ok(&["token", "list"], &[]);
    assert!(list.contains("bob") && list.contains("operator"), "{list}");
    assert!(list.contains("campus-callcentre"), "{list}");
    assert!(!list.contains(&token), "the list shows a token: {list}");
    cli.ok(&["token", "revoke", "bob"], &[]);
    assert!(cli.ok(&["token", "list"], &[]).contains("REVOKED"));
    assert!(!cli.run(&["token", "revoke", "bob"], &[]).status.success());
    let audit = cli.ok(&["audit"], &[]);
    assert!(
        audit.contains("token_create") && audit.contains("token_revoke"),
        "{audit}"
    );
}

// campaignd `check_agent_team`: an agent token is made only for a name its team's entry in
// teams.yaml lists (or a desk of staff.yaml), so the daemon's queue routes would let it work.
#[test]
fn an_agent_token_is_made_only_for_an_agent_of_its_team_in_teams_yaml() {
    let cli = Cli::new();
    let teams = repo().join("workflows/teams.yaml").display().to_string();
    for (name, team, want) in [
        (
            "carol",
            "campus-callcentre",
            format!(
                "agent `carol` is not in team `campus-callcentre`'s agents in {teams} (campus-agent-01, campus-agent-02, campus-dialer)"
            ),
        ),
        // In the file, but in another team.
        (
            "ret-agent-01",
            "campus-callcentre",
            "agent `ret-agent-01` is not in team `campus-callcentre`'s agents".to_owned(),
        ),
        (
            "carol",
            "night-shift",
            format!(
                "team `night-shift` is not a call-centre team in {teams} (retention-callcentre, campus-callcentre) nor a desk of"
            ),
        ),
    ] {
        let o = cli.run(
            &[
                "token", "create", "--name", name, "--role", "agent", "--team", team,
            ],
            &[],
        );
        assert!(!o.status.success(), "{name} of {team}: {}", text(&o));
        assert!(text(&o).contains(&want), "{want}\n{}", text(&o));
    }
    // Nothing was made.
    let list = cli.ok(&["token", "list"], &[]);
    assert!(
        !list.contains("carol") && !list.contains("ret-agent-01"),
        "{list}"
    );
    // An agent of the team, and a service desk of staff.yaml, are made.
    cli.token_team("ret-dialer", "retention-callcentre");
    cli.token_team("desk-1", "retention-desk");
    let list = cli.ok(&["token", "list"], &[]);
    assert!(
        list.contains("ret-dialer") && list.contains("desk-1"),
        "{list}"
    );
}

impl Cli {
    fn token_team(&self, name: &str, team: &str) -> String {
        self.ok(
            &[
                "token", "create", "--name", name, "--role", "agent", "--team", team,
            ],
            &[],
        )
        .trim()
        .to_owned()
    }
}

#[test]
fn a_version_runs_only_after_another_principal_approved_it() {
    let cli = Cli::new();
    cli.ok(&["generate-base", "--subscribers", "200"], &[]);
    let campaign = "autumn-enrollment";
    // Not approved: trigger refuses and says what to do.
    let o = cli.run(&["trigger", campaign], &[]);
    assert!(!o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("awaits approval"), "{}", text(&o));
    let versions = cli.ok(&["versions", campaign], &[]);
    assert!(
        versions.contains("loaded by alice") && versions.contains("awaiting approval"),
        "{versions}"
    );

    // The loader may not approve its own version, even with the approver role.
    let alice = cli.token("alice", "approver");
    let o = cli.run(&["approve", campaign], &[("CAMPAIGND_TOKEN", &alice)]);
    assert!(!o.status.success(), "four eyes: {}", text(&o));
    assert!(text(&o).contains("four eyes"), "{}", text(&o));
    // An operator may not approve at all.
    let op = cli.token("oscar", "operator");
    let o = cli.run(&["approve", campaign], &[("CAMPAIGND_TOKEN", &op)]);
    assert!(!o.status.success(), "{}", text(&o));

    let bea = cli.token("bea", "approver");
    let out = cli.ok(&["approve", campaign], &[("CAMPAIGND_TOKEN", &bea)]);
    assert!(out.contains("approved by bea"), "{out}");
    let versions = cli.ok(&["versions", campaign], &[]);
    assert!(versions.contains("approved by bea"), "{versions}");
    let out = cli.ok(&["trigger", campaign], &[]);
    assert!(out.contains("started"), "{out}");

    let audit = cli.ok(&["audit"], &[]);
    for line in ["bea               approve", "alice             trigger"] {
        let (who, what) = line.split_once(' ').unwrap();
        assert!(
            audit
                .lines()
                .any(|l| l.contains(who) && l.contains(what.trim())),
            "{line} missing from:\n{audit}"
        );
    }
}
