// The comparison design of issue #18: Express + better-sqlite3 with the
// same durability as whatan (WAL, synchronous=FULL, a 202 only after its
// commit), the same token check (SHA-256 of the bearer token, an indexed
// lookup), the same Idempotency-Key claim and the same phone validation
// (libphonenumber-js, real numbering-plan metadata). One Node.js process,
// one connection, one transaction (and one fsync) per send: no group
// commit. The benchmark starts it with BENCH_EXPRESS_DB (the file) and
// BENCH_EXPRESS_TOKEN (the token its load sends) and reads the
// {"listening": ...} line it prints, as it does for whatan.
"use strict";
const crypto = require("node:crypto");
const express = require("express");
const Database = require("better-sqlite3");
const { parsePhoneNumberFromString } = require("libphonenumber-js/max");

const db = new Database(process.env.BENCH_EXPRESS_DB);
db.pragma("journal_mode = WAL");
db.pragma("synchronous = FULL");
db.exec(`
  CREATE TABLE IF NOT EXISTS tokens (hash TEXT PRIMARY KEY, user_id TEXT NOT NULL);
  CREATE TABLE IF NOT EXISTS send_attempts (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, user_id TEXT NOT NULL,
    to_phone TEXT NOT NULL, type TEXT NOT NULL, payload TEXT NOT NULL,
    status TEXT NOT NULL, created_at INTEGER NOT NULL);
  CREATE TABLE IF NOT EXISTS idempotency_keys (
    user_id TEXT NOT NULL, key TEXT NOT NULL, fingerprint TEXT NOT NULL,
    attempt_id TEXT NOT NULL, PRIMARY KEY (user_id, key)) WITHOUT ROWID;
`);
const sha256 = (s) => crypto.createHash("sha256").update(s).digest("hex");
db.prepare("INSERT OR IGNORE INTO tokens VALUES (?, 'usr_bench')").run(
  sha256(process.env.BENCH_EXPRESS_TOKEN),
);

const byToken = db.prepare("SELECT user_id FROM tokens WHERE hash = ?");
const byKey = db.prepare(
  "SELECT fingerprint, attempt_id FROM idempotency_keys WHERE user_id = ? AND key = ?",
);
const insertAttempt = db.prepare(
  "INSERT INTO send_attempts (id, user_id, to_phone, type, payload, status, created_at) VALUES (?, ?, ?, ?, ?, 'queued', ?)",
);
const insertKey = db.prepare("INSERT INTO idempotency_keys VALUES (?, ?, ?, ?)");
const byId = db.prepare("SELECT id, user_id, status FROM send_attempts WHERE id = ?");
const enqueue = db.transaction((user, key, fingerprint, to, type, payload) => {
  if (key) {
    const stored = byKey.get(user, key);
    if (stored) return { replay: stored };
  }
  const id = crypto.randomUUID();
  insertAttempt.run(id, user, to, type, payload, Date.now());
  if (key) insertKey.run(user, key, fingerprint, id);
  return { id };
});

const fail = (res, status, code, message) =>
  res.status(status).json({ error: { code, message } });

function auth(req, res, next) {
  const m = /^Bearer (.+)$/i.exec(req.get("authorization") || "");
  const row = m && byToken.get(sha256(m[1].trim()));
  if (!row) return fail(res, 401, "unauthorized", "invalid token");
  req.user = row.user_id;
  next();
}

const app = express();
app.disable("x-powered-by");
app.disable("etag");
app.post("/api/v1/messages/send", auth, express.json(), (req, res) => {
  const body = req.body || {};
  const phone = parsePhoneNumberFromString(String(body.to || ""));
  if (!phone || !phone.isValid()) {
    return fail(res, 400, "invalid_phone", "to is not a valid phone number");
  }
  if (body.type !== "text" || typeof body.text !== "string") {
    return fail(res, 400, "invalid_request", "only text messages here");
  }
  const payload = JSON.stringify({ type: "text", text: body.text });
  const fingerprint = sha256(phone.number + "\n" + payload);
  const out = enqueue(req.user, req.get("idempotency-key"), fingerprint, phone.number, "text", payload);
  if (out.replay && out.replay.fingerprint !== fingerprint) {
    return fail(res, 409, "idempotency_conflict", "key reused with another request");
  }
  const id = out.id || out.replay.attempt_id;
  res.status(202).json({
    accepted: true, sendAttemptId: id, messageId: null, remoteJid: null,
    to: phone.number, normalizedPhone: phone.number.slice(1), status: "queued",
  });
});
app.get("/api/v1/messages/:id", auth, (req, res) => {
  const row = byId.get(req.params.id);
  if (!row || row.user_id !== req.user) return fail(res, 404, "not_found", "no such send");
  res.json({ sendAttemptId: row.id, status: row.status });
});

const server = app.listen(0, "127.0.0.1", () => {
  console.log(JSON.stringify({ listening: `127.0.0.1:${server.address().port}` }));
});
server.keepAliveTimeout = 60_000;
