//! whatan: a self-hosted server for the WhatsApp Send API.
//!
//! Code map (see ARCHITECTURE.md for more):
//! - `cli`: clap commands; `serve` wires everything, the rest administer the store.
//! - `config`: defaults -> whatan.toml -> WHATAN_* env -> flags.
//! - `server`: accept loop, limits, graceful shutdown, process wiring.
//! - `logging`: stderr as text or JSON lines, the log filter.
//! - `api`: the HTTP surface (routing, auth, JSON, error mapping).
//! - `domain`: pure types and rules (phones, requests, statuses, tokens).
//! - `store`: SQLite; reads on a pool, writes through one group-committing writer.
//! - `delivery`: per-account pacers that hand queued sends to drivers.
//! - `driver`: the WhatsApp driver trait and its implementations.
//! - `media`: media URL safety and pinned fetching.
//! - `metrics`: Prometheus counters and histograms, and the scrape's text.
//!
//! Architecture invariants:
//! - `api` never calls a driver: it stores a queued attempt and wakes the pacer.
//! - `store` knows nothing of HTTP; `domain` knows nothing of IO.
//! - Only `driver/*` talks to WhatsApp, and only `media` fetches user URLs.
//! - Every write goes through `store::Writer`; no SQLite call runs on a tokio worker.

pub mod api;
pub mod cli;
pub mod clock;
pub mod config;
pub mod dashboard;
pub mod delivery;
pub mod domain;
pub mod driver;
pub mod logging;
pub mod media;
pub mod metrics;
pub mod server;
pub mod store;
pub mod webhooks;
