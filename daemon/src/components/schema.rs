//! Chart values are validated as Helm does before an install: the chart's default
//! `values.yaml`, coalesced with ours, against its `values.schema.yaml` (JSON Schema, draft 7).
//! A values document that fails makes the helm-controller job fail on the appliance, so
//! pangeod checks first and applies nothing when it fails.
//!
//! The files are the upstream release's, copied verbatim into `daemon/charts/` (a test keeps
//! them equal to `shared/reference/`), and compiled into the binary.

use std::sync::OnceLock;

use serde_json::Value;

/// One pinned chart: its defaults and its schema.
pub struct ChartSchema {
    pub chart: &'static str,
    pub version: &'static str,
    defaults: Value,
    validator: jsonschema::Validator,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the {chart} {version} values pangeod rendered fail the chart's schema, so nothing was applied: {}",
    problems.join("; ")
)]
pub struct SchemaError {
    pub chart: &'static str,
    pub version: &'static str,
    /// `path: problem`, one per violation.
    pub problems: Vec<String>,
}

pub const JUPYTERHUB_VERSION: &str = "4.4.0";
pub const DASK_GATEWAY_VERSION: &str = "2026.3.0";

const JUPYTERHUB_DEFAULTS: &str = include_str!("../../charts/jupyterhub-4.4.0/values.yaml");
const JUPYTERHUB_SCHEMA: &str = include_str!("../../charts/jupyterhub-4.4.0/values.schema.yaml");
const GATEWAY_DEFAULTS: &str = include_str!("../../charts/dask-gateway-2026.3.0/values.yaml");
const GATEWAY_SCHEMA: &str = include_str!("../../charts/dask-gateway-2026.3.0/values.schema.yaml");

pub fn jupyterhub() -> Result<&'static ChartSchema, String> {
    static CELL: OnceLock<Result<ChartSchema, String>> = OnceLock::new();
    CELL.get_or_init(|| {
        ChartSchema::load(
            "jupyterhub",
            JUPYTERHUB_VERSION,
            JUPYTERHUB_DEFAULTS,
            JUPYTERHUB_SCHEMA,
        )
    })
    .as_ref()
    .map_err(Clone::clone)
}

pub fn dask_gateway() -> Result<&'static ChartSchema, String> {
    static CELL: OnceLock<Result<ChartSchema, String>> = OnceLock::new();
    CELL.get_or_init(|| {
        ChartSchema::load(
            "dask-gateway",
            DASK_GATEWAY_VERSION,
            GATEWAY_DEFAULTS,
            GATEWAY_SCHEMA,
        )
    })
    .as_ref()
    .map_err(Clone::clone)
}

impl ChartSchema {
    fn load(
        chart: &'static str,
        version: &'static str,
        defaults: &str,
        schema: &str,
    ) -> Result<Self, String> {
        let defaults: Value = serde_yaml_ng::from_str(defaults)
            .map_err(|e| format!("{chart} {version} values.yaml: {e}"))?;
        let schema: Value = serde_yaml_ng::from_str(schema)
            .map_err(|e| format!("{chart} {version} values.schema.yaml: {e}"))?;
        let validator = jsonschema::validator_for(&schema)
            .map_err(|e| format!("{chart} {version} values.schema.yaml: {e}"))?;
        Ok(Self {
            chart,
            version,
            defaults,
            validator,
        })
    }

    /// The values Helm would validate: the chart's defaults coalesced with `values`.
    pub fn effective(&self, values: &Value) -> Value {
        coalesce(self.defaults.clone(), values)
    }

    pub fn validate(&self, values: &Value) -> Result<(), SchemaError> {
        let effective = self.effective(values);
        let problems: Vec<String> = self
            .validator
            .iter_errors(&effective)
            .map(|error| {
                let path = error.instance_path().to_string();
                let path = if path.is_empty() { "/".into() } else { path };
                format!("{path}: {error}")
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(SchemaError {
                chart: self.chart,
                version: self.version,
                problems,
            })
        }
    }
}

/// Helm's coalescing of user values over chart defaults: maps merge key by key, any other
/// value replaces, and a `null` removes the default.
pub fn coalesce(base: Value, over: &Value) -> Value {
    match (base, over) {
        (Value::Object(mut base), Value::Object(over)) => {
            for (key, value) in over {
                if value.is_null() {
                    base.remove(key);
                    continue;
                }
                let merged = match base.remove(key) {
                    Some(old) => coalesce(old, value),
                    None => value.clone(),
                };
                base.insert(key.clone(), merged);
            }
            Value::Object(base)
        }
        (_, over) => over.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_bundled_chart_files_are_the_reference_files() {
        let reference = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/reference");
        for (ours, theirs) in [
            (JUPYTERHUB_DEFAULTS, "jupyterhub-chart/values.yaml"),
            (JUPYTERHUB_SCHEMA, "jupyterhub-chart/values.schema.yaml"),
            (GATEWAY_DEFAULTS, "dask-gateway-chart/values.yaml"),
            (GATEWAY_SCHEMA, "dask-gateway-chart/values.schema.yaml"),
        ] {
            let path = format!("{reference}/{theirs}");
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert!(
                ours == text,
                "daemon/charts differs from {path}: copy it again"
            );
        }
    }

    #[test]
    fn the_chart_defaults_pass_their_own_schema() {
        jupyterhub().unwrap().validate(&json!({})).unwrap();
        dask_gateway().unwrap().validate(&json!({})).unwrap();
    }

    #[test]
    fn a_violation_names_the_chart_the_path_and_the_problem() {
        let error = jupyterhub()
            .unwrap()
            .validate(&json!({ "singleuser": { "cpu": { "limit": "lots" } }, "nosuchkey": 1 }))
            .unwrap_err();
        let text = error.to_string();
        assert!(text.starts_with("the jupyterhub 4.4.0 values pangeod rendered fail the chart's schema, so nothing was applied: "), "{text}");
        assert!(text.contains("/singleuser/cpu/limit: "), "{text}");
        assert!(text.contains("nosuchkey"), "{text}");
    }

    #[test]
    fn coalescing_merges_maps_replaces_values_and_null_removes() {
        let merged = coalesce(
            json!({ "a": { "b": 1, "c": 2 }, "d": [1], "e": "x" }),
            &json!({ "a": { "c": 3, "f": 4 }, "d": [2], "e": null }),
        );
        assert_eq!(merged, json!({ "a": { "b": 1, "c": 3, "f": 4 }, "d": [2] }));
    }
}
