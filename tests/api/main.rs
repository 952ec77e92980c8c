//! Integration tests of the HTTP API: the real server on 127.0.0.1:0 with a
//! fresh SQLite file, spoken to over HTTP like a client would.

mod helpers;

mod basics;
mod delivery;
mod idempotency;
mod limits;
mod reads;
mod sending;
