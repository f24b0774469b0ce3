//! The routing engine task: neighbour liveness (hellos), link-state origination and
//! flooding, and recomputation of the routing table after every batch of changes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, info, warn};
use van_proto::wire;

use crate::config::Timers;
use crate::routing::{Lsdb, RoutingTable};
use crate::wire::Frame;

/// After this long without a recomputation, the next change is acted on at once.
const SPF_QUIET: Duration = Duration::from_secs(1);
/// Bounds of the hold time between recomputations during a burst of changes.
const SPF_HOLD_MIN: Duration = Duration::from_millis(5);
const SPF_HOLD_MAX: Duration = Duration::from_millis(400);

/// Frames for, or a request to close, one control connection.
#[derive(Debug)]
pub(crate) enum ControlOut {
    Frame(Frame),
    Close(String),
}

#[derive(Debug)]
pub(crate) enum ControlEvent {
    LinkUp {
        link_id: u64,
        peer: String,
        cost: u32,
        tx: mpsc::UnboundedSender<ControlOut>,
    },
    LinkDown {
        link_id: u64,
    },
    Hello {
        link_id: u64,
        hello: wire::Hello,
    },
    LinkState {
        link_id: u64,
        ls: wire::LinkState,
    },
    /// Routing keys of this router's connectors, with connector counts.
    LocalAddresses(BTreeMap<String, u32>),
    /// Topic values of this router and its attached edges.
    LocalValues(Vec<wire::TopicValue>),
}

struct Neighbour {
    peer: String,
    cost: u32,
    tx: mpsc::UnboundedSender<ControlOut>,
    last_hello: Instant,
    heard: bool,
    /// The peer's hello lists us: the link works both ways.
    two_way: bool,
}

/// Most neighbours or addresses one advertisement may list.
const MAX_LS_ENTRIES: usize = 100_000;

/// Rejects advertisements with names a router could not have been configured with.
pub(crate) fn check_ls(ls: &wire::LinkState) -> Result<(), String> {
    use crate::config::{valid_name, valid_routing_key};
    if !valid_name(&ls.origin) {
        return Err(format!(
            "invalid origin {:?}",
            ls.origin.chars().take(80).collect::<String>()
        ));
    }
    if ls.neighbors.len() > MAX_LS_ENTRIES || ls.addresses.len() > MAX_LS_ENTRIES {
        return Err(format!("too many entries from {}", ls.origin));
    }
    if let Some(n) = ls.neighbors.iter().find(|n| !valid_name(&n.router_id)) {
        return Err(format!(
            "{} lists an invalid neighbour {:?}",
            ls.origin, n.router_id
        ));
    }
    if let Some(a) = ls
        .addresses
        .iter()
        .find(|a| !valid_routing_key(&a.routing_key))
    {
        return Err(format!(
            "{} lists an invalid routing key {:?}",
            ls.origin, a.routing_key
        ));
    }
    check_values(&ls.values).map_err(|e| format!("{}: {e}", ls.origin))
}

/// Largest payload one router may publish on one topic.
pub(crate) const MAX_TOPIC_PAYLOAD: usize = 256 * 1024;
/// Most topic values one advertisement or address set may carry.
const MAX_VALUES: usize = 4096;

/// Rejects topic values with impossible names or sizes.
pub(crate) fn check_values(values: &[wire::TopicValue]) -> Result<(), String> {
    use crate::config::{valid_name, valid_routing_key};
    if values.len() > MAX_VALUES {
        return Err(format!(
            "{} topic values (at most {MAX_VALUES})",
            values.len()
        ));
    }
    for v in values {
        if !valid_routing_key(&v.topic) {
            return Err(format!("invalid topic {:?}", v.topic));
        }
        if !v.origin.is_empty() && !valid_name(&v.origin) {
            return Err(format!("invalid topic origin {:?}", v.origin));
        }
        if v.payload.len() > MAX_TOPIC_PAYLOAD {
            return Err(format!(
                "topic {} payload of {} bytes (at most {MAX_TOPIC_PAYLOAD})",
                v.topic,
                v.payload.len()
            ));
        }
    }
    Ok(())
}

pub(crate) struct Engine {
    self_id: String,
    site: String,
    instance: u64,
    timers: Timers,
    lsdb: Lsdb,
    neighbours: HashMap<u64, Neighbour>,
    seq: u64,
    addresses: BTreeMap<String, u32>,
    topics: Vec<String>,
    values: Vec<wire::TopicValue>,
    last_originate: Instant,
    table: watch::Sender<Arc<RoutingTable>>,
}

impl Engine {
    pub(crate) fn new(
        self_id: String,
        site: String,
        instance: u64,
        timers: Timers,
        table: watch::Sender<Arc<RoutingTable>>,
    ) -> Engine {
        let mut e = Engine {
            lsdb: Lsdb::new(self_id.clone()),
            self_id,
            site,
            instance,
            timers,
            neighbours: HashMap::new(),
            seq: 0,
            addresses: BTreeMap::new(),
            topics: Vec::new(),
            values: Vec::new(),
            last_originate: Instant::now(),
            table,
        };
        e.originate();
        e.recompute();
        e
    }

    pub(crate) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<ControlEvent>) {
        let mut tick = tokio::time::interval(self.timers.hello_interval());
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // Shortest paths are recomputed at once after a quiet period, then at most every
        // `hold`, which doubles while changes keep coming (SPF throttling): one change is
        // acted on immediately, and a flood of them (a large network starting) costs a
        // bounded number of recomputations.
        let mut pending = false;
        let mut hold = Duration::ZERO;
        let mut last = Instant::now()
            .checked_sub(SPF_QUIET)
            .unwrap_or_else(Instant::now);
        loop {
            let next = last + hold;
            tokio::select! {
                ev = rx.recv() => {
                    let Some(ev) = ev else { return };
                    pending |= self.handle(ev);
                    // Take everything already queued before deciding.
                    while let Ok(ev) = rx.try_recv() {
                        pending |= self.handle(ev);
                    }
                }
                _ = tick.tick() => pending |= self.on_tick(),
                _ = tokio::time::sleep_until(next), if pending => {}
            }
            let now = Instant::now();
            if pending && now >= last + hold {
                hold = if now.duration_since(last) < SPF_QUIET {
                    (hold * 2).clamp(SPF_HOLD_MIN, SPF_HOLD_MAX)
                } else {
                    Duration::ZERO
                };
                self.recompute();
                last = now;
                pending = false;
            }
        }
    }

    /// Returns whether the link-state database changed.
    fn handle(&mut self, ev: ControlEvent) -> bool {
        match ev {
            ControlEvent::LinkUp {
                link_id,
                peer,
                cost,
                tx,
            } => {
                info!(%peer, link_id, cost, "Neighbour link up");
                // Give the new neighbour our whole database so it converges in one exchange.
                for ls in self.lsdb.all() {
                    let _ = tx.send(ControlOut::Frame(Frame::LinkState(ls.clone())));
                }
                let _ = tx.send(ControlOut::Frame(Frame::Hello(self.hello())));
                self.neighbours.insert(
                    link_id,
                    Neighbour {
                        peer,
                        cost,
                        tx,
                        last_hello: Instant::now(),
                        heard: false,
                        two_way: false,
                    },
                );
                false
            }
            ControlEvent::LinkDown { link_id } => match self.neighbours.remove(&link_id) {
                Some(n) => {
                    info!(peer = %n.peer, link_id, "Neighbour link down");
                    if n.two_way {
                        self.originate();
                        true
                    } else {
                        false
                    }
                }
                None => false,
            },
            ControlEvent::Hello { link_id, hello } => {
                let me = self.self_id.clone();
                let Some(n) = self.neighbours.get_mut(&link_id) else {
                    return false;
                };
                n.last_hello = Instant::now();
                let first = !n.heard;
                n.heard = true;
                let two_way = hello.seen.contains(&me);
                let changed = two_way != n.two_way;
                n.two_way = two_way;
                if first {
                    // Answer at once so the peer sees two-way without waiting a tick.
                    let h = self.hello();
                    if let Some(n) = self.neighbours.get(&link_id) {
                        let _ = n.tx.send(ControlOut::Frame(Frame::Hello(h)));
                    }
                }
                if changed {
                    self.originate();
                }
                changed
            }
            ControlEvent::LinkState { link_id, ls } => {
                if let Err(why) = check_ls(&ls) {
                    // Dropped, not flooded: one bad advertisement must not spread.
                    warn!(link_id, %why, "Ignoring an invalid link-state advertisement");
                    return false;
                }
                if ls.origin == self.self_id {
                    if ls.instance == self.instance && ls.seq > self.seq {
                        // Someone holds a newer copy of our own state: jump past it.
                        self.seq = ls.seq;
                        self.originate();
                        return true;
                    }
                    return false;
                }
                if self.lsdb.accept(ls.clone(), Instant::now()) {
                    debug!(origin = %ls.origin, seq = ls.seq, "Link state accepted");
                    self.flood(&ls, Some(link_id));
                    true
                } else {
                    false
                }
            }
            ControlEvent::LocalAddresses(a) => {
                if a == self.addresses {
                    return false;
                }
                self.addresses = a;
                self.originate();
                true
            }
            ControlEvent::LocalValues(v) => {
                if v == self.values {
                    return false;
                }
                self.values = v;
                self.originate();
                true
            }
        }
    }

    fn hello(&self) -> wire::Hello {
        let mut seen: Vec<String> = self
            .neighbours
            .values()
            .filter(|n| n.heard)
            .map(|n| n.peer.clone())
            .collect();
        seen.sort();
        seen.dedup();
        wire::Hello {
            router_id: self.self_id.clone(),
            instance: self.instance,
            seen,
        }
    }

    fn on_tick(&mut self) -> bool {
        let now = Instant::now();
        let hello = self.hello();
        let max_age = self.timers.hello_max_age();
        let mut lost = Vec::new();
        for (id, n) in &self.neighbours {
            if now.duration_since(n.last_hello) > max_age {
                lost.push(*id);
            } else {
                let _ = n.tx.send(ControlOut::Frame(Frame::Hello(hello.clone())));
            }
        }
        let mut dirty = false;
        for id in lost {
            if let Some(n) = self.neighbours.remove(&id) {
                info!(peer = %n.peer, link_id = id, "Neighbour silent too long; dropping link");
                let _ =
                    n.tx.send(ControlOut::Close("no hello within the max age".into()));
                dirty |= n.two_way;
            }
        }
        if dirty || now.duration_since(self.last_originate) >= self.timers.ls_refresh() {
            self.originate();
            dirty = true;
        }
        if let Some(before) = now.checked_sub(self.timers.ls_max_age()) {
            dirty |= self.lsdb.expire(before);
        }
        dirty
    }

    /// Issues a new advertisement of our own links and addresses and floods it.
    fn originate(&mut self) {
        self.seq += 1;
        let mut best: BTreeMap<&str, u32> = BTreeMap::new();
        for n in self.neighbours.values().filter(|n| n.two_way) {
            let c = best.entry(&n.peer).or_insert(n.cost);
            *c = (*c).min(n.cost);
        }
        let ls = wire::LinkState {
            origin: self.self_id.clone(),
            site: self.site.clone(),
            instance: self.instance,
            seq: self.seq,
            neighbors: best
                .into_iter()
                .map(|(id, cost)| wire::Neighbor {
                    router_id: id.to_string(),
                    cost,
                })
                .collect(),
            addresses: self
                .addresses
                .iter()
                .map(|(k, n)| wire::AddressEntry {
                    routing_key: k.clone(),
                    connectors: *n,
                })
                .collect(),
            topics: self.topics.clone(),
            values: self.values.clone(),
        };
        self.last_originate = Instant::now();
        self.lsdb.accept(ls.clone(), Instant::now());
        self.flood(&ls, None);
    }

    fn flood(&self, ls: &wire::LinkState, except: Option<u64>) {
        for (id, n) in &self.neighbours {
            if Some(*id) != except {
                let _ = n.tx.send(ControlOut::Frame(Frame::LinkState(ls.clone())));
            }
        }
    }

    fn recompute(&mut self) {
        let t = self.lsdb.compute();
        self.table.send_if_modified(|cur| {
            if **cur == t {
                false
            } else {
                *cur = Arc::new(t);
                true
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ls(origin: &str, neighbour: &str, key: &str) -> wire::LinkState {
        wire::LinkState {
            origin: origin.into(),
            site: format!("{origin}-site"),
            instance: 1,
            seq: 1,
            neighbors: vec![wire::Neighbor {
                router_id: neighbour.into(),
                cost: 1,
            }],
            addresses: vec![wire::AddressEntry {
                routing_key: key.into(),
                connectors: 1,
            }],
            topics: Vec::new(),
            values: Vec::new(),
        }
    }

    #[test]
    fn advertisements_with_impossible_names_are_rejected() {
        assert!(check_ls(&ls("a", "b", "svc")).is_ok());
        assert!(check_ls(&ls("", "b", "svc")).is_err());
        assert!(check_ls(&ls("a b", "b", "svc")).is_err());
        assert!(check_ls(&ls(&"x".repeat(64), "b", "svc")).is_err());
        assert!(check_ls(&ls("a", "", "svc")).is_err());
        assert!(check_ls(&ls("a", "b", "")).is_err());
        assert!(check_ls(&ls("a", "b", "with space")).is_err());
        assert!(check_ls(&ls("a", "b", &"k".repeat(256))).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_change_is_acted_on_at_once_and_a_silent_neighbour_is_dropped() {
        let timers = Timers::default();
        // b's hello lists us: the link is two-way; b's advertisement lists us back.
        let (tx, mut table, mut ctl_rx) = engine_with_neighbour(&timers).await;
        tx.send(ControlEvent::LinkState {
            link_id: 7,
            ls: ls("b", "a", "svc"),
        })
        .unwrap();
        table.wait_for(|t| t.reachable("svc")).await.unwrap();
        assert_eq!(table.borrow().next_hop("b"), Some("b"));
        // We told b our state, and said hello.
        let mut got_hello = false;
        while let Ok(out) = ctl_rx.try_recv() {
            got_hello |= matches!(out, ControlOut::Frame(Frame::Hello(_)));
        }
        assert!(got_hello);
        // b goes silent: after the max age the link is closed and b's key withdrawn.
        let before = Instant::now();
        table.wait_for(|t| !t.reachable("svc")).await.unwrap();
        let silent = before.elapsed();
        assert!(silent >= timers.hello_max_age(), "{silent:?}");
        assert!(
            silent <= timers.hello_max_age() + 2 * timers.hello_interval(),
            "{silent:?}"
        );
        let closed = std::iter::from_fn(|| ctl_rx.try_recv().ok())
            .any(|o| matches!(o, ControlOut::Close(_)));
        assert!(closed, "the silent link is closed");
    }

    fn ls_seq(origin: &str, seq: u64, neighbours: &[&str], key: &str) -> wire::LinkState {
        let mut l = ls(origin, neighbours[0], key);
        l.seq = seq;
        l.neighbors = neighbours
            .iter()
            .map(|n| wire::Neighbor {
                router_id: n.to_string(),
                cost: 1,
            })
            .collect();
        l
    }

    /// An engine `a` with one two-way neighbour `b` on link 7; returns the event sender, the
    /// table and b's control queue.
    async fn engine_with_neighbour(
        timers: &Timers,
    ) -> (
        mpsc::UnboundedSender<ControlEvent>,
        watch::Receiver<Arc<RoutingTable>>,
        mpsc::UnboundedReceiver<ControlOut>,
    ) {
        let (table_tx, table) = watch::channel(Arc::new(RoutingTable::default()));
        let engine = Engine::new("a".into(), "site-a".into(), 1, timers.clone(), table_tx);
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(engine.run(rx));
        let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
        tx.send(ControlEvent::LinkUp {
            link_id: 7,
            peer: "b".into(),
            cost: 1,
            tx: ctl_tx,
        })
        .unwrap();
        tx.send(hello_from_b()).unwrap();
        (tx, table, ctl_rx)
    }

    fn hello_from_b() -> ControlEvent {
        ControlEvent::Hello {
            link_id: 7,
            hello: wire::Hello {
                router_id: "b".into(),
                instance: 1,
                seen: vec!["a".into()],
            },
        }
    }

    #[tokio::test(start_paused = true)]
    async fn hellos_go_out_every_interval_and_a_neighbour_that_answers_is_kept() {
        let timers = Timers::default();
        let (tx, mut table, mut ctl) = engine_with_neighbour(&timers).await;
        tx.send(ControlEvent::LinkState {
            link_id: 7,
            ls: ls("b", "a", "svc"),
        })
        .unwrap();
        table.wait_for(|t| t.reachable("svc")).await.unwrap();
        while ctl.try_recv().is_ok() {}
        // Ten max ages of b answering every interval: the link stays, hellos keep coming.
        let rounds = 10 * timers.hello_max_age_ms / timers.hello_interval_ms;
        let mut hellos = 0;
        for _ in 0..rounds {
            tokio::time::sleep(timers.hello_interval()).await;
            tx.send(hello_from_b()).unwrap();
            while let Ok(out) = ctl.try_recv() {
                match out {
                    ControlOut::Frame(Frame::Hello(h)) => {
                        assert_eq!(h.seen, ["b"], "a says it hears b");
                        hellos += 1;
                    }
                    ControlOut::Close(why) => panic!("a live neighbour was dropped: {why}"),
                    ControlOut::Frame(_) => {}
                }
            }
        }
        assert!(table.borrow().reachable("svc"));
        // One hello per interval, give or take the first and last tick.
        assert!(
            hellos + 1 >= rounds && hellos <= rounds + 1,
            "{hellos} in {rounds} intervals"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn own_state_is_refreshed_and_a_state_nobody_refreshes_expires() {
        let timers = Timers::default();
        let (tx, mut table, mut ctl) = engine_with_neighbour(&timers).await;
        // b next to a and c; c advertises svc-c once and is never heard of again.
        tx.send(ControlEvent::LinkState {
            link_id: 7,
            ls: ls_seq("b", 1, &["a", "c"], "svc-b"),
        })
        .unwrap();
        tx.send(ControlEvent::LinkState {
            link_id: 7,
            ls: ls_seq("c", 1, &["b"], "svc-c"),
        })
        .unwrap();
        table
            .wait_for(|t| t.reachable("svc-b") && t.reachable("svc-c"))
            .await
            .unwrap();
        // What a sent when the link came up is not a refresh.
        while ctl.try_recv().is_ok() {}
        let started = Instant::now();
        let mut own_seqs = Vec::new();
        let mut b_seq = 1;
        // b stays alive and refreshes its own state; c's ages out.
        let gone = loop {
            tokio::time::sleep(timers.hello_interval()).await;
            tx.send(hello_from_b()).unwrap();
            if started.elapsed().as_millis() as u64 / timers.ls_refresh_ms >= b_seq {
                b_seq += 1;
                tx.send(ControlEvent::LinkState {
                    link_id: 7,
                    ls: ls_seq("b", b_seq, &["a", "c"], "svc-b"),
                })
                .unwrap();
            }
            while let Ok(out) = ctl.try_recv() {
                if let ControlOut::Frame(Frame::LinkState(l)) = out
                    && l.origin == "a"
                {
                    own_seqs.push((started.elapsed(), l.seq));
                }
            }
            if !table.borrow().reachable("svc-c") {
                break started.elapsed();
            }
            assert!(
                started.elapsed() < 2 * timers.ls_max_age(),
                "c never expired"
            );
        };
        assert!(gone >= timers.ls_max_age(), "expired after {gone:?}");
        assert!(
            gone <= timers.ls_max_age() + 2 * timers.hello_interval(),
            "expired after {gone:?}"
        );
        assert!(
            table.borrow().reachable("svc-b"),
            "b's refreshed state stays"
        );
        // a re-advertised itself about every ls_refresh, with a rising sequence number.
        let refreshes = own_seqs.len() as u64;
        let expected = gone.as_millis() as u64 / timers.ls_refresh_ms;
        assert!(
            refreshes >= expected && refreshes <= expected + 1,
            "{own_seqs:?}"
        );
        assert!(own_seqs.windows(2).all(|w| w[0].1 < w[1].1), "{own_seqs:?}");
    }
}
