//! pangeod: turns a VM into a multi-user Pangeo platform.
//!
//! Each outside system has one module that alone talks to it; see docs/ARCHITECTURE.md.

pub mod admin_kubeconfig;
pub mod api;
pub mod boot;
pub mod client;
pub mod components;
pub mod config;
pub mod daemon;
pub mod directory;
pub mod driver;
pub mod hub;
pub mod k3s;
pub mod k8s;
pub mod logging;
pub mod state;
pub mod storage;
pub mod systemd;
pub mod waits;
