use std::path::{Path, PathBuf};

use super::*;

const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

/// A directory with a valid main config and the files it points at.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ipa-password"), "secret\n").unwrap();
        std::fs::write(dir.path().join("ipa-ca.pem"), CA).unwrap();
        let fixture = Self { dir };
        fixture.write_main(&Self::valid_main());
        fixture
    }

    fn valid_main() -> String {
        r#"[cluster]
name = "Demo-Cluster"
external_ip = "192.0.2.10"

[notebook]
cpus = 2

[freeipa]
server = "ipa.example.test"
base_dn = "dc=example,dc=test"
bind_dn = "uid=pangeod,cn=sysaccounts,cn=etc,dc=example,dc=test"
password_file = "ipa-password"
ca_file = "ipa-ca.pem"
"#
        .to_string()
    }

    fn main_path(&self) -> PathBuf {
        self.dir.path().join("pangeod.toml")
    }

    fn write_main(&self, text: &str) {
        std::fs::write(self.main_path(), text).unwrap();
    }

    fn write_dropin(&self, name: &str, text: &str) -> PathBuf {
        let dir = self.dir.path().join("pangeod.d");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn load(&self) -> Result<Config, ConfigError> {
        Config::load(&self.main_path(), None)
    }

    fn error(&self) -> String {
        self.load().unwrap_err().to_string()
    }
}

fn replace(text: &str, from: &str, to: &str) -> String {
    assert!(text.contains(from), "fixture lacks {from:?}");
    text.replacen(from, to, 1)
}

#[test]
fn valid_config_loads_with_defaults_and_derived_values() {
    let f = Fixture::new();
    let config = f.load().unwrap();
    assert_eq!(config.notebook.cpus, 2);
    assert_eq!(config.notebook.ram_gb, 2);
    assert_eq!(config.notebook.storage_gb, 10);
    assert_eq!(config.hub.admin_users, vec!["admin".to_string()]);
    assert_eq!(config.users_group(), "demo_cluster_notebook_users");
    assert_eq!(config.admins_group(), "demo_cluster_notebook_admins");
    assert_eq!(config.domain(), "pangeo.192-0-2-10.sslip.io");
    assert_eq!(config.hub_url(), "https://pangeo.192-0-2-10.sslip.io/");
    // Relative paths resolve against the file that named them, not the working directory.
    assert_eq!(
        config.freeipa.password_file,
        f.dir.path().join("ipa-password")
    );
}

#[test]
fn ipv6_default_domain_uses_dashes() {
    let ip: IpAddr = "2001:db8::10".parse().unwrap();
    assert_eq!(default_domain(ip), "pangeo.2001-db8--10.sslip.io");
}

#[test]
fn missing_file_names_the_path_and_the_fix() {
    let f = Fixture::new();
    let missing = f.dir.path().join("nope.toml");
    let error = Config::load(&missing, None).unwrap_err().to_string();
    assert_eq!(
        error,
        format!(
            "cannot read config file {}: No such file or directory (os error 2); create it, or pass the right file with --config",
            missing.display()
        )
    );
}

#[test]
fn bad_toml_names_file_line_and_column() {
    let f = Fixture::new();
    f.write_main(&replace(&Fixture::valid_main(), "cpus = 2", "cpus = = 2"));
    let error = f.error();
    let prefix = format!("{}:6:8: ", f.main_path().display());
    assert!(error.starts_with(&prefix), "{error}");
    assert!(error.ends_with("; fix the TOML syntax there"), "{error}");
}

#[test]
fn unknown_key_is_an_error_listing_the_valid_keys() {
    let f = Fixture::new();
    f.write_main(&replace(&Fixture::valid_main(), "cpus = 2", "cpu = 2"));
    assert_eq!(
        f.error(),
        format!(
            "{}:6:1: notebook.cpu: unknown key; remove it or correct the spelling; valid keys in [notebook] are: cpus, ram_gb, storage_gb, idle_cull_timeout_minutes",
            f.main_path().display()
        )
    );
}

#[test]
fn unknown_section_is_an_error() {
    let f = Fixture::new();
    f.write_main(&format!("{}\n[notbook]\ncpus = 1\n", Fixture::valid_main()));
    let error = f.error();
    assert!(
        error.contains(
            ":15:2: notbook: unknown key; remove it; settings live in the sections [cluster]"
        ),
        "{error}"
    );
}

#[test]
fn wrong_type_names_the_key_and_the_expected_kind() {
    let f = Fixture::new();
    f.write_main(&replace(
        &Fixture::valid_main(),
        "cpus = 2",
        "cpus = \"two\"",
    ));
    assert_eq!(
        f.error(),
        format!(
            "{}:6:1: notebook.cpus: invalid type: string \"two\", expected i64; write it as an integer",
            f.main_path().display()
        )
    );
}

#[test]
fn value_out_of_range_names_the_range() {
    let f = Fixture::new();
    f.write_main(&replace(&Fixture::valid_main(), "cpus = 2", "cpus = 0"));
    assert_eq!(
        f.error(),
        format!(
            "{}:6:1: notebook.cpus: 0 is out of range: it must be an integer from 1 to 256; set notebook.cpus to a value from 1 to 256",
            f.main_path().display()
        )
    );
}

#[test]
fn dask_limits_are_bounded_by_the_cluster_options() {
    let f = Fixture::new();
    f.write_main(&format!(
        "{}\n[dask]\nmax_worker_cores = 9\n",
        Fixture::valid_main()
    ));
    assert!(
        f.error().contains(
            "dask.max_worker_cores: 9 is out of range: it must be an integer from 1 to 8"
        )
    );
}

#[test]
fn bad_ip_is_named() {
    let f = Fixture::new();
    f.write_main(&replace(
        &Fixture::valid_main(),
        "192.0.2.10",
        "192.0.2.300",
    ));
    assert_eq!(
        f.error(),
        format!(
            "{}:3:1: cluster.external_ip: \"192.0.2.300\" is not an IPv4 or IPv6 address; write it like \"192.0.2.10\" or \"2001:db8::10\"",
            f.main_path().display()
        )
    );
}

#[test]
fn bad_cidr_is_named_and_host_bits_are_refused() {
    let f = Fixture::new();
    f.write_main(&format!(
        "{}\n[api]\nadmin_allowed_cidrs = [\"10.0.0.0/33\", \"10.1.2.3/8\"]\n",
        Fixture::valid_main()
    ));
    let error = f.error();
    let path = f.main_path().display().to_string();
    assert_eq!(
        error,
        format!(
            "{path}:16:1: api.admin_allowed_cidrs: \"10.0.0.0/33\" is not a CIDR; write networks like \"192.0.2.0/24\" or \"2001:db8::/32\"; a single host is \"192.0.2.7/32\"\n\
             {path}:16:1: api.admin_allowed_cidrs: \"10.1.2.3/8\" has host bits set; write the network address, \"10.0.0.0/8\""
        )
    );
}

#[test]
fn bad_dn_is_named() {
    let f = Fixture::new();
    f.write_main(&replace(
        &Fixture::valid_main(),
        "dc=example,dc=test\"\nbind",
        "dc=example,,dc=test\"\nbind",
    ));
    assert_eq!(
        f.error(),
        format!(
            "{}:10:1: freeipa.base_dn: \"dc=example,,dc=test\" is not a valid LDAP DN: \"\" has no '='; write it as comma-separated attribute=value pairs, for example \"cn=users,cn=accounts,dc=example,dc=test\"",
            f.main_path().display()
        )
    );
}

#[test]
fn dn_syntax_accepts_escapes_and_oids() {
    assert!(rules::check_dn("cn=Smith\\, John,ou=people,dc=example,dc=test").is_ok());
    assert!(rules::check_dn("2.5.4.3=x+uid=y,dc=test").is_ok());
    assert!(rules::check_dn("dc=example,").is_err());
    assert!(rules::check_dn("1x=y").is_err());
    assert!(rules::check_dn("cn=").is_err());
    // Issue 20: what the sync's filters and the hub's login templates cannot take.
    for bad in [
        "dc=example\n,dc=test",
        "dc=ex\u{1b}[2Jample,dc=test",
        "dc={0},dc=test",
        "cn=a}b,dc=test",
        "cn=\"\"\",dc=test",
        "cn=a;b,dc=test",
        "cn=a<b,dc=test",
        "cn=a\\q,dc=test",
        "cn=a\\4,dc=test",
    ] {
        assert!(rules::check_dn(bad).is_err(), "{bad:?} was accepted");
    }
    assert!(rules::check_dn("cn=a\\3Bb,dc=test").is_ok());
    assert!(rules::check_dn("cn=a\\;b,dc=test").is_ok());
    assert!(rules::check_dn("cn=Jos\u{e9},dc=test").is_ok());
    // An escaped separator is part of the value, and a value may hold '=' and '#'.
    assert!(rules::check_dn("cn=a\\+b=c,dc=test").is_ok());
    assert!(rules::check_dn("cn=x\\,y #1 , dc=test").is_ok());
    assert!(rules::check_dn("cn\\=x=y,dc=test").is_err());
    assert!(rules::check_dn("cn=  ,dc=test").is_err());
}

/// The OpenAPI document declares `freeipa.base_dn`, `bind_dn` and `server` with patterns, and a
/// client that follows them (the fuzz run's schemathesis, the portal) must never be refused: the
/// server's rule and the declared one give the same answer, here through a JSON Schema
/// validator on the document's own field schemas, for chosen strings and 20,000 random ones.
#[test]
fn the_declared_patterns_are_the_config_rules() {
    use rand::{Rng, SeedableRng};
    let validator = |schema: serde_json::Value| {
        jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .unwrap()
    };
    let dn = validator(serde_json::to_value(crate::api::dn_schema().build()).unwrap());
    let server = validator(serde_json::to_value(crate::api::server_schema()).unwrap());
    let user = validator(serde_json::to_value(crate::api::user_name_schema().build()).unwrap());
    let same = |text: &str| {
        let value = serde_json::Value::from(text);
        assert_eq!(
            rules::is_username(text),
            user.is_valid(&value),
            "user name {text:?}: the config says {}",
            rules::is_username(text)
        );
        assert_eq!(
            rules::check_dn(text).is_ok(),
            dn.is_valid(&value),
            "DN {text:?}: the config says {:?}",
            rules::check_dn(text)
        );
        assert_eq!(
            rules::is_host_port(text),
            server.is_valid(&value),
            "server {text:?}: the config says {}",
            rules::is_host_port(text)
        );
    };
    for text in [
        "",
        " ",
        "dc=example,dc=test",
        " dc = example , dc=test",
        "cn=Smith\\, John,ou=people,dc=test",
        "2.5.4.3=x+uid=y,dc=test",
        "cn=a\\3Bb",
        "cn=a\\3",
        "cn=a\\",
        "cn=\\ ",
        "cn= \\20",
        "cn=Jos\u{e9}",
        "cn=a\u{85}b",
        "cn=a\u{a0}",
        "cn=a\n",
        "1x=y",
        "a-=b",
        "1.=b",
        "ipa.example.org",
        "ipa.example.org:636",
        "ipa.example.org:0636",
        "ipa.example.org:65535",
        "ipa.example.org:65536",
        "ipa.example.org:+636",
        "ipa-.example.org",
        "127.0.0.1:9",
        "::1",
        "[::1]",
        "[::1]:636",
        "[::1]:",
        "1::2:3:4:5:6:7",
        "::ffff:192.0.2.1",
        "[::ffff:192.0.2.1]:389",
        "::ffff:192.0.2.01",
        "fe80::1%2",
        "[1:2:3:4:5:6:7:8]",
        "1:2:3:4:5:6:7:8:9",
        "ldap://ipa.example.org",
        "admin",
        "-admin",
        ".admin",
        "a_b-c.d",
        "Jos\u{e9}",
    ] {
        same(text);
    }
    let long = format!(
        "{}.{}.{}.{}",
        "a".repeat(63),
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(61)
    );
    same(&long);
    same(&format!("{long}e"));
    same(&format!("{long}:389"));
    same(&"u".repeat(255));
    same(&"u".repeat(256));
    let alphabet: Vec<char> = "cnd=, +\\\"#;<>{}3Bab.-:0129[]fF_\u{e9}\u{1}\u{85}\u{a0}\n"
        .chars()
        .collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(20261206);
    for _ in 0..20_000 {
        let len = rng.random_range(0..16);
        let text: String = (0..len)
            .map(|_| alphabet[rng.random_range(0..alphabet.len())])
            .collect();
        same(&text);
    }
}

#[test]
fn unreadable_files_are_named() {
    let f = Fixture::new();
    std::fs::remove_file(f.dir.path().join("ipa-password")).unwrap();
    std::fs::write(f.dir.path().join("ipa-ca.pem"), "not a cert").unwrap();
    let error = f.error();
    let dir = f.dir.path().display();
    assert!(error.contains(&format!(
        "freeipa.password_file: cannot read file {dir}/ipa-password: No such file or directory (os error 2); create the file, or fix the path or its permissions"
    )), "{error}");
    assert!(error.contains(&format!(
        "freeipa.ca_file: file {dir}/ipa-ca.pem does not contain \"-----BEGIN CERTIFICATE-----\"; point it at a PEM-encoded CA certificate"
    )), "{error}");
}

#[test]
fn missing_required_keys_are_listed_together() {
    let f = Fixture::new();
    f.write_main("[notebook]\ncpus = 1\n");
    let error = f.load().unwrap_err();
    let keys: Vec<_> = error
        .field_errors()
        .iter()
        .map(|e| e.key.as_str())
        .collect();
    assert_eq!(
        keys,
        [
            "cluster.name",
            "cluster.external_ip",
            "freeipa.server",
            "freeipa.base_dn",
            "freeipa.bind_dn",
            "freeipa.password_file",
            "freeipa.ca_file"
        ]
    );
    assert!(error.to_string().starts_with(
        "(default value): cluster.name: is required and is not set in any config file; set it, for example cluster.name = \"my-cluster\""
    ));
}

#[test]
fn dropins_apply_in_name_order_and_errors_name_the_dropin() {
    let f = Fixture::new();
    f.write_dropin("20-later.toml", "[notebook]\nram_gb = 8\n");
    f.write_dropin("10-portal.toml", "[notebook]\nram_gb = 4\ncpus = 3\n");
    f.write_dropin("ignored.txt", "not toml at all = = =");
    let config = f.load().unwrap();
    assert_eq!(config.notebook.ram_gb, 8);
    assert_eq!(config.notebook.cpus, 3);

    let bad = f.write_dropin("30-bad.toml", "[notebook]\n\nstorage_gb = -5\n");
    assert_eq!(
        f.error(),
        format!(
            "{}:3:1: notebook.storage_gb: -5 is out of range: it must be an integer from 1 to 65536; set notebook.storage_gb to a value from 1 to 65536",
            bad.display()
        )
    );
}

#[test]
fn api_overlay_is_checked_like_a_file() {
    let f = Fixture::new();
    let mut layers = load_layers(&f.main_path()).unwrap();
    let overlay: toml::Table = toml::from_str("[notebook]\nram_gb = 16\n").unwrap();
    layers.push(Layer::from_table("admin API revision 3", overlay).unwrap());
    assert_eq!(
        Config::from_layers(&layers, &Default::default())
            .unwrap()
            .notebook
            .ram_gb,
        16
    );

    let bad: toml::Table = toml::from_str("[notebook]\nram = 16\n").unwrap();
    let error = Layer::from_table("admin API revision 4", bad)
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("admin API revision 4: notebook.ram: unknown key"),
        "{error}"
    );
}

#[test]
fn every_known_key_is_wired_to_the_model() {
    // A config setting every key to a non-default value: each must show up in the result,
    // so a key declared in SETTINGS but ignored by the rules fails here.
    let f = Fixture::new();
    let state = f.dir.path().join("state");
    f.write_main(&format!(
        r#"[cluster]
name = "c1"
external_ip = "2001:db8::10"
domain = "Pangeo.Example.org."
[notebook]
cpus = 3
ram_gb = 5
storage_gb = 7
idle_cull_timeout_minutes = 0
[dask]
max_worker_cores = 2
max_worker_memory_gb = 3
[freeipa]
server = "ipa.example.test:1636"
tls = "starttls"
base_dn = "dc=a,dc=b"
bind_dn = "uid=x,dc=a,dc=b"
password_file = "ipa-password"
ca_file = "ipa-ca.pem"
sync_interval_seconds = 60
[hub]
admin_users = ["alice", "bob"]
admin_access = false
api_url = "http://127.0.0.1:8081/hub/api"
api_token_file = "ipa-password"
ca_file = "ipa-ca.pem"
[api]
socket = "run/admin.sock"
socket_group = "pangeo-admins"
admin_allowed_cidrs = ["192.0.2.0/24"]
listen = "127.0.0.1:8443"
token_file = "tokens"
tls_cert = "tls/cert.pem"
tls_key = "tls/key.pem"
[daemon]
state_dir = "{}"
data_dir = "data"
require_data_disk = false
min_free_gb = 0
[k3s]
mode = "external"
binary = "bin/k3s"
kubeconfig = "kube/config"
[storage]
volume_group = "homes"
size_gb = 100
device = "/dev/vdc"
"#,
        state.display()
    ));
    let config = f.load().unwrap();
    let keys_seen = settings::SETTINGS.iter().filter(|s| s.in_files()).count();
    assert_eq!(keys_seen, 38, "update this test when adding a key");
    assert_eq!(config.k3s.mode, crate::config::K3sMode::External);
    assert_eq!(config.storage.volume_group, "homes");
    assert_eq!(config.storage.size_gb, 100);
    assert_eq!(
        config.storage.device.as_deref(),
        Some(std::path::Path::new("/dev/vdc"))
    );
    assert_eq!(config.k3s.binary, f.dir.path().join("bin/k3s"));
    assert_eq!(config.k3s.kubeconfig, f.dir.path().join("kube/config"));
    assert_eq!(config.cluster.domain.as_deref(), Some("pangeo.example.org"));
    assert_eq!(config.cluster.external_ip.to_string(), "2001:db8::10");
    assert_eq!(
        (
            config.notebook.cpus,
            config.notebook.ram_gb,
            config.notebook.storage_gb
        ),
        (3, 5, 7)
    );
    assert_eq!(config.notebook.idle_cull_timeout_minutes, 0);
    assert_eq!(
        (
            config.dask.max_worker_cores,
            config.dask.max_worker_memory_gb
        ),
        (2, 3)
    );
    assert_eq!(config.freeipa.server, "ipa.example.test:1636");
    assert_eq!(config.freeipa.tls, LdapTls::Starttls);
    assert_eq!(config.freeipa.base_dn, "dc=a,dc=b");
    assert_eq!(config.freeipa.bind_dn, "uid=x,dc=a,dc=b");
    assert_eq!(config.freeipa.sync_interval_seconds, 60);
    assert_eq!(config.hub.admin_users, ["alice", "bob"]);
    assert!(!config.hub.admin_access);
    assert_eq!(
        config.hub.api_url.as_deref(),
        Some("http://127.0.0.1:8081/hub/api")
    );
    assert_eq!(
        config.hub.api_token_file,
        Some(f.dir.path().join("ipa-password"))
    );
    assert_eq!(config.hub.ca_file, Some(f.dir.path().join("ipa-ca.pem")));
    assert_eq!(config.api.socket, f.dir.path().join("run/admin.sock"));
    assert_eq!(config.api.socket_group.as_deref(), Some("pangeo-admins"));
    assert_eq!(
        config.api.admin_allowed_cidrs[0].to_string(),
        "192.0.2.0/24"
    );
    assert_eq!(config.api.listen.map(|a| a.port()), Some(8443));
    assert_eq!(config.api.token_file, Some(f.dir.path().join("tokens")));
    assert_eq!(config.api.tls_cert, Some(f.dir.path().join("tls/cert.pem")));
    assert_eq!(config.api.tls_key, Some(f.dir.path().join("tls/key.pem")));
    assert_eq!(config.daemon.state_dir, state);
    assert_eq!(config.daemon.data_dir, f.dir.path().join("data"));
    assert!(!config.daemon.require_data_disk);
    assert_eq!(config.daemon.min_free_gb, 0);
    assert!(Path::new(&config.freeipa.password_file).is_absolute());
    assert!(config.freeipa.ca_file.is_some());
}

#[test]
fn shipped_config_files_use_only_known_keys_of_the_right_type() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    for name in ["pangeod.toml", "portal-example.toml", "dev.toml"] {
        if let Err(error) = Layer::from_file(&root.join(name)) {
            panic!("config/{name}: {error}");
        }
    }
}

#[test]
fn shipped_example_configs_are_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config");
    let path = root.join("dev.toml");
    if let Err(error) = Config::load(&path, None) {
        panic!("{}: {error}", path.display());
    }
}

fn locked(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, LockedValue> {
    pairs
        .iter()
        .map(|(k, v)| {
            (
                (*k).to_string(),
                LockedValue {
                    value: (*v).to_string(),
                    since: "2026-01-01T00:00:00Z".into(),
                },
            )
        })
        .collect()
}

#[test]
fn a_locked_key_cannot_change_in_the_main_file() {
    let f = Fixture::new();
    let config = f.load().unwrap();
    let values = config.immutable_values();
    assert_eq!(
        values,
        [
            ("cluster.name".to_string(), "Demo-Cluster".to_string()),
            ("cluster.external_ip".to_string(), "192.0.2.10".to_string()),
            (
                "cluster.domain".to_string(),
                "pangeo.192-0-2-10.sslip.io".to_string()
            ),
            ("storage.volume_group".to_string(), "pangeo".to_string()),
        ]
    );
    let lock = locked(&[
        ("cluster.name", "Demo-Cluster"),
        ("cluster.external_ip", "192.0.2.10"),
        ("cluster.domain", "pangeo.192-0-2-10.sslip.io"),
    ]);
    let layers = load_layers(&f.main_path()).unwrap();
    assert!(
        Config::from_layers(&layers, &lock).is_ok(),
        "unchanged values pass"
    );

    f.write_main(&replace(&Fixture::valid_main(), "Demo-Cluster", "other"));
    let layers = load_layers(&f.main_path()).unwrap();
    let error = Config::from_layers(&layers, &lock).unwrap_err().to_string();
    assert_eq!(
        error,
        format!(
            "{}:2:1: cluster.name: cannot change from \"Demo-Cluster\" to \"other\": it was locked at the first successful boot (2026-01-01T00:00:00Z), and the appliance keeps \"Demo-Cluster\"; restore cluster.name = \"Demo-Cluster\", or launch a new appliance for a different value",
            f.main_path().display()
        )
    );
}

#[test]
fn a_dropin_cannot_override_a_locked_key() {
    let f = Fixture::new();
    let lock = locked(&[
        ("cluster.external_ip", "192.0.2.10"),
        ("cluster.domain", "pangeo.192-0-2-10.sslip.io"),
    ]);
    let dropin = f.write_dropin(
        "50-portal.toml",
        "[cluster]\ndomain = \"pangeo.example.org\"\n",
    );
    let layers = load_layers(&f.main_path()).unwrap();
    let error = Config::from_layers(&layers, &lock).unwrap_err();
    assert_eq!(error.key(), Some("cluster.domain"));
    assert!(
        error.to_string().starts_with(&format!(
            "{}:2:1: cluster.domain: cannot change from \"pangeo.192-0-2-10.sslip.io\" to \"pangeo.example.org\"",
            dropin.display()
        )),
        "{error}"
    );
}

#[test]
fn the_volume_group_is_locked_like_the_cluster_keys() {
    // The homes' StorageClass names the group, and its parameters can never change.
    let f = Fixture::new();
    let lock = locked(&[("storage.volume_group", "pangeo")]);
    let dropin = f.write_dropin("50-portal.toml", "[storage]\nvolume_group = \"homes\"\n");
    let layers = load_layers(&f.main_path()).unwrap();
    let error = Config::from_layers(&layers, &lock).unwrap_err();
    assert_eq!(error.key(), Some("storage.volume_group"));
    assert!(
        error.to_string().starts_with(&format!(
            "{}:2:1: storage.volume_group: cannot change from \"pangeo\" to \"homes\"",
            dropin.display()
        )),
        "{error}"
    );
}

#[test]
fn bootstrap_reads_plumbing_even_when_the_platform_config_is_broken() {
    let f = Fixture::new();
    f.write_main(&format!(
        "{}\n[api]\nsocket = \"run/admin.sock\"\nlisten = \"127.0.0.1:0\"\n[daemon]\nstate_dir = \"state\"\n",
        replace(&Fixture::valid_main(), "cpus = 2", "cpus = 0")
    ));
    f.write_dropin(
        "50-portal.toml",
        "[notebook]\ncpu = 1\n[api]\nsocket_group = \"admins\"\n",
    );
    let boot = bootstrap(&f.main_path());
    assert_eq!(boot.daemon.state_dir, f.dir.path().join("state"));
    assert_eq!(boot.api.socket, f.dir.path().join("run/admin.sock"));
    assert_eq!(boot.api.listen.map(|a| a.port()), Some(0));
    // The drop-in has an unknown key elsewhere, but its [api] section is still read.
    assert_eq!(boot.api.socket_group.as_deref(), Some("admins"));
    assert_eq!(boot.names, ["192.0.2.10"]);
}

#[test]
fn a_hub_api_url_must_be_the_hubs_api() {
    let f = Fixture::new();
    f.write_main(&format!(
        "{}[hub]\napi_url = \"http://127.0.0.1:8081/\"\n",
        Fixture::valid_main()
    ));
    let error = f.load().unwrap_err().to_string();
    assert!(
        error.contains("hub.api_url") && error.contains("does not end in /hub/api"),
        "{error}"
    );
    f.write_main(&format!(
        "{}[hub]\napi_url = \"hub:8081/hub/api\"\n",
        Fixture::valid_main()
    ));
    let error = f.load().unwrap_err().to_string();
    assert!(error.contains("is not an http(s) URL"), "{error}");
}

/// The fields serde knows in one struct of `RawConfig` (the top level when `section` is
/// `None`), in declaration order, as its unknown-field error lists them.
fn raw_fields(section: Option<&str>) -> Vec<String> {
    use serde::Deserialize;
    let probe = "not_a_key_of_any_section";
    let mut table = toml::Table::new();
    match section {
        None => {
            table.insert(probe.into(), toml::Value::Table(toml::Table::new()));
        }
        Some(section) => {
            let mut inner = toml::Table::new();
            inner.insert(probe.into(), toml::Value::Integer(0));
            table.insert(section.into(), toml::Value::Table(inner));
        }
    }
    let error = raw::RawConfig::deserialize(toml::Value::Table(table))
        .unwrap_err()
        .message()
        .to_string();
    // "unknown field `x`, expected one of `a`, `b`" (or "expected `a`" for one field)
    let (_, expected) = error
        .split_once("expected")
        .unwrap_or_else(|| panic!("not an unknown-field error: {error}"));
    let fields: Vec<String> = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    assert!(!fields.is_empty(), "no field list in: {error}");
    fields
}

#[test]
fn the_settings_table_and_the_raw_config_have_the_same_keys() {
    let sections = settings::file_sections();
    assert_eq!(
        raw_fields(None),
        sections,
        "the sections of RawConfig (raw.rs) and of SETTINGS (settings.rs) differ"
    );
    for section in sections {
        let declared: Vec<&str> = settings::file_keys(section).map(|s| s.name()).collect();
        assert_eq!(
            raw_fields(Some(section)),
            declared,
            "the keys of [{section}] in raw.rs and in settings.rs differ (the order too counts: it is the README's and the error messages')"
        );
    }
    // A choice's values are exactly what serde takes for it.
    for setting in settings::SETTINGS.iter().filter(|s| s.in_files()) {
        let check = |value: toml::Value| {
            let mut inner = toml::Table::new();
            inner.insert(setting.name().into(), value);
            let mut table = toml::Table::new();
            table.insert(setting.section().into(), toml::Value::Table(inner));
            Layer::from_table("test", table)
        };
        if let settings::Kind::Choice(values) = setting.kind {
            for value in values {
                assert!(
                    check(toml::Value::from(*value)).is_ok(),
                    "{}: serde refuses the declared choice {value:?}",
                    setting.key
                );
            }
            let error = check(toml::Value::from("none-of-these"))
                .unwrap_err()
                .to_string();
            assert!(
                error.contains(&format!("write it as {}", setting.kind.toml_phrase())),
                "{error}"
            );
        }
    }
    // The API-only keys are no keys of the files.
    for setting in settings::SETTINGS.iter().filter(|s| !s.in_files()) {
        assert!(!is_known_key(setting.key), "{}", setting.key);
        assert!(setting.through_api(), "{}", setting.key);
    }
}

#[test]
fn the_defaults_in_force_are_the_declared_ones() {
    let f = Fixture::new();
    let main = replace(&Fixture::valid_main(), "[notebook]\ncpus = 2\n", "");
    f.write_main(&main);
    let set: toml::Table = toml::from_str(&main).unwrap();
    let is_set = |s: &settings::Setting| {
        set.get(s.section())
            .and_then(|section| section.get(s.name()))
            .is_some()
    };
    let config = serde_json::to_value(f.load().unwrap()).unwrap();
    let mut checked = 0;
    for setting in settings::SETTINGS.iter().filter(|s| s.in_files()) {
        let value = &config[setting.section()][setting.name()];
        let expected = match setting.default {
            settings::DefaultValue::Required => {
                assert!(is_set(setting), "{} is required", setting.key);
                continue;
            }
            _ if is_set(setting) => continue,
            settings::DefaultValue::Integer(n) => serde_json::Value::from(n),
            settings::DefaultValue::Bool(b) => serde_json::Value::from(b),
            settings::DefaultValue::Text(text) => serde_json::Value::from(text),
            settings::DefaultValue::List(items) => serde_json::Value::from(items.to_vec()),
            settings::DefaultValue::Unset(_) => serde_json::Value::Null,
        };
        assert_eq!(value, &expected, "the default of {} in force", setting.key);
        checked += 1;
    }
    assert_eq!(checked, 31, "every key the fixture does not set is checked");
}

#[test]
fn the_declared_integer_ranges_are_enforced() {
    let mut checked = 0;
    for setting in settings::SETTINGS.iter().filter(|s| s.in_files()) {
        let settings::Kind::Integer { min, max } = setting.kind else {
            continue;
        };
        let f = Fixture::new();
        let write = |value: i64| {
            f.write_dropin(
                "50-range.toml",
                &format!("[{}]\n{} = {value}\n", setting.section(), setting.name()),
            )
        };
        for value in [i64::from(min), i64::from(max)] {
            write(value);
            let config = serde_json::to_value(f.load().unwrap()).unwrap();
            assert_eq!(config[setting.section()][setting.name()], value);
        }
        for value in [i64::from(min) - 1, i64::from(max) + 1] {
            let path = write(value);
            assert_eq!(
                f.error(),
                format!(
                    "{}:2:1: {}: {value} is out of range: it must be an integer from {min} to {max}; set {} to a value from {min} to {max}",
                    path.display(),
                    setting.key,
                    setting.key
                )
            );
        }
        checked += 1;
    }
    assert_eq!(checked, 9);
}

#[test]
fn every_locked_key_has_a_value_to_lock() {
    let config = Fixture::new().load().unwrap();
    let locked: Vec<_> = settings::locked_keys().collect();
    assert_eq!(
        locked,
        [
            "cluster.name",
            "cluster.external_ip",
            "cluster.domain",
            "storage.volume_group"
        ]
    );
    for key in locked {
        assert!(config.immutable_value(key).is_some(), "{key}");
    }
    assert_eq!(config.immutable_values().len(), 4);
}

#[test]
fn the_readme_table_is_the_settings_table() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let header = "| key | type | default | changeable | what it is |\n";
    let start = readme.find(header).expect(
        "README.md has no configuration table with the header of settings::reference_table",
    );
    let table_len = readme[start..]
        .split_inclusive('\n')
        .take_while(|line| line.starts_with('|'))
        .map(str::len)
        .sum::<usize>();
    let table = &readme[start..start + table_len];
    let expected = settings::reference_table();
    if table == expected {
        return;
    }
    if std::env::var_os("PANGEOD_UPDATE_README").is_some() {
        let updated = format!(
            "{}{expected}{}",
            &readme[..start],
            &readme[start + table_len..]
        );
        std::fs::write(&path, updated).unwrap();
        eprintln!("README.md: the configuration table was rewritten from SETTINGS");
        return;
    }
    let first_difference = table
        .lines()
        .zip(expected.lines())
        .find(|(a, b)| a != b)
        .map_or_else(
            || "a row is missing or extra".to_string(),
            |(a, b)| format!("README has\n  {a}\nSETTINGS makes\n  {b}"),
        );
    panic!(
        "README.md's configuration table differs from SETTINGS (daemon/src/config/settings.rs); \
         regenerate it with `PANGEOD_UPDATE_README=1 cargo test -p pangeod --lib readme`, or \
         replace it with the output of `cargo run -q --bin pangeod -- --print-settings-table`.\n\
         {first_difference}"
    );
}

#[test]
fn no_path_is_changed_through_the_api() {
    // A path through the API would let a token holder make pangeod read any file on the VM.
    let mut api_keys = 0;
    for setting in settings::SETTINGS {
        if setting.through_api() {
            assert_ne!(setting.kind, settings::Kind::Path, "{}", setting.key);
            api_keys += 1;
        }
    }
    assert_eq!(api_keys, settings::api_keys().count());
    assert_eq!(api_keys, 15);
}
