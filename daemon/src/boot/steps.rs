//! The step functions. Each is idempotent and named as a tester would name it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, ConfigError, Layer, LdapTls};
use crate::state::{State, StateCall};

use super::{Step, StepError, credentials, preflight};

pub(super) struct StepContext<'a> {
    pub config_path: &'a Path,
    pub directory: &'a crate::directory::DirectorySync,
    pub state: &'a Arc<State>,
    /// The config in force; the config step replaces it when a new one passes validation.
    pub current: Option<Arc<Config>>,
    pub actor: &'a str,
    /// A reload keeps the config in force when the new one is invalid.
    pub reload: bool,
    /// The config revision the config step stored or found.
    pub revision: Option<i64>,
    pub k3s: &'a crate::k3s::K3sRuntime,
    pub components: &'a crate::components::Tracker,
    pub heartbeats: &'a crate::systemd::Heartbeats,
    pub progress: Progress,
}

/// Lets a long step say where it is, in `/v1/status` and `STATUS=`.
pub(super) struct Progress {
    pub status: tokio::sync::watch::Sender<super::BootStatus>,
    pub notifier: crate::systemd::Notifier,
    pub index: usize,
}

impl Progress {
    pub fn report(&self, message: &str, fraction: f64) {
        self.status.send_modify(|status| {
            if let Some(step) = status.steps.get_mut(self.index) {
                step.message = message.to_string();
                step.progress = fraction;
            }
        });
        self.notifier.status(&self.status.borrow().summary());
    }
}

pub(super) enum StepOutcome {
    Done(String),
    /// Not part of this machine's boot, by config.
    Skipped(String),
    /// A reload brought an invalid config; the one in force stays.
    ReloadRefused(StepError),
}

pub(super) async fn run(step: Step, ctx: &mut StepContext<'_>) -> Result<StepOutcome, StepError> {
    match step {
        Step::Config => config(ctx).await,
        Step::Preflight => preflight::run(config_in_force(ctx)?.as_ref())
            .await
            .map(StepOutcome::Done),
        Step::DirectorySync => directory_sync(ctx).await.map(StepOutcome::Done),
        Step::Storage => storage(ctx).await,
        Step::K3s => k3s(ctx).await,
        Step::KubernetesApi => kubernetes_api(ctx).await,
        Step::Components => components(ctx).await,
    }
}

/// Renders, validates and applies the platform. Nothing is applied when a chart's values
/// fail its schema.
async fn components(ctx: &mut StepContext<'_>) -> Result<StepOutcome, StepError> {
    use crate::components::{self, ComponentsError};
    let config = config_in_force(ctx)?;
    if let Some(skipped) = k3s_skipped(&config) {
        for name in components::RELEASES {
            ctx.components
                .set(name, None, "skipped", "k3s.mode = \"off\"".into());
        }
        return Ok(skipped);
    }
    let Some(kube) = ctx.k3s.kube() else {
        return Err(StepError {
            message: "no Kubernetes client yet: the kubernetes-api step has not connected".into(),
            key: None,
            retry_after: Some(Duration::from_secs(5)),
        });
    };
    let fail = |error: ComponentsError| StepError {
        retry_after: error.retry_after(),
        key: match &error {
            ComponentsError::Read { key, .. } => Some((*key).to_string()),
            _ => None,
        },
        message: error.to_string(),
    };
    let secrets = ctx
        .state
        .call(components::secrets)
        .await
        .map_err(ComponentsError::from)
        .map_err(fail)?;
    let directory = components::directory_material(&config).map_err(fail)?;
    ctx.progress
        .report("rendering and validating the charts", 0.2);
    let local_tls = match components::ingress::tls_mode(&config) {
        components::ingress::TlsMode::LocalCa => {
            // Key generation and SQLite: off the async threads.
            let (state, domain) = (ctx.state.clone(), config.domain());
            let tls = tokio::task::spawn_blocking(move || {
                components::ingress::local_tls(&state, &domain).map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|e| Err(e.to_string()))
            .map_err(|message| StepError {
                message,
                key: None,
                retry_after: Some(Duration::from_secs(30)),
            })?;
            Some(tls)
        }
        components::ingress::TlsMode::Acme => None,
    };
    for (name, version) in components::CHARTS {
        ctx.components.set(
            name,
            Some(format!("{name} {version}")),
            "rendered",
            String::new(),
        );
    }
    if !ctx.components.watching() {
        ctx.components
            .watch_jobs(&kube, components::NAMESPACE, ctx.heartbeats);
    }
    let outcome = match components::plan(&config, &secrets, &directory, local_tls) {
        Ok(plan) => {
            ctx.progress.report("applying", 0.5);
            // The level-triggered reconcile keeps these in place from now on
            // (components/drift.rs); handed over before the apply, so it never re-applies an
            // older set.
            ctx.components
                .set_desired(&kube, components::NAMESPACE, plan.objects().to_vec());
            components::apply(&kube, &plan).await
        }
        Err(error) => Err(error),
    };
    match outcome {
        Ok(report) => {
            for (name, generation) in &report.charts {
                ctx.components
                    .set(name, None, "applied", format!("generation {generation}"));
                ctx.components.set_generation(name, *generation);
            }
            match components::expand_homes(&kube, components::NAMESPACE, config.notebook.storage_gb)
                .await
            {
                Ok(expanded) => {
                    for e in expanded {
                        record(ctx, "storage.expanded", serde_json::json!(e)).await;
                    }
                }
                Err(error) => return Err(fail(error)),
            }
            record(ctx, "components.applied", serde_json::json!({ "objects": report.objects, "charts": report.charts, "revision": ctx.revision })).await;
            Ok(StepOutcome::Done(format!(
                "{} objects applied; {}",
                report.objects,
                report
                    .charts
                    .iter()
                    .map(|(n, g)| format!("{n} generation {g}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
        Err(error) => {
            let message = error.to_string();
            let at_fault = match &error {
                ComponentsError::Schema(e) => vec![e.chart],
                _ => components::RELEASES.to_vec(),
            };
            for name in at_fault {
                ctx.components.set(name, None, "failed", message.clone());
            }
            record(
                ctx,
                "components.failed",
                serde_json::json!({ "error": message }),
            )
            .await;
            Err(fail(error))
        }
    }
}

pub(super) fn config_in_force(ctx: &StepContext<'_>) -> Result<Arc<Config>, StepError> {
    ctx.current.clone().ok_or_else(|| StepError {
        message: "no valid config is in force".into(),
        key: None,
        retry_after: None,
    })
}

fn k3s_skipped(config: &Config) -> Option<StepOutcome> {
    (config.k3s.mode == crate::config::K3sMode::Off).then(|| {
        StepOutcome::Skipped(
            "k3s.mode = \"off\": this machine runs no Kubernetes (dev runs of the config, API and directory layers)".into(),
        )
    })
}

fn k3s_error(error: crate::k3s::K3sError) -> StepError {
    StepError {
        retry_after: error.retry_after(),
        key: error.key().map(str::to_string),
        message: error.to_string(),
    }
}

/// Starts or adopts k3s and waits until it is ready.
async fn k3s(ctx: &mut StepContext<'_>) -> Result<StepOutcome, StepError> {
    let config = config_in_force(ctx)?;
    if let Some(skipped) = k3s_skipped(&config) {
        return Ok(skipped);
    }
    let progress = &ctx.progress;
    let report = |message: &str, fraction: f64| progress.report(message, fraction);
    ctx.k3s
        .ensure_running(&config, ctx.reload, &report)
        .await
        .map(StepOutcome::Done)
        .map_err(k3s_error)
}

/// The homes' volume group on the data disk, for the node's provisioner. Only where pangeod
/// runs k3s itself: `external` Kubernetes has its own storage, `off` has none.
async fn storage(ctx: &mut StepContext<'_>) -> Result<StepOutcome, StepError> {
    let config = config_in_force(ctx)?;
    if let Some(skipped) = k3s_skipped(&config) {
        return Ok(skipped);
    }
    if config.k3s.mode == crate::config::K3sMode::External {
        return Ok(StepOutcome::Skipped(
            "k3s.mode = \"external\": the cluster's storage is managed elsewhere".into(),
        ));
    }
    ctx.progress
        .report("finding or making the homes' volume group", 0.1);
    let group = crate::storage::ensure_volume_group(&config)
        .await
        .map_err(|error| StepError {
            key: match &error {
                crate::storage::StorageError::NotABlockDevice { .. } => {
                    Some("storage.device".into())
                }
                _ => None,
            },
            retry_after: match &error {
                crate::storage::StorageError::MissingTool { .. } => None,
                _ => Some(Duration::from_secs(30)),
            },
            message: error.to_string(),
        })?;
    if group.created {
        record(ctx, "storage.created", serde_json::json!({ "volume_group": group.name, "physical_volume": group.physical_volume, "size_bytes": group.size_bytes })).await;
    }
    Ok(StepOutcome::Done(format!(
        "volume group {} on {}: {} GiB, {} GiB free{}",
        group.name,
        group.physical_volume,
        group.size_bytes >> 30,
        group.free_bytes >> 30,
        if group.created { " (created)" } else { "" }
    )))
}

/// Connects to the API server, applies the platform namespace, and watches the node.
async fn kubernetes_api(ctx: &mut StepContext<'_>) -> Result<StepOutcome, StepError> {
    let config = config_in_force(ctx)?;
    if let Some(skipped) = k3s_skipped(&config) {
        return Ok(skipped);
    }
    ctx.k3s
        .connect(&config, ctx.heartbeats)
        .await
        .map(StepOutcome::Done)
        .map_err(k3s_error)
}

/// How often a config writer builds its revision again after a compare-and-set conflict.
const CAS_ATTEMPTS: usize = 8;

/// Loads the files and the API overlay, refuses changes to locked keys, and stores a new
/// revision when the effective config changed.
async fn config(ctx: &mut StepContext<'_>) -> Result<StepOutcome, StepError> {
    let state_error = |error: crate::state::StateError| StepError {
        message: error.to_string(),
        key: None,
        retry_after: Some(Duration::from_secs(30)),
    };
    // Compare-and-set with the PATCHes (see `State::save_config_revision`): a conflict means
    // a PATCH got in between, and the files are loaded again on top of its revision.
    for _ in 0..CAS_ATTEMPTS {
        let (latest, locked) = ctx
            .state
            .call(|s| Ok((s.latest_config_revision()?, s.locked_keys()?)))
            .await
            .map_err(state_error)?;
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
        if let Some((from, to)) = storage_shrink(latest.as_ref().map(|l| &l.effective), &config) {
            let error = StepError {
                message: PatchError::Shrink { from, to }.to_string(),
                key: Some("notebook.storage_gb".into()),
                retry_after: None,
            };
            return match (&ctx.current, ctx.reload) {
                (Some(_), true) => Ok(StepOutcome::ReloadRefused(error)),
                _ => Err(error),
            };
        }
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
        // A reload that changes the directory's settings (the API's changes were checked
        // when they were made) puts them in force only once they bind and find their tree.
        if ctx.reload
            && let Some(latest) = &latest
            && latest.effective["freeipa"] != effective["freeipa"]
            && let Err(error) = crate::directory::check_settings(&config).await
        {
            return Ok(StepOutcome::ReloadRefused(StepError {
                key: Some(error.key().to_string()),
                message: format!(
                    "the directory did not accept the new freeipa settings, so the ones in force are kept: {error}"
                ),
                retry_after: None,
            }));
        }
        let revision = match latest {
            Some(latest) if latest.effective == effective => latest.id,
            latest => {
                let expected = latest.as_ref().map(|l| l.id);
                let overlay = latest
                    .map(|l| l.overlay)
                    .unwrap_or_else(|| serde_json::json!({}));
                let source = if ctx.reload {
                    "files (reload)"
                } else {
                    "files"
                };
                let actor = ctx.actor.to_string();
                let saved = ctx
                    .state
                    .call(move |s| {
                        s.save_config_revision(
                            expected,
                            &actor,
                            source,
                            &overlay,
                            &effective,
                            &serde_json::Value::Null,
                        )
                    })
                    .await;
                match saved {
                    Ok(id) => id,
                    // A PATCH stored a revision since `latest` was read: load again on top of it.
                    Err(crate::state::StateError::RevisionConflict { .. }) => continue,
                    Err(error) => return Err(state_error(error)),
                }
            }
        };
        ctx.revision = Some(revision);
        ctx.current = Some(Arc::new(config));
        return Ok(StepOutcome::Done(format!("revision {revision} in force")));
    }
    Err(StepError {
        message: format!(
            "the config kept changing while it was loaded ({CAS_ATTEMPTS} attempts); it is tried again"
        ),
        key: None,
        retry_after: Some(Duration::from_secs(1)),
    })
}

/// A first sync. If FreeIPA cannot be reached but an earlier sync left users, the step is done
/// with them (nobody is revoked by an outage); with no users at all it fails and retries.
async fn directory_sync(ctx: &mut StepContext<'_>) -> Result<String, StepError> {
    let config = config_in_force(ctx)?;
    let trigger = if ctx.reload { "reload" } else { "boot" };
    // A cheap check when nothing relevant changed; a full read after a change of the tree.
    match ctx.directory.run(&config, trigger, false).await {
        Ok(report) if report.run.outcome == "held" => Ok(format!(
            "the removals of a sync that would drop more than half the users are held (the rest is applied): confirm them with POST /v1/sync/confirm; {} active users",
            ctx.state
                .count_users(crate::state::UserState::Active)
                .unwrap_or(0)
        )),
        Ok(report) => Ok(format!(
            "{} active users ({})",
            report.run.members, report.run.outcome
        )),
        Err(error) => {
            let kept = ctx
                .state
                .count_users(crate::state::UserState::Active)
                .unwrap_or(0);
            if kept > 0 {
                Ok(format!(
                    "{} ({error}); keeping the {kept} active users of the last sync",
                    error.label()
                ))
            } else {
                Err(StepError {
                    message: format!("first directory sync failed: {error}"),
                    key: Some("freeipa.server".into()),
                    retry_after: Some(Duration::from_secs(30)),
                })
            }
        }
    }
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

/// Why a config change through the API was not taken.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error(
        "{key} cannot be changed: it is fixed at the first boot (the cluster name, external IP and domain are part of certificates, group names and URLs); launch a new appliance for a different value"
    )]
    Immutable { key: String },
    #[error(
        "{key} is set in the config files only, not through the API (paths and the daemon's own settings belong to the machine); {}",
        file_only_fix(key)
    )]
    FileOnly { key: String },
    #[error(
        "freeipa.tls = \"plain\" is set in the config files only: it sends the bind password unencrypted; use \"ldaps\" or \"starttls\" through the API"
    )]
    PlainTls,
    #[error(
        "a change of {key} through the API must carry freeipa.password in the same request, so the stored password is never sent to a server it was not given for; add \"password\" to the freeipa section"
    )]
    NeedsPassword { key: String },
    #[error(transparent)]
    Credential(#[from] credentials::CredentialError),
    #[error("{detail}")]
    Shape { key: String, detail: String },
    #[error(
        "notebook.storage_gb cannot shrink from {from} to {to}: users' home volumes keep their size and cannot be made smaller; set {from} or more"
    )]
    Shrink { from: u64, to: u64 },
    #[error("{0}")]
    Invalid(ConfigError),
    #[error("the config files have errors, so no change can be validated; fix them first: {0}")]
    FilesBroken(ConfigError),
    #[error(
        "{key}: the directory did not accept the new freeipa settings, so nothing was changed: {error}"
    )]
    Directory {
        key: String,
        error: crate::directory::DirectoryError,
    },
    #[error(transparent)]
    State(#[from] crate::state::StateError),
}

/// Checks new directory settings before they are in force (see
/// `directory::check_settings`); the API passes one that binds and reads, tests may pass their own.
pub type DirectoryCheck<'a> =
    &'a (dyn Fn(&Config) -> Result<(), crate::directory::DirectoryError> + Sync);

/// JSON has one kind of number, and JSON Schema counts `4.0` as the integer 4; TOML (the
/// config's own types) tells them apart. A number without a fraction is stored as an integer,
/// so a client that writes `4.0` where the schema says integer is taken at its word.
fn integral_as_integer(value: &serde_json::Value) -> serde_json::Value {
    match value.as_f64() {
        Some(number)
            if !value.is_i64()
                && !value.is_u64()
                && number.fract() == 0.0
                && number.abs() < 9.0e15 =>
        {
            #[allow(clippy::cast_possible_truncation)]
            serde_json::Value::from(number as i64)
        }
        _ => value.clone(),
    }
}

/// What to do instead of changing a file-only key through the API.
fn file_only_fix(key: &str) -> String {
    match key {
        "freeipa.password_file" => "give the password itself as freeipa.password".into(),
        "freeipa.ca_file" => "give the CA certificate itself as freeipa.ca_pem".into(),
        _ => format!(
            "set {key} in /etc/pangeod/pangeod.toml or a drop-in in /etc/pangeod/pangeod.d/, then reload (systemctl reload pangeod)"
        ),
    }
}

impl PatchError {
    /// The config key at fault, for the problem document.
    pub fn key(&self) -> Option<&str> {
        match self {
            PatchError::Immutable { key }
            | PatchError::FileOnly { key }
            | PatchError::Directory { key, .. }
            | PatchError::Shape { key, .. } => Some(key),
            PatchError::Shrink { .. } => Some("notebook.storage_gb"),
            PatchError::PlainTls => Some("freeipa.tls"),
            PatchError::NeedsPassword { .. } => Some("freeipa.password"),
            PatchError::Credential(error) => Some(error.key()),
            PatchError::Invalid(error) | PatchError::FilesBroken(error) => error.key(),
            PatchError::State(_) => None,
        }
    }
}

/// The key whose change would send the bind password somewhere it was not given for: another
/// server, another TLS mode, or a server that another CA vouches for. `None` when `config`'s
/// destination is `allowed`'s; with nothing to compare against, every destination is new.
fn directory_destination_changed(
    allowed: Option<&serde_json::Value>,
    config: &Config,
) -> Option<String> {
    let Some(allowed) = allowed else {
        return Some("freeipa.server".into());
    };
    let freeipa = &allowed["freeipa"];
    if freeipa["server"].as_str() != Some(config.freeipa.server.as_str()) {
        return Some("freeipa.server".into());
    }
    let ca = config
        .freeipa
        .ca_file
        .as_ref()
        .map(|p| p.display().to_string());
    if freeipa["ca_file"].as_str().map(str::to_string) != ca {
        return Some("freeipa.ca_file".into());
    }
    if freeipa["tls"] != serde_json::to_value(config.freeipa.tls).unwrap_or_default() {
        return Some("freeipa.tls".into());
    }
    None
}

/// `(from, to)` when `config` would make notebook home volumes smaller than the config in
/// force: volumes can grow, never shrink.
fn storage_shrink(in_force: Option<&serde_json::Value>, config: &Config) -> Option<(u64, u64)> {
    let from = in_force?["notebook"]["storage_gb"].as_u64()?;
    let to = u64::from(config.notebook.storage_gb);
    (to < from).then_some((from, to))
}

/// The outcome of a config change.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PatchOutcome {
    pub revision: i64,
    pub changed: bool,
    pub config: serde_json::Value,
    pub overlay: serde_json::Value,
}

/// Applies a JSON merge patch (`{"notebook": {"cpus": 2}}`; `null` reverts a key to the files'
/// value) of updatable keys on top of the files, validates the result with the same rules as
/// the files, and stores it as a revision with its event. Nothing is stored on any error.
///
/// A change of the directory's settings (`freeipa.*`) is in force only once `check_directory`
/// has bound with the new values and read their base DN and users group.
pub fn apply_config_patch(
    config_path: &Path,
    state: &State,
    actor: &str,
    patch: &serde_json::Value,
    check_directory: DirectoryCheck<'_>,
) -> Result<PatchOutcome, PatchError> {
    let mut stored = Vec::new();
    // Compare-and-set with the reloads (see `State::save_config_revision`): a conflict means a
    // reload or another writer stored a revision since this one read the latest, so the patch
    // is applied again on top of it; only a config that keeps changing is refused.
    let attempt = |stored: &mut Vec<_>| {
        patch_config(config_path, state, actor, patch, check_directory, stored)
    };
    let mut outcome = attempt(&mut stored);
    for _ in 1..CAS_ATTEMPTS {
        match outcome {
            Err(PatchError::State(crate::state::StateError::RevisionConflict { .. })) => {
                outcome = attempt(&mut stored);
            }
            _ => break,
        }
    }
    match &outcome {
        Ok(outcome) if outcome.changed => credentials::prune(&state.dir(), &outcome.overlay),
        Ok(_) | Err(_) => {
            // Nothing new is in force: the values written for this request are not needed.
            for path in stored {
                let _ = std::fs::remove_file(path);
            }
        }
    }
    outcome
}

fn patch_config(
    config_path: &Path,
    state: &State,
    actor: &str,
    patch: &serde_json::Value,
    check_directory: DirectoryCheck<'_>,
    stored: &mut Vec<std::path::PathBuf>,
) -> Result<PatchOutcome, PatchError> {
    use crate::config::settings::{self, Change};
    use credentials::{CA_PEM_KEY, PASSWORD_KEY};
    let shape = |key: &str, detail: String| PatchError::Shape {
        key: key.to_string(),
        detail,
    };
    let serde_json::Value::Object(sections) = patch else {
        return Err(shape(
            "(body)",
            "the body must be a JSON object of sections, for example {\"notebook\": {\"cpus\": 2}}"
                .into(),
        ));
    };
    let latest = state.latest_config_revision()?;
    let expected = latest.as_ref().map(|l| l.id);
    // `null` for a whole section reverts each of its keys set through the API to the files'
    // value, as `null` for one key does (what the OpenAPI document declares).
    let sections: serde_json::Map<String, serde_json::Value> = sections
        .iter()
        .map(|(section, entries)| {
            if !entries.is_null() {
                return Ok((section.clone(), entries.clone()));
            }
            if !settings::api_sections().contains(&section.as_str()) {
                return Err(shape(
                    section,
                    format!(
                        "\"{}\" is not a section the API may change; the sections are {}",
                        section.escape_debug(),
                        settings::join_and(&settings::api_sections())
                    ),
                ));
            }
            let set: serde_json::Map<String, serde_json::Value> = latest
                .as_ref()
                .and_then(|l| l.overlay.get(section))
                .and_then(serde_json::Value::as_object)
                .map(|keys| {
                    keys.keys()
                        .map(|key| {
                            let key = match key.as_str() {
                                "password_file" => PASSWORD_KEY.to_string(),
                                "ca_file" => CA_PEM_KEY.to_string(),
                                other => other.to_string(),
                            };
                            (key, serde_json::Value::Null)
                        })
                        .collect()
                })
                .unwrap_or_default();
            Ok((section.clone(), serde_json::Value::Object(set)))
        })
        .collect::<Result<_, PatchError>>()?;
    let mut overlay = match latest.as_ref().map(|l| &l.overlay) {
        Some(serde_json::Value::Object(map)) => map.clone(),
        _ => serde_json::Map::new(),
    };
    let mut patched_keys = Vec::new();
    let state_dir = state.dir();
    let mut password_given = false;
    let mut destination_touched = false;
    for (section, entries) in &sections {
        // A section the config does not have is refused even when it holds nothing (the
        // schema declares no other properties); a known one's keys get their own answers below.
        if !section.contains('.') && !crate::config::is_known_section(section) {
            return Err(shape(
                section,
                format!(
                    "\"{}\" is not a section of the config; the sections the API may change are {}",
                    section.escape_debug(),
                    settings::join_and(&settings::api_sections())
                ),
            ));
        }
        if let Some((outer, inner)) = section.split_once('.') {
            return Err(shape(
                section,
                format!(
                    "\"{}\" is a dotted key; nest it instead: {{\"{}\": {{\"{}\": {entries}}}}}",
                    section.escape_debug(),
                    outer.escape_debug(),
                    inner.escape_debug()
                ),
            ));
        }
        let serde_json::Value::Object(entries) = entries else {
            return Err(shape(
                section,
                format!(
                    "{section} must be an object of keys, for example {{\"{section}\": {{...}}}}"
                ),
            ));
        };
        for (key, value) in entries {
            let full = format!("{section}.{key}");
            if section == "freeipa" && (key == PASSWORD_KEY || key == CA_PEM_KEY) {
                destination_touched = true;
                let file_key = if key == PASSWORD_KEY {
                    password_given = !value.is_null();
                    "password_file"
                } else {
                    "ca_file"
                };
                let target = overlay
                    .entry(section.clone())
                    .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
                if let serde_json::Value::Object(target) = target {
                    if value.is_null() {
                        target.remove(file_key);
                    } else {
                        let text = if key == PASSWORD_KEY {
                            credentials::check_password(value)?
                        } else {
                            credentials::check_ca_pem(value)?
                        };
                        let static_key = if key == PASSWORD_KEY {
                            PASSWORD_KEY
                        } else {
                            CA_PEM_KEY
                        };
                        let path = credentials::store(&state_dir, static_key, text)?;
                        stored.push(path.clone());
                        target.insert(
                            file_key.to_string(),
                            serde_json::Value::String(path.display().to_string()),
                        );
                    }
                }
                patched_keys.push(format!("freeipa.{file_key}"));
                patched_keys.push(full);
                continue;
            }
            if full == "freeipa.tls" && value.as_str() == Some("plain") {
                return Err(PatchError::PlainTls);
            }
            if full == "freeipa.server" || full == "freeipa.tls" {
                destination_touched = true;
            }
            let known = crate::config::is_known_key(&full);
            match settings::get(&full).map(|s| s.change) {
                Some(Change::Locked) => return Err(PatchError::Immutable { key: full }),
                Some(Change::File) => return Err(PatchError::FileOnly { key: full }),
                Some(Change::Api | Change::ApiOnly) | None => {}
            }
            // An unknown key is refused whatever its value: with a value, the config's own
            // check below names it (with a spelling suggestion); a `null` would pass there, as
            // removing nothing, so it is refused here.
            if !known && value.is_null() {
                let keys: Vec<&str> = settings::api_keys()
                    .filter(|k| k.split_once('.').is_some_and(|(s, _)| s == section))
                    .collect();
                return Err(shape(
                    &full,
                    if keys.is_empty() {
                        format!(
                            "{}: unknown key; remove it or correct the spelling (the sections the API may change are {})",
                            full.escape_debug(),
                            settings::join_and(&settings::api_sections())
                        )
                    } else {
                        format!(
                            "{}: unknown key; remove it or correct the spelling (the API may change {})",
                            full.escape_debug(),
                            keys.join(", ")
                        )
                    },
                ));
            }
            let target = overlay
                .entry(section.clone())
                .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
            if let serde_json::Value::Object(target) = target {
                if value.is_null() {
                    target.remove(key);
                } else {
                    target.insert(key.clone(), integral_as_integer(value));
                }
            }
            patched_keys.push(full);
        }
    }
    overlay.retain(|_, entries| entries.as_object().is_none_or(|e| !e.is_empty()));
    let overlay = serde_json::Value::Object(overlay);

    let table: toml::Table = serde_json::from_value(overlay.clone()).map_err(|error| {
        shape(
            patched_keys.first().map_or("(body)", String::as_str),
            format!("a value cannot be used: {error}"),
        )
    })?;
    let layer = Layer::from_table("admin API", table).map_err(PatchError::Invalid)?;
    let mut layers = crate::config::load_layers(config_path).map_err(PatchError::FilesBroken)?;
    layers.push(layer);
    let locked = state.locked_keys()?;
    let config = Config::from_layers(&layers, &locked).map_err(|error| {
        let ours = error
            .field_errors()
            .iter()
            .any(|e| patched_keys.contains(&e.key));
        if ours {
            PatchError::Invalid(error)
        } else {
            PatchError::FilesBroken(error)
        }
    })?;
    if let Some((from, to)) = storage_shrink(latest.as_ref().map(|l| &l.effective), &config) {
        return Err(PatchError::Shrink { from, to });
    }
    // The files' password goes only to the files' server, and a password given through the
    // API only to the server it was given with. A request that moves the directory's
    // destination (server, TLS mode, CA) must therefore bring a password value.
    if destination_touched && !password_given {
        let api_password = overlay["freeipa"]["password_file"].is_string();
        let allowed = if api_password {
            latest.as_ref().map(|l| l.effective.clone())
        } else {
            crate::config::load_layers(config_path)
                .and_then(|files| Config::from_layers(&files, &locked))
                .ok()
                .and_then(|files_only| serde_json::to_value(files_only).ok())
        };
        if let Some(key) = directory_destination_changed(allowed.as_ref(), &config) {
            return Err(PatchError::NeedsPassword { key });
        }
    }
    let effective = serde_json::to_value(&config)
        .map_err(|error| shape("(body)", format!("cannot encode the config: {error}")))?;
    if let Some(latest) = latest
        .as_ref()
        .filter(|l| l.effective == effective && l.overlay == overlay)
    {
        return Ok(PatchOutcome {
            revision: latest.id,
            changed: false,
            config: effective,
            overlay,
        });
    }
    if latest
        .as_ref()
        .is_none_or(|l| l.effective["freeipa"] != effective["freeipa"])
    {
        check_directory(&config).map_err(|error| {
            let key = match &error {
                crate::directory::DirectoryError::Bind { .. } if password_given => {
                    "freeipa.password".to_string()
                }
                error => error.key().to_string(),
            };
            PatchError::Directory { key, error }
        })?;
    }
    let changes = credentials::redacted(patch);
    let revision =
        state.save_config_revision(expected, actor, "admin API", &overlay, &effective, &changes)?;
    Ok(PatchOutcome {
        revision,
        changed: true,
        config: effective,
        overlay,
    })
}

/// Records an event of the step's actor, off the async threads; a failure is logged (the step's
/// work stands).
async fn record(ctx: &StepContext<'_>, action: &'static str, details: serde_json::Value) {
    let actor = ctx.actor.to_string();
    let recorded = ctx
        .state
        .call(move |s| s.record_event(&actor, action, details))
        .await;
    if let Err(error) = recorded {
        tracing::error!(%error, action, "cannot record the event");
    }
}
