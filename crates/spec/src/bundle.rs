//! A workflow version: the workflow file plus everything it reads (segment definitions,
//! templates), captured together so a run can be re-compiled later exactly as it started,
//! whatever happened to the files since.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::diag::Diagnostic;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bundle {
    /// The workflow file's path as given, for messages.
    pub path: String,
    pub workflow: String,
    /// `segments.yaml` beside the workflow, when present.
    pub segments: Option<String>,
    /// Template path (as written in the workflow) → text.
    pub templates: BTreeMap<String, String>,
    /// `attributes.yaml` beside the workflow, when present; the shipped catalogue otherwise.
    /// Left out of the JSON when absent, so versions stored before the catalogue existed
    /// keep their hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<String>,
    /// Monitor id → the text of `monitors/<id>.yaml`, for a workflow whose audience is a
    /// monitor's alerts (its levels are checked and ranked from it). Left out of the JSON
    /// when empty, so other versions keep their hash.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub monitors: BTreeMap<String, String>,
    /// Calendar name → the text of `calendars/<name>/periods.yaml`, for a schedule whose
    /// windows name its periods. Left out of the JSON when empty, so other versions keep
    /// their hash.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub periods: BTreeMap<String, String>,
    /// The text of `staff.yaml` beside the workflow, for a workflow with a `service` wave,
    /// a `service_team` or an `escalate_to` (their staff ids are checked against it). Left out of the JSON
    /// when absent, so other versions keep their hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staff: Option<String>,
}

impl Bundle {
    /// Reads a workflow file and what it refers to.
    pub fn read(path: &Path) -> Result<Bundle, Vec<Diagnostic>> {
        let shown = path.display().to_string();
        let workflow = std::fs::read_to_string(path).map_err(|e| {
            vec![Diagnostic {
                file: shown.clone(),
                line: 0,
                column: 0,
                message: format!("cannot read: {e}"),
            }]
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let attributes = crate::catalogue::read_catalogue_source(dir)?.map(|(_, text)| text);
        let seg_path = dir.join("segments.yaml");
        let segments = if seg_path.exists() {
            Some(std::fs::read_to_string(&seg_path).map_err(|e| {
                vec![Diagnostic {
                    file: seg_path.display().to_string(),
                    line: 0,
                    column: 0,
                    message: format!("cannot read: {e}"),
                }]
            })?)
        } else {
            None
        };
        // Template paths come from the file itself; a file that does not parse is reported
        // by `compile`, with its location.
        let mut templates = BTreeMap::new();
        let mut escaping = Vec::new();
        let mut monitors = BTreeMap::new();
        let mut periods = BTreeMap::new();
        let mut staff = None;
        if let Ok(file) = serde_saphyr::from_str::<crate::model::WorkflowFile>(&workflow) {
            // A monitor id is checked to be a plain name before it becomes a path; `compile`
            // reports a bad or missing one with its location.
            if let Some(a) = &file.audience.alerts
                && crate::rules::is_name(&a.monitor.value)
                && let Ok(text) = std::fs::read_to_string(
                    dir.join(crate::monitor::MONITORS_DIR)
                        .join(format!("{}.yaml", a.monitor.value)),
                )
            {
                monitors.insert(a.monitor.value.clone(), text);
            }
            // Like monitors: only a plain calendar name becomes a path, and `compile` reports
            // an unknown or unreadable one with its location.
            let windows = file.schedule.as_ref().and_then(|s| s.windows.as_ref());
            for w in windows.map(|w| w.value.as_slice()).unwrap_or_default() {
                let named = w.period.as_ref().or(w.before.as_ref());
                if let Some((cal, _)) = named.and_then(|n| n.value.split_once('/'))
                    && crate::rules::is_name(cal)
                    && !periods.contains_key(cal)
                    && let Ok(text) =
                        std::fs::read_to_string(crate::periods::periods_path(dir, cal))
                {
                    periods.insert(cal.to_owned(), text);
                }
            }
            // Staff ids are checked only where they name who is told: a service wave's team,
            // a preferred wave's service_team and an escalation. `compile` reports a missing
            // directory with its location.
            let names_staff = file.waves.value.iter().any(|w| {
                w.channel.value == "service" || w.service_team.is_some() || w.escalate_to.is_some()
            });
            if names_staff {
                staff = std::fs::read_to_string(dir.join(crate::monitor::STAFF_FILE)).ok();
            }
            for t in file.waves.value.iter().flat_map(|w| w.template_paths()) {
                let rel = &t.value;
                match inside(dir, rel) {
                    // `compile` reports the path with its location; it is never read.
                    Inside::Lexically(false) => {}
                    Inside::Resolved(false) => escaping.push(Diagnostic {
                        file: shown.clone(),
                        line: t.referenced.line(),
                        column: t.referenced.column(),
                        message: format!(
                            "template path `{}` leads outside the workflow's folder (through a symbolic link); it was not read",
                            rel.escape_debug()
                        ),
                    }),
                    Inside::Lexically(true) | Inside::Resolved(true) => {
                        if let Ok(text) = std::fs::read_to_string(dir.join(rel)) {
                            templates.insert(rel.clone(), text);
                        }
                    }
                }
            }
        }
        // A version is the text of what it read: a file outside the folder (the daemon's
        // environment, say) must never get into one, so this is an error on its own.
        if !escaping.is_empty() {
            return Err(escaping);
        }
        Ok(Bundle {
            path: shown,
            workflow,
            segments,
            templates,
            attributes,
            monitors,
            periods,
            staff,
        })
    }

    /// Hex SHA-256 of the bundle's canonical JSON: equal inputs, equal version.
    pub fn hash(&self) -> String {
        hex::encode(Sha256::digest(self.to_json().as_bytes()))
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a struct of strings always serializes")
    }

    pub fn from_json(s: &str) -> Result<Bundle, serde_json::Error> {
        serde_json::from_str(s)
    }
}

enum Inside {
    /// The path as written is absolute or has `..`: refused without touching the disk.
    Lexically(bool),
    /// Whether the file, all links resolved, is in the folder (a missing file counts as in:
    /// it is reported as not found).
    Resolved(bool),
}

fn inside(dir: &Path, rel: &str) -> Inside {
    use std::path::Component;
    let p = Path::new(rel);
    if rel.trim().is_empty()
        || rel.contains(':')
        || rel.starts_with('\\')
        || p.components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Inside::Lexically(false);
    }
    let joined = dir.join(p);
    let (Ok(base), Ok(target)) = (
        std::fs::canonicalize(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        }),
        std::fs::canonicalize(&joined),
    ) else {
        return Inside::Resolved(!joined.exists() && std::fs::symlink_metadata(&joined).is_err());
    };
    Inside::Resolved(target.starts_with(&base))
}
