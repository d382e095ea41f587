//! The components step against the real control plane (kube-apiserver, controller-manager and
//! k3s's helm-controller, integration-tests/controlplane) with the real directory fixture:
//! what is applied, what helm-controller makes of it, live config changes, stable secrets.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::controlplane::{controlplane, unique};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Api;
use kube::api::ObjectMeta;
use pangeod::components::{self, ComponentsError, DirectoryMaterial, Secrets};
use pangeod::k8s::{FailurePolicy, HelmChart, Kube};

/// The tests here that run a pangeod apply the platform to the one shared `pangeo` namespace,
/// each with secrets of its own: one at a time, or one's HelmCharts overwrite the other's.
static PLATFORM: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn platform_lock() -> std::sync::MutexGuard<'static, ()> {
    PLATFORM.lock().unwrap_or_else(|p| p.into_inner())
}

fn values(chart: &HelmChart) -> serde_json::Value {
    serde_json::from_str(chart.spec.values_content.as_deref().unwrap()).unwrap()
}

fn patch(daemon: &common::TestDaemon, body: &str) -> pangeod::client::Response {
    daemon.patch_config(body)
}

#[test]
fn the_platform_is_applied_then_a_cpus_patch_changes_only_the_hub_values_and_secrets_stay() {
    let _platform = platform_lock();
    let Some(cp) = controlplane() else { return };
    let Some(ldap) = common::ldap_env() else {
        return;
    };
    let rt = common::mt_runtime();
    let kube = rt.block_on(cp.kube());
    rt.block_on(common::controlplane::register_ready_node(&kube, "demo"));
    let charts: Api<HelmChart> = Api::namespaced(kube.client().clone(), components::NAMESPACE);

    let mut daemon = common::TestDaemon::new("");
    daemon.write_main(&common::TestDaemon::external_main_text(
        &ldap,
        &cp.kubeconfig(),
    ));
    daemon.start();
    let status =
        daemon.wait_status_within("ready", Duration::from_secs(90), |s| s["phase"] == "ready");
    let step = common::step(&status, "components");
    assert_eq!(step["state"], "done", "{step}");
    for name in ["jupyterhub", "dask-gateway", "lvm-localpv"] {
        let component = status["components"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {status}"));
        assert_eq!(component["state"], "applied", "{component}");
    }

    // The objects, as stored.
    let hub = rt.block_on(charts.get("jupyterhub")).unwrap();
    assert_eq!(hub.spec.failure_policy, Some(FailurePolicy::Retry));
    assert_eq!(hub.spec.target_namespace.as_deref(), Some("pangeo"));
    let hub_values = values(&hub);
    assert_eq!(hub_values["singleuser"]["cpu"]["limit"], 1);
    assert_eq!(hub_values["proxy"]["service"]["type"], "ClusterIP");
    let generations: BTreeMap<String, i64> = ["jupyterhub", "dask-gateway", "lvm-localpv"]
        .iter()
        .map(|n| {
            let c = rt.block_on(charts.get(n)).unwrap();
            (n.to_string(), c.metadata.generation.unwrap())
        })
        .collect();

    // helm-controller made its install job, with our values mounted from its Secret.
    let jobs: Api<Job> = Api::namespaced(kube.client().clone(), "pangeo");
    rt.block_on(kube.wait_for(
        jobs,
        "helm-install-jupyterhub",
        "Job pangeo/helm-install-jupyterhub",
        Duration::from_secs(60),
        |j: Option<&Job>| j.is_some(),
    ))
    .unwrap();
    // helm-controller writes the Secret after it sees the chart; a Secret and a Job left by an
    // earlier pangeod on this shared control plane (another test's) may be read first, so wait
    // for this chart's values to be the ones mounted.
    let secrets: Api<Secret> = Api::namespaced(kube.client().clone(), "pangeo");
    let want = hub.spec.values_content.clone().unwrap();
    let mounted = |secret: Option<&Secret>| {
        secret
            .and_then(|s| s.data.as_ref())
            .and_then(|d| d.get("HelmChartValuesContent"))
            .map(|c| String::from_utf8_lossy(&c.0).into_owned())
    };
    let waited = rt.block_on(kube.wait_for(
        secrets.clone(),
        "chart-values-jupyterhub",
        "Secret pangeo/chart-values-jupyterhub with this chart's values",
        Duration::from_secs(60),
        |s: Option<&Secret>| mounted(s).as_deref() == Some(want.as_str()),
    ));
    if waited.is_err() {
        let now = rt
            .block_on(secrets.get_opt("chart-values-jupyterhub"))
            .unwrap();
        assert_eq!(mounted(now.as_ref()).unwrap_or_default(), want);
    }
    daemon.wait_status("the job in status", |s| {
        s["components"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "jupyterhub" && c["job"] == "helm-install-jupyterhub")
    });
    let generated = rt
        .block_on(secrets.get("pangeo-secrets"))
        .unwrap()
        .data
        .unwrap();
    assert_eq!(generated.len(), 4);

    // TLS: 192.0.2.10 is not a public address, so the hub's ingress serves a certificate from
    // the local CA, whose certificate the API hands out.
    assert_eq!(
        hub_values["ingress"]["tls"][0]["secretName"],
        "pangeo-ingress-tls"
    );
    assert_eq!(
        hub_values["ingress"]["tls"][0]["hosts"][0],
        "pangeo.192-0-2-10.sslip.io"
    );
    let tls = rt.block_on(secrets.get("pangeo-ingress-tls")).unwrap();
    assert_eq!(tls.type_.as_deref(), Some("kubernetes.io/tls"));
    let tls = tls.data.unwrap();
    let served = daemon.request(hyper::Method::GET, "/v1/tls/ca.pem", &[], None);
    assert_eq!(served.status, 200);
    let ca = String::from_utf8(served.body.to_vec()).unwrap();
    assert_eq!(String::from_utf8(tls["ca.crt"].0.clone()).unwrap(), ca);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &ca).unwrap();
    std::fs::write(dir.path().join("tls.crt"), &tls["tls.crt"].0).unwrap();
    let verified = std::process::Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(dir.path().join("ca.pem"))
        .arg("-verify_hostname")
        .arg("pangeo.192-0-2-10.sslip.io")
        .arg(dir.path().join("tls.crt"))
        .output()
        .unwrap();
    assert!(
        verified.status.success(),
        "the ingress certificate does not verify against the served CA for the domain: {}",
        String::from_utf8_lossy(&verified.stdout)
    );

    // A PATCH of cpus: a new jupyterhub generation whose only change is valuesContent.
    let response = patch(&daemon, r#"{"notebook": {"cpus": 2}}"#);
    assert_eq!(
        response.status,
        200,
        "{}",
        String::from_utf8_lossy(&response.body)
    );
    let updated = rt
        .block_on(kube.wait_for(
            charts.clone(),
            "jupyterhub",
            "HelmChart pangeo/jupyterhub updated",
            Duration::from_secs(30),
            |c: Option<&HelmChart>| c.is_some_and(|c| values(c)["singleuser"]["cpu"]["limit"] == 2),
        ))
        .unwrap()
        .unwrap();
    assert_eq!(
        updated.metadata.generation,
        Some(generations["jupyterhub"] + 1)
    );
    let mut before = hub.spec.clone();
    let mut after = updated.spec.clone();
    before.values_content = None;
    after.values_content = None;
    assert_eq!(before, after, "only valuesContent changed");
    let mut old_values = hub_values.clone();
    old_values["singleuser"]["cpu"] = serde_json::json!({ "limit": 2, "guarantee": 2 });
    assert_eq!(
        values(&updated),
        old_values,
        "nothing else in the values changed"
    );
    daemon.wait_status("the reload done", |s| s["phase"] == "ready");
    for name in ["dask-gateway", "lvm-localpv"] {
        let c = rt.block_on(charts.get(name)).unwrap();
        assert_eq!(
            c.metadata.generation,
            Some(generations[name]),
            "{name} untouched"
        );
    }

    // The domain cannot change once the platform is built on it.
    let response = patch(&daemon, r#"{"cluster": {"domain": "pangeo.example.org"}}"#);
    assert_eq!(response.status, 409);
    // Home volumes grow, never shrink: below the size in force is refused, naming the fix.
    let response = patch(&daemon, r#"{"notebook": {"storage_gb": 5}}"#);
    assert_eq!(response.status, 409);
    let problem: serde_json::Value = response.json().unwrap();
    assert_eq!(
        problem["detail"],
        "notebook.storage_gb cannot shrink from 10 to 5: users' home volumes keep their size and cannot be made smaller; set 10 or more"
    );

    // A restart regenerates no secret and changes nothing on the cluster.
    daemon.stop();
    daemon.start();
    daemon.wait_status_within("ready again", Duration::from_secs(90), |s| {
        s["phase"] == "ready"
    });
    let again = rt
        .block_on(secrets.get("pangeo-secrets"))
        .unwrap()
        .data
        .unwrap();
    assert_eq!(again, generated, "the secrets are the same after a restart");
    let hub_after = rt.block_on(charts.get("jupyterhub")).unwrap();
    assert_eq!(hub_after.metadata.generation, updated.metadata.generation);
    assert_eq!(
        values(&hub_after)["hub"]["cookieSecret"],
        hub_values["hub"]["cookieSecret"]
    );
    let events = daemon.get_json("/v1/events?limit=200");
    assert!(
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "components.applied"),
        "{events}"
    );

    // Level-triggered: the hub's HelmChart deleted, then edited, outside pangeod is put back
    // without a reload (components/drift.rs).
    let ours = values(&hub_after);
    let reloads_before = daemon.get_json("/v1/events?limit=200")["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "components.applied")
        .count();
    let uid = hub_after.metadata.uid.clone().unwrap();
    rt.block_on(charts.delete("jupyterhub", &Default::default()))
        .unwrap();
    // helm-controller holds the object with its finalizer until its uninstall job has run;
    // no kubelet runs that job here, so the test lets the object go as helm-controller would.
    let _ = rt.block_on(charts.patch(
        "jupyterhub",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(serde_json::json!({ "metadata": { "finalizers": null } })),
    ));
    let back = rt
        .block_on(kube.wait_for(
            charts.clone(),
            "jupyterhub",
            "HelmChart pangeo/jupyterhub",
            Duration::from_secs(30),
            |c: Option<&HelmChart>| c.is_some_and(|c| c.metadata.uid.as_deref() != Some(&uid)),
        ))
        .unwrap()
        .unwrap();
    assert_eq!(values(&back), ours, "put back with pangeod's values");
    let mut edited = values(&back);
    edited["singleuser"]["cpu"]["limit"] = serde_json::json!(64);
    rt.block_on(charts.patch(
        "jupyterhub",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(serde_json::json!({
            "spec": { "valuesContent": edited.to_string() }
        })),
    ))
    .unwrap();
    rt.block_on(kube.wait_for(
        charts.clone(),
        "jupyterhub",
        "HelmChart pangeo/jupyterhub",
        Duration::from_secs(30),
        |c: Option<&HelmChart>| c.is_some_and(|c| values(c) == ours),
    ))
    .unwrap()
    .unwrap();
    let reloads_after = daemon.get_json("/v1/events?limit=200")["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "components.applied")
        .count();
    assert_eq!(reloads_after, reloads_before, "no reload did it");

    // The same for the homes' StorageClass (issue 16, item 3: within 5 s): deleted, then edited.
    use k8s_openapi::api::storage::v1::StorageClass;
    let classes: Api<StorageClass> = Api::all(kube.client().clone());
    let class = rt.block_on(classes.get("pangeo-homes")).unwrap();
    let uid = class.metadata.uid.clone().unwrap();
    let started = std::time::Instant::now();
    rt.block_on(classes.delete("pangeo-homes", &Default::default()))
        .unwrap();
    let back = rt
        .block_on(kube.wait_for(
            classes.clone(),
            "pangeo-homes",
            "StorageClass pangeo-homes",
            Duration::from_secs(5),
            |c: Option<&StorageClass>| c.is_some_and(|c| c.metadata.uid.as_deref() != Some(&uid)),
        ))
        .unwrap()
        .unwrap();
    eprintln!(
        "StorageClass put back {:?} after its delete",
        started.elapsed()
    );
    assert_eq!(back.allow_volume_expansion, Some(true));
    assert_eq!(back.provisioner, class.provisioner);
    let started = std::time::Instant::now();
    rt.block_on(classes.patch(
        "pangeo-homes",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(serde_json::json!({ "allowVolumeExpansion": false })),
    ))
    .unwrap();
    rt.block_on(kube.wait_for(
        classes.clone(),
        "pangeo-homes",
        "StorageClass pangeo-homes",
        Duration::from_secs(5),
        |c: Option<&StorageClass>| c.is_some_and(|c| c.allow_volume_expansion == Some(true)),
    ))
    .unwrap()
    .unwrap();
    eprintln!("StorageClass edit undone {:?} after it", started.elapsed());
    daemon.stop();
}

#[test]
fn a_schema_failure_applies_nothing() {
    let Some(cp) = controlplane() else { return };
    let rt = common::runtime();
    let dir = tempfile::tempdir().unwrap();
    let config = common::controlplane::demo_config(dir.path());
    let secrets = Secrets {
        proxy_token: "p".into(),
        cookie_secret: "c".into(),
        appliance_token: "a".into(),
        gateway_token: "g".into(),
    };
    let directory = DirectoryMaterial { ca_pem: None };
    let mut rendered = components::render(&config, &secrets, &directory);
    rendered.namespace = unique("schema");
    // The dask-gateway chart (the last one) gets a value its schema refuses.
    let gateway = rendered
        .charts
        .iter_mut()
        .find(|c| c.name == "dask-gateway")
        .unwrap();
    gateway.values["gateway"]["replicas"] = serde_json::json!("two");
    rt.block_on(async {
        let kube = cp.kube().await;
        let error = components::reconcile(&kube, &rendered).await.unwrap_err();
        let ComponentsError::Schema(schema) = &error else {
            panic!("{error:?}");
        };
        assert_eq!(schema.chart, "dask-gateway");
        assert!(
            schema
                .problems
                .iter()
                .any(|p| p.starts_with("/gateway/replicas: ")),
            "{error}"
        );
        // Not even the namespace, which comes first in apply order.
        let namespaces: Api<Namespace> = Api::all(kube.client().clone());
        assert!(
            namespaces
                .get_opt(&rendered.namespace)
                .await
                .unwrap()
                .is_none()
        );
    });
}

/// A bound claim of `gi` GiB for `user` (None: no username annotation), on a hand-made PV of
/// the homes StorageClass, as the provisioner would have made it.
async fn bound_claim(kube: &Kube, ns: &str, name: &str, user: Option<&str>, gi: u32) {
    use k8s_openapi::api::core::v1::{
        HostPathVolumeSource, PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimSpec,
        PersistentVolumeSpec, VolumeResourceRequirements,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    let size = BTreeMap::from([("storage".to_string(), Quantity(format!("{gi}Gi")))]);
    let pv_name = format!("{ns}-{name}");
    kube.apply(&PersistentVolume {
        metadata: ObjectMeta {
            name: Some(pv_name.clone()),
            ..Default::default()
        },
        spec: Some(PersistentVolumeSpec {
            capacity: Some(size.clone()),
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: Some(components::STORAGE_CLASS.into()),
            host_path: Some(HostPathVolumeSource {
                path: format!("/tmp/{pv_name}"),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut meta = ObjectMeta {
        name: Some(name.into()),
        namespace: Some(ns.into()),
        ..Default::default()
    };
    if let Some(user) = user {
        meta.annotations = Some(BTreeMap::from([(
            components::USERNAME_ANNOTATION.to_string(),
            user.to_string(),
        )]));
    }
    kube.apply(&PersistentVolumeClaim {
        metadata: meta,
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: Some(components::STORAGE_CLASS.into()),
            volume_name: Some(pv_name),
            resources: Some(VolumeResourceRequirements {
                requests: Some(size),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(kube.client().clone(), ns);
    kube.wait_for(
        api,
        name,
        &format!("PersistentVolumeClaim {ns}/{name} Bound"),
        Duration::from_secs(60),
        |c: Option<&PersistentVolumeClaim>| {
            c.and_then(|c| c.status.as_ref())
                .and_then(|s| s.phase.as_deref())
                == Some("Bound")
        },
    )
    .await
    .unwrap();
}

#[test]
fn home_volumes_grow_with_storage_gb_and_are_never_shrunk() {
    use k8s_openapi::api::core::v1::PersistentVolumeClaim;
    let Some(cp) = controlplane() else { return };
    let rt = common::runtime();
    rt.block_on(async {
        let kube = cp.kube().await;
        let ns = unique("homes");
        kube.apply(&Namespace {
            metadata: ObjectMeta {
                name: Some(ns.clone()),
                ..Default::default()
            },
            ..Default::default()
        })
        .await
        .unwrap();
        // The homes StorageClass as pangeod renders it (allowVolumeExpansion).
        let dir = tempfile::tempdir().unwrap();
        let config = common::controlplane::demo_config(dir.path());
        let rendered = components::render(
            &config,
            &Secrets {
                proxy_token: "p".into(),
                cookie_secret: "c".into(),
                appliance_token: "a".into(),
                gateway_token: "g".into(),
            },
            &DirectoryMaterial { ca_pem: None },
        );
        let class = rendered
            .objects()
            .unwrap()
            .into_iter()
            .find(|d| d.describe() == "StorageClass pangeo-homes")
            .unwrap();
        kube.apply_desired(&class).await.unwrap();

        bound_claim(&kube, &ns, "claim-alice", Some("alice"), 10).await;
        bound_claim(&kube, &ns, "claim-big", Some("bob"), 30).await;
        bound_claim(&kube, &ns, "not-a-home", None, 10).await;

        let expanded = components::expand_homes(&kube, &ns, 20).await.unwrap();
        assert_eq!(
            expanded,
            [components::Expanded {
                user: "alice".into(),
                claim: "claim-alice".into(),
                from: "10Gi".into(),
                to: "20Gi".into(),
            }]
        );
        let api: Api<PersistentVolumeClaim> = Api::namespaced(kube.client().clone(), &ns);
        let size = |claim: PersistentVolumeClaim| {
            claim.spec.unwrap().resources.unwrap().requests.unwrap()["storage"]
                .0
                .clone()
        };
        assert_eq!(size(api.get("claim-alice").await.unwrap()), "20Gi");
        assert_eq!(
            size(api.get("claim-big").await.unwrap()),
            "30Gi",
            "never shrunk"
        );
        assert_eq!(
            size(api.get("not-a-home").await.unwrap()),
            "10Gi",
            "not a user's home"
        );
        // Again: nothing left to grow.
        assert!(
            components::expand_homes(&kube, &ns, 20)
                .await
                .unwrap()
                .is_empty()
        );
    });
}

/// Issue 17, item 4: `pangeoctl homes` lists every user's home volume with its owner, size,
/// and whether the owner is still a member; a purge is refused for a member's home and without
/// the claim named twice, and deletes a former member's home, with an event; an export of an
/// unknown claim is 404, and one whose pod cannot start says so and leaves no pod.
#[test]
fn homes_are_listed_and_only_a_former_members_home_is_purged() {
    use k8s_openapi::api::core::v1::PersistentVolumeClaim;
    let _platform = platform_lock();
    let Some(cp) = controlplane() else { return };
    let Some(ldap) = common::ldap_env() else {
        return;
    };
    let rt = common::runtime();
    let kube = rt.block_on(cp.kube());
    let ns = components::NAMESPACE;
    let tag = unique("h");
    let (kept, gone_user, gone) = (
        format!("claim-alice-{tag}"),
        format!("gone-{tag}"),
        format!("claim-gone-{tag}"),
    );
    rt.block_on(async {
        kube.apply(&Namespace {
            metadata: ObjectMeta {
                name: Some(ns.into()),
                ..Default::default()
            },
            ..Default::default()
        })
        .await
        .unwrap();
        bound_claim(&kube, ns, &kept, Some("alice"), 1).await;
        bound_claim(&kube, ns, &gone, Some(&gone_user), 2).await;
    });
    let mut daemon = common::controlplane::external_daemon(&cp, &ldap, &cp.kubeconfig());
    let homes = daemon.get_json("/v1/homes");
    let home = |claim: &str| {
        homes["homes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["claim"] == claim)
            .cloned()
            .unwrap_or_else(|| panic!("{claim} not listed: {homes}"))
    };
    assert_eq!(home(&kept)["user"], "alice");
    assert_eq!(home(&kept)["member"], "active");
    assert_eq!(home(&kept)["capacity"], "1Gi");
    assert_eq!(
        home(&gone)["member"],
        serde_json::Value::Null,
        "never a member"
    );
    assert_eq!(home(&gone)["capacity"], "2Gi");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_pangeoctl"))
        .arg("--socket")
        .arg(daemon.socket())
        .arg("homes")
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(&kept) && l.contains("alice") && l.contains("active")),
        "{listed}"
    );

    let purge = |claim: &str, confirm: Option<&str>| {
        let path = match confirm {
            Some(c) => format!("/v1/homes/{claim}?confirm={c}"),
            None => format!("/v1/homes/{claim}"),
        };
        daemon.request(hyper::Method::DELETE, &path, &[], None)
    };
    let refused = purge(&kept, Some(&kept));
    assert_eq!(refused.status, 409, "a member's home: {:?}", refused.json());
    let refused = purge(&gone, None);
    assert_eq!(refused.status, 422, "unconfirmed: {:?}", refused.json());
    let refused = purge(&gone, Some(&kept));
    assert_eq!(refused.status, 422, "confirmed with another name");
    let purged = purge(&gone, Some(&gone));
    assert_eq!(purged.status, 200, "{:?}", purged.json());
    let api: Api<PersistentVolumeClaim> = Api::namespaced(kube.client().clone(), ns);
    let after = rt.block_on(api.get_opt(&gone)).unwrap();
    assert!(
        after.is_none_or(|c| c.metadata.deletion_timestamp.is_some()),
        "the former member's claim is deleted"
    );
    assert!(
        rt.block_on(api.get_opt(&kept)).unwrap().is_some(),
        "alice's home stays"
    );
    let events = daemon.get_json("/v1/events?limit=20").to_string();
    assert!(
        events.contains("home.purged") && events.contains(&gone),
        "{events}"
    );

    // Export (the copy itself runs on the test cluster with a node: fullstack.sh, section 3).
    // Here no kubelet runs pods, so the export pod never starts: the answer says so within the
    // request deadline, and the pod is deleted.
    let export = |claim: &str| {
        daemon.request_within(
            hyper::Method::GET,
            &format!("/v1/homes/{claim}/export"),
            &[],
            None,
            std::time::Duration::from_secs(20),
        )
    };
    let unknown = export("claim-nobody");
    assert_eq!(unknown.status, 404, "{:?}", unknown.json());
    let started = std::time::Instant::now();
    let not_started = export(&kept);
    assert_eq!(not_started.status, 503, "{:?}", not_started.json());
    let problem = common::problem(&not_started);
    assert_eq!(problem["type"], "urn:pangeod:problem:export-not-started");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("the export pod home-export-")
            && detail.contains("did not start within 10s"),
        "{detail}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(kube.client().clone(), ns);
    let left = || {
        let this_claim = format!("pangeo.io/home-export={kept}");
        rt.block_on(pods.list(&kube::api::ListParams::default().labels(&this_claim)))
            .unwrap()
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while left() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(
        left(),
        0,
        "the export pod that did not start is deleted: {}",
        daemon.stderr()
    );
    daemon.stop();
    rt.block_on(async {
        let _ = api.delete(&kept, &Default::default()).await;
    });
}

/// Issue 16, item 3: k3s's Traefik `HelmChartConfig` that pangeod applies (ACME, for a global
/// external IP) deleted or edited outside pangeod is put back within 5 s by the level-triggered
/// reconcile (components/drift.rs), on the test control plane with k3s's CRDs.
#[test]
fn a_helmchartconfig_deleted_or_edited_is_put_back() {
    use pangeod::k8s::HelmChartConfig;
    let _platform = platform_lock();
    let Some(cp) = controlplane() else { return };
    let rt = common::mt_runtime();
    let kube = rt.block_on(cp.kube());
    let desired = vec![
        pangeod::k8s::Desired::from_typed(&components::ingress::traefik_config("pangeo-homes"))
            .unwrap(),
    ];
    let tracker = components::Tracker::default();
    rt.block_on(async {
        // What the components step does: hand over the objects (which starts the loop), apply.
        tracker.set_desired(&kube, components::NAMESPACE, desired.clone());
        kube.apply_all(&desired, Duration::from_secs(30))
            .await
            .unwrap();
    });
    let configs: Api<HelmChartConfig> = Api::namespaced(kube.client().clone(), "kube-system");
    let ours = rt.block_on(configs.get("traefik")).unwrap();
    let uid = ours.metadata.uid.clone().unwrap();
    // Let the watch list first, so that the delete is an event it sees.
    std::thread::sleep(Duration::from_secs(1));
    let started = std::time::Instant::now();
    rt.block_on(configs.delete("traefik", &Default::default()))
        .unwrap();
    let back = rt
        .block_on(kube.wait_for(
            configs.clone(),
            "traefik",
            "HelmChartConfig kube-system/traefik",
            Duration::from_secs(5),
            |c: Option<&HelmChartConfig>| {
                c.is_some_and(|c| c.metadata.uid.as_deref() != Some(&uid))
            },
        ))
        .unwrap()
        .unwrap();
    eprintln!(
        "HelmChartConfig put back {:?} after its delete",
        started.elapsed()
    );
    assert_eq!(back.spec.values_content, ours.spec.values_content);
    let started = std::time::Instant::now();
    rt.block_on(configs.patch(
        "traefik",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(serde_json::json!({ "spec": { "valuesContent": "{}" } })),
    ))
    .unwrap();
    rt.block_on(kube.wait_for(
        configs.clone(),
        "traefik",
        "HelmChartConfig kube-system/traefik",
        Duration::from_secs(5),
        |c: Option<&HelmChartConfig>| {
            c.is_some_and(|c| c.spec.values_content == ours.spec.values_content)
        },
    ))
    .unwrap()
    .unwrap();
    eprintln!(
        "HelmChartConfig edit undone {:?} after it",
        started.elapsed()
    );
    drop(rt);
    let rt = common::runtime();
    let _ = rt.block_on(configs.delete("traefik", &Default::default()));
}
