//! The step functions. Each is idempotent and named as a tester would name it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, ConfigError, Layer, LdapTls};
use crate::state::State;

use super::{Step, StepError, preflight};

pub(super) struct StepContext<'a> {
    pub config_path: &'a Path,
    pub state: &'a State,
    /// The config in force; the config step replaces it when a new one passes validation.
    pub current: Option<Arc<Config>>,
    pub actor: &'a str,
    /// A reload keeps the config in force when the new one is invalid.
    pub reload: bool,
    /// The config revision the config step stored or found.
    pub revision: Option<i64>,
}

pub(super) enum StepOutcome {
    Done(String),
    /// A reload brought an invalid config; the one in force stays.
    ReloadRefused(StepError),
}

pub(super) async fn run(step: Step, ctx: &mut StepContext<'_>) -> Result<StepOutcome, StepError> {
    match step {
        Step::Config => config(ctx),
        Step::Preflight => preflight::run(ctx).await.map(StepOutcome::Done),
    }
}

/// Loads the files and the API overlay, refuses changes to locked keys, and stores a new
/// revision when the effective config changed.
fn config(ctx: &mut StepContext<'_>) -> Result<StepOutcome, StepError> {
    let state_error = |error: crate::state::StateError| StepError {
        message: error.to_string(),
        key: None,
        retry_after: Some(Duration::from_secs(30)),
    };
    let latest = ctx.state.latest_config_revision().map_err(state_error)?;
    let locked = ctx.state.locked_keys().map_err(state_error)?;
    let loaded = load(ctx.config_path, latest.as_ref(), &locked);
    let config = match loaded {
        Ok(config) => config,
        Err(error) => {
            let error = StepError {
                key: error.key().map(str::to_string),
                message: error.to_string(),
                retry_after: None,
            };
            return match (&ctx.current, ctx.reload) {
                (Some(_), true) => Ok(StepOutcome::ReloadRefused(error)),
                _ => Err(error),
            };
        }
    };
    if config.freeipa.tls == LdapTls::Plain {
        tracing::warn!(
            "freeipa.tls = \"plain\": directory passwords cross the network unencrypted"
        );
    }
    let effective = serde_json::to_value(&config).map_err(|error| StepError {
        message: format!("cannot encode the config: {error}"),
        key: None,
        retry_after: None,
    })?;
    let revision = match latest {
        Some(latest) if latest.effective == effective => latest.id,
        latest => {
            let overlay = latest
                .map(|l| l.overlay)
                .unwrap_or_else(|| serde_json::json!({}));
            let source = if ctx.reload {
                "files (reload)"
            } else {
                "files"
            };
            ctx.state
                .save_config_revision(ctx.actor, source, &overlay, &effective)
                .map_err(state_error)?
        }
    };
    ctx.revision = Some(revision);
    ctx.current = Some(Arc::new(config));
    Ok(StepOutcome::Done(format!("revision {revision} in force")))
}

/// The files, then the keys set through the admin API in the latest revision.
pub(crate) fn load(
    config_path: &Path,
    latest: Option<&crate::state::ConfigRevision>,
    locked: &std::collections::BTreeMap<String, crate::config::LockedValue>,
) -> Result<Config, ConfigError> {
    let mut layers = crate::config::load_layers(config_path)?;
    if let Some(revision) = latest
        && let Ok(table) = serde_json::from_value::<toml::Table>(revision.overlay.clone())
        && !table.is_empty()
    {
        {
            {
                layers.push(Layer::from_table(
                    &format!("admin API (revision {})", revision.id),
                    table,
                )?);
            }
        }
    }
    Config::from_layers(&layers, locked)
}
