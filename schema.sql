-- whatan's whole schema, as a list of migrations.
--
-- Each "migration: N" block is applied once, in order, inside one
-- transaction, and PRAGMA user_version records the last one applied.
-- Never edit or remove a block that has shipped: append a new one.
--
-- Times are INTEGER milliseconds since the Unix epoch (UTC).

-- migration: 1

CREATE TABLE workspaces (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    workspace_id  TEXT NOT NULL REFERENCES workspaces(id),
    name          TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    created_at    INTEGER NOT NULL
);
CREATE INDEX users_by_workspace ON users(workspace_id);

-- A connected WhatsApp account ("sender"). Each user has at most one attached
-- account: the one a `to`-only (personal mode) request sends from.
CREATE TABLE accounts (
    id                 TEXT PRIMARY KEY,
    workspace_id       TEXT NOT NULL REFERENCES workspaces(id),
    user_id            TEXT NOT NULL UNIQUE REFERENCES users(id),
    phone              TEXT NOT NULL UNIQUE,          -- E.164, "+917000000001"
    driver             TEXT NOT NULL CHECK (driver IN ('sandbox', 'cloud', 'web')),
    status             TEXT NOT NULL CHECK (status IN
                         ('connected', 'connecting', 'disconnected', 'logged_out', 'banned')),
    status_changed_at  INTEGER NOT NULL,
    status_detail      TEXT,                          -- e.g. ban expiry, last driver error
    settings           TEXT NOT NULL DEFAULT '{}',    -- driver settings and secrets (JSON)
    next_send_at       INTEGER NOT NULL DEFAULT 0,    -- pacing: earliest next hand-off
    created_at         INTEGER NOT NULL
);
CREATE INDEX accounts_by_workspace ON accounts(workspace_id);
CREATE INDEX accounts_by_status_change ON accounts(status_changed_at);

-- Bearer tokens. Only the SHA-256 of the secret is stored.
CREATE TABLE tokens (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(id),
    kind        TEXT NOT NULL CHECK (kind IN ('send', 'mcp')),
    name        TEXT,
    secret_hash BLOB NOT NULL UNIQUE,
    hint        TEXT NOT NULL,                        -- prefix + last 4 chars, for listings
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER,
    revoked_at  INTEGER
);
CREATE INDEX tokens_by_user ON tokens(user_id);

-- One row per accepted (202) send request.
CREATE TABLE send_attempts (
    seq            INTEGER PRIMARY KEY,               -- queue order
    id             TEXT NOT NULL UNIQUE,              -- sendAttemptId (UUID)
    workspace_id   TEXT NOT NULL REFERENCES workspaces(id),
    account_id     TEXT NOT NULL REFERENCES accounts(id),
    user_id        TEXT NOT NULL REFERENCES users(id),
    mode           TEXT NOT NULL CHECK (mode IN ('personal', 'workspace')),
    from_phone     TEXT NOT NULL,
    to_phone       TEXT NOT NULL,
    type           TEXT NOT NULL CHECK (type IN ('text', 'image', 'document')),
    payload        TEXT NOT NULL,                     -- normalised message JSON
    status         TEXT NOT NULL CHECK (status IN
                     ('queued', 'sending', 'accepted', 'delivered', 'read', 'failed')),
    message_id     TEXT,                              -- chosen at claim, kept across retries
    remote_jid     TEXT,
    error_code     TEXT,
    error_message  TEXT,
    tries          INTEGER NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL
);
-- The pacer's queue: pending attempts of one account, oldest first.
CREATE INDEX send_attempts_pending ON send_attempts(account_id, seq)
    WHERE status IN ('queued', 'sending');
CREATE INDEX send_attempts_by_message ON send_attempts(message_id)
    WHERE message_id IS NOT NULL;

-- Idempotency-Key records, scoped per user. The primary key is the claim.
CREATE TABLE idempotency_keys (
    user_id        TEXT NOT NULL REFERENCES users(id),
    key            TEXT NOT NULL,
    fingerprint    BLOB NOT NULL,                     -- SHA-256 of the normalised request
    attempt_id     TEXT NOT NULL,
    http_status    INTEGER NOT NULL,
    response_body  BLOB NOT NULL,                     -- empty: the 202 of attempt_id, rebuilt from it
    created_at     INTEGER NOT NULL,
    PRIMARY KEY (user_id, key)
) WITHOUT ROWID;

-- Accepted API sends per account per UTC day (day = days since the epoch).
CREATE TABLE daily_counters (
    account_id  TEXT NOT NULL REFERENCES accounts(id),
    day         INTEGER NOT NULL,
    count       INTEGER NOT NULL,
    PRIMARY KEY (account_id, day)
) WITHOUT ROWID;

-- The sandbox driver's simulated WhatsApp network: what "reached phones".
-- The primary key de-duplicates by message id, as WhatsApp does.
CREATE TABLE sandbox_outbox (
    message_id    TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL,
    from_phone    TEXT NOT NULL,
    to_phone      TEXT NOT NULL,
    type          TEXT NOT NULL,
    body          TEXT NOT NULL,                      -- JSON: text / caption / file name / sizes
    delivered_at  INTEGER NOT NULL
) WITHOUT ROWID;

-- migration: 2

-- 1 when the last hand-off of a `sending` attempt certainly did not reach
-- WhatsApp (retry later, account offline). A `sending` attempt with 0 was
-- interrupted mid-hand-off: drivers that cannot de-duplicate by message id
-- must not send it again.
ALTER TABLE send_attempts ADD COLUMN handoff_unsent INTEGER NOT NULL DEFAULT 0;
-- When whatan last handed the message to WhatsApp (the claim); pacing gaps
-- run from one hand-off to the next.
ALTER TABLE send_attempts ADD COLUMN handed_off_at INTEGER;

-- migration: 3

-- 1 while an operator's `account disconnect` holds the account offline. Only
-- `account connect` clears it: what a driver reports (a linked device that
-- reconnects, say) never brings a held account back to `connected`.
ALTER TABLE accounts ADD COLUMN held_by_operator INTEGER NOT NULL DEFAULT 0;

-- migration: 4

-- Every hand-off the sandbox network received, duplicates included (no
-- unique key, unlike sandbox_outbox): where a second hand-off of one message
-- would show. `redelivery` is 1 when whatan said the message may have been
-- handed off before (a restart interrupted that hand-off).
CREATE TABLE sandbox_handoffs (
    message_id   TEXT NOT NULL,
    account_id   TEXT NOT NULL,
    redelivery   INTEGER NOT NULL,
    received_at  INTEGER NOT NULL
);
-- When the account last left `connected` (NULL while connected). The offline
-- grace counts from here, so an account that flaps between connecting and
-- disconnected does not restart the clock with every flap.
ALTER TABLE accounts ADD COLUMN offline_since INTEGER;
UPDATE accounts SET offline_since = status_changed_at WHERE status != 'connected';

-- migration: 5

-- Tokens of kind `metrics` (GET /metrics). SQLite cannot alter a CHECK
-- constraint, so the table is rebuilt; nothing references it.
CREATE TABLE tokens_v5 (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL REFERENCES users(id),
    kind        TEXT NOT NULL CHECK (kind IN ('send', 'mcp', 'metrics')),
    name        TEXT,
    secret_hash BLOB NOT NULL UNIQUE,
    hint        TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER,
    revoked_at  INTEGER
);
INSERT INTO tokens_v5 (id, user_id, kind, name, secret_hash, hint, created_at, expires_at, revoked_at)
    SELECT id, user_id, kind, name, secret_hash, hint, created_at, expires_at, revoked_at FROM tokens;
DROP TABLE tokens;
ALTER TABLE tokens_v5 RENAME TO tokens;
CREATE INDEX tokens_by_user ON tokens(user_id);

-- migration: 6

-- Retention (`[retention] attempts`, `whatan prune`): final attempts by when
-- they last changed, and the rows that go with an attempt, found by index
-- rather than by scanning their tables.
CREATE INDEX send_attempts_final ON send_attempts(updated_at)
    WHERE status IN ('accepted', 'delivered', 'read', 'failed');
CREATE INDEX idempotency_keys_by_attempt ON idempotency_keys(attempt_id);
CREATE INDEX sandbox_handoffs_by_message ON sandbox_handoffs(message_id);

-- migration: 7

-- Listing a token's recent sends, newest first (the MCP tool
-- `list_recent_messages`): a user's own attempts, and the workspace-sender
-- attempts that owners and admins also read, each an index range.
CREATE INDEX send_attempts_by_user ON send_attempts(user_id, seq);
CREATE INDEX send_attempts_by_workspace ON send_attempts(workspace_id, seq)
    WHERE mode = 'workspace';

-- migration: 8

-- Webhook endpoints of a workspace (webhooks.md). The secret is kept only as
-- SHA-256 states from which signatures can be made (src/webhooks/sign.rs);
-- after `rotate-secret` the previous key signs too until `previous_until`.
CREATE TABLE webhook_endpoints (
    id              TEXT PRIMARY KEY,
    workspace_id    TEXT NOT NULL REFERENCES workspaces(id),
    url             TEXT NOT NULL,
    events          TEXT NOT NULL,                    -- JSON array of event types
    description     TEXT,
    signing_key     BLOB NOT NULL,
    previous_key    BLOB,
    previous_until  INTEGER,
    status          TEXT NOT NULL CHECK (status IN ('enabled', 'disabled')),
    failing_since   INTEGER,                          -- first failure since the last success
    created_at      INTEGER NOT NULL
);
CREATE INDEX webhook_endpoints_by_workspace ON webhook_endpoints(workspace_id);

-- One event for one endpoint, written in the transaction of the change that
-- caused it. `event_id` is the `webhook-id`: the same on every retry and
-- redelivery.
CREATE TABLE webhook_deliveries (
    seq               INTEGER PRIMARY KEY,
    id                TEXT NOT NULL UNIQUE,
    endpoint_id       TEXT NOT NULL REFERENCES webhook_endpoints(id) ON DELETE CASCADE,
    event_id          TEXT NOT NULL,
    type              TEXT NOT NULL,
    body              TEXT NOT NULL,
    status            TEXT NOT NULL CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts          INTEGER NOT NULL DEFAULT 0,
    last_status_code  INTEGER,
    last_error        TEXT,
    next_attempt_at   INTEGER NOT NULL,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(endpoint_id, next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries(endpoint_id, seq);
-- `webhook deliveries --failed`: an endpoint's failed deliveries, newest
-- first, without walking its whole history.
CREATE INDEX webhook_deliveries_failed ON webhook_deliveries(endpoint_id, seq)
    WHERE status = 'failed';
-- Retention deletes finished deliveries with the attempts of their age.
CREATE INDEX webhook_deliveries_final ON webhook_deliveries(updated_at)
    WHERE status IN ('delivered', 'failed');
-- The last account state reported to webhooks: `connecting` is not one, so
-- disconnected -> connecting -> disconnected reports nothing new.
ALTER TABLE accounts ADD COLUMN reported_status TEXT;

-- migration: 9

-- The dashboard. One-time sign-in links (`user login-link`, invites):
-- only the SHA-256 of the secret is stored; a link is spent by deleting it.
CREATE TABLE login_links (
    secret_hash  BLOB PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id),
    expires_at   INTEGER NOT NULL,
    created_at   INTEGER NOT NULL
);
CREATE INDEX login_links_by_user ON login_links(user_id);

-- Signed-in browsers: the SHA-256 of the cookie's id, and the CSRF token
-- its forms carry. A session unused for 30 days is over.
CREATE TABLE sessions (
    id_hash      BLOB PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users(id),
    csrf_token   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL
);
CREATE INDEX sessions_by_user ON sessions(user_id);

-- A sandbox account's QR code while its Link page waits for the simulated
-- phone (`sandbox scan ACCOUNT`, another process, completes it).
CREATE TABLE sandbox_pairings (
    account_id   TEXT PRIMARY KEY REFERENCES accounts(id),
    nonce        TEXT NOT NULL,
    started_at   INTEGER NOT NULL
);

-- When an attempt first reached each later status (the dashboard's
-- timeline); a status skipped by out-of-order receipts stays NULL.
ALTER TABLE send_attempts ADD COLUMN accepted_at INTEGER;
ALTER TABLE send_attempts ADD COLUMN delivered_at INTEGER;
ALTER TABLE send_attempts ADD COLUMN read_at INTEGER;

-- A member removed from the team: their tokens, sessions and links stop at
-- once; the row stays, because their attempts name them.
ALTER TABLE users ADD COLUMN removed_at INTEGER;

-- migration: 10

-- Several nodes on one PostgreSQL database (cluster.md). Each account is
-- driven by the node holding its lease; the fence grows with every new
-- holder and every write of a hand-off checks it. A released lease keeps
-- its row (expired), so the next holder's fence is still larger. On the
-- SQLite file one process serves, and these tables stay empty.
CREATE TABLE leases (
    account_id   TEXT PRIMARY KEY,
    node_id      TEXT NOT NULL,
    expires_at   INTEGER NOT NULL,
    fence        INTEGER NOT NULL,
    acquired_at  INTEGER NOT NULL
);
CREATE INDEX leases_by_node ON leases(node_id);
-- Each node's heartbeat: the nodes seen within a lease_ttl share the
-- accounts.
CREATE TABLE nodes (
    node_id  TEXT PRIMARY KEY,
    seen_at  INTEGER NOT NULL
);
-- Which node (and under which fence) handed a message to the sandbox
-- network, and whether the network refused it (a fence no longer
-- current): how the failover test sees a stale node's attempt to send.
ALTER TABLE sandbox_handoffs ADD COLUMN node_id TEXT;
ALTER TABLE sandbox_handoffs ADD COLUMN fence INTEGER;
ALTER TABLE sandbox_handoffs ADD COLUMN refused INTEGER NOT NULL DEFAULT 0;

-- migration: 11

-- Linked-device (web) sessions as rows, on PostgreSQL: whichever node holds
-- an account's lease loads its WhatsApp Web state from here, so an account
-- moves to another node without pairing again. One row per entry of the
-- library's stores (`kind` numbers them, `row_key` is the entry's key as
-- bytes, `ts` what some entries expire by). The SQLite file keeps its
-- sessions in `web-sessions/` files, and this table stays empty there.
CREATE TABLE web_session_rows (
    account_id  TEXT NOT NULL,
    kind        INTEGER NOT NULL,
    row_key     BLOB NOT NULL,
    value       BLOB NOT NULL,
    ts          INTEGER NOT NULL,
    PRIMARY KEY (account_id, kind, row_key)
);
CREATE INDEX web_session_rows_by_ts ON web_session_rows(account_id, kind, ts);
