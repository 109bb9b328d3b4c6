//! Holdouts that hold (`control.hold`): across runs of one campaign in a holdout period, a
//! subscriber once drawn into control is never treated, over an audience that grows and loses
//! members between runs; the first split is `split_control`'s; and the drawn members are a
//! function of the inputs. `hold: run` keeps the old per-run split. Runs on SQLite, or on
//! PostgreSQL with `CAMPAIGND_TEST_BACKEND=postgres`.

use std::collections::{BTreeSet, HashSet};

use store::Store;
use store::runs::NewRun;
use store::subscribers::OnDuplicate;

const NOW: i64 = 1_789_000_000_000;
const WEEK: i64 = 7 * 86_400_000;
const RUNS: usize = 10;

type Res<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn workflow(dir: &std::path::Path, hold: &str) -> Res<spec::Workflow> {
    std::fs::create_dir_all(dir.join("templates"))?;
    std::fs::write(
        dir.join("segments.yaml"),
        "segments:\n  students:\n    where: \"student_stage in ['freshman', 'student']\"\n",
    )?;
    std::fs::write(dir.join("templates/offer.txt"), "{name}: reply 1")?;
    let path = dir.join("held.yaml");
    std::fs::write(
        &path,
        format!(
            "campaign: held\ntimezone: Asia/Shanghai\naudience:\n  segment: students\n\
             control: {{ share: 0.2, stratify_by: region, hold: {hold} }}\n\
             waves:\n  - id: sms_offer\n    channel: sms\n    template: templates/offer.txt\n    \
             respond_within: 1d\n"
        ),
    )?;
    spec::load_file(&path).map_err(|d| format!("{d:?}").into())
}

/// The base as the scenario changes it: msisdn, region, and whether the subscriber is a
/// student (in the audience) or has graduated (left it).
struct Base {
    people: Vec<(String, &'static str, bool)>,
    ids: Vec<i64>,
}

impl Base {
    fn row(&self, i: usize) -> store::subscribers::NewSubscriber {
        let (msisdn, region, student) = &self.people[i];
        store::testing::subscriber(msisdn)
            .with("region", *region)
            .with(
                "student_stage",
                if *student { "freshman" } else { "graduate" },
            )
    }

    async fn grow(&mut self, store: &Store, n: usize) -> Res {
        let first = self.people.len();
        for i in first..first + n {
            let region = ["beijing", "shanghai", "guangzhou"][i % 3];
            self.people.push((format!("1380000{i:04}"), region, true));
        }
        let rows: Vec<_> = (first..first + n).map(|i| self.row(i)).collect();
        store
            .insert_subscribers(&rows, OnDuplicate::Fail, 0)
            .await?;
        for r in &rows {
            let id = store
                .subscriber_by_msisdn(&r.msisdn)
                .await?
                .ok_or("missing")?;
            self.ids.push(id);
        }
        Ok(())
    }

    /// Flips who is a student: some leave the audience, some of those who left come back.
    async fn churn(&mut self, store: &Store, run: usize) -> Res {
        let n = self.people.len();
        let mut changed = BTreeSet::new();
        for k in 0..9 {
            changed.insert((run * 13 + k * 17) % n);
        }
        for &i in &changed {
            self.people[i].2 = !self.people[i].2;
        }
        let rows: Vec<_> = changed.iter().map(|&i| self.row(i)).collect();
        store
            .insert_subscribers(&rows, OnDuplicate::Update, 0)
            .await?;
        Ok(())
    }

    /// The audience as the planner sees it: (id, stratum).
    fn audience(&self) -> Vec<(i64, String)> {
        self.people
            .iter()
            .zip(&self.ids)
            .filter(|((_, _, student), _)| *student)
            .map(|((_, region, _), id)| (*id, (*region).to_owned()))
            .collect()
    }
}

/// A store of its own in a new folder under `dir`.
async fn fresh_store(dir: &std::path::Path, name: &str) -> Res<Store> {
    let path = dir.join(name);
    std::fs::create_dir_all(&path)?;
    Ok(store::testing::fresh_store(&path).await?)
}

async fn run_of(store: &Store, wf: &spec::Workflow, now: i64) -> Res<(i64, i64)> {
    let vid = store
        .upsert_version(&wf.campaign, &wf.hash, &wf.bundle.to_json(), 0)
        .await?;
    let run = store
        .start_run(NewRun {
            campaign: &wf.campaign,
            version_id: vid,
            slot_at: None,
            trigger: "test",
            waves: &[("sms_offer".to_owned(), "sms".to_owned())],
            now,
        })
        .await?
        .ok_or("no run")?;
    Ok((run, store.wave_runs(run).await?[0].id))
}

/// One run's arms, by subscriber id.
#[derive(Debug, PartialEq)]
struct Arms {
    audience: Vec<(i64, String)>,
    treatment: BTreeSet<i64>,
    control: BTreeSet<i64>,
}

/// Ten weekly runs of `wf` over a base that grows and churns between them.
async fn scenario(store: &Store, wf: &spec::Workflow) -> Res<Vec<Arms>> {
    let mut base = Base {
        people: Vec::new(),
        ids: Vec::new(),
    };
    base.grow(store, 120).await?;
    let mut out = Vec::new();
    for i in 0..RUNS {
        if i > 0 {
            base.grow(store, 15).await?;
            base.churn(store, i).await?;
        }
        let now = NOW + i as i64 * WEEK;
        let run = run_of(store, wf, now).await?;
        let summary = audience::plan_wave(
            store,
            audience::PlanInput {
                workflow: wf,
                wave: &wf.waves[0],
                run_id: run.0,
                wave_run_id: run.1,
                previous_wave_run_id: None,
                now,
                global_holdout: None,
                arbitration: None,
            },
        )
        .await?;
        assert!(summary.opened);
        let mut arms = Arms {
            audience: base.audience(),
            treatment: BTreeSet::new(),
            control: BTreeSet::new(),
        };
        for (id, arm, _) in store.contact_states(run.1).await? {
            match arm.as_str() {
                "treatment" => arms.treatment.insert(id),
                "control" => arms.control.insert(id),
                other => return Err(format!("unknown arm {other}").into()),
            };
        }
        assert_eq!(summary.control, arms.control.len() as u64);
        out.push(arms);
    }
    Ok(out)
}

#[tokio::test]
async fn control_members_held_for_the_year_are_never_treated() -> Res {
    let dir = tempfile::tempdir()?;
    let wf = workflow(dir.path(), "year")?;
    // All ten runs fall in one calendar year in the campaign's time zone.
    for i in 0..RUNS {
        let period = wf.holdout_period(spec::Hold::Year, NOW + i as i64 * WEEK, 0);
        assert_eq!(period, "2026");
    }
    let store = fresh_store(dir.path(), "a").await?;
    let runs = scenario(&store, &wf).await?;

    // The first run splits exactly as split_control always did.
    let (_, first_control) = audience::split_control(&runs[0].audience, 0.2, "held");
    assert_eq!(
        runs[0].control,
        first_control.into_iter().collect::<BTreeSet<_>>()
    );

    let mut ever_control: HashSet<i64> = HashSet::new();
    let mut later_runs_drew = 0;
    for (i, arms) in runs.iter().enumerate() {
        let ids: BTreeSet<i64> = arms.audience.iter().map(|(id, _)| *id).collect();
        let planned: BTreeSet<i64> = arms.treatment.union(&arms.control).copied().collect();
        assert_eq!(planned, ids, "run {i} planned someone outside its audience");
        let treated_holdout: Vec<_> = arms
            .treatment
            .iter()
            .filter(|id| ever_control.contains(id))
            .collect();
        assert!(
            treated_holdout.is_empty(),
            "run {i} treats earlier control members {treated_holdout:?}"
        );
        // Every held member still in the audience is in this run's control.
        for id in &ids {
            if ever_control.contains(id) {
                assert!(arms.control.contains(id), "run {i}: {id} left control");
            }
        }
        let before = ever_control.len();
        ever_control.extend(arms.control.iter().copied());
        if i > 0 && ever_control.len() > before {
            later_runs_drew += 1;
        }
    }
    // The growing audience made later runs top the holdout up, so the check above was about
    // a changing control group, not a frozen one.
    assert!(later_runs_drew > 0);

    // The holdout is stored, in one period, and audit counts match.
    let periods = store.holdout_periods("held", None).await?;
    assert_eq!(periods.len(), 1, "{periods:?}");
    assert_eq!(periods[0].period, "2026");
    assert_eq!(periods[0].members, ever_control.len() as u64);
    assert_eq!(store.holdout_members("held", "2026").await?, ever_control);

    // The same inputs in a fresh store give the same arms and the same holdout.
    let again = fresh_store(dir.path(), "b").await?;
    let runs_again = scenario(&again, &wf).await?;
    assert_eq!(runs, runs_again);
    assert_eq!(again.holdout_members("held", "2026").await?, ever_control);
    Ok(())
}

#[tokio::test]
async fn hold_run_splits_each_run_afresh() -> Res {
    let dir = tempfile::tempdir()?;
    let wf = workflow(dir.path(), "run")?;
    let store = fresh_store(dir.path(), "a").await?;
    let runs = scenario(&store, &wf).await?;
    // Each run's control is split_control of that run's audience alone, as before holdouts.
    for (i, arms) in runs.iter().enumerate() {
        let (treatment, control) = audience::split_control(&arms.audience, 0.2, "held");
        assert_eq!(
            arms.control,
            control.into_iter().collect::<BTreeSet<_>>(),
            "run {i}"
        );
        assert_eq!(
            arms.treatment,
            treatment.into_iter().collect::<BTreeSet<_>>(),
            "run {i}"
        );
    }
    // Which is why `run` does not hold: some earlier control member is treated later.
    let mut ever_control = HashSet::new();
    let mut treated_later = 0;
    for arms in &runs {
        treated_later += arms
            .treatment
            .iter()
            .filter(|id| ever_control.contains(*id))
            .count();
        ever_control.extend(arms.control.iter().copied());
    }
    assert!(treated_later > 0);
    // Each run's control is recorded under its own period.
    let periods = store.holdout_periods("held", None).await?;
    assert_eq!(periods.len(), RUNS, "{periods:?}");
    assert!(periods.iter().all(|p| p.period.starts_with("run-")));
    Ok(())
}
