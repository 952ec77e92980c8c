//! Several nodes on one PostgreSQL database (cluster.md): three `whatan
//! serve` processes share twelve accounts, sends go through all of them,
//! one node is killed with SIGKILL mid-run and another paused with SIGSTOP
//! past its lease. Checked on the sandbox network's records, where a
//! duplicate or an early send would show:
//! - every send answered 202 is delivered exactly once, and no message is
//!   handed to the network twice except as a flagged redelivery;
//! - on each account, consecutive messages reach the network at least
//!   `min_delay` apart (across hand-offs between nodes too);
//! - the killed node's accounts are taken over within the lease TTL plus a
//!   renewal period, and finish on the others;
//! - the paused node sends nothing under the leases it lost: on each
//!   account the fence of successive hand-offs never goes down.
//!
//! PostgreSQL only: in the SQLite pass it says so and returns.

#[allow(dead_code)]
#[path = "support/database.rs"]
mod database;
#[allow(dead_code)]
#[path = "support/serve.rs"]
mod serve;
use serve::wait_for;

use std::collections::{BTreeMap, HashMap};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_whatan");
const ACCOUNTS: usize = 12;
const MIN_DELAY_MS: i64 = 100;
const LEASE_TTL_MS: i64 = 3_000;
const RENEWAL_MS: i64 = LEASE_TTL_MS / 3;

struct Node {
    id: String,
    child: Child,
    addr: String,
}

/// A node is stopped however the test ends (SIGCONT first, in case it is
/// the paused one).
impl Drop for Node {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        for sig in ["-CONT", "-TERM"] {
            let _ = Command::new("kill")
                .args([sig, &pid])
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.wait();
    }
}

fn pacing_env(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("WHATAN_DATABASE_URL", url.to_string()),
        ("WHATAN_PACING_MIN_DELAY", format!("{MIN_DELAY_MS}ms")),
        ("WHATAN_PACING_MAX_DELAY", "140ms".into()),
        ("WHATAN_PACING_DAILY_LIMIT", "100000".into()),
        ("WHATAN_SANDBOX_RECEIPT_DELAY", "1h".into()),
        ("WHATAN_SANDBOX_ACK_DELAY", "3ms".into()),
        ("WHATAN_CLUSTER_LEASE_TTL", format!("{LEASE_TTL_MS}ms")),
    ]
}

#[allow(clippy::zombie_processes)] // a Node is stopped when dropped
fn start_node(url: &str, id: &str, dir: &std::path::Path) -> (Node, Option<String>) {
    let mut cmd = Command::new(BIN);
    cmd.envs(pacing_env(url))
        .env("WHATAN_CLUSTER_NODE_ID", id)
        .args(["--json", "serve", "--listen", "127.0.0.1:0"])
        .current_dir(dir)
        .stderr(Stdio::null());
    let (child, addr, token) = serve::spawn(cmd);
    let node = Node {
        id: id.to_string(),
        child,
        addr,
    };
    (node, token)
}

fn cli(url: &str, args: &[&str]) -> Value {
    let out = Command::new(BIN)
        .env("WHATAN_DATABASE_URL", url)
        .arg("--json")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn signal(node: &Node, sig: &str) {
    let pid = node.child.id().to_string();
    assert!(Command::new("kill")
        .args([sig, &pid])
        .status()
        .unwrap()
        .success());
}

/// One send from client `client`'s account; `Some(id)` only for a 202.
fn send(addr: &str, token: &str, key: &str, client: usize, n: usize) -> Option<String> {
    let body = format!(r#"{{"to":"+91799{client:02}{n:05}","type":"text","text":"failover {n}"}}"#);
    serve::post_send(addr, token, key, &body)
}

/// The test's own connection to the database, on a thread of its own.
fn query<T: Send>(url: &str, f: impl FnOnce(&mut postgres::Client) -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut client = postgres::Client::connect(url, postgres::NoTls).unwrap();
            f(&mut client)
        })
        .join()
        .unwrap()
    })
}

/// `account -> (node, fence, expires_at, acquired_at)`, accounts only.
fn leases(url: &str) -> BTreeMap<String, (String, i64, i64, i64)> {
    query(url, |c| {
        c.query(
            "SELECT account_id, node_id, fence, expires_at, acquired_at FROM leases
             WHERE account_id <> '~webhooks'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3), r.get(4))))
        .collect()
    })
}

/// The node that sends the status webhooks now, if any.
fn webhooks_node(url: &str) -> Option<String> {
    query(url, |c| {
        c.query_opt(
            "SELECT node_id FROM leases WHERE account_id = '~webhooks' AND expires_at > $1",
            &[&whatan::clock::now_ms()],
        )
        .unwrap()
        .map(|r| r.get(0))
    })
}

#[test]
fn three_nodes_one_killed_one_paused_every_202_delivered_once_and_paced() {
    let Some(server) = database::postgres_only("the three-node failover test") else {
        return;
    };
    let url = database::fresh_postgres(&server);
    let dir = tempfile::tempdir().unwrap();

    // Node 1 bootstraps the database; the CLI adds eleven more accounts,
    // each with its own user and token.
    let (n1, first_token) = start_node(&url, "node-1", dir.path());
    let mut tokens = vec![first_token.expect("first run prints a token")];
    let ws = cli(&url, &["workspace", "list"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    for i in 1..ACCOUNTS {
        let user = cli(
            &url,
            &[
                "user",
                "add",
                "--workspace",
                &ws,
                "--name",
                &format!("u{i}"),
                "--role",
                "member",
            ],
        );
        let user = user["id"].as_str().unwrap();
        cli(
            &url,
            &[
                "account",
                "add",
                "--workspace",
                &ws,
                "--user",
                user,
                "--phone",
                &format!("+9170001{i:05}"),
            ],
        );
        let token = cli(&url, &["token", "create", "--user", user]);
        tokens.push(token["token"].as_str().unwrap().to_string());
    }
    let (n2, _) = start_node(&url, "node-2", dir.path());
    let (n3, _) = start_node(&url, "node-3", dir.path());
    let mut nodes = [n1, n2, n3];
    // Balanced: the fair share is 4 each.
    wait_for("12 leases spread 4/4/4", Duration::from_secs(30), || {
        let l = leases(&url);
        let per = |n: &str| l.values().filter(|(node, ..)| node == n).count();
        l.len() == ACCOUNTS && per("node-1") == 4 && per("node-2") == 4 && per("node-3") == 4
    });

    // Load: client threads, each on its own account, round-robin over the
    // nodes that are up.
    let up: Arc<Mutex<Vec<String>>> =
        Arc::new(Mutex::new(nodes.iter().map(|n| n.addr.clone()).collect()));
    let stop = Arc::new(AtomicBool::new(false));
    let accepted: Arc<Mutex<Vec<String>>> = Arc::default();
    let count = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = tokens
        .iter()
        .enumerate()
        .map(|(c, token)| {
            let (up, stop, accepted, count, token) = (
                up.clone(),
                stop.clone(),
                accepted.clone(),
                count.clone(),
                token.clone(),
            );
            std::thread::spawn(move || {
                let mut n = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let addr = {
                        let up = up.lock().unwrap();
                        up[n % up.len()].clone()
                    };
                    if let Some(id) = send(&addr, &token, &format!("fo-{c}-{n}"), c, n) {
                        accepted.lock().unwrap().push(id);
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                    // About 6 sends a second per account: a little more
                    // than pacing lets out, so queues stay non-empty.
                    std::thread::sleep(Duration::from_millis(150));
                }
            })
        })
        .collect();

    // Kill mid-run the node that sends the webhooks (so their take-over is
    // exercised too); later pause another one; the third survives both.
    wait_for("sends before the kill", Duration::from_secs(60), || {
        count.load(Ordering::SeqCst) >= 150
    });
    let victim_id = webhooks_node(&url).expect("a node sends the webhooks");
    let victim = nodes.iter().position(|n| n.id == victim_id).unwrap();
    let (paused, survivor) = ((victim + 1) % 3, (victim + 2) % 3);
    let (paused_id, survivor_id) = (nodes[paused].id.clone(), nodes[survivor].id.clone());
    let held_by_victim: Vec<String> = leases(&url)
        .into_iter()
        .filter(|(_, (node, ..))| *node == victim_id)
        .map(|(a, _)| a)
        .collect();
    let before_kill = leases(&url);
    up.lock().unwrap().retain(|a| *a != nodes[victim].addr);
    signal(&nodes[victim], "-KILL");
    let killed_at = whatan::clock::now_ms();
    let _ = nodes[victim].child.wait();
    wait_for(
        "the killed node's accounts taken over",
        Duration::from_secs(30),
        || {
            let l = leases(&url);
            held_by_victim.iter().all(|a| l[a].0 != victim_id)
        },
    );
    let after_kill = leases(&url);
    // Balanced over the two left: never above the fair share (6) plus one,
    // and at the fair share each once settled.
    let per_node = |l: &BTreeMap<String, (String, i64, i64, i64)>, node: &str| {
        l.values().filter(|(n, ..)| n == node).count()
    };
    let mut most = nodes
        .iter()
        .map(|n| per_node(&after_kill, &n.id))
        .max()
        .unwrap();
    wait_for(
        "6 leases each on the two nodes left",
        Duration::from_secs(30),
        || {
            let l = leases(&url);
            let (a, b) = (
                per_node(&l, &nodes[(victim + 1) % 3].id),
                per_node(&l, &nodes[(victim + 2) % 3].id),
            );
            most = most.max(a).max(b);
            a == 6 && b == 6
        },
    );
    assert!(
        most <= ACCOUNTS / 2 + 1,
        "a node held {most} of {ACCOUNTS} leases with two nodes up"
    );
    wait_for(
        "a live node sends the webhooks",
        Duration::from_secs(30),
        || webhooks_node(&url).is_some_and(|n| n != victim_id),
    );
    // Take-over, as the nodes' clocks recorded it: from the kill (and from
    // the expiry last read before it) to the moment another node took it.
    let kill_to_takeover_ms = held_by_victim
        .iter()
        .map(|a| after_kill[a].3 - killed_at)
        .max()
        .unwrap();
    let after_expiry_ms = held_by_victim
        .iter()
        .map(|a| after_kill[a].3 - before_kill[a].2)
        .max()
        .unwrap();
    eprintln!(
        "failover: {} accounts of the killed node taken over {kill_to_takeover_ms} ms after the kill, at most {after_expiry_ms} ms after the expiry last seen (TTL {LEASE_TTL_MS} ms, renewal every {RENEWAL_MS} ms)",
        held_by_victim.len()
    );
    assert!(
        kill_to_takeover_ms <= LEASE_TTL_MS + RENEWAL_MS,
        "a dead node's accounts were taken over {kill_to_takeover_ms} ms after the kill"
    );
    for a in &held_by_victim {
        assert!(
            after_kill[a].1 > before_kill[a].1,
            "a new holder has a larger fence"
        );
    }

    // Pause a node past its lease: the survivor takes everything over.
    wait_for("sends after the kill", Duration::from_secs(60), || {
        count.load(Ordering::SeqCst) >= 300
    });
    let fences_of_paused: HashMap<String, i64> = leases(&url)
        .into_iter()
        .filter(|(_, (node, ..))| *node == paused_id)
        .map(|(a, (_, fence, ..))| (a, fence))
        .collect();
    assert!(!fences_of_paused.is_empty());
    up.lock().unwrap().retain(|a| *a != nodes[paused].addr);
    signal(&nodes[paused], "-STOP");
    let paused_at = whatan::clock::now_ms();
    wait_for(
        "the paused node's accounts taken over",
        Duration::from_secs(30),
        || {
            let l = leases(&url);
            fences_of_paused.keys().all(|a| l[a].0 == survivor_id)
        },
    );
    // The paused node wakes once the survivor handed off under a new fence.
    wait_for(
        "a hand-off under a new fence",
        Duration::from_secs(30),
        || {
            query(&url, |c| {
                c.query(
                "SELECT account_id, fence FROM sandbox_handoffs WHERE node_id = $1 AND refused = 0",
                &[&survivor_id],
            )
            .unwrap()
            .iter()
            .any(|r| {
                let (account, fence): (String, i64) = (r.get(0), r.get(1));
                fences_of_paused.get(&account).is_some_and(|old| fence > *old)
            })
            })
        },
    );
    signal(&nodes[paused], "-CONT");
    let resumed_at = whatan::clock::now_ms();
    up.lock().unwrap().push(nodes[paused].addr.clone());
    wait_for("sends after the pause", Duration::from_secs(60), || {
        count.load(Ordering::SeqCst) >= 400
    });
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.join().unwrap();
    }
    let accepted = accepted.lock().unwrap().clone();
    wait_for(
        "every accepted send handed off",
        Duration::from_secs(120),
        || {
            query(&url, |c| {
                let n: i64 = c
                    .query_one(
                        "SELECT count(*) FROM send_attempts WHERE status IN ('queued', 'sending')",
                        &[],
                    )
                    .unwrap()
                    .get(0);
                n == 0
            })
        },
    );

    // Exactly once: every 202 is accepted and in the network's record once.
    let (statuses, delivered): (HashMap<String, String>, HashMap<String, i64>) = query(&url, |c| {
        let statuses = c
            .query("SELECT id, status FROM send_attempts", &[])
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let delivered = c
            .query(
                "SELECT s.id, count(o.message_id) FROM send_attempts s
                 LEFT JOIN sandbox_outbox o ON o.message_id = s.message_id GROUP BY s.id",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        (statuses, delivered)
    });
    for id in &accepted {
        assert_eq!(statuses[id], "accepted", "attempt {id}");
        assert_eq!(delivered[id], 1, "attempt {id} delivered once");
    }

    // The network's hand-off log: (account, message, redelivery, at, node,
    // fence), without the hand-offs it refused for their stale fence.
    type Handoff = (String, String, i64, i64, String, i64);
    let handoffs: Vec<Handoff> = query(&url, |c| {
        c.query(
            "SELECT account_id, message_id, redelivery, received_at, node_id, fence
             FROM sandbox_handoffs WHERE refused = 0 ORDER BY received_at, fence",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
        .collect()
    });
    let mut first_handoffs: HashMap<&str, usize> = HashMap::new();
    for h in &handoffs {
        if h.2 == 0 {
            *first_handoffs.entry(&h.1).or_default() += 1;
        }
    }
    assert!(
        first_handoffs.values().all(|n| *n <= 1),
        "a message was handed off twice without the redelivery flag"
    );
    let redeliveries = handoffs.iter().filter(|h| h.2 == 1).count();

    let mut per_account: BTreeMap<&str, Vec<&Handoff>> = BTreeMap::new();
    for h in &handoffs {
        per_account.entry(&h.0).or_default().push(h);
    }
    let mut min_gap = i64::MAX;
    for (account, list) in &per_account {
        // Pacing: the first hand-off of each message, in order.
        let mut seen = std::collections::HashSet::new();
        let firsts: Vec<i64> = list
            .iter()
            .filter(|h| seen.insert(h.1.as_str()))
            .map(|h| h.3)
            .collect();
        for pair in firsts.windows(2) {
            let gap = pair[1] - pair[0];
            min_gap = min_gap.min(gap);
            assert!(
                gap >= MIN_DELAY_MS,
                "account {account}: two messages {gap} ms apart (min_delay {MIN_DELAY_MS} ms)"
            );
        }
        // Fencing: a hand-off never comes under an older fence than one
        // before it.
        for pair in list.windows(2) {
            assert!(
                pair[1].5 >= pair[0].5,
                "account {account}: a hand-off under fence {} after one under {}",
                pair[1].5,
                pair[0].5
            );
        }
        // The paused node sent nothing under the leases it lost.
        if let Some(old) = fences_of_paused.get(*account) {
            for h in list.iter().filter(|h| h.3 >= paused_at && h.4 == paused_id) {
                assert!(
                    h.5 > *old,
                    "the paused node sent under its lost lease after resuming"
                );
            }
        }
    }
    // The killed node's accounts finished on the others.
    for a in &held_by_victim {
        let after: Vec<_> = per_account[a.as_str()]
            .iter()
            .filter(|h| h.3 > killed_at)
            .collect();
        assert!(!after.is_empty(), "account {a} sent nothing after the kill");
        assert!(after.iter().all(|h| h.4 != victim_id));
    }
    // What the network refused came only from the paused node, under fences
    // that had moved on (a hand-off it had begun before it froze).
    let refused: Vec<(String, String, i64)> = query(&url, |c| {
        c.query(
            "SELECT account_id, node_id, fence FROM sandbox_handoffs WHERE refused = 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
    });
    for (account, node, fence) in &refused {
        assert_eq!(
            *node, paused_id,
            "only a node that froze meets a moved fence"
        );
        assert_eq!(fences_of_paused.get(account), Some(fence));
    }
    eprintln!(
        "failover: {} sends answered 202, {} hand-offs ({redeliveries} flagged redeliveries, {} refused for a stale fence), {} accounts, smallest gap between two messages {min_gap} ms, a node paused {} ms",
        accepted.len(),
        handoffs.len(),
        refused.len(),
        per_account.len(),
        resumed_at - paused_at
    );
}
