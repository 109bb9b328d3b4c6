//! The call-centre step, run from [`Engine::tick`]: open call tasks past their deadline
//! expire (their contacts count as unreached), then each paced team
//! (`workflows/teams.yaml`) gets as many waiting tasks released to its queue as its pacing
//! and its day's capacity leave room for, within its working hours. The counting is the
//! store's (`store::calls`), over the tasks' own release stamps, so replicas share it.

use chrono::TimeZone;
use store::Millis;
use store::calls::Pace;
use tracing::info;

use crate::{Engine, EngineError};

/// What one call step did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CallStepStats {
    /// Tasks expired unworked at their deadline.
    pub expired: u64,
    /// Tasks released to their teams' queues.
    pub released: u64,
}

/// `team`'s local date (`YYYY-MM-DD`) at `now`, and whether it is within its hours.
pub fn team_clock(team: &spec::teams::Team, now: Millis) -> (String, bool) {
    let local = team
        .timezone
        .timestamp_millis_opt(now)
        .single()
        .unwrap_or_else(|| team.timezone.timestamp_millis_opt(0).unwrap());
    (
        local.date_naive().format("%Y-%m-%d").to_string(),
        team.hours.contains(local.time()),
    )
}

impl Engine {
    /// Expires call tasks past their deadline and releases paced teams' tasks at `now`.
    /// Public so tests drive it step by step; [`Engine::tick`] runs it.
    pub async fn call_step(&self, now: Millis) -> Result<CallStepStats, EngineError> {
        let mut stats = CallStepStats {
            expired: self.store.expire_tasks(now).await?,
            ..CallStepStats::default()
        };
        if stats.expired > 0 {
            info!(
                tasks = stats.expired,
                message = "Call tasks expired unworked at their deadline; their contacts count as unreached."
            );
        }
        let Some(dir) = &self.teams else {
            return Ok(stats);
        };
        // Whole minutes since this engine's previous step, at most the catch-up bound: a
        // step that comes late (a coarse tick, a demo's fast clock) may release what the
        // steady flow would have released in the minutes it missed, no more.
        let previous = self
            .last_call_step
            .lock()
            .map(|mut l| l.replace(now))
            .unwrap_or(None);
        let catch_up_minutes = previous.map_or(0, |p| {
            ((now - p) / 60_000).clamp(0, i64::from(store::calls::MAX_CATCH_UP_MINUTES)) as u32
        });
        for team in &dir.teams {
            let (day, working) = team_clock(team, now);
            if !working {
                continue;
            }
            let r = self
                .store
                .release_tasks(
                    &Pace {
                        team: &team.id,
                        day: &day,
                        capacity_per_day: team.capacity_per_day,
                        pacing_per_hour: team.pacing_per_hour,
                        value: &dir.value,
                        catch_up_minutes,
                    },
                    now,
                )
                .await?;
            if r.released > 0 {
                info!(
                    team = %team.id,
                    released = r.released,
                    today = r.today,
                    last_hour = r.last_hour,
                    message = "Call tasks released to the team's queue."
                );
            }
            stats.released += r.released;
        }
        Ok(stats)
    }
}
