//! The table of settings: every key is declared once, here, with its type, range, default, who
//! may change it and a line of doc. The rest is derived from it: the known-key check of every
//! layer (`layers.rs`), the locked and API-updatable keys (`mod.rs`, `boot/steps.rs`), the
//! integer ranges and the simple defaults (`rules.rs`), the OpenAPI schema of the config PATCH
//! body (`api/patch_schema.rs`) and the README's configuration reference
//! ([`reference_table`], `pangeod --print-settings-table`; a test keeps README.md equal to it).
//!
//! `rules.rs` keeps what a table cannot say: the rules that look at the text of a value (DNs,
//! addresses, names), files that must be readable, and the rules between keys.

/// The kind of value a key takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An integer from `min` to `max`, both included.
    Integer {
        min: u32,
        max: u32,
    },
    Bool,
    /// A string.
    Text,
    /// A path; relative paths resolve against the directory of the file that set them.
    Path,
    /// An IPv4 or IPv6 address.
    Address,
    /// A DNS name.
    DnsName,
    /// An RFC 4514 distinguished name (`DN_PATTERN`).
    Dn,
    /// A host name or address with an optional port (`SERVER_PATTERN`, `SERVER_V6_PATTERN`).
    Server,
    /// One of these strings.
    Choice(&'static [&'static str]),
    /// A list of FreeIPA user names.
    UserNames,
    /// A list of CIDRs.
    Cidrs,
    /// `address:port`.
    SocketAddress,
    /// An http(s) URL.
    Url,
    /// A secret given as a value (the API's write-only keys).
    Secret,
    /// PEM text of one or more certificates.
    Pem,
}

impl Kind {
    /// How the value is written in TOML, for the type error's fix ("write it as ...").
    pub fn toml_phrase(self) -> String {
        match self {
            Kind::Integer { .. } => "an integer".into(),
            Kind::Bool => "true or false".into(),
            Kind::UserNames | Kind::Cidrs => "an array of strings".into(),
            Kind::Choice(values) => format!("one of {}", quoted(values, "\"", "\"")),
            Kind::Text
            | Kind::Path
            | Kind::Address
            | Kind::DnsName
            | Kind::Dn
            | Kind::Server
            | Kind::SocketAddress
            | Kind::Url
            | Kind::Secret
            | Kind::Pem => "a string".into(),
        }
    }

    /// The type column of the README's table.
    fn reference(self) -> String {
        match self {
            Kind::Integer { min, max } => format!("integer, {min}–{max}"),
            Kind::Bool => "`true` or `false`".into(),
            Kind::Text => "string".into(),
            Kind::Path => "path".into(),
            Kind::Address => "IPv4 or IPv6 address".into(),
            Kind::DnsName => "DNS name".into(),
            Kind::Dn => "LDAP DN".into(),
            Kind::Server => "`host` or `host:port`".into(),
            Kind::Choice(values) => quoted(values, "`\"", "\"`"),
            Kind::UserNames => "array of user names".into(),
            Kind::Cidrs => "array of CIDRs".into(),
            Kind::SocketAddress => "`address:port`".into(),
            Kind::Url => "http(s) URL".into(),
            Kind::Secret => "string, write-only".into(),
            Kind::Pem => "PEM, write-only".into(),
        }
    }
}

/// `items` each between `open` and `close`, joined with ", ".
fn quoted(items: &[&str], open: &str, close: &str) -> String {
    items
        .iter()
        .map(|item| format!("{open}{item}{close}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The value a key has when no layer sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultValue {
    /// No default: the config is invalid until a layer sets it.
    Required,
    Integer(u32),
    Bool(bool),
    /// A string (also a path or a choice).
    Text(&'static str),
    List(&'static [&'static str]),
    /// Unset; the text says what that means (a derived value, a generated file, nothing).
    Unset(&'static str),
}

impl DefaultValue {
    /// The default column of the README's table: a value as it is written in TOML.
    fn reference(self) -> String {
        match self {
            DefaultValue::Required => "required".into(),
            DefaultValue::Integer(n) => format!("`{n}`"),
            DefaultValue::Bool(b) => format!("`{b}`"),
            DefaultValue::Text(text) => format!("`\"{text}\"`"),
            DefaultValue::List(items) => format!("`[{}]`", quoted(items, "\"", "\"")),
            DefaultValue::Unset(text) => text.into(),
        }
    }
}

/// Who may change a key, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Set in the files; locked at the first successful boot (`locked_keys`), and refused
    /// through the API. These values are baked into certificates, group names and URLs. The
    /// volume group too: the homes' StorageClass names it, Kubernetes never lets a
    /// StorageClass's parameters change, and a new name would strand every existing volume.
    Locked,
    /// Set in the files, or changed through the admin API. No path-valued key is one: a path
    /// would let a token holder make pangeod read any file on the VM (and send it as the bind
    /// password); the bind password and the directory's CA go through the API as values
    /// instead ([`Change::ApiOnly`]), and `freeipa.tls = "plain"` is refused there.
    Api,
    /// Set in the files only: paths and the daemon's own plumbing belong to the machine.
    File,
    /// Given through the admin API only, as a value that is never returned (the files name a
    /// file instead; see `boot/credentials.rs`, which keeps it as a file of pangeod's own); not
    /// a key of the files.
    ApiOnly,
}

impl Change {
    fn reference(self) -> &'static str {
        match self {
            Change::Locked => "file only; locked at the first successful boot",
            Change::Api => "yes (API)",
            Change::File => "file only",
            Change::ApiOnly => "API only, write-only",
        }
    }
}

/// One key of the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// `section.key`.
    pub key: &'static str,
    pub kind: Kind,
    pub default: DefaultValue,
    pub change: Change,
    /// One line: what the key does (the README's table, the OpenAPI description).
    pub doc: &'static str,
    /// More on how it changes, after the change column's word ("" for nothing).
    pub change_note: &'static str,
}

impl Setting {
    pub fn section(&self) -> &'static str {
        self.key
            .split_once('.')
            .map_or(self.key, |(section, _)| section)
    }

    pub fn name(&self) -> &'static str {
        self.key.split_once('.').map_or(self.key, |(_, name)| name)
    }

    /// Whether the key is written in the config files (every key but the API's write-only ones).
    pub fn in_files(&self) -> bool {
        self.change != Change::ApiOnly
    }

    /// Whether the admin API takes the key.
    pub fn through_api(&self) -> bool {
        matches!(self.change, Change::Api | Change::ApiOnly)
    }
}

const fn setting(
    key: &'static str,
    kind: Kind,
    default: DefaultValue,
    change: Change,
    doc: &'static str,
) -> Setting {
    Setting {
        key,
        kind,
        default,
        change,
        doc,
        change_note: "",
    }
}

const fn noted(
    key: &'static str,
    kind: Kind,
    default: DefaultValue,
    change: Change,
    doc: &'static str,
    change_note: &'static str,
) -> Setting {
    Setting {
        key,
        kind,
        default,
        change,
        doc,
        change_note,
    }
}

const fn int(min: u32, max: u32) -> Kind {
    Kind::Integer { min, max }
}

// The table's own shorthand.
use Change::{Api, ApiOnly, File, Locked};
use DefaultValue::{Bool, Integer, List, Required, Text, Unset};

/// Every setting, in the order of the README and of the error messages that list keys.
pub static SETTINGS: &[Setting] = &[
    setting(
        "cluster.name",
        Kind::Text,
        Required,
        Locked,
        "1–63 letters, digits and `-`, starting and ending with a letter or digit; the FreeIPA groups are `lower(name)` with `-`→`_`, plus `_notebook_users` / `_notebook_admins`",
    ),
    setting(
        "cluster.external_ip",
        Kind::Address,
        Required,
        Locked,
        "the public address users reach the appliance on",
    ),
    setting(
        "cluster.domain",
        Kind::DnsName,
        Unset("`pangeo.<ip with . and : as ->.sslip.io`"),
        Locked,
        "the hub's domain; it must already resolve to the external IP (checked in preflight)",
    ),
    setting(
        "notebook.cpus",
        int(1, 256),
        Integer(1),
        Api,
        "CPUs of each notebook server; limit = guarantee",
    ),
    setting(
        "notebook.ram_gb",
        int(1, 4096),
        Integer(2),
        Api,
        "GiB of memory of each notebook server (the chart gets `\"<n>G\"`, which KubeSpawner reads as GiB); limit = guarantee",
    ),
    noted(
        "notebook.storage_gb",
        int(1, 65536),
        Integer(10),
        Api,
        "GiB of each user's home volume",
        "grows only: existing homes are expanded, a decrease is refused (409)",
    ),
    setting(
        "notebook.idle_cull_timeout_minutes",
        int(0, 10080),
        Integer(60),
        Api,
        "idle notebook servers are stopped after this many minutes; 0 turns culling off",
    ),
    setting(
        "dask.max_worker_cores",
        int(1, 8),
        Integer(8),
        Api,
        "the most cores a Dask worker may ask for",
    ),
    setting(
        "dask.max_worker_memory_gb",
        int(1, 16),
        Integer(16),
        Api,
        "the most GiB of memory a Dask worker may ask for",
    ),
    noted(
        "freeipa.server",
        Kind::Server,
        Required,
        Api,
        "FreeIPA's LDAP server: a host name or IPv4 address with an optional port, or an IPv6 address (in brackets when a port follows), without `ldap://`",
        "with `freeipa.password` in the same request",
    ),
    noted(
        "freeipa.tls",
        Kind::Choice(&["ldaps", "starttls", "plain"]),
        Text("ldaps"),
        Api,
        "LDAP over TLS, plain LDAP upgraded with StartTLS, or no TLS (test directories only; logged as a warning)",
        "with `freeipa.password`; `\"plain\"` in the files only (409)",
    ),
    setting(
        "freeipa.base_dn",
        Kind::Dn,
        Required,
        Api,
        "the directory's base DN, for example `dc=example,dc=test`",
    ),
    setting(
        "freeipa.bind_dn",
        Kind::Dn,
        Required,
        Api,
        "the sync account's DN, for example `uid=pangeod,cn=sysaccounts,cn=etc,dc=example,dc=test`",
    ),
    noted(
        "freeipa.password_file",
        Kind::Path,
        Required,
        File,
        "a readable, non-empty file with the sync account's password",
        "through the API give the value, `freeipa.password`",
    ),
    noted(
        "freeipa.ca_file",
        Kind::Path,
        Unset("required unless `tls = \"plain\"`"),
        File,
        "a readable PEM file with the CA that signed FreeIPA's certificate",
        "through the API give the value, `freeipa.ca_pem`",
    ),
    setting(
        "freeipa.password",
        Kind::Secret,
        Unset("—"),
        ApiOnly,
        "the sync account's password as a value, never returned; `null` reverts to `freeipa.password_file`; a change of `server`, `tls` or `ca_pem` must carry it in the same request",
    ),
    noted(
        "freeipa.ca_pem",
        Kind::Pem,
        Unset("—"),
        ApiOnly,
        "the PEM of the CA that signed FreeIPA's certificate, parsed before it is taken, never returned; `null` reverts to `freeipa.ca_file`",
        "with `freeipa.password`",
    ),
    setting(
        "freeipa.sync_interval_seconds",
        int(10, 86400),
        Integer(300),
        Api,
        "seconds between two directory syncs",
    ),
    setting(
        "hub.admin_users",
        Kind::UserNames,
        List(&["admin"]),
        Api,
        "FreeIPA users who are hub admins besides the admins group",
    ),
    setting(
        "hub.admin_access",
        Kind::Bool,
        Bool(true),
        Api,
        "admins reach members' notebook servers, as JupyterHub's documentation describes; `false`: each server admits its owner only (admins keep the admin page); a change applies to servers started after the hub's upgrade",
    ),
    setting(
        "hub.api_url",
        Kind::Url,
        Unset("the chart's `hub` Service (`http://<cluster IP>:8081/hub/api`)"),
        File,
        "the hub API pangeod keeps equal to the directory, ending in `/hub/api` (a hub outside the cluster: tests, development)",
    ),
    setting(
        "hub.api_token_file",
        Kind::Path,
        Unset("the `pangeo-appliance` token pangeod generated for the chart"),
        File,
        "a file with that service's token (it needs the hub's admin role)",
    ),
    setting(
        "hub.ca_file",
        Kind::Path,
        Unset("none"),
        File,
        "the CA of an `https` `api_url`",
    ),
    setting(
        "api.socket",
        Kind::Path,
        Text("/run/pangeod/admin.sock"),
        File,
        "the admin API's unix socket (mode 0660)",
    ),
    setting(
        "api.socket_group",
        Kind::Text,
        Unset("none"),
        File,
        "an existing group that may use the socket",
    ),
    setting(
        "api.admin_allowed_cidrs",
        Kind::Cidrs,
        List(&[]),
        File,
        "networks allowed to reach the TCP listener, and the Kubernetes API server's port 6443 (which also admits the node itself and its pods; every other source gets a TCP reset)",
    ),
    setting(
        "api.listen",
        Kind::SocketAddress,
        Unset("none"),
        File,
        "the optional TCP listener for the portal (TLS, bearer token)",
    ),
    setting(
        "api.token_file",
        Kind::Path,
        Unset("`<state_dir>/api-token`, generated"),
        File,
        "named tokens, one `name:token` per line; the name is the actor in events",
    ),
    setting(
        "api.tls_cert",
        Kind::Path,
        Unset("generated under `<state_dir>/tls/`"),
        File,
        "the listener's PEM certificate, set together with `api.tls_key`",
    ),
    setting(
        "api.tls_key",
        Kind::Path,
        Unset("generated under `<state_dir>/tls/`"),
        File,
        "the listener's PEM key, set together with `api.tls_cert`",
    ),
    setting(
        "daemon.state_dir",
        Kind::Path,
        Text("/var/lib/pangeo/state"),
        File,
        "where `state.db` lives (on the data disk)",
    ),
    setting(
        "daemon.data_dir",
        Kind::Path,
        Text("/var/lib/pangeo"),
        File,
        "the data disk's mount point",
    ),
    setting(
        "daemon.require_data_disk",
        Kind::Bool,
        Bool(true),
        File,
        "preflight refuses to go on unless `data_dir` is a mounted filesystem",
    ),
    setting(
        "daemon.min_free_gb",
        int(0, 100_000),
        Integer(2),
        File,
        "GiB of free space preflight requires under `state_dir`",
    ),
    setting(
        "k3s.mode",
        Kind::Choice(&["auto", "systemd", "child", "external", "off"]),
        Text("auto"),
        File,
        "`systemd`: k3s in its own unit, started and watched by pangeod; `child`: a direct child logging to `<state_dir>/k3s/k3s.log` (dev runs without systemd); `external`: an API server run by something else, only `k3s.kubeconfig` is used; `off`: no Kubernetes, the k3s steps say they are skipped; `auto`: `systemd` when systemd is PID 1 and `k3s.service` is installed, else `child`",
    ),
    setting(
        "k3s.binary",
        Kind::Path,
        Text(super::defaults::K3S_BINARY),
        File,
        "the k3s binary (child mode); its absence means the image was built without artifacts",
    ),
    setting(
        "k3s.kubeconfig",
        Kind::Path,
        Text(super::defaults::KUBECONFIG_PATH),
        File,
        "the admin kubeconfig k3s writes (mode 0600) and pangeod reads",
    ),
    setting(
        "storage.volume_group",
        Kind::Text,
        Text(super::defaults::VOLUME_GROUP),
        Locked,
        "the LVM volume group the homes' provisioner (OpenEBS LVM LocalPV) uses: letters, digits, `_`, `-`, `.`, `+`, not starting with `-` (a StorageClass's parameters never change)",
    ),
    setting(
        "storage.size_gb",
        int(0, 1_048_576),
        Integer(0),
        File,
        "GiB of the sparse backing file `<data_dir>/lvm/<group>.img`, attached as a loop device at each boot; 0: 80% of the data disk's free space when first made",
    ),
    setting(
        "storage.device",
        Kind::Path,
        Unset("none"),
        File,
        "a block device for the group instead of the file",
    ),
];

/// The setting `section.key`, if there is one.
pub fn get(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.key == key)
}

/// The keys that are locked at the first successful boot.
pub fn locked_keys() -> impl Iterator<Item = &'static str> {
    SETTINGS
        .iter()
        .filter(|s| s.change == Change::Locked)
        .map(|s| s.key)
}

/// The keys the admin API takes: the updatable keys of the files, then the write-only ones.
pub fn api_keys() -> impl Iterator<Item = &'static str> {
    let of = |change| SETTINGS.iter().filter(move |s| s.change == change);
    of(Change::Api).chain(of(Change::ApiOnly)).map(|s| s.key)
}

/// The sections with a key the admin API takes, in order.
pub fn api_sections() -> Vec<&'static str> {
    sections(SETTINGS.iter().filter(|s| s.through_api()))
}

/// The sections of the config files, in order.
pub fn file_sections() -> Vec<&'static str> {
    sections(SETTINGS.iter().filter(|s| s.in_files()))
}

/// The keys of one section of the files, in order.
pub fn file_keys(section: &str) -> impl Iterator<Item = &'static Setting> {
    SETTINGS
        .iter()
        .filter(move |s| s.in_files() && s.section() == section)
}

fn sections<'a>(settings: impl Iterator<Item = &'a Setting>) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for setting in settings {
        if !out.contains(&setting.section()) {
            out.push(setting.section());
        }
    }
    out
}

/// "a, b, c and d".
pub fn join_and(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_string(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

/// The configuration reference in README.md, a Markdown table (`pangeod --print-settings-table`).
pub fn reference_table() -> String {
    let mut out =
        String::from("| key | type | default | changeable | what it is |\n|---|---|---|---|---|\n");
    for s in SETTINGS {
        let change = if s.change_note.is_empty() {
            s.change.reference().to_string()
        } else {
            format!("{}; {}", s.change.reference(), s.change_note)
        };
        out.push_str(&format!(
            "| `{}` | {} | {} | {} | {} |\n",
            s.key,
            s.kind.reference(),
            s.default.reference(),
            change,
            s.doc
        ));
    }
    out
}

/// The range and default of an integer key, as declared.
pub(crate) fn integer_rule(key: &str) -> Option<(u32, u32, u32)> {
    match get(key).map(|s| (s.kind, s.default)) {
        Some((Kind::Integer { min, max }, DefaultValue::Integer(default))) => {
            Some((min, max, default))
        }
        _ => None,
    }
}

/// The default of a key whose default is a string (a path, a name).
pub(crate) fn text_default(key: &str) -> Option<&'static str> {
    match get(key)?.default {
        DefaultValue::Text(text) => Some(text),
        _ => None,
    }
}

/// The default of a true-or-false key.
pub(crate) fn bool_default(key: &str) -> Option<bool> {
    match get(key)?.default {
        DefaultValue::Bool(value) => Some(value),
        _ => None,
    }
}

/// The default of a list key.
pub(crate) fn list_default(key: &str) -> Option<&'static [&'static str]> {
    match get(key)?.default {
        DefaultValue::List(items) => Some(items),
        _ => None,
    }
}
