//! The chart values, as pure functions of the config and the platform's secrets.

use serde_json::{Value, json};

use crate::config::Config;
use crate::directory::{Tree, host_port};

use super::{GATEWAY_RELEASE, NAMESPACE, STORAGE_CLASS};

/// The Pangeo notebook image users run (`singleuser.image`), and the image of their Dask
/// schedulers and workers (`gateway.backend.image`), so that client and workers match. It is
/// the `chart = "pangeod-values"` entry of `images/manifest.toml` (a unit test keeps the two
/// equal), which the image build bakes into the air-gap bundle.
pub const NOTEBOOK_IMAGE_NAME: &str = "pangeo/pangeo-notebook";
pub const NOTEBOOK_IMAGE_TAG: &str = "2026.06.04";

/// The path under which the gateway serves its API and the clusters' dashboards
/// (`gateway.prefix`): the hub service's path, so `https://<domain>/services/dask-gateway/`
/// reaches it through the hub's proxy (dashboard links) as well as inside the cluster.
pub const GATEWAY_PREFIX: &str = "/services/dask-gateway";

/// The dask-gateway chart's Traefik Service, `traefik-<fullname>` (the chart's
/// `dask-gateway.traefikName`; the fullname is the release name, which contains the chart's
/// name), fully qualified: the gateway's API under [`GATEWAY_PREFIX`] and the schedulers' TCP
/// routes (on the same port, the chart's default `traefik.service.ports.tcp.port: web`).
pub fn gateway_proxy_host() -> String {
    format!("traefik-{GATEWAY_RELEASE}.{NAMESPACE}")
}

/// The dask-gateway client's settings in every notebook (`singleuser.extraEnv`), as daskhub
/// sets them, so `dask_gateway.Gateway()` with no arguments reaches this platform's gateway
/// and authenticates with the user's JupyterHub token.
pub fn gateway_client_env() -> Value {
    let host = gateway_proxy_host();
    json!({
        // The API, straight to the gateway's Traefik (no detour through the hub's proxy).
        "DASK_GATEWAY__ADDRESS": format!("http://{host}:80{GATEWAY_PREFIX}"),
        // The schedulers' TLS connections, routed by SNI on the same port.
        "DASK_GATEWAY__PROXY_ADDRESS": format!("gateway://{host}:80"),
        // Dashboard links, relative to the hub's public address (the hub service's path).
        "DASK_GATEWAY__PUBLIC_ADDRESS": format!("{GATEWAY_PREFIX}/"),
        "DASK_GATEWAY__AUTH__TYPE": "jupyterhub",
    })
}

/// The platform's generated secrets, made once and kept (`State::secret`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secrets {
    /// configurable-http-proxy's auth token (`proxy.secretToken`).
    pub proxy_token: String,
    /// The hub's cookie secret: a new one logs every user out.
    pub cookie_secret: String,
    /// The `pangeo-appliance` service's token: pangeod's own identity at the hub.
    pub appliance_token: String,
    /// The `dask-gateway` service's token, shared by the hub and the gateway.
    pub gateway_token: String,
}

impl Secrets {
    /// Generates (once) or reads each secret by its name.
    pub fn load<E>(mut get: impl FnMut(&str) -> Result<String, E>) -> Result<Self, E> {
        Ok(Self {
            proxy_token: get("proxy-token")?,
            cookie_secret: get("cookie-secret")?,
            appliance_token: get("appliance-token")?,
            gateway_token: get("gateway-token")?,
        })
    }

    /// Each secret by its name: the names [`Secrets::load`] reads, and the keys of the
    /// Kubernetes Secret.
    pub fn entries(&self) -> [(&'static str, &str); 4] {
        [
            ("proxy-token", &self.proxy_token),
            ("cookie-secret", &self.cookie_secret),
            ("appliance-token", &self.appliance_token),
            ("gateway-token", &self.gateway_token),
        ]
    }
}

/// The filter the hub checks at every login, as the user who just bound: that user, if they
/// are one of the members the sync computes (the users group, the admins group, the
/// configured admins; nested groups through `memberOf`) and not disabled. ldapauthenticator
/// 2.0's `allowed_groups` sees only direct members, so it is not used.
pub fn login_filter(config: &Config) -> String {
    let members = Tree::from_config(config).member_filter();
    format!("(&({{userattr}}={{username}}){members}(!(nsAccountLock=TRUE)))")
}

/// Where the hub pod finds the FreeIPA CA (`hub.extraFiles`).
pub const HUB_CA_PATH: &str = "/usr/local/etc/jupyterhub/freeipa-ca.pem";

/// What the hub needs from the directory settings: the CA. (Users bind as themselves, so the
/// hub holds no directory password.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryMaterial {
    pub ca_pem: Option<String>,
}

/// The scope a notebook server requires when `hub.admin_access` is off: JupyterHub 5's admin
/// role carries `access:servers` (every server) and cannot be changed, so instead each server
/// requires this custom scope for its own owner, which only the owner holds (the `user` role
/// grants it `!user`, that is for themself).
pub const OWN_SERVER_SCOPE: &str = "custom:pangeo:own-server";

/// `hub.config`: traitlets configuration, snake_case keys only (a test checks each against
/// the pinned authenticator and spawner).
pub fn hub_config(config: &Config) -> Value {
    hub_config_with_ca(config, HUB_CA_PATH)
}

/// [`hub_config`] with the FreeIPA CA at `ca_path`: the chart mounts it at [`HUB_CA_PATH`]; a
/// hub on this machine (the test fixture) reads `freeipa.ca_file` itself.
pub fn hub_config_with_ca(config: &Config, ca_path: &str) -> Value {
    let (host, port) = host_port(config);
    let users = Tree::from_config(config).users;
    let tls_strategy = match config.freeipa.tls {
        crate::config::LdapTls::Ldaps => "on_connect",
        crate::config::LdapTls::Starttls => "before_bind",
        crate::config::LdapTls::Plain => "insecure",
    };
    let mut hub = json!({
        "JupyterHub": {
            "authenticator_class": "ldapauthenticator.LDAPAuthenticator",
            // Deprecated in JupyterHub 5, whose admin role carries access:servers and admin-ui
            // (admins reach users' servers, as the documentation says); kept equal to
            // hub.admin_access so that the old admin-access API agrees.
            "admin_access": config.hub.admin_access,
        },
        "Authenticator": {
            // search_filter only narrows; JupyterHub 5 admits nobody unless allowed.
            "allow_all": true,
            // Admin flags are set by pangeod through the API from the sync's result;
            // admin_users here would undo API-granted rights at each hub restart.
            "admin_users": [],
        },
        "LDAPAuthenticator": {
            "server_address": host,
            "server_port": port,
            "tls_strategy": tls_strategy,
            // Bind as the user (FreeIPA's DNs are predictable): a wrong password or a
            // disabled account (result 53) fails here, and the hub needs no service password.
            "bind_dn_template": [format!("uid={{username}},{users}")],
            // Then the user searches for themself: exactly one entry must match.
            "user_search_base": users,
            "user_attribute": "uid",
            // The sync's rule for user names (FreeIPA's), not ldapauthenticator's lowercase-only
            // default: a member the sync admits logs in typing their name in any case (the hub
            // then lowercases it, as the sync does), and a name the sync skips is refused.
            "valid_username_regex": crate::directory::USERNAME_PATTERN,
            "search_filter": login_filter(config),
            // ldap3's Tls(): verify the server against the FreeIPA CA (ssl.CERT_REQUIRED).
            "tls_kwargs": { "ca_certs_file": ca_path, "validate": 2 },
        },
        "KubeSpawner": {
            // A user's home volume is never deleted by the platform.
            "delete_pvc": false,
        },
    });
    if !config.hub.admin_access {
        // Off: the servers' OAuth clients may issue the own-server scope (for the user who
        // logs in, `!user`), and each server requires it for its owner
        // (`JUPYTERHUB_OAUTH_ACCESS_SCOPES`, in `singleuser.extraEnv`).
        hub["JupyterHub"]["custom_scopes"] = json!({
            OWN_SERVER_SCOPE: {
                "description": "Use one's own notebook server (hub.admin_access = false: admins do not reach members' servers)",
            },
        });
        // On Spawner, so that any spawner class takes it (KubeSpawner here, a local one in the
        // hub fixture).
        hub["Spawner"] = json!({
            "oauth_client_allowed_scopes": [format!("{OWN_SERVER_SCOPE}!user")],
        });
    }
    hub
}

/// `hub.loadRoles`: the admin role for pangeod's service, and with `hub.admin_access` off the
/// `user` role with the own-server scope for each user themself (JupyterHub's default `self`
/// kept).
pub fn load_roles(config: &Config) -> Value {
    // Only the admin role may set users' admin flags. The role lists services only, so the hub
    // keeps the users' admin flags in its database across restarts (it would reset them to a
    // configured users list), and pangeod sets them.
    let mut roles = json!({ "admin": { "services": ["pangeo-appliance"] } });
    if !config.hub.admin_access {
        roles["user"] = json!({
            "description": "A member: their own notebook server and hub account",
            "scopes": ["self", format!("{OWN_SERVER_SCOPE}!user")],
        });
    }
    roles
}

/// `singleuser.extraEnv`: the Dask Gateway client's settings, and with `hub.admin_access` off
/// the scope each server requires (`{unescaped_username}` is KubeSpawner's template of the
/// owner's hub name), in place of the hub's default `access:servers!server=…`, which the admin
/// role holds for every server.
pub fn singleuser_env(config: &Config) -> Value {
    let mut env = gateway_client_env();
    if !config.hub.admin_access {
        env["JUPYTERHUB_OAUTH_ACCESS_SCOPES"] = Value::String(
            json!([format!("{OWN_SERVER_SCOPE}!user={{unescaped_username}}")]).to_string(),
        );
    }
    env
}

fn gib(n: u32) -> String {
    format!("{n}Gi")
}

fn gb(n: u32) -> String {
    format!("{n}G")
}

/// The JupyterHub chart's values.
pub fn jupyterhub(config: &Config, secrets: &Secrets, directory: &DirectoryMaterial) -> Value {
    let cull = config.notebook.idle_cull_timeout_minutes;
    let ca_files = match &directory.ca_pem {
        Some(pem) => json!({ "freeipa-ca": { "mountPath": HUB_CA_PATH, "stringData": pem } }),
        None => json!({}),
    };
    json!({
        "hub": {
            "config": hub_config(config),
            "extraFiles": ca_files,
            "cookieSecret": secrets.cookie_secret,
            "db": {
                "type": "sqlite-pvc",
                "pvc": { "storage": "1Gi", "storageClassName": STORAGE_CLASS },
            },
            "services": {
                "pangeo-appliance": { "apiToken": secrets.appliance_token, "display": false },
                "dask-gateway": {
                    "apiToken": secrets.gateway_token,
                    "display": false,
                    // The hub's proxy routes /services/dask-gateway/ here (dashboard links).
                    "url": format!("http://{}", gateway_proxy_host()),
                },
            },
            "loadRoles": load_roles(config),
        },
        "proxy": {
            "secretToken": secrets.proxy_token,
            // Behind k3s's Traefik; a LoadBalancer would fight it for 80 and 443 (ServiceLB).
            "service": { "type": "ClusterIP" },
        },
        "singleuser": {
            "image": { "name": NOTEBOOK_IMAGE_NAME, "tag": NOTEBOOK_IMAGE_TAG },
            "extraEnv": singleuser_env(config),
            "cpu": { "limit": config.notebook.cpus, "guarantee": config.notebook.cpus },
            "memory": { "limit": gb(config.notebook.ram_gb), "guarantee": gb(config.notebook.ram_gb) },
            "storage": {
                "type": "dynamic",
                "capacity": gib(config.notebook.storage_gb),
                "dynamic": { "storageClass": STORAGE_CLASS },
            },
            "networkPolicy": {
                "enabled": true,
                // Notebooks reach Dask schedulers and the gateway in the cluster.
                "egressAllowRules": { "privateIPs": true },
                "egress": [{
                    "to": [{ "podSelector": { "matchLabels": { "app.kubernetes.io/name": "dask-gateway" } } }],
                }],
            },
        },
        "cull": {
            "enabled": cull > 0,
            "timeout": u64::from(cull) * 60,
        },
        // Traefik, with Let's Encrypt or the local CA (components/ingress.rs).
        "ingress": super::ingress::hub_ingress(config),
        // One node, images preloaded from the image's air-gap bundle.
        "prePuller": {
            "hook": { "enabled": false },
            "continuous": { "enabled": false },
        },
        "scheduling": {
            "userScheduler": { "enabled": false },
            "userPlaceholder": { "enabled": false },
        },
    })
}

/// The share of a Dask worker's cores that its pod requests (its limit is the cores the user
/// chose, which are also its threads). dask-gateway's default requests every core (request =
/// limit = 1 for the scheduler and each worker): on the appliance's one node, shared with the
/// notebooks, whose CPU is guaranteed, a scheduler and two workers beside a one-CPU notebook did
/// not schedule on two CPUs (found by the full-stack test). Dask work is bursty; requests only
/// reserve, limits still cap each pod.
pub const DASK_WORKER_CPU_SHARE: f64 = 0.25;
/// The Dask scheduler's CPU request and limit: it coordinates, it does not compute.
pub const DASK_SCHEDULER_CPU_REQUEST: f64 = 0.25;
pub const DASK_SCHEDULER_CPU_LIMIT: f64 = 1.0;

/// The Dask Gateway chart's values.
pub fn dask_gateway(config: &Config, secrets: &Secrets) -> Value {
    let cores = config.dask.max_worker_cores;
    let memory = config.dask.max_worker_memory_gb;
    let options = format!(
        r#"from dask_gateway_server.options import Options, Integer, Float

def options_handler(options, user):
    return {{
        # Requested: a share of the chosen cores; the chosen cores are the limit and the threads.
        "worker_cores": options.worker_cores * {worker_share},
        "worker_cores_limit": options.worker_cores,
        "worker_threads": options.worker_cores,
        "worker_memory": "%fG" % options.worker_memory,
    }}

c.Backend.cluster_options = Options(
    Integer("worker_cores", default=1, min=1, max={cores}, label="Worker cores"),
    Float("worker_memory", default=1, min=1, max={memory}, label="Worker memory (GiB)"),
    handler=options_handler,
)
c.ClusterConfig.cluster_max_cores = {max_cores}
c.ClusterConfig.cluster_max_memory = "{max_memory}G"
c.ClusterConfig.idle_timeout = 3600
c.KubeClusterConfig.scheduler_cores = {scheduler_request}
c.KubeClusterConfig.scheduler_cores_limit = {scheduler_limit}
"#,
        max_cores = cores * 4,
        max_memory = memory * 4,
        worker_share = DASK_WORKER_CPU_SHARE,
        scheduler_request = DASK_SCHEDULER_CPU_REQUEST,
        scheduler_limit = DASK_SCHEDULER_CPU_LIMIT,
    );
    json!({
        "gateway": {
            // Under the hub service's path: the hub's proxy forwards the full path.
            "prefix": GATEWAY_PREFIX,
            // Schedulers and workers run the notebook's image: client and workers match.
            "backend": {
                "image": { "name": NOTEBOOK_IMAGE_NAME, "tag": NOTEBOOK_IMAGE_TAG },
            },
            "auth": {
                "type": "jupyterhub",
                "jupyterhub": {
                    "apiToken": secrets.gateway_token,
                    "apiUrl": "http://hub:8081/hub/api",
                },
            },
            "extraConfig": { "pangeo-options": options },
        },
        "traefik": {
            "service": { "type": "ClusterIP" },
        },
    })
}

/// The hub config as a `jupyterhub_config.py`, for a hub outside Kubernetes (the test
/// fixture): the same traitlets, with the CA read from `freeipa.ca_file`. One source for the
/// chart's `hub.config` and the fixture.
pub fn hub_config_py(config: &Config) -> String {
    let ca = config
        .freeipa
        .ca_file
        .as_ref()
        .map_or_else(|| HUB_CA_PATH.to_string(), |p| p.display().to_string());
    let mut traits = hub_config_with_ca(config, &ca);
    // What the chart's jupyterhub_config.py makes of hub.loadRoles (a list, each role named by
    // its key) and singleuser.extraEnv (KubeSpawner.environment).
    if let Value::Object(roles) = load_roles(config) {
        traits["JupyterHub"]["load_roles"] = roles
            .into_iter()
            .map(|(name, mut role)| {
                role["name"] = Value::String(name);
                role
            })
            .collect();
    }
    traits["KubeSpawner"]["environment"] = singleuser_env(config);
    let json = python_raw_json(&traits);
    format!(
        "# Rendered by pangeod from its config (pangeod --print-hub-config): the hub's traitlets\n\
         # config, the same as the chart's hub.config with its hub.loadRoles and singleuser.extraEnv,\n\
         # with the FreeIPA CA read from freeipa.ca_file.\n\
         # Values reach Python only through json.loads of ASCII JSON in a raw string.\n\
         import json\n\
         c = get_config()  # noqa: F821\n\
         for _class, _traits in json.loads(r'{json}').items():\n\
         \x20   for _name, _value in _traits.items():\n\
         \x20       setattr(getattr(c, _class), _name, _value)\n"
    )
}

/// `value` as JSON that a Python raw string `r'...'` carries unchanged: every character
/// outside printable ASCII, and `'`, as a `\uXXXX` escape (surrogate pairs above U+FFFF), so
/// the text holds no quote, line break or control character, and never ends in a backslash.
fn python_raw_json(value: &serde_json::Value) -> String {
    let mut out = String::new();
    for ch in value.to_string().chars() {
        if ch == '\'' || !(' '..='~').contains(&ch) {
            let mut units = [0u16; 2];
            for unit in ch.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            out.push(ch);
        }
    }
    out
}
