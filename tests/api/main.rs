//! Integration tests of the HTTP API: the real server on 127.0.0.1:0 with a
//! fresh SQLite file, spoken to over HTTP like a client would.

#[allow(dead_code)]
#[path = "../support/database.rs"]
mod database;
#[allow(dead_code)]
#[path = "../support/external_tool.rs"]
mod external_tool;
mod helpers;
#[allow(dead_code)]
#[path = "../support/receiver.rs"]
mod receiver;
#[allow(dead_code)]
#[path = "../support/tls_server.rs"]
mod tls_server;

mod backup;
mod basics;
mod browser;
mod dashboard;
mod delivery;
mod faults;
mod idempotency;
mod limits;
mod listing;
mod mcp;
mod media;
mod metrics;
mod observability;
mod openapi;
mod reads;
mod retention;
mod sending;
mod webhooks_out;
