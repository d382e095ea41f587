//! k3s's `HelmChart` (`helm.cattle.io/v1`), as in its CRD (`shared/reference/k3s-helm-controller/`).
//! Only the fields the appliance sets are typed; a test checks each of them against the CRD.
//! Every field is optional and skipped when unset, so a server-side apply owns exactly the fields
//! pangeod sets.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "helm.cattle.io",
    version = "v1",
    kind = "HelmChart",
    namespaced,
    status = "HelmChartStatus"
)]
#[serde(rename_all = "camelCase")]
pub struct HelmChartSpec {
    /// A chart name in `repo`, or a URL, e.g. k3s's static charts URL
    /// `https://%{KUBERNETES_API}%/static/charts/<file>.tgz`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chart: Option<String>,
    /// The chart archive itself, base64: no network at install time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chart_content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_namespace: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub create_namespace: Option<bool>,
    /// The chart values, as YAML (JSON is YAML).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub values_content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub set: Option<BTreeMap<String, IntOrString>>,
    /// `retry` for the appliance: `reinstall` (the default) uninstalls the release and with it
    /// the hub database volume; `abort` leaves an interrupted release stuck for good.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_policy: Option<FailurePolicy>,
    /// A Go duration, e.g. `"10m0s"`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub back_off_limit: Option<i32>,
    /// The helm job image; pinned, so the air-gapped node never pulls `latest`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<bool>,
}

/// k3s's `HelmChartConfig`: values for a chart k3s itself installs (Traefik), merged over its
/// defaults by helm-controller.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "helm.cattle.io",
    version = "v1",
    kind = "HelmChartConfig",
    namespaced
)]
#[serde(rename_all = "camelCase")]
pub struct HelmChartConfigSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub values_content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_policy: Option<FailurePolicy>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FailurePolicy {
    Abort,
    Reinstall,
    Retry,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HelmChartStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<HelmChartCondition>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HelmChartCondition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_helm_chart_config_fields_exist_in_its_crd() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/reference/k3s-helm-controller/helm.cattle.io_helmchartconfigs.yaml"
        );
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let crd: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(crd["spec"]["names"]["kind"], "HelmChartConfig");
        let version = crd["spec"]["versions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "v1")
            .unwrap();
        let spec = &version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
        let ours = serde_json::to_value(HelmChartConfigSpec {
            values_content: Some("a: 1".into()),
            failure_policy: Some(FailurePolicy::Retry),
        })
        .unwrap();
        for (key, value) in ours.as_object().unwrap() {
            assert!(spec.get(key).is_some(), "{key} is not in the CRD");
            assert_eq!(spec[key]["type"], "string", "{key}: {value}");
        }
    }

    /// The reference CRD, parsed: the properties of `spec` and `status` in the served version.
    fn reference_schema() -> serde_json::Value {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/reference/k3s-helm-controller/helm.cattle.io_helmcharts.yaml"
        );
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let crd: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
        let version = crd["spec"]["versions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "v1")
            .unwrap()
            .clone();
        assert_eq!(crd["spec"]["group"], "helm.cattle.io");
        assert_eq!(crd["spec"]["names"]["kind"], "HelmChart");
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        version["schema"]["openAPIV3Schema"].clone()
    }

    fn json_type(value: &serde_json::Value) -> &'static str {
        match value {
            serde_json::Value::String(_) => "string",
            serde_json::Value::Bool(_) => "boolean",
            serde_json::Value::Number(_) => "integer",
            serde_json::Value::Object(_) => "object",
            serde_json::Value::Array(_) => "array",
            serde_json::Value::Null => "null",
        }
    }

    #[test]
    fn every_field_we_set_exists_in_the_crd_with_the_same_type() {
        let schema = reference_schema();
        let spec = HelmChartSpec {
            chart: Some("c".into()),
            chart_content: Some("Yw==".into()),
            version: Some("1".into()),
            repo: Some("r".into()),
            target_namespace: Some("t".into()),
            create_namespace: Some(true),
            values_content: Some("a: 1".into()),
            set: Some(BTreeMap::from([("k".into(), IntOrString::Int(1))])),
            failure_policy: Some(FailurePolicy::Retry),
            timeout: Some("10m0s".into()),
            back_off_limit: Some(3),
            job_image: Some("rancher/klipper-helm:v0".into()),
            bootstrap: Some(false),
        };
        let value = serde_json::to_value(&spec).unwrap();
        let props = &schema["properties"]["spec"]["properties"];
        let fields = value.as_object().unwrap();
        assert_eq!(fields.len(), 13, "every typed field is covered");
        for (name, v) in fields {
            let declared = &props[name];
            assert!(
                declared.is_object(),
                "spec.{name} is not in the HelmChart CRD"
            );
            if name == "set" {
                assert_eq!(
                    declared["additionalProperties"]["x-kubernetes-int-or-string"],
                    true
                );
                continue;
            }
            assert_eq!(declared["type"], json_type(v), "spec.{name}");
        }
        let policies = props["failurePolicy"]["enum"].as_array().unwrap();
        for p in [
            FailurePolicy::Abort,
            FailurePolicy::Reinstall,
            FailurePolicy::Retry,
        ] {
            assert!(
                policies.contains(&serde_json::to_value(p).unwrap()),
                "{p:?}"
            );
        }
        let status = &schema["properties"]["status"]["properties"];
        assert_eq!(status["jobName"]["type"], "string");
        let condition = &status["conditions"]["items"]["properties"];
        for field in ["type", "status", "reason", "message"] {
            assert!(condition[field].is_object(), "status.conditions[].{field}");
        }
    }

    #[test]
    fn unset_fields_are_not_serialized_so_apply_does_not_own_them() {
        let chart = HelmChart::new(
            "jupyterhub",
            HelmChartSpec {
                chart: Some("jupyterhub".into()),
                ..Default::default()
            },
        );
        let value = serde_json::to_value(&chart).unwrap();
        assert_eq!(value["apiVersion"], "helm.cattle.io/v1");
        assert_eq!(value["kind"], "HelmChart");
        assert_eq!(value["spec"], serde_json::json!({ "chart": "jupyterhub" }));
        assert!(value.get("status").is_none());
    }
}
