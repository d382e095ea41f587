//! The rules every setting must satisfy. The only place values are checked; the integer ranges
//! and the defaults are declared in `settings.rs`, the rules between keys and on a value's text
//! here.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use ipnet::IpNet;

use super::layers::Origins;
pub(crate) use super::raw::RawConfig;
use super::raw::{RawApi, RawDaemon};
use super::settings;
use super::{
    Api, Cluster, Config, Daemon, Dask, FieldError, FreeIpa, Hub, K3s, K3sMode, LdapTls, Notebook,
    Storage,
};

/// Collects every broken rule rather than stopping at the first, so one edit fixes them all.
struct Checker<'a> {
    origins: &'a Origins,
    errors: Vec<FieldError>,
}

impl Checker<'_> {
    fn fail(&mut self, key: &str, problem: impl Into<String>, fix: impl Into<String>) {
        self.errors.push(FieldError {
            key: key.to_string(),
            location: self.origins.location(key).cloned(),
            problem: problem.into(),
            fix: fix.into(),
        });
    }

    fn required<T>(&mut self, key: &str, value: Option<T>, example: &str) -> Option<T> {
        if value.is_none() {
            self.fail(
                key,
                "is required and is not set in any config file",
                format!("set it, for example {key} = {example}"),
            );
        }
        value
    }

    /// A key the rules ask the table about, and the table does not declare as asked: a bug
    /// here, reported like a broken rule rather than a panic (a test loads every default).
    fn undeclared(&mut self, key: &str, what: &str) {
        self.fail(
            key,
            format!("is not declared as {what} in config/settings.rs"),
            "this is a bug in pangeod; report it",
        );
    }

    /// An integer key within its declared range, or its declared default.
    fn range(&mut self, key: &str, value: Option<i64>) -> u32 {
        let Some((min, max, default)) = settings::integer_rule(key) else {
            self.undeclared(key, "an integer with a default");
            return 0;
        };
        let Some(value) = value else { return default };
        match u32::try_from(value) {
            Ok(v) if (min..=max).contains(&v) => v,
            _ => {
                self.fail(
                    key,
                    format!("{value} is out of range: it must be an integer from {min} to {max}"),
                    format!("set {key} to a value from {min} to {max}"),
                );
                default
            }
        }
    }

    /// A true-or-false key, or its declared default.
    fn flag(&mut self, key: &str, value: Option<bool>) -> bool {
        value.unwrap_or_else(|| {
            settings::bool_default(key).unwrap_or_else(|| {
                self.undeclared(key, "true or false with a default");
                false
            })
        })
    }

    /// A key whose default is a string: the value, or the declared default.
    fn text_default(&mut self, key: &str) -> &'static str {
        settings::text_default(key).unwrap_or_else(|| {
            self.undeclared(key, "a string with a default");
            ""
        })
    }

    fn dn(&mut self, key: &str, value: Option<String>) -> String {
        let Some(value) = self.required(key, value, "\"dc=example,dc=test\"") else {
            return String::new();
        };
        if let Err(problem) = check_dn(&value) {
            self.fail(
                key,
                format!("\"{}\" is not a valid LDAP DN: {problem}", value.escape_debug()),
                "write it as comma-separated attribute=value pairs, for example \"cn=users,cn=accounts,dc=example,dc=test\"",
            );
        }
        value
    }

    /// A file the daemon must read later is checked now, while the operator is watching.
    fn readable_file(
        &mut self,
        key: &str,
        value: Option<String>,
        must_contain: Option<&str>,
    ) -> PathBuf {
        let Some(value) = self.required(key, value, "\"/etc/pangeod/secret\"") else {
            return PathBuf::new();
        };
        let path = self.origins.resolve_path(key, &value);
        match std::fs::read(&path) {
            Ok(bytes) if bytes.iter().all(u8::is_ascii_whitespace) => self.fail(
                key,
                format!("file {} is empty", path.display()),
                "write the value into the file",
            ),
            Ok(bytes) => {
                if let Some(marker) = must_contain
                    && !String::from_utf8_lossy(&bytes).contains(marker)
                {
                    {
                        self.fail(
                            key,
                            format!("file {} does not contain \"{marker}\"", path.display()),
                            "point it at a PEM-encoded CA certificate",
                        );
                    }
                }
            }
            Err(error) => self.fail(
                key,
                format!("cannot read file {}: {error}", path.display()),
                "create the file, or fix the path or its permissions",
            ),
        }
        path
    }

    fn optional_path(&mut self, key: &str, value: Option<String>) -> Option<PathBuf> {
        match value {
            Some(value) if value.is_empty() => {
                self.fail(
                    key,
                    "must not be empty",
                    "remove the key to use the default",
                );
                None
            }
            Some(value) => Some(self.origins.resolve_path(key, &value)),
            None => None,
        }
    }

    /// A path with a declared default.
    fn path(&mut self, key: &str, value: Option<String>) -> PathBuf {
        let default = self.text_default(key);
        match value {
            Some(value) if value.is_empty() => {
                self.fail(
                    key,
                    "must not be empty",
                    format!("remove it to use {default}"),
                );
                PathBuf::from(default)
            }
            Some(value) => self.origins.resolve_path(key, &value),
            None => PathBuf::from(default),
        }
    }
}

pub(crate) fn validate(raw: RawConfig, origins: &Origins) -> Result<Config, Vec<FieldError>> {
    let mut c = Checker {
        origins,
        errors: Vec::new(),
    };

    let name = c
        .required("cluster.name", raw.cluster.name, "\"my-cluster\"")
        .unwrap_or_default();
    if !name.is_empty() && !is_cluster_name(&name) {
        c.fail(
            "cluster.name",
            format!("\"{name}\" is not a valid cluster name: use 1 to 63 letters, digits and '-', starting and ending with a letter or digit"),
            "use the cluster name the portal shows, for example \"my-cluster\"",
        );
    }
    let external_ip = match c.required(
        "cluster.external_ip",
        raw.cluster.external_ip,
        "\"192.0.2.10\"",
    ) {
        Some(text) => match text.parse::<IpAddr>() {
            Ok(ip) if ip.is_unspecified() || ip.is_multicast() => {
                c.fail(
                    "cluster.external_ip",
                    format!("{ip} cannot be the external IP"),
                    "set the public IPv4 or IPv6 address users reach the appliance on",
                );
                ip
            }
            Ok(ip) => ip,
            Err(_) => {
                c.fail(
                    "cluster.external_ip",
                    format!("\"{text}\" is not an IPv4 or IPv6 address"),
                    "write it like \"192.0.2.10\" or \"2001:db8::10\"",
                );
                IpAddr::from([0, 0, 0, 0])
            }
        },
        None => IpAddr::from([0, 0, 0, 0]),
    };
    let domain = match raw.cluster.domain {
        Some(domain) if domain.is_empty() => None,
        Some(domain) => {
            let domain = domain.trim_end_matches('.').to_ascii_lowercase();
            if !is_dns_name(&domain) {
                c.fail(
                    "cluster.domain",
                    format!("\"{domain}\" is not a valid DNS name"),
                    "use a name like \"pangeo.example.org\", or remove the key to use the sslip.io default",
                );
            }
            Some(domain)
        }
        None => None,
    };

    let notebook = Notebook {
        cpus: c.range("notebook.cpus", raw.notebook.cpus),
        ram_gb: c.range("notebook.ram_gb", raw.notebook.ram_gb),
        storage_gb: c.range("notebook.storage_gb", raw.notebook.storage_gb),
        idle_cull_timeout_minutes: c.range(
            "notebook.idle_cull_timeout_minutes",
            raw.notebook.idle_cull_timeout_minutes,
        ),
    };
    let dask = Dask {
        max_worker_cores: c.range("dask.max_worker_cores", raw.dask.max_worker_cores),
        max_worker_memory_gb: c.range("dask.max_worker_memory_gb", raw.dask.max_worker_memory_gb),
    };

    let server = c
        .required("freeipa.server", raw.freeipa.server, "\"ipa.example.org\"")
        .unwrap_or_default();
    if !server.is_empty() && !is_host_port(&server) {
        c.fail(
            "freeipa.server",
            format!("\"{server}\" is not a host name or address with an optional port"),
            "write it like \"ipa.example.org\" or \"ipa.example.org:636\", without ldap:// (set freeipa.tls for the protocol)",
        );
    }
    // The enums' defaults are the table's too (a test holds them to it).
    let tls = raw.freeipa.tls.unwrap_or(LdapTls::Ldaps);
    let base_dn = c.dn("freeipa.base_dn", raw.freeipa.base_dn);
    let bind_dn = c.dn("freeipa.bind_dn", raw.freeipa.bind_dn);
    let password_file = c.readable_file("freeipa.password_file", raw.freeipa.password_file, None);
    let ca_file = match (tls, raw.freeipa.ca_file) {
        (LdapTls::Plain, None) => None,
        (_, ca_file) => Some(c.readable_file(
            "freeipa.ca_file",
            ca_file,
            Some("-----BEGIN CERTIFICATE-----"),
        )),
    };
    let freeipa = FreeIpa {
        server,
        tls,
        base_dn,
        bind_dn,
        password_file,
        ca_file,
        sync_interval_seconds: c.range(
            "freeipa.sync_interval_seconds",
            raw.freeipa.sync_interval_seconds,
        ),
    };

    let admin_users = match raw.hub.admin_users {
        Some(users) => users,
        None => match settings::list_default("hub.admin_users") {
            Some(users) => users.iter().map(ToString::to_string).collect(),
            None => {
                c.undeclared("hub.admin_users", "a list with a default");
                Vec::new()
            }
        },
    };
    for user in &admin_users {
        if !is_username(user) {
            c.fail(
                "hub.admin_users",
                format!("\"{user}\" is not a valid FreeIPA user name"),
                "list FreeIPA user names (letters, digits, '.', '_', '-'), for example [\"admin\"]",
            );
        }
    }

    let api_url = match raw.hub.api_url {
        Some(url) if !(url.starts_with("http://") || url.starts_with("https://")) => {
            c.fail(
                "hub.api_url",
                format!("\"{url}\" is not an http(s) URL"),
                "give the hub's API, for example \"http://127.0.0.1:8081/hub/api\", or remove it to use the chart's hub Service",
            );
            None
        }
        Some(url) if !url.trim_end_matches('/').ends_with("/hub/api") => {
            c.fail(
                "hub.api_url",
                format!("\"{url}\" does not end in /hub/api"),
                "give the hub's API path, for example \"http://127.0.0.1:8081/hub/api\"",
            );
            None
        }
        url => url,
    };
    let api_token_file = raw
        .hub
        .api_token_file
        .map(|file| c.readable_file("hub.api_token_file", Some(file), None));
    let hub_ca_file = raw
        .hub
        .ca_file
        .map(|file| c.readable_file("hub.ca_file", Some(file), Some("BEGIN CERTIFICATE")));

    let admin_access = c.flag("hub.admin_access", raw.hub.admin_access);
    let (api, daemon) = plumbing(&mut c, raw.api, raw.daemon);
    let k3s = K3s {
        mode: raw.k3s.mode.unwrap_or(K3sMode::Auto),
        binary: c.path("k3s.binary", raw.k3s.binary),
        kubeconfig: c.path("k3s.kubeconfig", raw.k3s.kubeconfig),
    };

    let volume_group = match raw.storage.volume_group {
        Some(name) => name,
        None => c.text_default("storage.volume_group").to_string(),
    };
    if volume_group.is_empty()
        || volume_group.len() > 64
        || !volume_group
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '_' | '-' | '.' | '+'))
        || volume_group.starts_with('-')
    {
        c.fail(
            "storage.volume_group",
            format!("\"{volume_group}\" is not a valid LVM volume group name"),
            "use letters, digits, '_', '-', '.', '+' (not starting with '-'), for example \"pangeo\"",
        );
    }
    let storage = Storage {
        volume_group,
        size_gb: c.range("storage.size_gb", raw.storage.size_gb),
        device: c.optional_path("storage.device", raw.storage.device),
    };

    if !c.errors.is_empty() {
        return Err(c.errors);
    }
    Ok(Config {
        cluster: Cluster {
            name,
            external_ip,
            domain,
        },
        notebook,
        dask,
        freeipa,
        hub: Hub {
            admin_users,
            admin_access,
            api_url,
            api_token_file,
            ca_file: hub_ca_file,
        },
        api,
        daemon,
        k3s,
        storage,
    })
}

/// The daemon's own plumbing: where its state and sockets live. Checked on its own too, so the
/// daemon can come up and report a broken platform config.
fn plumbing(c: &mut Checker<'_>, api: RawApi, daemon: RawDaemon) -> (Api, Daemon) {
    let mut admin_allowed_cidrs = Vec::new();
    for text in api.admin_allowed_cidrs.unwrap_or_default() {
        match text.parse::<IpNet>() {
            Ok(net) if net != net.trunc() => c.fail(
                "api.admin_allowed_cidrs",
                format!("\"{text}\" has host bits set"),
                format!("write the network address, \"{}\"", net.trunc()),
            ),
            Ok(net) => admin_allowed_cidrs.push(net),
            Err(_) => c.fail(
                "api.admin_allowed_cidrs",
                format!("\"{text}\" is not a CIDR"),
                "write networks like \"192.0.2.0/24\" or \"2001:db8::/32\"; a single host is \"192.0.2.7/32\"",
            ),
        }
    }
    let listen = match api.listen {
        Some(text) => match text.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                c.fail(
                    "api.listen",
                    format!("\"{text}\" is not an address:port"),
                    "write it like \"0.0.0.0:8443\" or \"[::]:8443\", or remove it to serve only the unix socket",
                );
                None
            }
        },
        None => None,
    };
    let api_section = Api {
        socket: c.path("api.socket", api.socket),
        socket_group: api.socket_group.filter(|group| !group.is_empty()),
        admin_allowed_cidrs,
        listen,
        token_file: c.optional_path("api.token_file", api.token_file),
        tls_cert: c.optional_path("api.tls_cert", api.tls_cert),
        tls_key: c.optional_path("api.tls_key", api.tls_key),
    };
    let daemon_section = Daemon {
        state_dir: c.path("daemon.state_dir", daemon.state_dir),
        data_dir: c.path("daemon.data_dir", daemon.data_dir),
        require_data_disk: c.flag("daemon.require_data_disk", daemon.require_data_disk),
        min_free_gb: c.range("daemon.min_free_gb", daemon.min_free_gb),
    };

    if api_section.tls_cert.is_some() != api_section.tls_key.is_some() {
        c.fail(
            "api.tls_cert",
            "api.tls_cert and api.tls_key must be set together",
            "set both, or neither to use a certificate pangeod generates",
        );
    }
    (api_section, daemon_section)
}

/// Only the `[api]` and `[daemon]` sections, for start-up before the full config is valid:
/// a broken value falls back to its default here, and the config step reports it.
pub(crate) fn plumbing_lenient(raw: RawConfig, origins: &Origins) -> (Api, Daemon) {
    let mut c = Checker {
        origins,
        errors: Vec::new(),
    };
    plumbing(&mut c, raw.api, raw.daemon)
}

fn is_cluster_name(name: &str) -> bool {
    is_dns_label(name)
}

fn is_dns_label(label: &str) -> bool {
    let bytes = label.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

pub(crate) fn is_dns_name(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns_label)
}

/// `freeipa.server`: a host name or IPv4 address with an optional port, an IPv6 address, or an
/// IPv6 address in brackets with an optional port. The OpenAPI document declares the same
/// (`SERVER_PATTERN`, `format: ipv6`, `SERVER_V6_PATTERN`); a test holds them to one answer.
pub(crate) fn is_host_port(text: &str) -> bool {
    if let Some(rest) = text.strip_prefix('[') {
        let Some((address, after)) = rest.split_once(']') else {
            return false;
        };
        return address.parse::<std::net::Ipv6Addr>().is_ok()
            && (after.is_empty() || after.strip_prefix(':').is_some_and(is_port));
    }
    if text.parse::<std::net::Ipv6Addr>().is_ok() {
        return true;
    }
    let (host, port) = match text.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (text, None),
    };
    is_dns_name(host) && port.is_none_or(is_port)
}

/// A TCP port as written in a URL authority: 1 to 65535, digits only, no leading zero.
fn is_port(text: &str) -> bool {
    !text.starts_with('0')
        && text.len() <= 5
        && text.bytes().all(|b| b.is_ascii_digit())
        && text.parse::<u16>().is_ok_and(|p| p > 0)
}

/// The port of `SERVER_PATTERN` and `SERVER_V6_PATTERN`: 1 to 65535.
macro_rules! port_pattern {
    () => {
        r"(?::(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?"
    };
}

/// A host name or IPv4 address (at most 253 characters) with an optional port.
pub const SERVER_PATTERN: &str = concat!(
    r"^(?=[^:]{1,253}(?::|$))",
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*",
    port_pattern!(),
    r"$"
);

/// An IPv6 address in brackets (RFC 3986's IPv6address) with an optional port.
pub const SERVER_V6_PATTERN: &str = concat!(
    r"^\[(?:",
    r"(?:[0-9A-Fa-f]{1,4}:){6}(?:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}|(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9]))",
    r"|::(?:[0-9A-Fa-f]{1,4}:){5}(?:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}|(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9]))",
    r"|(?:[0-9A-Fa-f]{1,4})?::(?:[0-9A-Fa-f]{1,4}:){4}(?:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}|(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9]))",
    r"|(?:(?:[0-9A-Fa-f]{1,4}:){0,1}[0-9A-Fa-f]{1,4})?::(?:[0-9A-Fa-f]{1,4}:){3}(?:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}|(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9]))",
    r"|(?:(?:[0-9A-Fa-f]{1,4}:){0,2}[0-9A-Fa-f]{1,4})?::(?:[0-9A-Fa-f]{1,4}:){2}(?:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}|(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9]))",
    r"|(?:(?:[0-9A-Fa-f]{1,4}:){0,3}[0-9A-Fa-f]{1,4})?::[0-9A-Fa-f]{1,4}:(?:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}|(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9]))",
    r"|(?:(?:[0-9A-Fa-f]{1,4}:){0,4}[0-9A-Fa-f]{1,4})?::(?:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}|(?:(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\.){3}(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9]))",
    r"|(?:(?:[0-9A-Fa-f]{1,4}:){0,5}[0-9A-Fa-f]{1,4})?::[0-9A-Fa-f]{1,4}",
    r"|(?:(?:[0-9A-Fa-f]{1,4}:){0,6}[0-9A-Fa-f]{1,4})?::",
    r")\]",
    port_pattern!(),
    r"$"
);

/// The rule of `is_username` as a JSON Schema pattern (with `maxLength` 255), declared in the
/// OpenAPI document for `hub.admin_users`. A test holds the two to the same answer.
pub const USER_NAME_PATTERN: &str = r"^[a-zA-Z0-9_.][a-zA-Z0-9_.-]*$";

pub(crate) fn is_username(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '_' | '-'))
        && !name.starts_with('-')
}

/// The DN rule of `check_dn` as a JSON Schema pattern (ECMA 262), declared in the OpenAPI
/// document for `freeipa.base_dn` and `freeipa.bind_dn`. A test holds the two to the same answer.
pub const DN_PATTERN: &str = concat!(
    r"^(?:",
    // an attribute=value pair: a name or an OID, spaces around it, then a value that is not
    // only spaces (a value may hold = and #; special characters are escaped)
    r" *(?:[A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)*) *=",
    r" *(?:[^\u0000-\u001f\u007f-\u009f{}\\\x22,+;<> ]|\\(?:[\\\x22,+;<>#= ]|[0-9A-Fa-f]{2}))",
    r"(?:[^\u0000-\u001f\u007f-\u009f{}\\\x22,+;<>]|\\(?:[\\\x22,+;<>#= ]|[0-9A-Fa-f]{2}))*",
    r")(?:[,+](?:",
    r" *(?:[A-Za-z][A-Za-z0-9-]*|[0-9]+(?:\.[0-9]+)*) *=",
    r" *(?:[^\u0000-\u001f\u007f-\u009f{}\\\x22,+;<> ]|\\(?:[\\\x22,+;<>#= ]|[0-9A-Fa-f]{2}))",
    r"(?:[^\u0000-\u001f\u007f-\u009f{}\\\x22,+;<>]|\\(?:[\\\x22,+;<>#= ]|[0-9A-Fa-f]{2}))*",
    r"))*$"
);

/// One piece of a DN: a character as written, or an escape (`\,` or `\2C`), which is part of
/// a value and never a separator.
#[derive(Clone, Copy, PartialEq)]
enum DnPiece {
    Char(char),
    Escape,
}

/// A syntax check of an RFC 4514 distinguished name: `attr=value` pairs separated by commas
/// (or `+` within one RDN), with backslash escapes, and attribute types as names or OIDs.
/// Spaces around an attribute type are allowed; a value must hold more than spaces.
pub(crate) fn check_dn(dn: &str) -> Result<(), String> {
    if dn.trim_matches(' ').is_empty() {
        return Err("it is empty".into());
    }
    if let Some(ch) = dn.chars().find(|c| c.is_control()) {
        return Err(format!(
            "it contains the control character U+{:04X}",
            u32::from(ch)
        ));
    }
    if dn.contains(['{', '}']) {
        return Err(
            "it contains { or }, which the hub's login templates would read as placeholders".into(),
        );
    }
    // Split at the unescaped separators; escapes are checked on the way.
    let mut pairs: Vec<Vec<DnPiece>> = vec![Vec::new()];
    let mut chars = dn.chars();
    while let Some(ch) = chars.next() {
        let piece = match ch {
            '\\' => match chars.next() {
                // RFC 4514: a special character, or two hex digits.
                Some(escaped) if "\\\",+;<>#= ".contains(escaped) => DnPiece::Escape,
                Some(high) if high.is_ascii_hexdigit() => match chars.next() {
                    Some(low) if low.is_ascii_hexdigit() => DnPiece::Escape,
                    _ => return Err("a backslash is followed by one hex digit, not two".into()),
                },
                Some(other) => {
                    return Err(format!(
                        "\"\\{other}\" is not an escape: a backslash precedes one of \" + , ; < > \\ # = or a space, or two hex digits"
                    ));
                }
                None => return Err("it ends with a lone backslash".into()),
            },
            '"' | ';' | '<' | '>' => {
                return Err(format!(
                    "it contains an unescaped '{ch}'; write it as \\{ch} (RFC 4514)"
                ));
            }
            ',' | '+' => {
                pairs.push(Vec::new());
                continue;
            }
            other => DnPiece::Char(other),
        };
        if let Some(pair) = pairs.last_mut() {
            pair.push(piece);
        }
    }
    for pair in pairs {
        let text: String = pair
            .iter()
            .map(|piece| match piece {
                DnPiece::Char(c) => *c,
                DnPiece::Escape => '\\',
            })
            .collect();
        let Some(equals) = pair.iter().position(|p| *p == DnPiece::Char('=')) else {
            return Err(format!("\"{}\" has no '='", text.trim_matches(' ')));
        };
        let attr: String = text.chars().take(equals).collect();
        let attr = attr.trim_matches(' ');
        let is_name = attr.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && attr.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        let is_oid = !attr.is_empty()
            && attr
                .split('.')
                .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_digit()));
        if !is_name && !is_oid {
            return Err(format!("\"{attr}\" is not an attribute type"));
        }
        if pair[equals + 1..]
            .iter()
            .all(|piece| *piece == DnPiece::Char(' '))
        {
            return Err(format!("the value of \"{attr}\" is empty"));
        }
    }
    Ok(())
}
