//! Workflows in memory: the current version of each campaign (from `workflows/`) and every
//! version an active run started with (from the store), so a run finishes on its own version
//! after the file changed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use spec::{Bundle, ResponseRule, Workflow};
use store::Store;

use tracing::warn;

use crate::EngineError;

#[derive(Default)]
pub struct Catalog {
    /// campaign → (version id, workflow) of the files loaded last.
    current: Mutex<HashMap<String, (i64, Arc<Workflow>)>>,
    /// version id → workflow.
    versions: Mutex<HashMap<i64, Arc<Workflow>>>,
    /// run id → workflow, for attribution (which needs a synchronous lookup).
    runs: Mutex<HashMap<i64, Arc<Workflow>>>,
}

impl Catalog {
    /// Records the workflows loaded from disk as current versions (new hash → new version).
    pub async fn load(
        &self,
        store: &Store,
        workflows: Vec<Workflow>,
        now: store::Millis,
    ) -> Result<Vec<(String, i64)>, EngineError> {
        let mut out = Vec::new();
        for wf in workflows {
            let id = store
                .upsert_version(&wf.campaign, &wf.hash, &wf.bundle.to_json(), now)
                .await?;
            let wf = Arc::new(wf);
            self.versions
                .lock()
                .expect("catalog lock")
                .insert(id, wf.clone());
            out.push((wf.campaign.clone(), id));
            self.current
                .lock()
                .expect("catalog lock")
                .insert(wf.campaign.clone(), (id, wf));
        }
        Ok(out)
    }

    pub fn current(&self) -> Vec<(i64, Arc<Workflow>)> {
        let mut v: Vec<_> = self
            .current
            .lock()
            .expect("catalog lock")
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.1.campaign.cmp(&b.1.campaign));
        v
    }

    pub fn current_of(&self, campaign: &str) -> Option<(i64, Arc<Workflow>)> {
        self.current
            .lock()
            .expect("catalog lock")
            .get(campaign)
            .cloned()
    }

    /// The workflow of a stored version, compiled from the stored bundle on first use.
    pub async fn version(
        &self,
        store: &Store,
        version_id: i64,
    ) -> Result<Arc<Workflow>, EngineError> {
        if let Some(wf) = self.versions.lock().expect("catalog lock").get(&version_id) {
            return Ok(wf.clone());
        }
        let (campaign, _, source) = store
            .version_source(version_id)
            .await?
            .ok_or(EngineError::UnknownVersion(version_id))?;
        let bundle = Bundle::from_json(&source).map_err(|e| EngineError::BadVersion {
            campaign: campaign.clone(),
            reason: e.to_string(),
        })?;
        let wf = spec::compile(&bundle, None).map_err(|d| EngineError::BadVersion {
            campaign,
            reason: d
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        })?;
        let wf = Arc::new(wf);
        self.versions
            .lock()
            .expect("catalog lock")
            .insert(version_id, wf.clone());
        Ok(wf)
    }

    pub async fn for_run(
        &self,
        store: &Store,
        run_id: i64,
        version_id: i64,
    ) -> Result<Arc<Workflow>, EngineError> {
        let wf = self.version(store, version_id).await?;
        self.runs
            .lock()
            .expect("catalog lock")
            .insert(run_id, wf.clone());
        Ok(wf)
    }

    pub fn forget_run(&self, run_id: i64) {
        self.runs.lock().expect("catalog lock").remove(&run_id);
    }
}

impl Catalog {
    /// Response rules for attribution: active runs from memory, and any other run (one that
    /// finished before a response received in its window was attributed) from its stored
    /// version, compiled on first use and then cached with the other versions.
    pub fn rules<'a>(&'a self, store: &'a Store) -> StoredRules<'a> {
        StoredRules {
            catalog: self,
            store,
        }
    }
}

/// [`tracking::Rules`] over the catalog and the store: see [`Catalog::rules`].
pub struct StoredRules<'a> {
    catalog: &'a Catalog,
    store: &'a Store,
}

impl tracking::Rules for StoredRules<'_> {
    async fn rules(
        &self,
        run_id: i64,
        wave: &str,
    ) -> Result<Option<Vec<ResponseRule>>, tracking::TrackingError> {
        let cached = self
            .catalog
            .runs
            .lock()
            .expect("catalog lock")
            .get(&run_id)
            .cloned();
        let wf = match cached {
            Some(wf) => wf,
            None => {
                let Some(run) = self.store.run(run_id).await? else {
                    return Ok(None);
                };
                match self.catalog.version(self.store, run.version_id).await {
                    Ok(wf) => wf,
                    Err(EngineError::Store(e)) => return Err(e.into()),
                    // Retrying cannot make a stored bundle compile; the response is kept
                    // and the caller logs that it does not count.
                    Err(e) => {
                        warn!(run_id, error = %e, "Cannot load the workflow of a run for attribution.");
                        return Ok(None);
                    }
                }
            }
        };
        Ok(wf.wave(wave).map(|w| w.responses.clone()))
    }
}
