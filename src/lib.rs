//! clerk-mirror: a live, queryable copy of a Clerk instance's users, organizations and
//! organization memberships, kept in PostgreSQL and served over gRPC.
//!
//! Data flows one way: `ingest` (webhooks) → `inbox` → applier → projections and the change log
//! → hub → cache and gRPC. Modules sit on floors that follow the data and import only downwards
//! (README, "Layout"; `tests/api/structure.rs` holds the rule). The binary in `main.rs` is a thin
//! shell over [`cli`].

pub mod admin;
pub mod applier;
pub mod backfill;
pub mod cache;
pub mod cli;
pub mod config;
pub mod db;
pub mod filter;
pub mod grpc;
pub mod http_server;
pub mod hub;
pub mod inbox;
pub mod lender;
pub mod ingest;
#[cfg(test)]
mod kind_proof;
pub mod metrics;
pub mod outbound;
pub mod pb;
pub mod pg;
pub mod secrets;
pub mod startup;
pub mod store;
pub mod supervise;
pub mod telemetry;
pub mod tls;

pub use config::Config;
pub use startup::Application;
