use serde_json::json;

use super::*;
use crate::config::Layer;

/// The objects of the default config, in apply order: the namespace first, the Secret and the
/// StorageClass before the charts that use them, the storage chart before the others.
const APPLY_ORDER: [&str; 6] = [
    "Namespace pangeo",
    "Secret pangeo/pangeo-secrets",
    "StorageClass pangeo-homes",
    "HelmChart pangeo/lvm-localpv",
    "HelmChart pangeo/jupyterhub",
    "HelmChart pangeo/dask-gateway",
];

fn config(extra: &str) -> Config {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "x").unwrap();
    std::fs::write(dir.path().join("ca.pem"), "-----BEGIN CERTIFICATE-----\n").unwrap();
    let text = format!(
        "[cluster]\nname = \"demo\"\nexternal_ip = \"192.0.2.10\"\n[freeipa]\nserver = \"ipa.example.test\"\nbase_dn = \"dc=example,dc=test\"\nbind_dn = \"uid=pangeod,cn=sysaccounts,cn=etc,dc=example,dc=test\"\npassword_file = \"pw\"\nca_file = \"ca.pem\"\n{extra}"
    );
    let layer = Layer::from_str("test.toml", Some(dir.path().to_path_buf()), &text).unwrap();
    Config::from_layers(&[layer], &Default::default()).unwrap()
}

fn secrets() -> Secrets {
    Secrets {
        proxy_token: "p".repeat(64),
        cookie_secret: "c".repeat(64),
        appliance_token: "a".repeat(64),
        gateway_token: "g".repeat(64),
    }
}

fn directory() -> DirectoryMaterial {
    DirectoryMaterial {
        ca_pem: Some("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into()),
    }
}

fn chart<'a>(rendered: &'a Rendered, name: &str) -> &'a RenderedChart {
    rendered.charts.iter().find(|c| c.name == name).unwrap()
}

/// A table of configs, from the smallest to the largest settings, each through both schemas.
#[test]
fn every_config_in_the_table_passes_both_upstream_schemas() {
    let table = [
        "",
        "[notebook]\ncpus = 1\nram_gb = 1\nstorage_gb = 1\nidle_cull_timeout_minutes = 0\n",
        "[notebook]\ncpus = 256\nram_gb = 1024\nstorage_gb = 10000\nidle_cull_timeout_minutes = 10080\n[dask]\nmax_worker_cores = 8\nmax_worker_memory_gb = 16\n",
        "[dask]\nmax_worker_cores = 1\nmax_worker_memory_gb = 1\n",
        "[hub]\nadmin_users = [\"alice\", \"bob.smith\", \"x-y_z\"]\n",
        "[hub]\nadmin_access = false\n",
    ];
    for (i, extra) in table.iter().enumerate() {
        let rendered = render(&config(extra), &secrets(), &directory());
        rendered
            .validate()
            .unwrap_or_else(|e| panic!("config {i}: {e}"));
        let checked = rendered
            .charts
            .iter()
            .filter(|c| c.schema.is_some())
            .count();
        assert_eq!(checked, 2, "both upstream charts are checked");
    }
    // Without a CA (plain LDAP), too.
    let plain = render(&config(""), &secrets(), &DirectoryMaterial { ca_pem: None });
    plain.validate().unwrap();
}

#[test]
fn notebook_resources_are_guaranteed_and_limited_alike() {
    let rendered = render(
        &config(
            "[notebook]\ncpus = 3\nram_gb = 12\nstorage_gb = 50\nidle_cull_timeout_minutes = 90\n",
        ),
        &secrets(),
        &directory(),
    );
    let values = &chart(&rendered, HUB_RELEASE).values;
    let single = &values["singleuser"];
    assert_eq!(single["cpu"], json!({ "limit": 3, "guarantee": 3 }));
    assert_eq!(
        single["memory"],
        json!({ "limit": "12G", "guarantee": "12G" })
    );
    assert_eq!(single["storage"]["capacity"], "50Gi");
    assert_eq!(single["storage"]["dynamic"]["storageClass"], STORAGE_CLASS);
    assert_eq!(values["cull"], json!({ "enabled": true, "timeout": 5400 }));
    assert_eq!(values["proxy"]["service"]["type"], "ClusterIP");
    assert_eq!(single["networkPolicy"]["enabled"], true);
    assert_eq!(
        values["ingress"]["hosts"],
        json!(["pangeo.192-0-2-10.sslip.io"])
    );
    assert_eq!(values["hub"]["config"]["KubeSpawner"]["delete_pvc"], false);
    assert_eq!(values["hub"]["db"]["type"], "sqlite-pvc");
}

#[test]
fn the_login_filter_matches_the_sync_and_excludes_disabled_accounts() {
    let rendered = render(
        &config("[hub]\nadmin_users = [\"admin\"]\n"),
        &secrets(),
        &directory(),
    );
    let ldap = &chart(&rendered, HUB_RELEASE).values["hub"]["config"]["LDAPAuthenticator"];
    assert_eq!(
        ldap["search_filter"],
        "(&({userattr}={username})(|(memberOf=cn=demo_notebook_users,cn=groups,cn=accounts,dc=example,dc=test)(memberOf=cn=demo_notebook_admins,cn=groups,cn=accounts,dc=example,dc=test)(uid=admin))(!(nsAccountLock=TRUE)))"
    );
    assert_eq!(ldap["server_address"], "ipa.example.test");
    assert_eq!(ldap["server_port"], 636);
    assert_eq!(ldap["tls_strategy"], "on_connect");
    assert_eq!(
        ldap["bind_dn_template"],
        json!(["uid={username},cn=users,cn=accounts,dc=example,dc=test"])
    );
    let text = serde_json::to_string(&chart(&rendered, HUB_RELEASE).values).unwrap();
    assert!(
        !text.contains("password"),
        "no directory password in the hub's values"
    );
    let config = &chart(&rendered, HUB_RELEASE).values["hub"]["config"];
    assert_eq!(config["Authenticator"]["allow_all"], true);
    // Every key is snake_case: a camelCase key (allowedGroups) is silently ignored by traitlets.
    for (class, keys) in config.as_object().unwrap() {
        for key in keys.as_object().unwrap().keys() {
            assert!(
                key.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{class}.{key} is not snake_case"
            );
        }
    }
}

#[test]
fn every_helm_chart_retries_and_comes_from_the_image_not_the_internet() {
    let rendered = render(&config(""), &secrets(), &directory());
    for chart in &rendered.charts {
        let object = rendered.helm_chart(chart).unwrap();
        let spec = &object.spec;
        assert_eq!(
            spec.failure_policy,
            Some(FailurePolicy::Retry),
            "{}",
            chart.name
        );
        assert_eq!(spec.target_namespace.as_deref(), Some(NAMESPACE));
        let url = spec.chart.as_deref().unwrap();
        assert!(
            url.starts_with("https://%{KUBERNETES_API}%/static/charts/"),
            "{url}"
        );
        assert!(spec.repo.is_none() && spec.chart_content.is_none());
        let values: serde_json::Value =
            serde_json::from_str(spec.values_content.as_deref().unwrap()).unwrap();
        assert_eq!(values, chart.values);
    }
    let charts: Vec<_> = rendered.charts.iter().map(|c| c.name).collect();
    assert_eq!(charts, RELEASES, "RELEASES lists what render makes");
    let names: Vec<_> = rendered
        .objects()
        .unwrap()
        .iter()
        .map(Desired::describe)
        .collect();
    assert_eq!(names, APPLY_ORDER);
}

#[test]
fn a_cpus_change_changes_only_the_hub_values() {
    let a = render(&config("[notebook]\ncpus = 2\n"), &secrets(), &directory());
    let b = render(&config("[notebook]\ncpus = 4\n"), &secrets(), &directory());
    for (x, y) in a.charts.iter().zip(&b.charts) {
        let (hx, hy) = (a.helm_chart(x).unwrap(), b.helm_chart(y).unwrap());
        if x.name == HUB_RELEASE {
            assert_ne!(hx.spec.values_content, hy.spec.values_content);
            let strip = |mut s: HelmChartSpec| {
                s.values_content = None;
                s
            };
            assert_eq!(strip(hx.spec.clone()), strip(hy.spec.clone()));
        } else {
            assert_eq!(hx.spec, hy.spec, "{} is untouched", x.name);
            assert_eq!(hx.metadata, hy.metadata);
        }
    }
}

#[test]
fn gateway_options_stay_within_the_configured_limits() {
    let rendered = render(
        &config("[dask]\nmax_worker_cores = 6\nmax_worker_memory_gb = 12\n"),
        &secrets(),
        &directory(),
    );
    let values = &chart(&rendered, GATEWAY_RELEASE).values;
    let options = values["gateway"]["extraConfig"]["pangeo-options"]
        .as_str()
        .unwrap();
    assert!(
        options.contains(r#"Integer("worker_cores", default=1, min=1, max=6"#),
        "{options}"
    );
    assert!(
        options.contains(r#"Float("worker_memory", default=1, min=1, max=12"#),
        "{options}"
    );
    assert!(options.contains("c.ClusterConfig.idle_timeout = 3600"));
    // Schedulers and workers request a share of their limit, so a notebook and a small Dask
    // cluster fit one small node (the full-stack test: 2 CPUs).
    assert!(
        options.contains(r#""worker_cores": options.worker_cores * 0.25,"#),
        "{options}"
    );
    assert!(
        options.contains(r#""worker_cores_limit": options.worker_cores,"#),
        "{options}"
    );
    assert!(
        options.contains(r#""worker_threads": options.worker_cores,"#),
        "{options}"
    );
    assert!(options.contains("c.KubeClusterConfig.scheduler_cores = 0.25\n"));
    assert!(options.contains("c.KubeClusterConfig.scheduler_cores_limit = 1\n"));
    assert_eq!(values["gateway"]["auth"]["type"], "jupyterhub");
    assert_eq!(values["traefik"]["service"]["type"], "ClusterIP");
    assert_eq!(
        values["gateway"]["auth"]["jupyterhub"]["apiToken"],
        chart(&rendered, HUB_RELEASE).values["hub"]["services"]["dask-gateway"]["apiToken"]
    );
}

#[test]
fn the_python_hub_config_sets_the_same_traitlets_as_the_chart() {
    the_python_hub_config_round_trips(config(""));
}

/// Issue 20: a base DN with a line separator (U+2028), a quote, a backslash escape and a
/// character beyond U+FFFF reaches Python as the same string (Rust's debug quoting gave a
/// SyntaxError).
#[test]
fn the_python_hub_config_carries_any_dn_unchanged() {
    let mut config = config("");
    config.freeipa.base_dn = "ou=it\u{2028}'s \\2C \u{1F600} team,dc=example,dc=test".into();
    let text = values::hub_config_py(&config);
    assert!(text.is_ascii(), "{text}");
    the_python_hub_config_round_trips(config);
}

fn the_python_hub_config_round_trips(config: Config) {
    let text = values::hub_config_py(&config);
    // Run it with a stand-in for traitlets' config object, and read back what it set.
    let script = format!(
        "import json\nclass C(dict):\n    def __getattr__(self, k):\n        return self.setdefault(k, Section())\nclass Section(dict):\n    def __setattr__(self, k, v):\n        self[k] = v\nc = C()\nget_config = lambda: c\n{text}\nprint(json.dumps(c))\n"
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let set: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut expected = values::hub_config(&config);
    expected["LDAPAuthenticator"]["tls_kwargs"]["ca_certs_file"] = json!(
        config
            .freeipa
            .ca_file
            .as_ref()
            .unwrap()
            .display()
            .to_string()
    );
    // What the chart makes of hub.loadRoles and singleuser.extraEnv.
    let roles = values::load_roles(&config);
    expected["JupyterHub"]["load_roles"] = roles
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, role)| {
            let mut role = role.clone();
            role["name"] = json!(name);
            role
        })
        .collect();
    expected["KubeSpawner"]["environment"] = values::singleuser_env(&config);
    assert_eq!(set, expected);
}

/// `hub.admin_access = false` (issue 17, item 2): each server requires the own-server scope for
/// its owner (KubeSpawner's template), the `user` role grants it to each user for themself, and
/// the servers' OAuth clients may issue it; on (the default), none of it is rendered and the
/// admin role's `access:servers` applies.
#[test]
fn admin_access_off_makes_each_server_require_its_owners_scope() {
    let on = render(&config(""), &secrets(), &directory());
    let hub = &chart(&on, "jupyterhub").values;
    assert_eq!(hub["hub"]["config"]["JupyterHub"]["admin_access"], true);
    assert!(hub["hub"]["loadRoles"].get("user").is_none());
    assert!(
        hub["singleuser"]["extraEnv"]
            .get("JUPYTERHUB_OAUTH_ACCESS_SCOPES")
            .is_none()
    );

    let off = render(
        &config("[hub]\nadmin_access = false\n"),
        &secrets(),
        &directory(),
    );
    off.validate().unwrap();
    let hub = &chart(&off, "jupyterhub").values;
    assert_eq!(hub["hub"]["config"]["JupyterHub"]["admin_access"], false);
    assert_eq!(
        hub["singleuser"]["extraEnv"]["JUPYTERHUB_OAUTH_ACCESS_SCOPES"],
        "[\"custom:pangeo:own-server!user={unescaped_username}\"]"
    );
    assert_eq!(
        hub["hub"]["loadRoles"]["user"]["scopes"],
        json!(["self", "custom:pangeo:own-server!user"])
    );
    assert_eq!(
        hub["hub"]["config"]["Spawner"]["oauth_client_allowed_scopes"],
        json!(["custom:pangeo:own-server!user"])
    );
    assert!(
        hub["hub"]["config"]["JupyterHub"]["custom_scopes"]
            .get("custom:pangeo:own-server")
            .is_some()
    );
    // The admin role stays pangeod's service's, and the Dask client's settings stay.
    assert_eq!(
        hub["hub"]["loadRoles"]["admin"]["services"],
        json!(["pangeo-appliance"])
    );
    assert!(
        hub["singleuser"]["extraEnv"]
            .get("DASK_GATEWAY__ADDRESS")
            .is_some()
    );
    the_python_hub_config_round_trips(config("[hub]\nadmin_access = false\n"));
}

#[test]
fn quantities_parse_to_bytes() {
    assert_eq!(quantity_bytes("10Gi"), Some(10 << 30));
    assert_eq!(quantity_bytes("500M"), Some(500_000_000));
    assert_eq!(quantity_bytes("1073741824"), Some(1 << 30));
    assert_eq!(quantity_bytes("1.5Gi"), None);
    assert_eq!(quantity_bytes("lots"), None);
}

/// The notebook image pangeod renders is the one `images/manifest.toml` pins and the image
/// build bakes in (`chart = "pangeod-values"`): one entry, the same reference.
#[test]
fn the_notebook_image_is_the_manifests_pangeod_values_entry() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../images/manifest.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let manifest: toml::Table = toml::from_str(&text).unwrap();
    let refs: Vec<&str> = manifest["image"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i.get("chart").and_then(|c| c.as_str()) == Some("pangeod-values"))
        .map(|i| i["ref"].as_str().unwrap())
        .collect();
    let ours = format!(
        "{}:{}",
        values::NOTEBOOK_IMAGE_NAME,
        values::NOTEBOOK_IMAGE_TAG
    );
    assert_eq!(refs, [ours.as_str()], "{}", path.display());
    assert!(!ours.contains("TODO"), "a concrete tag: {ours}");
}

#[test]
fn notebooks_and_dask_workers_run_the_pangeo_notebook_image() {
    let rendered = render(&config(""), &secrets(), &directory());
    let expected = json!({
        "name": values::NOTEBOOK_IMAGE_NAME,
        "tag": values::NOTEBOOK_IMAGE_TAG,
    });
    let hub = &chart(&rendered, HUB_RELEASE).values;
    assert_eq!(
        hub["singleuser"]["image"], expected,
        "not the chart's sample image"
    );
    let gateway = &chart(&rendered, GATEWAY_RELEASE).values;
    assert_eq!(
        gateway["gateway"]["backend"]["image"], expected,
        "schedulers and workers match the notebook's client"
    );
    rendered.validate().unwrap();
}

/// daskhub's contract: `dask_gateway.Gateway()` with no arguments finds the gateway's API and
/// its scheduler proxy (the chart's `traefik-<fullname>` Service in the components'
/// namespace), links dashboards under the hub service's path, and authenticates as the hub user.
#[test]
fn notebooks_find_the_gateway_through_daskhubs_environment() {
    let rendered = render(&config(""), &secrets(), &directory());
    let hub = &chart(&rendered, HUB_RELEASE).values;
    assert_eq!(
        hub["singleuser"]["extraEnv"],
        json!({
            "DASK_GATEWAY__ADDRESS": "http://traefik-dask-gateway.pangeo:80/services/dask-gateway",
            "DASK_GATEWAY__PROXY_ADDRESS": "gateway://traefik-dask-gateway.pangeo:80",
            "DASK_GATEWAY__PUBLIC_ADDRESS": "/services/dask-gateway/",
            "DASK_GATEWAY__AUTH__TYPE": "jupyterhub",
        })
    );
    // The gateway serves under the hub service's path, which the hub's proxy forwards whole
    // to the same Traefik Service.
    let gateway = &chart(&rendered, GATEWAY_RELEASE).values;
    assert_eq!(gateway["gateway"]["prefix"], "/services/dask-gateway");
    assert_eq!(
        hub["hub"]["services"]["dask-gateway"]["url"],
        "http://traefik-dask-gateway.pangeo"
    );
    assert_eq!(gateway["gateway"]["auth"]["type"], "jupyterhub");
}

fn names(plan: &Plan) -> Vec<String> {
    plan.objects().iter().map(Desired::describe).collect()
}

/// The plan is pure (no Kubernetes, no state, no files): the rendered charts, validated, and
/// every object in apply order; the same inputs give the same objects.
#[test]
fn the_plan_is_every_object_in_apply_order() {
    let plan = plan(&config(""), &secrets(), &directory(), None).unwrap();
    let charts: Vec<_> = plan
        .rendered()
        .charts
        .iter()
        .map(|c| (c.name, c.version))
        .collect();
    assert_eq!(charts, CHARTS, "CHARTS lists what render makes");
    assert_eq!(names(&plan), APPLY_ORDER);
    let again = super::plan(&config(""), &secrets(), &directory(), None).unwrap();
    let objects = |p: &Plan| -> Vec<Value> {
        p.objects()
            .iter()
            .map(|d| serde_json::to_value(d.object()).unwrap())
            .collect()
    };
    assert_eq!(objects(&plan), objects(&again));
}

/// In local-CA mode the certificate the caller read from the state goes in as the ingress's
/// Secret (the chain, then the key and the CA), before the charts; with a global IP the plan
/// has Traefik's ACME HelmChartConfig instead.
#[test]
fn the_plan_carries_the_ingress_tls_of_its_mode() {
    let config = config("");
    assert_eq!(ingress::tls_mode(&config), ingress::TlsMode::LocalCa);
    let tls = ingress::LocalTls {
        ca_pem: "CA\n".into(),
        cert_pem: "CERT\n".into(),
        key_pem: "KEY\n".into(),
    };
    let plan = plan(&config, &secrets(), &directory(), Some(tls)).unwrap();
    assert_eq!(names(&plan)[3], "Secret pangeo/pangeo-ingress-tls");
    let secret = &plan.objects()[3].object().data;
    assert_eq!(
        secret["stringData"],
        json!({ "tls.crt": "CERT\nCA\n", "tls.key": "KEY\n", "ca.crt": "CA\n" })
    );
    assert_eq!(secret["type"], "kubernetes.io/tls");

    let mut public = config.clone();
    public.cluster.external_ip = "8.8.8.8".parse().unwrap();
    assert_eq!(ingress::tls_mode(&public), ingress::TlsMode::Acme);
    let plan = super::plan(&public, &secrets(), &directory(), None).unwrap();
    let names = names(&plan);
    assert!(
        names[3].starts_with("HelmChartConfig kube-system/"),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n.contains(ingress::TLS_SECRET)));
}

/// A value a chart's schema refuses makes no plan, so there is nothing to apply.
#[test]
fn a_chart_that_fails_its_schema_makes_no_plan() {
    let mut rendered = render(&config(""), &secrets(), &directory());
    let gateway = rendered
        .charts
        .iter_mut()
        .find(|c| c.name == GATEWAY_RELEASE)
        .unwrap();
    gateway.values["gateway"]["replicas"] = json!("two");
    let error = Plan::new(rendered).unwrap_err();
    let ComponentsError::Schema(schema) = &error else {
        panic!("{error:?}");
    };
    assert_eq!(schema.chart, GATEWAY_RELEASE);
    assert!(
        schema
            .problems
            .iter()
            .any(|p| p.starts_with("/gateway/replicas: ")),
        "{error}"
    );
    assert_eq!(error.retry_after(), None, "a pangeod bug: no retry");
}
