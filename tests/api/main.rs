//! The integration tests, compiled as one binary. One PostgreSQL cluster serves the whole
//! binary; each test gets a fresh database made from a migrated template (see `helpers`).

mod admin;
mod applier;
mod backfill;
mod bench;
mod billing;
mod cache;
mod cluster;
mod commands;
mod directory;
mod domains;
mod embedded;
mod events;
mod examples;
mod faults;
mod feed;
mod filters;
mod grpc_web;
mod helpers;
mod hostile;
mod inbox;
mod ingest;
mod invitations;
mod leftovers;
mod lender;
mod lists;
mod outbound;
mod logs;
mod process;
mod properties;
mod reflection;
mod roles;
mod security;
mod structure;
mod supervise;
mod watch;
