//! Leases on the engine's side: which accounts this node may drive.
//!
//! On the SQLite file one node serves and drives every account
//! ([`Leases::Solo`], no fence). On PostgreSQL several nodes share the
//! accounts ([`Leases::Cluster`]): a loop renews this node's leases every
//! third of `cluster.lease_ttl`, takes free or expired ones up to the fair
//! share, and gives up what is above it (see `store::leases`). A pacer
//! runs only for a held lease; a hand-off holds its lease ([`Hold`]) so it
//! is not given up mid-way, checks before the driver call that the lease is
//! still valid here, and every write of it carries the fence, which the
//! database checks.
//!
//! Locally a lease counts as valid until a sixth of a TTL before the expiry
//! the database holds: a node stops driving before another may take over,
//! whatever the clocks' skew up to that much.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::driver::LeaseRef;
use crate::store::leases::{Held, Tick};

/// What this node may drive.
pub enum Leases {
    /// The only node (the SQLite file): every account, no fence.
    Solo,
    Cluster(Box<Cluster>),
}

pub struct Cluster {
    pub node_id: Arc<str>,
    pub ttl: Duration,
    held: Mutex<HashMap<String, Lease>>,
    /// The webhooks lease (`store::leases::WEBHOOKS`): fence, valid until.
    webhooks: Mutex<Option<(i64, Instant)>>,
    /// Held by a tick from its write to its last change here, and by the
    /// node's goodbye, which sets it: no tick takes leases after it.
    pub ticking: tokio::sync::Mutex<bool>,
    pub stats: LeaseStats,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct LeaseStats {
    pub live_nodes: AtomicU64,
    pub fair_share: AtomicU64,
    pub acquired: AtomicU64,
    pub lost: AtomicU64,
    pub released: AtomicU64,
    pub tick_failures: AtomicU64,
}

struct Lease {
    fence: i64,
    valid_until: Instant,
    /// A hand-off runs under it: not given up until it ends.
    busy: bool,
}

/// A hand-off's hold on its account's lease; the fence its writes carry.
pub struct Hold<'a> {
    leases: &'a Leases,
    account_id: String,
    pub lease: Option<LeaseRef>,
}

impl Drop for Hold<'_> {
    fn drop(&mut self) {
        if let Leases::Cluster(c) = self.leases {
            if let Some(l) = c.lock().get_mut(&self.account_id) {
                l.busy = false;
            }
        }
    }
}

impl Hold<'_> {
    pub fn fence(&self) -> Option<i64> {
        self.lease.as_ref().map(|l| l.fence)
    }

    /// Whether the lease this hand-off holds (the same fence) is still
    /// valid here: checked before the claim and just before the driver
    /// call, the point of no return.
    pub fn still_valid(&self) -> bool {
        match self.leases {
            Leases::Solo => true,
            Leases::Cluster(c) => c.valid(&self.account_id) == self.fence(),
        }
    }
}

/// What applying a tick changed.
#[derive(Debug, Default)]
pub struct Changes {
    /// Leases held now that were not valid here before: start their pacers.
    pub gained: Vec<String>,
    /// Leases held here before (valid or lapsed) that are not held now,
    /// or only under another fence: stop their pacers.
    pub lost: Vec<String>,
}

impl Leases {
    /// Solo on the SQLite file; on PostgreSQL, this node's share of the
    /// cluster.
    pub fn of(config: &crate::config::Config) -> Leases {
        match config.database.url {
            Some(_) => Leases::cluster(config.cluster.node_id(), config.cluster.lease_ttl),
            None => Leases::Solo,
        }
    }

    pub fn cluster(node_id: String, ttl: Duration) -> Leases {
        Leases::Cluster(Box::new(Cluster {
            node_id: node_id.into(),
            ttl,
            held: Mutex::new(HashMap::new()),
            webhooks: Mutex::new(None),
            ticking: tokio::sync::Mutex::new(false),
            stats: LeaseStats::default(),
        }))
    }

    /// Whether this node may drive the account now.
    pub fn holds(&self, account_id: &str) -> bool {
        match self {
            Leases::Solo => true,
            Leases::Cluster(c) => c.valid(account_id).is_some(),
        }
    }

    /// Whether this node sends the status webhooks: the only node on the
    /// file; on PostgreSQL, the holder of the webhooks lease.
    pub fn sends_webhooks(&self) -> bool {
        match self {
            Leases::Solo => true,
            Leases::Cluster(c) => c
                .webhooks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some_and(|(_, until)| until > Instant::now()),
        }
    }

    /// Hold the account's lease for one hand-off, if it is valid here and
    /// no other hand-off holds it.
    pub fn begin(&self, account_id: &str) -> Option<Hold<'_>> {
        let lease = match self {
            Leases::Solo => None,
            Leases::Cluster(c) => {
                let mut held = c.lock();
                let l = held.get_mut(account_id)?;
                if l.busy || l.valid_until <= Instant::now() {
                    return None;
                }
                l.busy = true;
                Some(LeaseRef {
                    node_id: c.node_id.clone(),
                    fence: l.fence,
                })
            }
        };
        Some(Hold {
            leases: self,
            account_id: account_id.to_string(),
            lease,
        })
    }
}

impl Cluster {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Lease>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn valid(&self, account_id: &str) -> Option<i64> {
        self.lock()
            .get(account_id)
            .filter(|l| l.valid_until > Instant::now())
            .map(|l| l.fence)
    }

    /// The fences under which `account_ids` are held here (those held).
    pub fn fences_of(&self, account_ids: &[String]) -> Vec<(String, i64)> {
        let held = self.lock();
        account_ids
            .iter()
            .filter_map(|id| held.get(id).map(|l| (id.clone(), l.fence)))
            .collect()
    }

    /// How many account leases this node holds now.
    pub fn held_count(&self) -> usize {
        self.lock().len()
    }

    /// How often the loop ticks: a third of the TTL.
    pub fn period(&self) -> Duration {
        self.ttl / 3
    }

    /// Take in what a tick that started at `started` found: the held set is
    /// exactly `tick.held`, each valid until a sixth of a TTL before its
    /// expiry in the database.
    pub fn apply(&self, tick: &Tick, started: Instant) -> Changes {
        let valid_until = started + self.ttl - self.ttl / 6;
        let now = Instant::now();
        *self.webhooks.lock().unwrap_or_else(|e| e.into_inner()) =
            tick.webhooks.map(|fence| (fence, valid_until));
        let mut held = self.lock();
        let mut changes = Changes::default();
        let mut next = HashMap::with_capacity(tick.held.len());
        for Held { account_id, fence } in &tick.held {
            let before = held.remove(account_id);
            if before.as_ref().is_some_and(|l| l.fence != *fence) {
                // It moved away and came back: the old hand-offs are over.
                changes.lost.push(account_id.clone());
            }
            let was_valid = before
                .as_ref()
                .is_some_and(|l| l.fence == *fence && l.valid_until > now);
            if !was_valid {
                changes.gained.push(account_id.clone());
            }
            let busy = before.is_some_and(|l| l.busy && l.fence == *fence);
            next.insert(
                account_id.clone(),
                Lease {
                    fence: *fence,
                    valid_until,
                    busy,
                },
            );
        }
        // What is left was not renewed, lapsed here or not: it moved on.
        changes.lost.extend(held.drain().map(|(id, _)| id));
        *held = next;
        let s = &self.stats;
        s.live_nodes
            .store(tick.live_nodes as u64, Ordering::Relaxed);
        s.fair_share
            .store(tick.fair_share as u64, Ordering::Relaxed);
        s.acquired
            .fetch_add(tick.taken.len() as u64, Ordering::Relaxed);
        s.lost
            .fetch_add(changes.lost.len() as u64, Ordering::Relaxed);
        changes
    }

    /// Leases to give up so that at most `keep` stay: ones no hand-off
    /// holds, dropped here at once (their pacers stop) before the caller
    /// expires them in the database.
    pub fn shed(&self, keep: usize) -> Vec<Held> {
        let mut held = self.lock();
        let excess = held.len().saturating_sub(keep);
        let mut idle: Vec<String> = held
            .iter()
            .filter(|(_, l)| !l.busy)
            .map(|(id, _)| id.clone())
            .collect();
        idle.sort();
        let shed: Vec<Held> = idle
            .into_iter()
            .rev()
            .take(excess)
            .filter_map(|id| {
                held.remove(&id).map(|l| Held {
                    account_id: id,
                    fence: l.fence,
                })
            })
            .collect();
        self.stats
            .released
            .fetch_add(shed.len() as u64, Ordering::Relaxed);
        shed
    }

    /// Everything held, the webhooks lease included, dropped here
    /// (stopping): the caller expires them.
    pub fn release_all(&self) -> Vec<Held> {
        let mut held = self.lock();
        let mut all: Vec<Held> = held
            .drain()
            .map(|(account_id, l)| Held {
                account_id,
                fence: l.fence,
            })
            .collect();
        if let Some((fence, _)) = self
            .webhooks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            all.push(Held {
                account_id: crate::store::leases::WEBHOOKS.into(),
                fence,
            });
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tick(held: &[(&str, i64)]) -> Tick {
        Tick {
            held: held
                .iter()
                .map(|(a, f)| Held {
                    account_id: a.to_string(),
                    fence: *f,
                })
                .collect(),
            webhooks: None,
            taken: Vec::new(),
            live_nodes: 2,
            fair_share: 2,
        }
    }

    #[test]
    fn a_tick_reports_what_was_gained_and_lost_and_sheds_only_idle_leases() {
        let leases = Leases::cluster("n1".into(), Duration::from_secs(15));
        let Leases::Cluster(c) = &leases else {
            unreachable!()
        };
        assert!(!leases.holds("a"));
        let changes = c.apply(&tick(&[("a", 1), ("b", 1), ("c", 4)]), Instant::now());
        assert_eq!(changes.gained, ["a", "b", "c"]);
        assert!(leases.holds("a") && leases.holds("c"));
        // A hand-off holds "c": shedding to one lease gives up "b" and "a".
        let hold = leases.begin("c").unwrap();
        assert_eq!(hold.fence(), Some(4));
        assert!(leases.begin("c").is_none(), "one hand-off at a time");
        let shed: Vec<_> = c.shed(1).into_iter().map(|h| h.account_id).collect();
        assert_eq!(shed, ["b", "a"]);
        assert!(!leases.holds("a") && leases.holds("c"));
        drop(hold);
        // The next tick no longer has "c" (it moved on): lost, and a hold
        // taken before reports it invalid.
        let hold = leases.begin("c").unwrap();
        let changes = c.apply(&tick(&[("d", 2)]), Instant::now());
        assert_eq!(
            (changes.gained, changes.lost),
            (vec!["d".to_string()], vec!["c".to_string()])
        );
        assert!(!hold.still_valid());
        drop(hold);
        // "d" moves away and comes back under a new fence between two
        // ticks: a hold taken under the old fence is no longer valid.
        let old = leases.begin("d").unwrap();
        let changes = c.apply(&tick(&[("d", 5)]), Instant::now());
        assert_eq!(changes.lost, ["d"]);
        assert!(leases.holds("d") && !old.still_valid());
    }

    #[test]
    fn a_lease_not_renewed_in_time_stops_counting_before_its_expiry() {
        let leases = Leases::cluster("n1".into(), Duration::from_millis(1200));
        let Leases::Cluster(c) = &leases else {
            unreachable!()
        };
        // Renewed by a tick that started a whole TTL ago: already invalid
        // here, though the database would call it expired only now.
        c.apply(
            &tick(&[("a", 1)]),
            Instant::now() - Duration::from_millis(1100),
        );
        assert!(!leases.holds("a"));
        assert!(leases.begin("a").is_none());
        assert!(matches!(Leases::Solo.begin("a"), Some(h) if h.fence().is_none()));
        // The next tick finds it gone (another node took it while this one
        // was frozen): lost, though it had lapsed here already.
        let changes = c.apply(&tick(&[]), Instant::now());
        assert_eq!(changes.lost, ["a"]);
    }
}
