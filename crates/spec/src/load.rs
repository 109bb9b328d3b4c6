//! Loading workflows from disk.

use std::path::{Path, PathBuf};

use crate::bundle::Bundle;
use crate::compile::compile;
use crate::diag::Diagnostic;
use crate::workflow::Workflow;

/// Calendar names: the folders of `<workflows>/calendars/`.
pub fn calendar_names(workflows_dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(workflows_dir.join("calendars"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().is_dir())
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Loads and checks one workflow file.
pub fn load_file(path: &Path) -> Result<Workflow, Vec<Diagnostic>> {
    let bundle = Bundle::read(path)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let compiled = compile(&bundle, Some(&calendar_names(dir)));
    // With a teams file, an outbound_call wave's team must be one of its teams. A teams
    // file with errors of its own checks nothing here: `campaignd validate` reports those.
    let Ok(Some(teams)) = crate::teams::load_teams(dir) else {
        return compiled;
    };
    let undeclared =
        crate::teams::undeclared_call_teams(&bundle.path, &bundle.workflow, &teams.ids());
    match compiled {
        Ok(wf) if undeclared.is_empty() => Ok(wf),
        Ok(_) => Err(undeclared),
        Err(mut d) => {
            d.extend(undeclared);
            Err(d)
        }
    }
}

/// The workflow files of a directory: `*.yaml` / `*.yml` at its top level, except
/// `segments.yaml`, the attribute catalogue, the staff directory and the call-centre teams
/// (monitors live in `monitors/`).
pub(crate) fn workflow_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str());
            name != Some("segments.yaml")
                && name != Some(crate::catalogue::FILE_NAME)
                && name != Some(crate::monitor::STAFF_FILE)
                && name != Some(crate::teams::TEAMS_FILE)
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Loads every workflow of a directory (or the one file given); returns the good ones and
/// every problem, including campaign ids used twice.
pub fn load_dir(path: &Path) -> (Vec<Workflow>, Vec<Diagnostic>) {
    let files = if path.is_dir() {
        match workflow_files(path) {
            Ok(f) => f,
            Err(e) => {
                return (
                    Vec::new(),
                    vec![Diagnostic {
                        file: path.display().to_string(),
                        line: 0,
                        column: 0,
                        message: format!("cannot list: {e}"),
                    }],
                );
            }
        }
    } else {
        vec![path.to_path_buf()]
    };
    let mut ok: Vec<Workflow> = Vec::new();
    let mut diags = Vec::new();
    for f in files {
        match load_file(&f) {
            Ok(wf) => {
                if let Some(other) = ok.iter().find(|o| o.campaign == wf.campaign) {
                    diags.push(Diagnostic {
                        file: f.display().to_string(),
                        line: 0,
                        column: 0,
                        message: format!(
                            "campaign id `{}` is already used by {}",
                            wf.campaign, other.bundle.path
                        ),
                    });
                } else {
                    ok.push(wf);
                }
            }
            Err(d) => diags.extend(d),
        }
    }
    (ok, diags)
}

/// The JSON Schema of the workflow file format.
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(crate::model::WorkflowFile);
    serde_json::to_string_pretty(&schema).expect("a JSON value always serializes")
}
