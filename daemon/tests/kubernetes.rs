//! The Kubernetes layer against a real control plane (kube-apiserver, kube-controller-manager,
//! kine and helm-controller, integration-tests/controlplane): server-side apply, errors, retries
//! across an API server that is killed, watches that resume, and the daemon's k3s steps.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests fail loudly by design.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::controlplane::{Apiserver, controlplane, unique};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::ObjectMeta;
use kube::{Api, ResourceExt};
use pangeod::k8s::{
    Desired, FIELD_MANAGER, FailurePolicy, HelmChart, HelmChartSpec, Kube, KubeError,
};

fn namespace(name: &str) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

fn config_map(ns: &str, name: &str, data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    }
}

fn chart(ns: &str, with_set: bool) -> HelmChart {
    let mut chart = HelmChart::new(
        "idempotence",
        HelmChartSpec {
            chart: Some("https://127.0.0.1:1/static/charts/none-0.1.0.tgz".into()),
            version: Some("0.1.0".into()),
            target_namespace: Some(ns.into()),
            values_content: Some("a: 1\n".into()),
            failure_policy: Some(FailurePolicy::Retry),
            set: with_set.then(|| BTreeMap::from([("b".to_string(), IntOrString::Int(2))])),
            ..Default::default()
        },
    );
    chart.metadata.namespace = Some(ns.into());
    chart
}

#[test]
fn server_side_apply_is_idempotent_and_removes_a_dropped_field() {
    let Some(cp) = controlplane() else { return };
    let rt = common::runtime();
    rt.block_on(async {
        let kube = cp.kube().await;
        let ns = unique("ssa");
        kube.apply(&namespace(&ns)).await.unwrap();

        // A HelmChart (a CRD with a generation): the second apply changes nothing.
        let first = kube.apply(&chart(&ns, true)).await.unwrap();
        assert_eq!(first.metadata.generation, Some(1));
        let second = kube.apply(&chart(&ns, true)).await.unwrap();
        assert_eq!(second.metadata.generation, Some(1), "no new generation");
        let managers: Vec<_> = second
            .managed_fields()
            .iter()
            .filter_map(|f| f.manager.clone())
            .collect();
        assert!(
            managers.contains(&FIELD_MANAGER.to_string()),
            "{managers:?}"
        );

        // A field pangeod stops setting is removed from the stored object.
        let third = kube.apply(&chart(&ns, false)).await.unwrap();
        assert_eq!(third.metadata.generation, Some(2));
        assert_eq!(third.spec.set, None, "spec.set was removed");
        assert_eq!(third.spec.values_content.as_deref(), Some("a: 1\n"));

        // A ConfigMap, which no controller touches: a no-op apply stores nothing at all.
        let cm = config_map(&ns, "noop", &[("k", "v")]);
        let a = kube.apply(&cm).await.unwrap();
        let b = kube.apply(&cm).await.unwrap();
        assert_eq!(a.resource_version(), b.resource_version());
        let c = kube
            .apply(&config_map(&ns, "noop", &[("other", "v")]))
            .await
            .unwrap();
        assert_eq!(
            c.data.unwrap().keys().collect::<Vec<_>>(),
            ["other"],
            "the dropped key k is gone"
        );
    });
}

#[test]
fn a_restricted_identity_gets_a_forbidden_error_naming_the_resource() {
    let Some(cp) = controlplane() else { return };
    let rt = common::runtime();
    rt.block_on(async {
        let restricted =
            Kube::from_kubeconfig(std::path::Path::new(cp.get("RESTRICTED_KUBECONFIG")))
                .await
                .unwrap();
        let error = restricted
            .apply(&config_map("default", "not-allowed", &[("k", "v")]))
            .await
            .unwrap_err();
        assert!(matches!(error, KubeError::Forbidden { .. }), "{error:?}");
        let text = error.to_string();
        assert!(
            text.starts_with("apply ConfigMap default/not-allowed: forbidden for this identity"),
            "{text}"
        );
        assert!(
            text.contains("pangeo-restricted"),
            "the server's reason is kept: {text}"
        );
        assert!(
            text.contains("admin kubeconfig"),
            "the fix is named: {text}"
        );
        assert!(!error.is_transient());
    });
}

#[test]
fn a_missing_kubeconfig_names_the_file_and_the_fix() {
    let rt = common::runtime();
    let error = rt
        .block_on(Kube::from_kubeconfig(std::path::Path::new(
            "/nonexistent/k3s.yaml",
        )))
        .err()
        .unwrap();
    let text = error.to_string();
    assert!(
        text.starts_with("cannot use the kubeconfig /nonexistent/k3s.yaml"),
        "{text}"
    );
    assert!(text.contains("check that k3s is running"), "{text}");
}

#[test]
fn apply_all_survives_the_apiserver_being_killed_mid_apply() {
    let Some(cp) = controlplane() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut server = Apiserver::start(&cp, dir.path());
    let rt = common::mt_runtime();
    let ns = unique("killed");
    let objects: Vec<Desired> = std::iter::once(Desired::from_typed(&namespace(&ns)).unwrap())
        .chain((0..300).map(|i| {
            Desired::from_typed(&config_map(&ns, &format!("cm-{i:03}"), &[("i", "x")])).unwrap()
        }))
        .collect();
    let own = rt
        .block_on(Kube::from_kubeconfig(&server.kubeconfig))
        .unwrap();
    let apply = rt.spawn(async move { own.apply_all(&objects, Duration::from_secs(120)).await });

    // Kill it once some, not all, objects are in.
    let shared = rt.block_on(cp.kube());
    let count = |rt: &tokio::runtime::Runtime| {
        rt.block_on(async {
            let api: Api<ConfigMap> = Api::namespaced(shared.client().clone(), &ns);
            // (not kube-root-ca.crt, which the controller-manager puts in every namespace)
            api.list(&Default::default()).await.map_or(0, |l| {
                l.items
                    .iter()
                    .filter(|c| c.name_any().starts_with("cm-"))
                    .count()
            })
        })
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&rt) < 20 {
        assert!(Instant::now() < deadline, "apply_all made no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.kill9();
    let at_kill = count(&rt);
    assert!(
        at_kill < 300,
        "the kill came mid-apply ({at_kill} of 300 in)"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(!apply.is_finished(), "apply_all waits for the server");
    server.spawn();

    let report = rt.block_on(apply).unwrap().unwrap();
    assert!(report.retries > 0, "{report:?}");
    assert_eq!(count(&rt), 300, "every object is in, once");
}

#[test]
fn a_watch_resumes_after_the_apiserver_restarts() {
    let Some(cp) = controlplane() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut server = Apiserver::start(&cp, dir.path());
    let rt = common::mt_runtime();
    let ns = unique("watch");
    let shared = rt.block_on(cp.kube());
    rt.block_on(async {
        shared.apply(&namespace(&ns)).await.unwrap();
        shared
            .apply(&config_map(&ns, "flag", &[("ready", "no")]))
            .await
            .unwrap();
    });
    let own = rt
        .block_on(Kube::from_kubeconfig(&server.kubeconfig))
        .unwrap();
    let api: Api<ConfigMap> = Api::namespaced(own.client().clone(), &ns);
    let wait = rt.spawn(async move {
        own.wait_for(
            api,
            "flag",
            "ConfigMap flag ready",
            Duration::from_secs(120),
            |cm: Option<&ConfigMap>| {
                cm.and_then(|c| c.data.as_ref())
                    .and_then(|d| d.get("ready"))
                    .is_some_and(|v| v == "yes")
            },
        )
        .await
    });
    std::thread::sleep(Duration::from_secs(2)); // the watch is established
    server.kill9();
    // The change happens while the watched server is down, through the shared one.
    rt.block_on(async {
        shared
            .apply(&config_map(&ns, "flag", &[("ready", "yes")]))
            .await
            .unwrap();
    });
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !wait.is_finished(),
        "the wait cannot see it while its server is down"
    );
    server.spawn();
    let found = rt.block_on(wait).unwrap().unwrap().unwrap();
    assert_eq!(found.data.unwrap()["ready"], "yes");
}

#[test]
fn a_wait_that_is_never_satisfied_times_out_naming_what_it_waited_for() {
    let Some(cp) = controlplane() else { return };
    let rt = common::runtime();
    rt.block_on(async {
        let kube = cp.kube().await;
        let api: Api<ConfigMap> = Api::namespaced(kube.client().clone(), "default");
        let error = kube
            .wait_for(api, "never-created", "ConfigMap default/never-created", Duration::from_secs(2), |cm: Option<&ConfigMap>| cm.is_some())
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "wait for ConfigMap default/never-created: no answer within 2s; the API server is overloaded or hung, and pangeod retries"
        );
    });
}

#[test]
fn the_k3s_steps_wait_for_an_apiserver_that_is_down_and_complete_once_it_is_back() {
    let Some(cp) = controlplane() else { return };
    let Some(ldap) = common::ldap_env() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut server = Apiserver::start(&cp, dir.path());
    let rt = common::runtime();
    // The daemon's node is its cluster name, "demo" (the directory fixture's cluster).
    rt.block_on(async {
        common::controlplane::register_ready_node(&cp.kube().await, "demo").await
    });
    server.kill9();

    let mut daemon = common::TestDaemon::new("");
    let text = common::TestDaemon::external_main_text(&ldap, &server.kubeconfig);
    daemon.write_main(&text);
    daemon.start();
    let status = daemon.wait_status("the k3s step waiting for /readyz", |s| {
        common::step(s, "k3s")["state"] == "running"
            && common::step(s, "k3s")["message"] == "waiting for the API server's /readyz"
    });
    assert_eq!(status["phase"], "booting");
    assert_eq!(status["k3s"]["mode"], "external");
    assert_eq!(common::step(&status, "kubernetes-api")["state"], "pending");

    server.spawn();
    let status =
        daemon.wait_status_within("ready", Duration::from_secs(60), |s| s["phase"] == "ready");
    let k3s = common::step(&status, "k3s");
    assert_eq!(k3s["state"], "done");
    let message = k3s["message"].as_str().unwrap();
    assert!(
        message.starts_with("external API server v1.36") && message.ends_with("node demo Ready"),
        "{message}"
    );
    let api_step = common::step(&status, "kubernetes-api")["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(api_step.contains("namespace pangeo applied"), "{api_step}");
    assert!(
        status["k3s"]["server_version"]
            .as_str()
            .unwrap()
            .starts_with("v1.36")
    );
    assert_eq!(status["k3s"]["node"]["name"], "demo");
    assert_eq!(status["k3s"]["node"]["ready"], true);
    let conditions = status["k3s"]["node"]["conditions"].as_array().unwrap();
    assert!(
        conditions
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    );
    assert!(
        status["summary"]
            .as_str()
            .unwrap()
            .starts_with("ready: 7/7")
    );

    // The namespace is there, applied by pangeod.
    rt.block_on(async {
        let api: Api<Namespace> = Api::all(cp.kube().await.client().clone());
        let ns = api.get("pangeo").await.unwrap();
        assert_eq!(ns.labels()["app.kubernetes.io/managed-by"], "pangeod");
    });
    daemon.stop();
}

#[test]
fn a_users_dask_clusters_come_from_the_gateways_daskcluster_objects() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
    let Some(cp) = controlplane() else { return };
    let Some(ldap) = common::ldap_env() else {
        return;
    };
    let rt = common::runtime();
    let kube = rt.block_on(cp.kube());
    // The gateway chart's CRD, as the chart installs it.
    let crd: CustomResourceDefinition = serde_yaml_ng::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/reference/dask-gateway-chart/daskclusters.yaml"
        ))
        .unwrap(),
    )
    .unwrap();
    let resource = pangeod::hub::dask::resource();
    let clusters: Api<DynamicObject> =
        Api::namespaced_with(kube.client().clone(), "pangeo", &resource);
    rt.block_on(async {
        kube.apply(&crd).await.unwrap();
        kube.apply(&namespace("pangeo")).await.unwrap();
        common::controlplane::register_ready_node(&kube, "demo").await;
        let deadline = Instant::now() + Duration::from_secs(30);
        while clusters.list(&Default::default()).await.is_err() {
            assert!(Instant::now() < deadline, "the CRD was never served");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // As the gateway's Kubernetes backend makes them: the owner in spec.username, the
        // phase in the status subresource.
        // dave is a member whose account is locked in FreeIPA: his cluster must be stopped.
        for (name, user, phase, cores) in [
            ("c-alice-1", "alice", "Running", 2),
            ("c-bob-1", "bob", "Pending", 1),
            ("c-dave-1", "Dave", "Running", 1),
        ] {
            let mut object = DynamicObject::new(name, &resource);
            object.data = serde_json::json!({
                "spec": {
                    "username": user,
                    "options": { "worker_cores": cores, "worker_memory": 2.0 },
                    "config": {},
                },
            });
            let _ = clusters.delete(name, &Default::default()).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            clusters
                .create(&PostParams::default(), &object)
                .await
                .unwrap();
            clusters
                .patch_status(
                    name,
                    &PatchParams::default(),
                    &Patch::Merge(serde_json::json!({ "status": { "phase": phase } })),
                )
                .await
                .unwrap();
        }
    });

    let mut daemon = common::TestDaemon::new("");
    daemon.write_main(&common::TestDaemon::external_main_text(
        &ldap,
        &cp.kubeconfig(),
    ));
    daemon.start();
    daemon.wait_status_within("Kubernetes connected", Duration::from_secs(60), |s| {
        common::step(s, "kubernetes-api")["state"] == "done"
            && common::step(s, "directory-sync")["state"] == "done"
    });
    let alice = daemon.get_json("/v1/users/alice/dask-clusters");
    assert_eq!(alice["user"], "alice");
    let list = alice["clusters"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{alice}");
    assert_eq!(list[0]["name"], "pangeo.c-alice-1");
    assert_eq!(list[0]["phase"], "Running");
    assert_eq!(list[0]["options"]["worker_cores"], 2);
    let carol = daemon.get_json("/v1/users/Carol/dask-clusters");
    assert_eq!(carol["clusters"], serde_json::json!([]));
    let unknown = daemon.request(
        hyper::Method::GET,
        "/v1/users/nobody-here/dask-clusters",
        &[],
        None,
    );
    assert_eq!(unknown.status, 404);

    // A disabled user's cluster is deleted (the gateway's controller then stops its pods),
    // with no hub installed at all; the active users' clusters stay.
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(60);
        while clusters.get_opt("c-dave-1").await.unwrap().is_some() {
            assert!(
                Instant::now() < deadline,
                "the disabled user's DaskCluster is still there"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        for name in ["c-alice-1", "c-bob-1"] {
            assert!(clusters.get_opt(name).await.unwrap().is_some(), "{name}");
        }
    });
    let events = daemon.get_json("/v1/events?limit=500");
    let stopped: Vec<&serde_json::Value> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "dask.cluster-stopped")
        .collect();
    assert_eq!(stopped.len(), 1, "{stopped:?}");
    assert_eq!(
        stopped[0]["details"],
        serde_json::json!({ "user": "dave", "cluster": "pangeo.c-dave-1", "because": "disabled" })
    );
    rt.block_on(async {
        for name in ["c-alice-1", "c-bob-1", "c-dave-1"] {
            let _ = clusters.delete(name, &Default::default()).await;
        }
    });
    daemon.stop();
}

#[test]
fn status_shows_how_many_more_notebook_servers_fit() {
    use k8s_openapi::api::core::v1::{Node, Pod};
    use kube::api::{Patch, PatchParams, PostParams};
    let Some(cp) = controlplane() else { return };
    let Some(ldap) = common::ldap_env() else {
        return;
    };
    let rt = common::runtime();
    let kube = rt.block_on(cp.kube());
    let pod_name = unique("busy");
    let pods: Api<Pod> = Api::namespaced(kube.client().clone(), "pangeo");
    rt.block_on(async {
        kube.apply(&namespace("pangeo")).await.unwrap();
        common::controlplane::register_ready_node(&kube, "demo").await;
        // What a kubelet would report, and a pod bound to the node requesting 1 CPU and 2 GiB.
        let nodes: Api<Node> = Api::all(kube.client().clone());
        nodes
            .patch_status(
                "demo",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "status": {
                    "capacity": { "cpu": "4", "memory": "16Gi", "pods": "110" },
                    "allocatable": { "cpu": "4", "memory": "16Gi", "pods": "110" },
                }})),
            )
            .await
            .unwrap();
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": { "name": pod_name, "labels": { "test-capacity": "1" } },
            "spec": {
                "nodeName": "demo",
                "containers": [{
                    "name": "main",
                    "image": "registry.invalid/busy:1",
                    "resources": { "requests": { "cpu": "1", "memory": "2Gi" } },
                }],
            },
        }))
        .unwrap();
        // Pods bound to a node without a kubelet stay Terminating when deleted gracefully:
        // earlier runs' pods go for good first (grace period 0), so the sum is this test's.
        force_delete_pods(&pods, "test-capacity=1").await;
        pods.create(&PostParams::default(), &pod).await.unwrap();
    });

    let mut daemon = common::TestDaemon::new("");
    let text = common::TestDaemon::external_main_text(&ldap, &cp.kubeconfig())
        + "[notebook]\ncpus = 1\nram_gb = 2\n";
    daemon.write_main(&text);
    daemon.start();
    let status = daemon.wait_status_within("the capacity", Duration::from_secs(60), |s| {
        s["notebook_capacity"].is_object()
    });
    let capacity = &status["notebook_capacity"];
    assert_eq!(capacity["node"], "demo");
    assert_eq!(capacity["allocatable_millicpu"], 4000);
    assert_eq!(capacity["requested_millicpu"], 1000, "{capacity}");
    assert_eq!(capacity["requested_memory_bytes"], 2u64 << 30);
    // 3 CPUs and 14 GiB left; each server is guaranteed 1 CPU and 2 GiB: CPU runs out first.
    assert_eq!(capacity["servers_that_fit"], 3, "{capacity}");
    assert_eq!(capacity["limited_by"], "cpu");
    rt.block_on(force_delete_pods(&pods, "test-capacity=1"));
    daemon.stop();
}

#[test]
fn status_shows_a_release_rolled_out_once_its_pods_are_ready() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{ListParams, Patch, PatchParams, PostParams};
    let Some(cp) = controlplane() else { return };
    let Some(ldap) = common::ldap_env() else {
        return;
    };
    let rt = common::runtime();
    let kube = rt.block_on(cp.kube());
    let name = unique("hub");
    let deployments: Api<Deployment> = Api::namespaced(kube.client().clone(), "pangeo");
    let pods: Api<Pod> = Api::namespaced(kube.client().clone(), "pangeo");
    rt.block_on(async {
        kube.apply(&namespace("pangeo")).await.unwrap();
        common::controlplane::register_ready_node(&kube, "demo").await;
        // As Helm makes it: annotated with the release.
        let deployment: Deployment = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": name,
                "annotations": { "meta.helm.sh/release-name": "jupyterhub" },
            },
            "spec": {
                "replicas": 1,
                "selector": { "matchLabels": { "test-app": name } },
                "template": {
                    "metadata": { "labels": { "test-app": name } },
                    "spec": { "containers": [{ "name": "hub", "image": "registry.invalid/hub:1" }] },
                },
            },
        }))
        .unwrap();
        deployments
            .create(&PostParams::default(), &deployment)
            .await
            .unwrap();
    });

    let mut daemon = common::TestDaemon::new("");
    daemon.write_main(&common::TestDaemon::external_main_text(
        &ldap,
        &cp.kubeconfig(),
    ));
    daemon.start();
    let rollout_of = |status: &serde_json::Value| {
        status["rollouts"]["jupyterhub"]["workloads"]
            .as_array()
            .and_then(|w| w.iter().find(|w| w["name"] == name.as_str()).cloned())
    };
    let status = daemon.wait_status_within("the hub's rollout", Duration::from_secs(60), |s| {
        rollout_of(s).is_some()
    });
    assert_eq!(status["rollouts"]["jupyterhub"]["ready"], false);
    assert_eq!(rollout_of(&status).unwrap()["rolled_out"], false);

    // What the scheduler and the kubelet would do: bind the pod, then report it running and
    // ready. The controllers then count it, and the release is rolled out.
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(30);
        let pod = loop {
            let list = pods
                .list(&ListParams::default().labels(&format!("test-app={name}")))
                .await
                .unwrap();
            if let Some(pod) = list.items.into_iter().next() {
                break pod;
            }
            assert!(Instant::now() < deadline, "the ReplicaSet made no pod");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let pod_name = pod.name_any();
        let binding = serde_json::json!({
            "apiVersion": "v1", "kind": "Binding",
            "metadata": { "name": pod_name },
            "target": { "apiVersion": "v1", "kind": "Node", "name": "demo" },
        });
        let _: serde_json::Value = pods
            .create_subresource("binding", &pod_name, &PostParams::default(), &binding)
            .await
            .unwrap();
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        pods.patch_status(
            &pod_name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "status": {
                "phase": "Running",
                "conditions": [
                    { "type": "Ready", "status": "True", "lastTransitionTime": now },
                    { "type": "ContainersReady", "status": "True", "lastTransitionTime": now },
                ],
            }})),
        )
        .await
        .unwrap();
    });
    let status = daemon.wait_status_within("rolled out", Duration::from_secs(60), |s| {
        rollout_of(s).is_some_and(|w| w["rolled_out"] == true)
    });
    assert_eq!(rollout_of(&status).unwrap()["ready"], 1);
    rt.block_on(async {
        let _ = deployments.delete(&name, &Default::default()).await;
        force_delete_pods(&pods, &format!("test-app={name}")).await;
    });
    daemon.stop();
}

/// Deletes the pods matching `selector` at once (grace period 0): the test plane has no
/// kubelet to confirm a graceful deletion of a bound pod.
async fn force_delete_pods(pods: &Api<k8s_openapi::api::core::v1::Pod>, selector: &str) {
    let list = pods
        .list(&kube::api::ListParams::default().labels(selector))
        .await
        .unwrap();
    for pod in list.items {
        let _ = pods
            .delete(
                &pod.name_any(),
                &kube::api::DeleteParams {
                    grace_period_seconds: Some(0),
                    ..Default::default()
                },
            )
            .await;
    }
}

/// Issue 16, item 2: `/v1/status` is served from what pangeod already holds. The rollouts and
/// the capacity come from reflectors' stores, the k3s process is read in the background
/// (`cluster_read_at` says when), so with the API server frozen (SIGSTOP: connections hang,
/// nothing answers) every status request still answers at once, with the rollouts; before, each
/// one waited up to 3 s on the API server. And status makes no Kubernetes request at all:
/// `/metrics` counts pangeod's requests by the API route that made them.
#[test]
fn status_never_waits_on_the_api_server() {
    let Some(cp) = controlplane() else { return };
    let Some(ldap) = common::ldap_env() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = Apiserver::start(&cp, dir.path());
    let mut daemon = common::controlplane::external_daemon(&cp, &ldap, &server.kubeconfig);
    daemon.wait_status_within("a reading of the cluster", Duration::from_secs(60), |s| {
        !s["cluster_read_at"].is_null() && s["rollouts"].is_object()
    });
    server.signal(nix::sys::signal::Signal::SIGSTOP);
    let mut slowest = Duration::ZERO;
    let mut read_at = Vec::new();
    let mut rollouts = Vec::new();
    for _ in 0..40 {
        let started = Instant::now();
        let status = daemon.get_json("/v1/status");
        slowest = slowest.max(started.elapsed());
        read_at.push(status["cluster_read_at"].clone());
        rollouts.push(status["rollouts"].is_object());
        std::thread::sleep(Duration::from_millis(200));
    }
    server.signal(nix::sys::signal::Signal::SIGCONT);
    assert!(
        rollouts.iter().all(|r| *r),
        "rollouts missing: {rollouts:?}"
    );
    let metrics = daemon.get_text("/metrics");
    let requests = |caller: &str| {
        metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "pangeod_kubernetes_requests_total{{caller=\"{caller}\"}} "
                ))
            })
            .map_or(0, |n| n.parse::<u64>().unwrap())
    };
    eprintln!(
        "Kubernetes requests: by GET /v1/status {}, in the background {}",
        requests("GET /v1/status"),
        requests("background")
    );
    assert!(requests("background") > 0, "the counter counts: {metrics}");
    assert_eq!(requests("GET /v1/status"), 0, "{metrics}");
    eprintln!("slowest status with the API server frozen: {slowest:?}");
    assert!(
        slowest < Duration::from_millis(500),
        "a status request waited {slowest:?} on a frozen API server"
    );
    assert!(read_at.iter().all(|r| !r.is_null()), "{read_at:?}");
    daemon.stop();
}

/// Issue 17, item 3: `pangeoctl kubeconfig` hands an admin a kubeconfig for a dedicated
/// identity. The server is the external IP (which k3s's certificate names; here the test API
/// server stands in for it); with the kubeconfig's CA and token, listing namespaces works on the
/// real API server, and a wrong token is refused with 401. The event records the issue, never
/// the token; an out-of-range lifetime is refused.
#[test]
fn admins_get_a_kubeconfig_for_their_own_identity() {
    let Some(cp) = controlplane() else { return };
    let Some(ldap) = common::ldap_env() else {
        return;
    };
    let rt = common::runtime();
    let mut daemon = common::controlplane::external_daemon(&cp, &ldap, &cp.kubeconfig());
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_pangeoctl"))
        .arg("--socket")
        .arg(daemon.socket())
        .args(["kubeconfig", "--hours", "2"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    let issued: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    let cluster = &issued["clusters"][0]["cluster"];
    assert_eq!(cluster["server"].as_str(), Some("https://192.0.2.10:6443"));
    let token = issued["users"][0]["user"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        issued["users"][0]["name"].as_str(),
        Some("pangeo-cluster-admin")
    );

    // The same kubeconfig, pointed at the test API server instead of the external IP.
    let real: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(cp.kubeconfig()).unwrap()).unwrap();
    let server = real["clusters"][0]["cluster"]["server"]
        .as_str()
        .unwrap()
        .to_string();
    let with = |token: &str| {
        let path = daemon
            .dir
            .path()
            .join(format!("kubeconfig-{}", token.len()));
        let text = text.replace("https://192.0.2.10:6443", &server).replace(
            &issued["users"][0]["user"]["token"]
                .as_str()
                .unwrap()
                .to_string(),
            token,
        );
        std::fs::write(&path, text).unwrap();
        path
    };
    let list = |path: std::path::PathBuf| {
        rt.block_on(async {
            let kube = Kube::from_kubeconfig(&path).await.unwrap();
            let namespaces: Api<Namespace> = Api::all(kube.client().clone());
            namespaces
                .list(&Default::default())
                .await
                .map(|l| l.items.len())
        })
    };
    let listed = list(with(&token)).expect("the issued identity lists namespaces");
    assert!(listed >= 1, "{listed}");
    eprintln!("the issued identity listed {listed} namespaces at {server}");
    match list(with("not-a-token")) {
        Err(kube::Error::Api(status)) => assert_eq!(status.code, 401, "{status:?}"),
        other => panic!("a wrong token must get 401: {other:?}"),
    }

    let events = daemon.get_json("/v1/events?limit=20");
    let text = events.to_string();
    assert!(text.contains("kubeconfig.issued"), "{text}");
    assert!(!text.contains(&token), "the event log shows the token");
    let refused = daemon.request(hyper::Method::GET, "/v1/kubeconfig?hours=0", &[], None);
    assert_eq!(refused.status, 422);
    daemon.stop();
}
