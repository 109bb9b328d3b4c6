//! The demo's simulated world: an SMSC that reports delivery, subscribers who sometimes reply
//! and order, agents who work their task lists, and organic orders from everyone (control
//! included). Everything it produces enters campaignd the way real traffic does, as stored
//! inbound events, so the demo exercises the real tracking path. Its output is labelled
//! simulated everywhere it is shown.

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use engine::clock::Clock;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sha2::{Digest, Sha256};
use store::inbound::{NewInbound, source};
use store::{Millis, Store};
use tokio_util::sync::CancellationToken;

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

/// How the simulated population behaves.
#[derive(Debug, Clone)]
pub(crate) struct Behaviour {
    pub(crate) delivered: f64,
    pub(crate) reply_yes: f64,
    /// Chance of a reply other than "1": "2" to "5", a survey's lower answers or a plain no.
    pub(crate) reply_other: f64,
    pub(crate) order_after_yes: f64,
    pub(crate) opt_out: f64,
    /// Chance that anyone in the run's population orders on their own during the campaign.
    pub(crate) organic_order: f64,
    /// Tasks one team completes per simulated day.
    pub(crate) agent_capacity_per_day: u32,
    /// The event an accepted offer turns into: the campaign's goal (`order` of
    /// `campus-bundle` by default).
    pub(crate) goal: spec::EventMatch,
}

impl Behaviour {
    /// The default population, converting on `goal` when the campaign has one.
    pub(crate) fn converting_on(goal: Option<&spec::EventMatch>) -> Behaviour {
        let mut b = Behaviour::default();
        if let Some(g) = goal {
            b.goal = g.clone();
        }
        b
    }

    fn goal_event(&self, to: String, at: Millis) -> Ev {
        Sim::inbound(
            source::EVENT,
            None,
            Some(to),
            &self.goal.kind,
            self.goal.value.clone(),
            at,
        )
    }
}

impl Default for Behaviour {
    fn default() -> Self {
        Behaviour {
            delivered: 0.97,
            reply_yes: 0.12,
            reply_other: 0.05,
            order_after_yes: 0.7,
            opt_out: 0.01,
            organic_order: 0.03,
            agent_capacity_per_day: 1500,
            goal: spec::EventMatch {
                kind: "order".into(),
                value: Some("campus-bundle".into()),
            },
        }
    }
}

enum Ev {
    Inbound(NewInbound),
    Task { id: i64, outcome: &'static str },
}

pub(crate) struct Sim {
    store: Store,
    clock: Clock,
    outbox: PathBuf,
    seed: u64,
    b: Behaviour,
    queue: BTreeMap<(Millis, u64), Ev>,
    seq: u64,
    offset: u64,
    partial: String,
    seen_runs: HashSet<i64>,
    seen_tasks: HashSet<i64>,
    agents_free_at: Millis,
}

fn rng_for(seed: u64, key: &str) -> ChaCha8Rng {
    let d = Sha256::new()
        .chain_update(seed.to_le_bytes())
        .chain_update(key.as_bytes())
        .finalize();
    ChaCha8Rng::from_seed(d.into())
}

impl Sim {
    pub(crate) fn new(store: Store, clock: Clock, outbox: PathBuf, seed: u64, b: Behaviour) -> Sim {
        Sim {
            store,
            clock,
            outbox,
            seed,
            b,
            queue: BTreeMap::new(),
            seq: 0,
            offset: 0,
            partial: String::new(),
            seen_runs: HashSet::new(),
            seen_tasks: HashSet::new(),
            agents_free_at: 0,
        }
    }

    fn push(&mut self, at: Millis, ev: Ev) {
        self.seq += 1;
        self.queue.insert((at, self.seq), ev);
    }

    fn inbound(
        src: &'static str,
        key: Option<String>,
        msisdn: Option<String>,
        kind: &str,
        value: Option<String>,
        at: Millis,
    ) -> Ev {
        Ev::Inbound(NewInbound {
            source: src,
            idem_key: key,
            msisdn,
            kind: kind.into(),
            value,
            payload: "{\"simulated\":true}".into(),
            received_at: at,
        })
    }

    pub(crate) async fn run(mut self, cancel: CancellationToken) -> anyhow::Result<()> {
        while !cancel.is_cancelled() {
            self.step().await?;
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(std::time::Duration::from_millis(40)) => {}
            }
        }
        Ok(())
    }

    async fn step(&mut self) -> anyhow::Result<()> {
        let now = self.clock.now(&self.store).await?;
        self.read_outbox(now)?;
        self.watch_runs(now).await?;
        self.watch_tasks(now).await?;
        let due: Vec<(Millis, u64)> = self
            .queue
            .range(..=(now, u64::MAX))
            .map(|(k, _)| *k)
            .collect();
        let mut batch = Vec::new();
        for k in due {
            match self.queue.remove(&k) {
                Some(Ev::Inbound(i)) => batch.push(i),
                Some(Ev::Task { id, outcome }) => {
                    self.store
                        .complete_task(id, outcome, "sim-agent", k.0)
                        .await?;
                }
                None => {}
            }
        }
        if !batch.is_empty() {
            self.store.insert_inbound(&batch).await?;
        }
        Ok(())
    }

    /// Plays the SMSC and the subscribers for every message the outbox transport wrote.
    fn read_outbox(&mut self, now: Millis) -> anyhow::Result<()> {
        let Ok(mut f) = std::fs::File::open(&self.outbox) else {
            return Ok(());
        };
        f.seek(SeekFrom::Start(self.offset))?;
        let mut buf = String::new();
        let n = f.read_to_string(&mut buf)?;
        self.offset += n as u64;
        self.partial.push_str(&buf);
        let Some(last_nl) = self.partial.rfind('\n') else {
            return Ok(());
        };
        let complete: String = self.partial.drain(..=last_nl).collect();
        for line in complete.lines() {
            let v: serde_json::Value = serde_json::from_str(line)?;
            let key = v["key"].as_str().unwrap_or_default().to_owned();
            let to = v["to"].as_str().unwrap_or_default().to_owned();
            let mut rng = rng_for(self.seed, &key);
            let at = now + rng.random_range(2_000..120_000);
            if rng.random_bool(self.b.delivered) {
                self.push(
                    at,
                    Self::inbound(
                        source::DLR,
                        Some(key.clone()),
                        Some(to.clone()),
                        "1",
                        None,
                        at,
                    ),
                );
            } else {
                self.push(
                    at,
                    Self::inbound(
                        source::DLR,
                        Some(key.clone()),
                        Some(to.clone()),
                        "2",
                        Some("simulated failure".into()),
                        at,
                    ),
                );
                continue;
            }
            let r: f64 = rng.random();
            if r < self.b.opt_out {
                let t = at + rng.random_range(60_000..6 * HOUR);
                self.push(
                    t,
                    Self::inbound(
                        source::MO,
                        None,
                        Some(to.clone()),
                        "reply",
                        Some("TD".into()),
                        t,
                    ),
                );
            } else if r < self.b.opt_out + self.b.reply_yes {
                // Replies cluster in the first day; some come after the window closes.
                let t = at + (rng.random::<f64>().powi(3) * 4.0 * DAY as f64) as i64;
                self.push(
                    t,
                    Self::inbound(
                        source::MO,
                        None,
                        Some(to.clone()),
                        "reply",
                        Some("1".into()),
                        t,
                    ),
                );
                if rng.random_bool(self.b.order_after_yes) {
                    let t2 = t + rng.random_range(10 * 60_000..12 * HOUR);
                    self.push(t2, self.b.goal_event(to, t2));
                }
            } else if r < self.b.opt_out + self.b.reply_yes + self.b.reply_other {
                // Fewer answers the further down the scale: "2" most, "5" least.
                let keyword =
                    ["2", "2", "2", "2", "3", "3", "3", "4", "4", "5"][rng.random_range(0..10)];
                let t = at + (rng.random::<f64>().powi(3) * 4.0 * DAY as f64) as i64;
                self.push(
                    t,
                    Self::inbound(source::MO, None, Some(to), "reply", Some(keyword.into()), t),
                );
            }
        }
        Ok(())
    }

    /// Organic orders: some of everyone in a run's population orders on their own, control
    /// and treatment alike. That is the baseline the control group measures.
    async fn watch_runs(&mut self, now: Millis) -> anyhow::Result<()> {
        for run in self.store.active_runs().await? {
            if self.seen_runs.contains(&run.id) {
                continue;
            }
            let waves = self.store.wave_runs(run.id).await?;
            let Some(first) = waves.first() else { continue };
            if first.state == store::runs::wave_state::PENDING {
                continue;
            }
            self.seen_runs.insert(run.id);
            let pop = self.store.run_population(first.id).await?;
            let msisdns = self
                .msisdns(&pop.iter().map(|p| p.0).collect::<Vec<_>>())
                .await?;
            for (sub, _, _) in pop {
                let mut rng = rng_for(self.seed, &format!("organic-{}-{sub}", run.id));
                if rng.random_bool(self.b.organic_order) {
                    let t = now + rng.random_range(HOUR..8 * DAY);
                    if let Some(m) = msisdns.get(&sub) {
                        self.push(t, self.b.goal_event(m.clone(), t));
                    }
                }
            }
        }
        Ok(())
    }

    async fn msisdns(&self, ids: &[i64]) -> anyhow::Result<std::collections::HashMap<i64, String>> {
        let mut out = std::collections::HashMap::new();
        for chunk in ids.chunks(500) {
            for (id, m) in self.store.msisdns_of(chunk).await? {
                out.insert(id, m);
            }
        }
        Ok(out)
    }

    /// Agents take open tasks in order, at their daily capacity; accepted offers often
    /// turn into orders.
    async fn watch_tasks(&mut self, now: Millis) -> anyhow::Result<()> {
        let tasks = self
            .store
            .tasks(None, store::inbound::TaskState::Open, 5000)
            .await?;
        let per_task = DAY / i64::from(self.b.agent_capacity_per_day.max(1));
        let new: Vec<_> = tasks
            .into_iter()
            .filter(|t| !self.seen_tasks.contains(&t.id))
            .collect();
        let msisdns = self
            .msisdns(&new.iter().map(|t| t.subscriber_id).collect::<Vec<_>>())
            .await?;
        for t in new {
            self.seen_tasks.insert(t.id);
            self.agents_free_at = self.agents_free_at.max(now) + per_task;
            let at = self.agents_free_at;
            let mut rng = rng_for(self.seed, &format!("task-{}", t.id));
            let r: f64 = rng.random();
            let outcome = if r < 0.20 {
                "accepted"
            } else if r < 0.55 {
                "refused"
            } else if r < 0.72 {
                "call_back_later"
            } else {
                "unreachable"
            };
            self.push(at, Ev::Task { id: t.id, outcome });
            if outcome == "accepted"
                && rng.random_bool(0.85)
                && let Some(m) = msisdns.get(&t.subscriber_id)
            {
                let t2 = at + rng.random_range(10 * 60_000..DAY);
                self.push(t2, self.b.goal_event(m.clone(), t2));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::io::Write as _;

    /// The simulated subscribers answer on the whole scale a survey asks for, not only
    /// "1": "2" most among the others, "5" least; and the same seed gives the same answers.
    #[tokio::test]
    async fn replies_cover_the_whole_answer_scale() {
        let dir = tempfile::tempdir().unwrap();
        let store = store::testing::fresh_store(dir.path()).await.unwrap();
        let outbox = dir.path().join("outbox.jsonl");
        let mut f = std::fs::File::create(&outbox).unwrap();
        for i in 0..5_000 {
            writeln!(f, r#"{{"key":"k{i}","to":"13800{i:06}"}}"#).unwrap();
        }
        drop(f);
        let replies = |seed: u64| {
            let mut sim = Sim::new(
                store.clone(),
                engine::clock::ManualClock::new(0).clock(),
                outbox.clone(),
                seed,
                Behaviour::default(),
            );
            sim.read_outbox(0).unwrap();
            let mut n: HashMap<String, u32> = HashMap::new();
            for ev in sim.queue.values() {
                if let Ev::Inbound(i) = ev
                    && i.kind == "reply"
                {
                    *n.entry(i.value.clone().unwrap_or_default()).or_default() += 1;
                }
            }
            n
        };
        let n = replies(7);
        for k in ["1", "2", "3", "4", "5", "TD"] {
            assert!(n.get(k).copied().unwrap_or(0) > 0, "no {k:?} among {n:?}");
        }
        assert!(n["2"] > n["5"] && n["1"] > n["2"], "{n:?}");
        assert_eq!(n, replies(7), "same seed, same answers");
    }
}
