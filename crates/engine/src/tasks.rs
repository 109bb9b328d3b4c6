//! The service-staff channel's step, run from [`Engine::tick`]: open tasks past their SLA
//! are escalated once (`store::tasks`), then each staff member with news gets one digest
//! mail per interval ([`crate::EngineConfig::task_digest_every`]) listing the new tasks of
//! their team and the overdue tasks escalated to them. The mail goes through the staff mail
//! queue (queued in the transaction that marks the tasks told, sent by the mail loop), with
//! the same dedup-key rule and the same addressing and number masking as monitor digests
//! (`digest.rs`), so a crash or a second replica neither repeats nor drops a task.

use std::fmt::Write as _;

use spec::monitor::Staff;
use store::Millis;
use store::mail::{MailKind, NewMail};
use store::tasks::TaskNews;
use tracing::{info, warn};

use crate::digest::{LISTED, PAGE_END, addressee, esc, masked_number, page_start};
use crate::{Engine, EngineError};

/// The task digest's dedup key: one per staff member per interval of `every_ms`.
pub fn task_digest_key(person: &str, now: Millis, every_ms: Millis) -> String {
    store::mail::digest_dedup_key("tasks", person, now, every_ms)
}

/// What one task step did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TaskStepStats {
    /// Tasks escalated (each once, whichever replica).
    pub escalated: u64,
    /// Digest mails queued.
    pub digests: u64,
}

impl Engine {
    /// Escalates overdue tasks and queues the staff's task digests at `now`. Public so
    /// tests drive it step by step; [`Engine::tick`] runs it.
    pub async fn task_step(&self, now: Millis) -> Result<TaskStepStats, EngineError> {
        let mut stats = TaskStepStats {
            escalated: self.store.escalate_overdue_tasks(now).await?,
            ..TaskStepStats::default()
        };
        if stats.escalated > 0 {
            info!(
                tasks = stats.escalated,
                message = "Overdue tasks escalated."
            );
        }
        let ids: Vec<&str> = self.staff.staff.iter().map(|s| s.id.as_str()).collect();
        let every = spec::duration_millis(self.cfg.task_digest_every);
        for (id, pending) in self.store.pending_task_news(&ids).await? {
            let Some(person) = self.staff.get(&id) else {
                continue;
            };
            let key = task_digest_key(&person.id, now, every);
            // Told in this interval already: the news waits for the next one.
            if self.store.mail_by_key(&key).await?.is_some() {
                continue;
            }
            let tx = self.store.begin_task_digest(now).await?;
            let new_ids: Vec<i64> = pending.new.iter().map(|t| t.id).collect();
            let esc_ids: Vec<i64> = pending.escalated.iter().map(|t| t.id).collect();
            let (new_marked, esc_marked) = tx.mark(&new_ids, &esc_ids).await?;
            // Only what this transaction marked: another replica told the rest meanwhile.
            let new: Vec<&TaskNews> = pending
                .new
                .iter()
                .filter(|t| new_marked.binary_search(&t.id).is_ok())
                .collect();
            let escalated: Vec<&TaskNews> = pending
                .escalated
                .iter()
                .filter(|t| esc_marked.binary_search(&t.id).is_ok())
                .collect();
            if new.is_empty() && escalated.is_empty() {
                continue;
            }
            let mail = task_digest_mail(person, &new, &escalated, key, now);
            if tx.digest(&mail).await? {
                tx.commit().await?;
                stats.digests += 1;
            } else {
                warn!(staff = %person.id, message = "Task digest already queued this interval; the tasks wait for the next.");
            }
        }
        if stats.digests > 0 {
            info!(mails = stats.digests, message = "Task digests queued.");
            self.mail_wake.notify_one();
        }
        Ok(stats)
    }
}

/// A time as the reader keeps it: in their time zone, named (`2026-12-01 18:30 CST`).
fn when(ms: Millis, tz: chrono_tz::Tz) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string())
        .unwrap_or_else(|| ms.to_string())
}

fn line(t: &TaskNews, show_team: bool, tz: chrono_tz::Tz) -> String {
    let mut s = format!("task {}  {}  {}/{}", t.id, t.kind, t.campaign, t.wave);
    if show_team {
        let _ = write!(s, "  team {}", t.team);
    }
    let _ = write!(s, "  {}", masked_number(&t.msisdn));
    if let Some(c) = &t.external_id {
        let _ = write!(s, " (customer {c})");
    }
    if let Some(d) = t.due_at {
        let _ = write!(s, "  due {}", when(d, tz));
    }
    if show_team && let Some(e) = t.escalated_at {
        let _ = write!(s, ", escalated {}", when(e, tz));
    }
    s
}

fn section(text: &mut String, tasks: &[&TaskNews], show_team: bool, tz: chrono_tz::Tz) {
    for t in tasks.iter().take(LISTED) {
        let _ = writeln!(text, "{}", line(t, show_team, tz));
    }
    if tasks.len() > LISTED {
        let _ = writeln!(
            text,
            "… and {} more on the worklist (GET /tasks)",
            tasks.len() - LISTED
        );
    }
}

/// A section's tasks as an HTML table, the same cells as [`line`]; every value from data
/// escaped.
fn html_section(html: &mut String, tasks: &[&TaskNews], show_team: bool, tz: chrono_tz::Tz) {
    html.push_str("<table>\n<tr><th>task</th><th>kind</th><th>campaign / wave</th>");
    if show_team {
        html.push_str("<th>team</th>");
    }
    html.push_str("<th>subscriber</th><th>customer</th><th>due</th>");
    if show_team {
        html.push_str("<th>escalated</th>");
    }
    html.push_str("</tr>\n");
    for t in tasks.iter().take(LISTED) {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}/{}</td>",
            t.id,
            esc(&t.kind),
            esc(&t.campaign),
            esc(&t.wave)
        );
        if show_team {
            let _ = write!(html, "<td>{}</td>", esc(&t.team));
        }
        let _ = write!(
            html,
            "<td>{}</td><td>{}</td><td>{}</td>",
            esc(&masked_number(&t.msisdn)),
            esc(t.external_id.as_deref().unwrap_or("")),
            esc(&t.due_at.map(|d| when(d, tz)).unwrap_or_default())
        );
        if show_team {
            let _ = write!(
                html,
                "<td>{}</td>",
                esc(&t.escalated_at.map(|e| when(e, tz)).unwrap_or_default())
            );
        }
        html.push_str("</tr>\n");
    }
    html.push_str("</table>\n");
    if tasks.len() > LISTED {
        let _ = writeln!(
            html,
            "<p>&hellip; and {} more on the worklist (GET /tasks)</p>",
            tasks.len() - LISTED
        );
    }
}

fn task_digest_mail(
    person: &Staff,
    new: &[&TaskNews],
    escalated: &[&TaskNews],
    dedup_key: String,
    now: Millis,
) -> NewMail {
    let who = addressee(person);
    let subject = format!(
        "[campaignd] tasks: {} new and {} overdue for {who}",
        new.len(),
        escalated.len()
    );
    let mut text = String::new();
    let mut html = page_start(&subject);
    let _ = writeln!(text, "{who},\n");
    let _ = writeln!(html, "<p>{},</p>", esc(who));
    if !new.is_empty() {
        let _ = writeln!(
            text,
            "New tasks on your worklist (GET /tasks?team={}); record each outcome with \
             POST /tasks/{{id}}/outcome.\n",
            person.id
        );
        let _ = writeln!(
            html,
            "<h2>New tasks</h2>\n<p>On your worklist (GET /tasks?team={}); record each \
             outcome with POST /tasks/{{id}}/outcome.</p>",
            esc(&person.id)
        );
        section(&mut text, new, false, person.timezone);
        html_section(&mut html, new, false, person.timezone);
        let _ = writeln!(text);
    }
    if !escalated.is_empty() {
        let _ = writeln!(
            text,
            "Overdue tasks escalated to you: their team has not recorded an outcome by the \
             due time.\n"
        );
        html.push_str(
            "<h2>Overdue tasks escalated to you</h2>\n<p>Their team has not recorded an \
             outcome by the due time.</p>\n",
        );
        section(&mut text, escalated, true, person.timezone);
        html_section(&mut html, escalated, true, person.timezone);
    }
    html.push_str(PAGE_END);
    NewMail {
        kind: MailKind::Digest,
        dedup_key,
        recipients: vec![person.email.clone()],
        subject,
        text,
        html: Some(html),
        due_at: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: i64, external_id: &str) -> TaskNews {
        TaskNews {
            id,
            kind: "service".into(),
            team: "desk<&>".into(),
            escalate_to: None,
            campaign: "vip-club".into(),
            wave: "invitation".into(),
            msisdn: "13812340000".into(),
            external_id: Some(external_id.into()),
            created_at: 0,
            due_at: Some(1_780_000_000_000),
            escalated_at: Some(1_780_000_000_000),
        }
    }

    // `html_section`, `page_start`, the digest's `esc`: a value from data is text in the
    // HTML part, never markup.
    #[test]
    fn the_digests_html_part_escapes_every_value_and_loads_nothing() {
        let person = Staff {
            id: "desk".into(),
            name: "Desk <b>\"A&B\"</b>".into(),
            email: "desk@example.com".into(),
            owns: Default::default(),
            timezone: chrono_tz::Asia::Shanghai,
        };
        let (a, b) = (
            task(7, "<img src=x onerror=alert(1)>"),
            task(8, "O'Brien & \"Co\""),
        );
        let mail = task_digest_mail(&person, &[&a], &[&b], "k".into(), 0);
        let html = mail.html.expect("an HTML part");
        // The plain part is unchanged: the values as they are.
        assert!(
            mail.text
                .contains("(customer <img src=x onerror=alert(1)>)")
        );
        for want in [
            "<title>[campaignd] tasks: 1 new and 1 overdue for Desk &lt;b&gt;&quot;A&amp;B&quot;&lt;/b&gt;</title>",
            "<p>Desk &lt;b&gt;&quot;A&amp;B&quot;&lt;/b&gt;,</p>",
            "<tr><td>7</td><td>service</td><td>vip-club/invitation</td><td>138****0000</td><td>&lt;img src=x onerror=alert(1)&gt;</td><td>2026-05-29 04:26 CST</td></tr>",
            "<tr><td>8</td><td>service</td><td>vip-club/invitation</td><td>desk&lt;&amp;&gt;</td><td>138****0000</td><td>O&#39;Brien &amp; &quot;Co&quot;</td><td>2026-05-29 04:26 CST</td><td>2026-05-29 04:26 CST</td></tr>",
        ] {
            assert!(html.contains(want), "{want} not in {html}");
        }
        for never in ["<img", "<b>", "13812340000", "http", "src=\"", "url("] {
            assert!(!html.contains(never), "{never} in {html}");
        }
    }
}
