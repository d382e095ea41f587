//! Ingress TLS for the hub's domain, through k3s's Traefik.
//!
//! A public domain (the external IP is a global address; the default
//! `pangeo.<dashed-ip>.sslip.io` included) gets Let's Encrypt through Traefik's own ACME
//! resolver, configured by a `HelmChartConfig` for k3s's Traefik chart, with the account and
//! certificates on a persistent volume. Traefik's resolver needs nothing more in the cluster
//! (cert-manager would be another chart, its CRDs and three more images in the air-gap bundle)
//! and renews by itself. Any other domain gets a certificate from a local CA that pangeod
//! generates once and keeps; its certificate is served at `GET /v1/tls/ca.pem`.

use std::net::IpAddr;

use serde::Serialize;
use serde_json::{Value, json};

use crate::config::Config;
use crate::k8s::{HelmChartConfig, HelmChartConfigSpec};
use crate::state::{State, StateError};

/// The Secret the hub's ingress serves in local-CA mode.
pub const TLS_SECRET: &str = "pangeo-ingress-tls";
/// Traefik's certificate resolver name in ACME mode.
pub const RESOLVER: &str = "pangeo";
/// The state's names of the local CA and the domain's certificate.
pub const CA_CERT: &str = "ingress-ca-cert";
const CA_KEY: &str = "ingress-ca-key";
const CERT: &str = "ingress-cert";
const KEY: &str = "ingress-key";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Let's Encrypt through Traefik's ACME resolver.
    Acme,
    /// A certificate from pangeod's local CA.
    LocalCa,
}

/// ACME needs Let's Encrypt to reach the domain, which resolves to the external IP (preflight
/// checks a custom domain): a global address. Private, shared, loopback, link-local and
/// documentation addresses get the local CA.
pub fn tls_mode(config: &Config) -> TlsMode {
    if is_global(config.cluster.external_ip) {
        TlsMode::Acme
    } else {
        TlsMode::LocalCa
    }
}

fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
                || (a == 192 && b == 0 && c == 2)
                || (a == 198 && b == 51 && c == 100)
                || (a == 203 && b == 0 && c == 113)
                || (a == 198 && (18..20).contains(&b))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link local
                || first == 0x2001 && v6.segments()[1] == 0x0db8) // documentation
        }
    }
}

/// The hub ingress's TLS settings, merged into the JupyterHub chart's `ingress`.
pub fn hub_ingress(config: &Config) -> Value {
    let domain = config.domain();
    let mut annotations = json!({
        "traefik.ingress.kubernetes.io/router.entrypoints": "websecure",
        "traefik.ingress.kubernetes.io/router.tls": "true",
    });
    let tls = match tls_mode(config) {
        TlsMode::Acme => {
            annotations["traefik.ingress.kubernetes.io/router.tls.certresolver"] = json!(RESOLVER);
            json!([{ "hosts": [domain] }])
        }
        TlsMode::LocalCa => json!([{ "hosts": [domain], "secretName": TLS_SECRET }]),
    };
    json!({
        "enabled": true,
        "ingressClassName": "traefik",
        "hosts": [domain],
        "annotations": annotations,
        "tls": tls,
    })
}

/// k3s's Traefik in ACME mode: the resolver, its storage on a volume, and HTTP redirected to
/// HTTPS. Applied in `kube-system`, where k3s installs Traefik.
pub fn traefik_config(storage_class: &str) -> HelmChartConfig {
    let values = json!({
        "certificatesResolvers": {
            RESOLVER: {
                "acme": {
                    "tlsChallenge": {},
                    "storage": "/data/acme.json",
                },
            },
        },
        "persistence": {
            "enabled": true,
            "path": "/data",
            "size": "128Mi",
            "storageClass": storage_class,
        },
        "ports": {
            "web": {
                "redirections": {
                    "entryPoint": { "to": "websecure", "scheme": "https", "permanent": true },
                },
            },
        },
    });
    let mut object = HelmChartConfig::new(
        "traefik",
        HelmChartConfigSpec {
            values_content: Some(values.to_string()),
            failure_policy: Some(crate::k8s::FailurePolicy::Retry),
        },
    );
    object.metadata.namespace = Some("kube-system".into());
    // pangeod's label: the level-triggered reconcile watches the objects that carry it.
    object.metadata.labels = Some(std::collections::BTreeMap::from([(
        super::MANAGED_BY.0.to_string(),
        super::MANAGED_BY.1.to_string(),
    )]));
    object
}

/// The local CA and the domain's certificate, PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalTls {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot generate the ingress's local CA or certificate: {0}")]
    Generate(String),
    #[error(transparent)]
    State(#[from] StateError),
}

/// The local CA and the certificate for `domain`: generated once (the domain cannot change),
/// kept in the state database, the same ever after.
pub fn local_tls(state: &State, domain: &str) -> Result<LocalTls, TlsError> {
    let generate = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let ca_key = state.secret_with(CA_KEY, || {
        rcgen::KeyPair::generate()
            .map(|k| k.serialize_pem())
            .map_err(generate)
    })??;
    let ca_key = rcgen::KeyPair::from_pem(&ca_key).map_err(generate)?;
    let ca_params = || -> Result<rcgen::CertificateParams, TlsError> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(generate)?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Pangeo appliance local CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        Ok(params)
    };
    let ca_pem = state.secret_with(CA_CERT, || {
        ca_params()?
            .self_signed(&ca_key)
            .map(|c| c.pem())
            .map_err(generate)
    })??;
    let key_pem = state.secret_with(KEY, || {
        rcgen::KeyPair::generate()
            .map(|k| k.serialize_pem())
            .map_err(generate)
    })??;
    let cert_pem = state.secret_with(CERT, || {
        let key = rcgen::KeyPair::from_pem(&key_pem).map_err(generate)?;
        let issuer = rcgen::Issuer::new(ca_params()?, ca_key);
        let mut params =
            rcgen::CertificateParams::new(vec![domain.to_string()]).map_err(generate)?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, domain);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params
            .signed_by(&key, &issuer)
            .map(|c| c.pem())
            .map_err(generate)
    })??;
    Ok(LocalTls {
        ca_pem,
        cert_pem,
        key_pem,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_addresses_get_acme_and_the_rest_the_local_ca() {
        for (ip, global) in [
            ("93.184.216.34", true),
            ("2a00:1450:4001::1", true),
            ("10.0.0.5", false),
            ("172.16.1.1", false),
            ("192.168.1.2", false),
            ("100.64.0.1", false),
            ("192.0.2.10", false),
            ("127.0.0.1", false),
            ("fd00::1", false),
            ("2001:db8::10", false),
        ] {
            assert_eq!(is_global(ip.parse().unwrap()), global, "{ip}");
        }
    }

    #[test]
    fn the_local_certificate_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(dir.path()).unwrap();
        let first = local_tls(&state, "pangeo.example.internal").unwrap();
        assert!(first.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(first.key_pem.contains("PRIVATE KEY"));
        assert_eq!(local_tls(&state, "pangeo.example.internal").unwrap(), first);
        assert_eq!(
            state.stored_secret(CA_CERT).unwrap().as_deref(),
            Some(first.ca_pem.as_str())
        );
    }

    #[test]
    fn the_traefik_config_names_the_resolver_and_keeps_its_storage() {
        let config = traefik_config("pangeo-homes");
        assert_eq!(config.metadata.namespace.as_deref(), Some("kube-system"));
        let values: Value =
            serde_json::from_str(config.spec.values_content.as_deref().unwrap()).unwrap();
        assert_eq!(
            values["certificatesResolvers"][RESOLVER]["acme"]["storage"],
            "/data/acme.json"
        );
        assert_eq!(values["persistence"]["enabled"], true);
    }
}
