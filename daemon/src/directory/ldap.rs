//! The only module that talks LDAP: to FreeIPA (389 Directory Server) through a read-only
//! service account.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError, Scope, SearchEntry, ldap_escape};

use crate::config::{Config, LdapTls};

use super::DirectoryError;

/// Each operation, and the connect, ends well before the admin API's 15 s deadline, so a
/// `POST /v1/sync` against a stalled server answers with that server named.
const OP_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const PAGE_SIZE: i32 = 1000;

/// A member as the directory describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryUser {
    pub uid: String,
    pub cn: String,
    pub mail: String,
    pub disabled: bool,
    pub in_users_group: bool,
    pub in_admins_group: bool,
}

/// Everything a full sync reads.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub users: Vec<DirectoryUser>,
    /// The highest entryUSN among the entries that decide membership, if the sync account
    /// can read entryUSN: the watermark for the cheap change check.
    pub usn: Option<u64>,
    pub admins_group_missing: bool,
}

/// The DNs the sync works with, derived from the config.
#[derive(Debug, Clone)]
pub struct Tree {
    pub base: String,
    pub users: String,
    pub groups: String,
    pub users_group: String,
    pub admins_group: String,
    pub admin_uids: Vec<String>,
}

impl Tree {
    pub fn from_config(config: &Config) -> Self {
        let base = config.freeipa.base_dn.clone();
        Self {
            users: format!("cn=users,cn=accounts,{base}"),
            groups: format!("cn=groups,cn=accounts,{base}"),
            users_group: format!("cn={},cn=groups,cn=accounts,{base}", config.users_group()),
            admins_group: format!("cn={},cn=groups,cn=accounts,{base}", config.admins_group()),
            admin_uids: config.hub.admin_users.clone(),
            base,
        }
    }

    /// Members of either group (nested included, through memberOf), or configured admins.
    pub fn member_filter(&self) -> String {
        let mut filter = format!(
            "(|(memberOf={})(memberOf={})",
            ldap_escape(&self.users_group),
            ldap_escape(&self.admins_group)
        );
        for uid in &self.admin_uids {
            filter.push_str(&format!("(uid={})", ldap_escape(uid)));
        }
        filter.push(')');
        filter
    }
}

pub struct DirectoryClient {
    ldap: Ldap,
    server: String,
}

/// The directory server's host and port: `freeipa.server`, with the TLS mode's default port
/// when it names none (636 for ldaps, 389 otherwise).
pub fn host_port(config: &Config) -> (String, u16) {
    let server = &config.freeipa.server;
    let default_port = if config.freeipa.tls == LdapTls::Ldaps {
        636
    } else {
        389
    };
    if server.parse::<std::net::Ipv6Addr>().is_ok() {
        return (server.clone(), default_port);
    }
    match server.rsplit_once(':') {
        Some((host, port)) if !server.ends_with(']') => match port.parse::<u16>() {
            Ok(port) => (host.trim_matches(['[', ']']).to_string(), port),
            Err(_) => (server.clone(), default_port),
        },
        _ => (server.trim_matches(['[', ']']).to_string(), default_port),
    }
}

fn url(config: &Config) -> String {
    let scheme = if config.freeipa.tls == LdapTls::Ldaps {
        "ldaps"
    } else {
        "ldap"
    };
    let (host, port) = host_port(config);
    if host.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("{scheme}://[{host}]:{port}")
    } else {
        format!("{scheme}://{host}:{port}")
    }
}

fn tls_config(config: &Config) -> Result<Arc<rustls::ClientConfig>, DirectoryError> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca_file) = &config.freeipa.ca_file {
        let pem = std::fs::read(ca_file).map_err(|e| {
            DirectoryError::Config(format!(
                "freeipa.ca_file: cannot read {}: {e}",
                ca_file.display()
            ))
        })?;
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| {
                DirectoryError::Config(format!(
                    "freeipa.ca_file: {}: bad PEM: {e}",
                    ca_file.display()
                ))
            })?;
            roots.add(cert).map_err(|e| {
                DirectoryError::Config(format!("freeipa.ca_file: {}: {e}", ca_file.display()))
            })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DirectoryError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(tls))
}

impl DirectoryClient {
    /// Connects (TLS verified against `freeipa.ca_file`) and binds as the sync account.
    pub async fn connect(config: &Config) -> Result<Self, DirectoryError> {
        let url = url(config);
        let mut settings = LdapConnSettings::new().set_conn_timeout(CONNECT_TIMEOUT);
        match config.freeipa.tls {
            LdapTls::Ldaps => settings = settings.set_config(tls_config(config)?),
            LdapTls::Starttls => {
                settings = settings.set_config(tls_config(config)?).set_starttls(true)
            }
            LdapTls::Plain => {
                tracing::warn!(%url, "directory connection without TLS (freeipa.tls = \"plain\")")
            }
        }
        crate::waits::note(|| format!("the FreeIPA server {url}: connect"));
        let (conn, mut ldap) = LdapConnAsync::with_settings(settings, &url)
            .await
            .map_err(|e| classify(&url, e))?;
        ldap3::drive!(conn);
        let password = std::fs::read_to_string(&config.freeipa.password_file).map_err(|e| {
            DirectoryError::Config(format!(
                "freeipa.password_file: cannot read {}: {e}",
                config.freeipa.password_file.display()
            ))
        })?;
        let password = password.trim_end_matches(['\n', '\r']);
        crate::waits::note(|| {
            format!(
                "the FreeIPA server {url}: bind as {}",
                config.freeipa.bind_dn
            )
        });
        let bind = ldap
            .with_timeout(OP_TIMEOUT)
            .simple_bind(&config.freeipa.bind_dn, password)
            .await
            .map_err(|e| classify(&url, e))?;
        if bind.rc != 0 {
            return Err(DirectoryError::Bind {
                dn: config.freeipa.bind_dn.clone(),
                rc: bind.rc,
                text: bind.text,
            });
        }
        Ok(Self { ldap, server: url })
    }

    /// Notes, for an API request that may be cut by its deadline, the operation waited on.
    fn waiting(&self, operation: &str) {
        crate::waits::note(|| format!("the FreeIPA server {}: {operation}", self.server));
    }

    /// The root DSE's per-backend change counters (`lastusn;<backend>`).
    async fn last_usns(&mut self) -> Result<BTreeMap<String, u64>, DirectoryError> {
        self.waiting("read the change counters");
        let (entries, _) = self
            .ldap
            .with_timeout(OP_TIMEOUT)
            .search("", Scope::Base, "(objectClass=*)", vec!["lastusn"])
            .await
            .map_err(|e| classify(&self.server, e))?
            .success()
            .map_err(|e| classify(&self.server, e))?;
        let mut counters = BTreeMap::new();
        for entry in entries {
            for (name, values) in SearchEntry::construct(entry).attrs {
                if name.to_ascii_lowercase().starts_with("lastusn")
                    && let Some(value) = values.iter().filter_map(|v| v.parse::<u64>().ok()).max()
                {
                    counters.insert(name.to_ascii_lowercase(), value);
                }
            }
        }
        Ok(counters)
    }

    /// Whether any entry that decides membership changed after `usn`: the two groups, a
    /// member, or a nested group. One indexed search with a size limit of 1.
    pub async fn changed_since(&mut self, tree: &Tree, usn: u64) -> Result<bool, DirectoryError> {
        let filter = format!(
            "(&(entryUSN>={})(|{}(cn={})(cn={})))",
            usn + 1,
            tree.member_filter(),
            ldap_escape(group_cn(&tree.users_group)),
            ldap_escape(group_cn(&tree.admins_group)),
        );
        self.waiting("search for changes");
        let stream = self
            .ldap
            .with_timeout(OP_TIMEOUT)
            .with_search_options(ldap3::SearchOptions::new().sizelimit(1))
            .search(&tree.base, Scope::Subtree, &filter, vec!["1.1"])
            .await
            .map_err(|e| classify(&self.server, e))?;
        // 4 = sizeLimitExceeded: more than one match, which is a change all the same.
        match stream.1.rc {
            0 | 4 => Ok(!stream.0.is_empty()),
            rc => Err(DirectoryError::Search {
                what: "the change check".into(),
                rc,
                text: stream.1.text,
            }),
        }
    }

    /// Reads every member with a paged search. Any error or partial result fails the whole
    /// read: a partial list must never look like removals.
    pub async fn snapshot(&mut self, tree: &Tree) -> Result<Snapshot, DirectoryError> {
        let before = self.last_usns().await?;
        // The suffix itself is often not readable by a service account: only "no such
        // object" (32) means a wrong base DN.
        self.require_entry(&tree.base, "freeipa.base_dn", true)
            .await?;
        self.require_entry(&tree.users_group, "cluster.name", false)
            .await?;
        let admins_group_missing = self
            .require_entry(&tree.admins_group, "cluster.name", false)
            .await
            .is_err();

        let adapters: Vec<Box<dyn Adapter<_, _>>> = vec![
            Box::new(EntriesOnly::new()),
            Box::new(PagedResults::new(PAGE_SIZE)),
        ];
        self.waiting("search the users");
        let mut stream = self
            .ldap
            .with_timeout(OP_TIMEOUT)
            .streaming_search_with(
                adapters,
                &tree.users,
                Scope::Subtree,
                &tree.member_filter(),
                vec!["uid", "cn", "mail", "memberOf", "nsAccountLock", "entryUSN"],
            )
            .await
            .map_err(|e| classify(&self.server, e))?;
        let users_group = normalize_dn(&tree.users_group);
        let admins_group = normalize_dn(&tree.admins_group);
        let mut users = Vec::new();
        let mut usn_visible = true;
        let mut max_usn = 0u64;
        while let Some(entry) = stream.next().await.map_err(|e| classify(&self.server, e))? {
            let entry = SearchEntry::construct(entry);
            let first = |name: &str| -> String {
                entry
                    .attrs
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .and_then(|(_, v)| v.first().cloned())
                    .unwrap_or_default()
            };
            let member_of: BTreeSet<String> = entry
                .attrs
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case("memberOf"))
                .flat_map(|(_, v)| v.iter().map(|dn| normalize_dn(dn)))
                .collect();
            let uid = first("uid");
            if uid.is_empty() {
                continue;
            }
            match first("entryUSN").parse::<u64>() {
                Ok(usn) => max_usn = max_usn.max(usn),
                Err(_) => usn_visible = false,
            }
            users.push(DirectoryUser {
                cn: first("cn"),
                mail: first("mail"),
                disabled: first("nsAccountLock").eq_ignore_ascii_case("true"),
                in_users_group: member_of.contains(&users_group),
                in_admins_group: member_of.contains(&admins_group),
                uid,
            });
        }
        let result = stream.finish().await;
        match result.rc {
            0 => {}
            4 | 11 => {
                return Err(DirectoryError::SizeLimit {
                    read: users.len(),
                    rc: result.rc,
                    text: result.text,
                });
            }
            rc => {
                return Err(DirectoryError::Search {
                    what: "the member search".into(),
                    rc,
                    text: result.text,
                });
            }
        }
        // The groups (and nested groups) decide membership too: their USNs join the watermark.
        let groups_filter = format!(
            "(|(memberOf={})(memberOf={})(cn={})(cn={}))",
            ldap_escape(&tree.users_group),
            ldap_escape(&tree.admins_group),
            ldap_escape(group_cn(&tree.users_group)),
            ldap_escape(group_cn(&tree.admins_group)),
        );
        let adapters: Vec<Box<dyn Adapter<_, _>>> = vec![
            Box::new(EntriesOnly::new()),
            Box::new(PagedResults::new(PAGE_SIZE)),
        ];
        self.waiting("search the groups");
        let mut groups = self
            .ldap
            .with_timeout(OP_TIMEOUT)
            .streaming_search_with(
                adapters,
                &tree.groups,
                Scope::Subtree,
                &groups_filter,
                vec!["entryUSN"],
            )
            .await
            .map_err(|e| classify(&self.server, e))?;
        while let Some(entry) = groups.next().await.map_err(|e| classify(&self.server, e))? {
            let entry = SearchEntry::construct(entry);
            match entry
                .attrs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("entryUSN"))
                .and_then(|(_, v)| v.first())
                .and_then(|v| v.parse::<u64>().ok())
            {
                Some(usn) => max_usn = max_usn.max(usn),
                None => usn_visible = false,
            }
        }
        let result = groups.finish().await;
        if result.rc != 0 {
            return Err(DirectoryError::Search {
                what: "the group search".into(),
                rc: result.rc,
                text: result.text,
            });
        }
        let after = self.last_usns().await?;
        Ok(Snapshot {
            users,
            // Without entryUSN on the entries (plugin off, or not readable), every sync is a
            // full read.
            usn: usn_visible.then(|| watermark(max_usn, &before, &after)),
            admins_group_missing,
        })
    }

    async fn require_entry(
        &mut self,
        dn: &str,
        key: &str,
        may_be_hidden: bool,
    ) -> Result<(), DirectoryError> {
        self.waiting(&format!("read {dn}"));
        let ldap3::SearchResult(entries, result) = self
            .ldap
            .with_timeout(OP_TIMEOUT)
            .search(dn, Scope::Base, "(objectClass=*)", vec!["1.1"])
            .await
            .map_err(|e| classify(&self.server, e))?;
        match result.rc {
            0 if !entries.is_empty() || may_be_hidden => Ok(()),
            0 | 32 => Err(DirectoryError::Missing {
                dn: dn.to_string(),
                key: key.to_string(),
            }),
            rc => Err(DirectoryError::Search {
                what: format!("reading {dn}"),
                rc,
                text: result.text,
            }),
        }
    }

    /// Whether the tree the settings name is there: the base DN and the users group (read
    /// after a successful bind). What a change of `freeipa.*` must pass before it is in force.
    pub async fn check_tree(&mut self, tree: &Tree) -> Result<(), DirectoryError> {
        self.require_entry(&tree.base, "freeipa.base_dn", true)
            .await?;
        self.require_entry(&tree.users_group, "freeipa.base_dn", false)
            .await
    }

    /// RFC 4533 content sync in refreshAndPersist mode over the entries that decide membership:
    /// after the initial refresh, every change the server reports calls `on_change`. Used only
    /// as a trigger (the sync itself stays the checked, fail-safe read). Returns when the
    /// server ends the search or the connection fails.
    pub async fn persist(
        mut self,
        tree: &Tree,
        on_change: impl Fn(),
    ) -> Result<(), DirectoryError> {
        let filter = format!(
            "(|{}(cn={})(cn={}))",
            tree.member_filter(),
            ldap_escape(group_cn(&tree.users_group)),
            ldap_escape(group_cn(&tree.admins_group)),
        );
        let request = ldap3::controls::SyncRequest {
            mode: ldap3::controls::RefreshMode::RefreshAndPersist,
            cookie: None,
            reload_hint: false,
        };
        let mut stream = self
            .ldap
            .with_controls(request)
            .streaming_search(&tree.base, Scope::Subtree, &filter, vec!["1.1"])
            .await
            .map_err(|e| classify(&self.server, e))?;
        let mut refreshed = false;
        while let Some(entry) = stream.next().await.map_err(|e| classify(&self.server, e))? {
            if entry.is_intermediate() {
                // The Sync Info message that ends the refresh phase.
                refreshed = true;
            } else if refreshed && !entry.is_ref() {
                on_change();
            }
        }
        let result = stream.finish().await;
        Err(DirectoryError::Search {
            what: "the content sync (refreshAndPersist) search".into(),
            rc: result.rc,
            text: if result.text.is_empty() {
                "the server ended it".into()
            } else {
                result.text
            },
        })
    }

    /// Whether a kept connection still works (a Who am I? round trip, RFC 4532).
    pub async fn alive(&mut self) -> bool {
        let check = self
            .ldap
            .with_timeout(Duration::from_secs(5))
            .extended(ldap3::exop::WhoAmI)
            .await;
        matches!(check, Ok(result) if result.1.rc == 0)
    }

    pub async fn close(mut self) {
        let _ = self.ldap.unbind().await;
    }
}

fn group_cn(dn: &str) -> &str {
    dn.split(',')
        .next()
        .and_then(|rdn| rdn.split_once('='))
        .map_or(dn, |(_, v)| v)
}

/// The watermark for the next change check: every entry that decides membership had a USN at
/// or below `max_seen` when it was read. If a backend's counter moved while the read ran, an
/// entry read early may have changed after it was read; then the watermark drops to that
/// backend's counter from before the read, so the next check sees the change (at worst it
/// costs one extra full read). The backend holding the tree need not be known.
pub fn watermark(
    max_seen: u64,
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> u64 {
    before
        .iter()
        .filter(|(backend, value)| after.get(*backend) != Some(*value))
        .map(|(_, value)| *value)
        .fold(max_seen, u64::min)
}

/// DNs compare case-insensitively and without spaces around separators.
pub fn normalize_dn(dn: &str) -> String {
    dn.split(',')
        .map(|rdn| {
            let (attr, value) = rdn.split_once('=').unwrap_or((rdn, ""));
            format!("{}={}", attr.trim(), value.trim())
        })
        .collect::<Vec<_>>()
        .join(",")
        .to_lowercase()
}

fn classify(url: &str, error: LdapError) -> DirectoryError {
    let text = error.to_string();
    match error {
        LdapError::Timeout { .. } => DirectoryError::Timeout {
            server: url.to_string(),
        },
        LdapError::Rustls { .. } => DirectoryError::Tls {
            server: url.to_string(),
            reason: text,
        },
        LdapError::Io { source } => {
            let inner = source.to_string();
            if inner.contains("certificate")
                || inner.contains("InvalidCertificate")
                || inner.contains("tls")
            {
                DirectoryError::Tls {
                    server: url.to_string(),
                    reason: inner,
                }
            } else {
                DirectoryError::Connect {
                    server: url.to_string(),
                    reason: inner,
                }
            }
        }
        LdapError::LdapResult { result } if result.rc == 4 || result.rc == 11 => {
            DirectoryError::SizeLimit {
                read: 0,
                rc: result.rc,
                text: result.text,
            }
        }
        LdapError::LdapResult { result } => DirectoryError::Search {
            what: "a request".into(),
            rc: result.rc,
            text: result.text,
        },
        _ => DirectoryError::Connect {
            server: url.to_string(),
            reason: text,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, v)| ((*k).to_string(), *v)).collect()
    }

    #[test]
    fn a_quiet_read_keeps_the_highest_usn_seen() {
        let before = counters(&[
            ("lastusn;userroot", 500),
            ("lastusn;changelog", 4_294_967_301),
        ]);
        assert_eq!(watermark(480, &before, &before), 480);
    }

    #[test]
    fn a_change_during_the_read_drops_to_the_counter_from_before() {
        let before = counters(&[
            ("lastusn;userroot", 500),
            ("lastusn;changelog", 4_294_967_301),
        ]);
        let after = counters(&[
            ("lastusn;userroot", 503),
            ("lastusn;changelog", 4_294_967_304),
        ]);
        // An entry read early may have been changed at 501..503: the next check must see it.
        assert_eq!(watermark(502, &before, &after), 500);
        // A counter that moved but starts above what was seen changes nothing.
        assert_eq!(watermark(480, &before, &after), 480);
    }

    #[test]
    fn dn_comparison_ignores_case_and_spaces() {
        assert_eq!(
            normalize_dn("CN=Demo_Users, cn=groups,DC=example"),
            "cn=demo_users,cn=groups,dc=example"
        );
    }
}
