//! pangeod: turns a VM into a multi-user Pangeo platform.
//!
//! Each outside system has one module that alone talks to it; see docs/ARCHITECTURE.md.

pub mod config;
pub mod state;
