//! Which server of a shard a checkout tries, in which order: the load
//! balancer's pure selection and ban logic.
//!
//! Owns `Target` (what the balancer knows about one server), `Bans` (who is
//! out of rotation until when, and the failsafe that never empties a shard)
//! and `Balancer` (per-core strategy state: PRNG, round-robin counter, smooth
//! weighted round-robin weights). It must not do I/O, read clocks or spawn:
//! time comes in as `Instant`, randomness from a seed, connection counts from
//! the caller. Health checks, replica-lag probes and failover elect and ban;
//! this file only applies their verdicts.
//!
//! Rules, from PgDog (docs.pgdog.dev/features/load-balancer and
//! /healthchecks; pgdog/src/backend/pool/lb): writes go to the primary;
//! reads spread over the servers `read_write_split` allows, in
//! `load_balancing_strategy` order; a failed checkout moves to the next
//! candidate; bans expire after `ban_timeout`, and `ban_timeout = 0` disables
//! them. Where PgDog's docs and code differ, the choice is written at the rule.

use std::time::{Duration, Instant};

use crate::config::{LoadBalancingStrategy, ReadWriteSplit, Role};

/// A server's position in its shard's target list (`targets[id.0]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetId(pub u16);

impl TargetId {
    fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// The role a server plays now (configured, or elected by failover).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TargetRole {
    Primary,
    Replica,
}

impl From<Role> for TargetRole {
    /// `auto` servers count as replicas until failover elects one, as PgDog
    /// starts them (pgdog/src/backend/pool/lb `LoadBalancer::new`).
    fn from(role: Role) -> TargetRole {
        match role {
            Role::Primary => TargetRole::Primary,
            Role::Replica | Role::Auto => TargetRole::Replica,
        }
    }
}

/// What the balancer needs to know about one server of a shard. Its ban
/// state lives in `Bans`, keyed by `id`, so one ban list can be shared by
/// every login of the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    pub id: TargetId,
    pub role: TargetRole,
    /// `[[databases]] lb_weight` (used by `weighted_round_robin` only).
    pub weight: u8,
    /// Server connections of this target checked out on this core now.
    pub active: usize,
}

/// What a checkout wants to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intent {
    /// Goes to the primary only. Under `prefer_primary` the router sends
    /// plain reads here too; only reads a hint sent to replicas are `Read`.
    Write,
    Read,
    /// A `READ ONLY` transaction: a replica whenever one is in rotation,
    /// whatever `read_write_split` does with plain reads (the seed's promise);
    /// the primary only as the fallback.
    ReadOnlyTransaction,
}

/// Why a server left rotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BanReason {
    HealthCheckFailed,
    ConnectFailed,
    CheckoutTimeout,
    ReplicaLag,
}

/// One server out of rotation until `until`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ban {
    pub until: Instant,
    pub reason: BanReason,
}

/// What `Bans::ban` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BanOutcome {
    /// Out of rotation until `ban.until` (a repeat ban restarts the clock).
    Banned,
    /// `ban_timeout` is zero: bans are disabled, as in PgDog.
    Disabled,
    /// It was the shard's last server in rotation: not banned, and every
    /// other ban of the shard was lifted (the failsafe).
    LiftedAll,
    /// No such target in this ban list.
    UnknownTarget,
}

/// Bans of one shard's servers.
///
/// Failsafe (PgDog: "if all replicas fail health checks, bans from all
/// databases are removed"): a ban that would leave no server of the shard in
/// rotation is refused and lifts every other ban. sleddog counts the whole
/// shard, primary included, rather than replicas alone, because under every
/// `read_write_split` PgDog's code lets the primary take reads once no
/// replica is in rotation: with a primary up, banning the last replica keeps
/// reads flowing (to the primary) instead of returning a dead replica to
/// rotation. In a shard without a primary (replica-only, or `auto` before an
/// election) the rule is exactly "every replica banned → all bans lift".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bans {
    bans: Vec<Option<Ban>>,
}

impl Bans {
    /// A ban list for a shard of `targets` servers, none banned.
    pub fn new(targets: usize) -> Bans {
        Bans {
            bans: vec![None; targets],
        }
    }

    /// Takes `target` out of rotation for `ban_timeout` from `now`, subject
    /// to the failsafe (see the type).
    pub fn ban(
        &mut self,
        target: TargetId,
        now: Instant,
        ban_timeout: Duration,
        reason: BanReason,
    ) -> BanOutcome {
        if target.index() >= self.bans.len() {
            return BanOutcome::UnknownTarget;
        }
        if ban_timeout.is_zero() {
            return BanOutcome::Disabled;
        }
        if !self.others_in_rotation(target, now) {
            self.lift_all();
            return BanOutcome::LiftedAll;
        }
        // An `Instant` that would overflow means "longer than this process lives".
        let until = now.checked_add(ban_timeout).unwrap_or(now + YEAR);
        self.bans[target.index()] = Some(Ban { until, reason });
        BanOutcome::Banned
    }

    /// True when a server of the shard besides `target` is in rotation.
    pub fn others_in_rotation(&self, target: TargetId, now: Instant) -> bool {
        (0..self.bans.len())
            .filter(|&index| index != target.index())
            .any(|index| !self.banned_at(index, now))
    }

    /// Returns `target` to rotation now.
    pub fn unban(&mut self, target: TargetId) {
        if let Some(slot) = self.bans.get_mut(target.index()) {
            *slot = None;
        }
    }

    /// Returns every server to rotation.
    pub fn lift_all(&mut self) {
        self.bans.iter_mut().for_each(|slot| *slot = None);
    }

    /// True while `target`'s ban has not expired at `now`.
    pub fn is_banned(&self, target: TargetId, now: Instant) -> bool {
        self.banned_at(target.index(), now)
    }

    /// The ban in force on `target` at `now`, if any.
    pub fn ban_of(&self, target: TargetId, now: Instant) -> Option<Ban> {
        self.bans
            .get(target.index())
            .copied()
            .flatten()
            .filter(|ban| ban.until > now)
    }

    /// Forgets bans that expired by `now`; returns the servers that came back.
    pub fn expire(&mut self, now: Instant) -> Vec<TargetId> {
        let mut back = Vec::new();
        for (index, slot) in self.bans.iter_mut().enumerate() {
            if slot.is_some_and(|ban| ban.until <= now) {
                *slot = None;
                back.push(TargetId(u16::try_from(index).unwrap_or(u16::MAX)));
            }
        }
        back
    }

    fn banned_at(&self, index: usize, now: Instant) -> bool {
        matches!(self.bans.get(index), Some(Some(ban)) if ban.until > now)
    }
}

/// Does `split` balance reads over the primary too (else it is the fallback)?
fn primary_balanced(split: ReadWriteSplit, targets: &[Target], bans: &Bans, now: Instant) -> bool {
    let mut replicas = targets.iter().filter(|t| t.role == TargetRole::Replica);
    let replica_up = replicas.clone().any(|t| !bans.is_banned(t.id, now));
    match split {
        ReadWriteSplit::IncludePrimary => true,
        ReadWriteSplit::IncludePrimaryIfReplicaBanned => {
            !replica_up || replicas.any(|t| bans.is_banned(t.id, now))
        }
        ReadWriteSplit::ExcludePrimary | ReadWriteSplit::PreferPrimary => !replica_up,
    }
}

/// Cap for a ban whose end does not fit in an `Instant`.
const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

/// Per-core balancing state for one shard of one cluster: plain owned data
/// (thread-per-core), so round robin is per core, as the issue allows.
#[derive(Clone, Debug)]
pub struct Balancer {
    strategy: LoadBalancingStrategy,
    split: ReadWriteSplit,
    rng: XorShift,
    /// Round-robin position; also breaks ties among equally busy servers.
    next: usize,
    /// Smooth weighted round-robin running weights, by `TargetId`.
    current_weights: Vec<i64>,
    /// Reused output and working set, so a checkout does not allocate once
    /// they have grown to the shard's size.
    order: Vec<TargetId>,
    set: Vec<Target>,
}

impl Balancer {
    /// `seed` drives `random`; take it from `os_seed()` outside tests.
    pub fn new(strategy: LoadBalancingStrategy, split: ReadWriteSplit, seed: u64) -> Balancer {
        Balancer {
            strategy,
            split,
            rng: XorShift::new(seed),
            next: 0,
            current_weights: Vec::new(),
            order: Vec::new(),
            set: Vec::new(),
        }
    }

    /// The servers to try for `intent`, best first: a checkout that fails on
    /// one moves to the next. Banned servers are left out.
    ///
    /// Writes: the primary, banned or not (there is nowhere else to write);
    /// empty when the shard has no primary (none elected yet).
    ///
    /// Reads: the servers the split admits, in strategy order, then, when
    /// the split held the primary back, the primary last — the fallback
    /// PgDog's rule picks once the replicas before it have failed (and so
    /// been banned). Which servers the split admits to the balanced set:
    /// - `include_primary`: replicas and the primary;
    /// - `include_primary_if_replica_banned`: replicas, and the primary when
    ///   any replica is banned or the shard has no replica (PgDog's code and
    ///   general.md say "one or more"; its newest doc comment says "all");
    /// - `exclude_primary`, `prefer_primary`: replicas, and the primary when
    ///   no replica is in rotation (PgDog: "we read from the primary if we
    ///   have no replicas").
    ///
    /// If every admitted server is banned (possible only when `bans` was
    /// built for a different list), bans are ignored for this pick.
    pub fn candidates(
        &mut self,
        intent: Intent,
        targets: &[Target],
        bans: &Bans,
        now: Instant,
    ) -> &[TargetId] {
        self.order.clear();
        let primary = targets.iter().find(|t| t.role == TargetRole::Primary);
        if intent == Intent::Write {
            self.order.extend(primary.map(|t| t.id));
            return &self.order;
        }
        let up = |t: &&Target| !bans.is_banned(t.id, now);
        let split = match intent {
            Intent::ReadOnlyTransaction => ReadWriteSplit::ExcludePrimary,
            _ => self.split,
        };
        let primary_balanced = primary_balanced(split, targets, bans, now);
        let mut set = std::mem::take(&mut self.set);
        set.clear();
        set.extend(
            targets
                .iter()
                .filter(up)
                .filter(|t| t.role == TargetRole::Replica || primary_balanced),
        );
        let fallback = primary.filter(up).filter(|_| !primary_balanced);
        if set.is_empty() && fallback.is_none() {
            // Failsafe for a ban list that no longer matches the targets.
            set.extend_from_slice(targets);
        }
        self.order_by_strategy(&mut set);
        self.set = set;
        self.order.extend(fallback.map(|t| t.id));
        &self.order
    }

    /// Appends `set` to `self.order`, best first (`set` is scratch).
    fn order_by_strategy(&mut self, set: &mut [Target]) {
        let start = self.order.len();
        match self.strategy {
            LoadBalancingStrategy::Random => {
                self.order.extend(set.iter().map(|t| t.id));
                self.rng.shuffle(&mut self.order[start..]);
            }
            LoadBalancingStrategy::RoundRobin => self.rotated(set),
            LoadBalancingStrategy::LeastActiveConnections => {
                // Least busy first; the counter rotates only the servers tied
                // for least, so they take equal turns. (Rotating the whole set
                // before a stable sort gave a busy server's turns to the idle
                // one after it: 2:1 between two idle servers beside a busy one.)
                set.sort_by_key(|t| t.active);
                let least = set.first().map_or(0, |t| t.active);
                let tied = set.iter().take_while(|t| t.active == least).count();
                if tied > 0 {
                    set[..tied].rotate_left(self.next % tied);
                    self.next = self.next.wrapping_add(1);
                }
                self.order.extend(set.iter().map(|t| t.id));
            }
            LoadBalancingStrategy::WeightedRoundRobin => self.smooth_weighted(set),
        }
    }

    /// `set` rotated by the round-robin counter, which then advances.
    fn rotated(&mut self, set: &[Target]) {
        if set.is_empty() {
            return;
        }
        let first = self.next % set.len();
        self.next = self.next.wrapping_add(1);
        self.order.extend(set[first..].iter().map(|t| t.id));
        self.order.extend(set[..first].iter().map(|t| t.id));
    }

    /// Smooth weighted round robin (as nginx's upstream balancer): every
    /// server's running weight grows by its weight, the largest wins and
    /// pays back the total. Over any `total` picks each server gets exactly
    /// `weight` of them, interleaved rather than in bursts. The rest follow
    /// by running weight; weight-0 servers come after every weighted one.
    fn smooth_weighted(&mut self, set: &mut [Target]) {
        let total: i64 = set.iter().map(|t| i64::from(t.weight)).sum();
        if total == 0 {
            self.rotated(&*set);
            return;
        }
        let needed = set.iter().map(|t| t.id.index() + 1).max().unwrap_or(0);
        if self.current_weights.len() < needed {
            self.current_weights.resize(needed, 0);
        }
        for target in set.iter() {
            self.current_weights[target.id.index()] += i64::from(target.weight);
        }
        let weights = &self.current_weights;
        // Highest running weight first, ties in target order; weight 0 last.
        set.sort_by_key(|t| (t.weight == 0, std::cmp::Reverse(weights[t.id.index()])));
        if let Some(chosen) = set.first() {
            self.current_weights[chosen.id.index()] -= total;
        }
        self.order.extend(set.iter().map(|t| t.id));
    }
}

/// A seed for `Balancer::new` from the OS; the clock if that fails (the
/// seed only spreads load, it guards no secret).
pub fn os_seed() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::getrandom(&mut bytes).is_ok() {
        return u64::from_le_bytes(bytes);
    }
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0x9e37_79b9_7f4a_7c15, |d| d.as_nanos() as u64)
}

/// xorshift64*: small, fast, seedable; plenty for spreading reads.
#[derive(Clone, Debug)]
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> XorShift {
        // The state must never be zero.
        XorShift(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` for n ≥ 1 (the modulo bias is below 2^-50 for the
    /// handful of servers a shard has).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// Fisher–Yates: every order equally likely.
    fn shuffle<T>(&mut self, items: &mut [T]) {
        for last in (1..items.len()).rev() {
            let pick = self.below(last + 1);
            items.swap(last, pick);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRIMARY: TargetId = TargetId(0);

    fn target(id: u16, role: TargetRole) -> Target {
        Target {
            id: TargetId(id),
            role,
            weight: 255,
            active: 0,
        }
    }

    /// Target 0 is the primary, the rest replicas.
    fn shard(replicas: u16) -> Vec<Target> {
        let mut targets = vec![target(0, TargetRole::Primary)];
        targets.extend((1..=replicas).map(|id| target(id, TargetRole::Replica)));
        targets
    }

    fn ids(list: &[u16]) -> Vec<TargetId> {
        list.iter().map(|&id| TargetId(id)).collect()
    }

    fn balancer(strategy: LoadBalancingStrategy, split: ReadWriteSplit) -> Balancer {
        Balancer::new(strategy, split, 0x5eed)
    }

    const MINUTE: Duration = Duration::from_secs(60);

    /// How often each target is tried first over `picks` reads.
    fn first_picks(
        balancer: &mut Balancer,
        targets: &[Target],
        bans: &Bans,
        picks: usize,
    ) -> Vec<usize> {
        let now = Instant::now();
        let mut counts = vec![0; targets.len()];
        for _ in 0..picks {
            let order = balancer.candidates(Intent::Read, targets, bans, now);
            counts[order[0].index()] += 1;
        }
        counts
    }

    fn assert_near(counts: &[usize], expected: &[usize], tolerance: usize) {
        for (count, want) in counts.iter().zip(expected) {
            assert!(
                count.abs_diff(*want) <= tolerance,
                "{counts:?} not within {tolerance} of {expected:?}"
            );
        }
    }

    #[test]
    fn writes_go_to_the_primary_only() {
        let targets = shard(2);
        let mut bans = Bans::new(3);
        let now = Instant::now();
        let mut lb = balancer(
            LoadBalancingStrategy::Random,
            ReadWriteSplit::IncludePrimary,
        );
        assert_eq!(
            lb.candidates(Intent::Write, &targets, &bans, now),
            [PRIMARY]
        );
        // A banned primary still takes writes: there is nowhere else.
        assert_eq!(
            bans.ban(PRIMARY, now, MINUTE, BanReason::ConnectFailed),
            BanOutcome::Banned
        );
        assert_eq!(
            lb.candidates(Intent::Write, &targets, &bans, now),
            [PRIMARY]
        );
        let replicas_only: Vec<Target> = targets[1..].to_vec();
        assert!(lb
            .candidates(Intent::Write, &replicas_only, &bans, now)
            .is_empty());
    }

    #[test]
    fn read_only_transactions_go_to_a_replica_whatever_the_split() {
        let targets = shard(2);
        let mut bans = Bans::new(3);
        let now = Instant::now();
        let mut lb = balancer(
            LoadBalancingStrategy::RoundRobin,
            ReadWriteSplit::IncludePrimary,
        );
        for _ in 0..10 {
            let order = lb.candidates(Intent::ReadOnlyTransaction, &targets, &bans, now);
            assert_ne!(order[0], PRIMARY, "{order:?}");
            assert_eq!(order.last(), Some(&PRIMARY), "the primary is the fallback");
        }
        // Every replica out of rotation: the primary takes it.
        bans.ban(TargetId(1), now, MINUTE, BanReason::ConnectFailed);
        bans.ban(TargetId(2), now, MINUTE, BanReason::ConnectFailed);
        assert_eq!(
            lb.candidates(Intent::ReadOnlyTransaction, &targets, &bans, now),
            [PRIMARY]
        );
    }

    #[test]
    fn random_spreads_evenly_and_lists_every_server_once() {
        let targets = shard(2);
        let bans = Bans::new(3);
        let mut lb = balancer(
            LoadBalancingStrategy::Random,
            ReadWriteSplit::IncludePrimary,
        );
        let counts = first_picks(&mut lb, &targets, &bans, 10_000);
        assert_near(&counts, &[3_333, 3_333, 3_333], 300);
        let mut order = lb
            .candidates(Intent::Read, &targets, &bans, Instant::now())
            .to_vec();
        order.sort();
        assert_eq!(order, ids(&[0, 1, 2]));
    }

    #[test]
    fn random_is_deterministic_per_seed() {
        let targets = shard(4);
        let bans = Bans::new(5);
        let now = Instant::now();
        let picks = |seed| {
            let mut lb = Balancer::new(
                LoadBalancingStrategy::Random,
                ReadWriteSplit::IncludePrimary,
                seed,
            );
            (0..20)
                .map(|_| lb.candidates(Intent::Read, &targets, &bans, now)[0])
                .collect::<Vec<_>>()
        };
        assert_eq!(picks(7), picks(7));
        assert_ne!(picks(7), picks(8));
    }

    #[test]
    fn round_robin_takes_turns_exactly() {
        let targets = shard(3);
        let bans = Bans::new(4);
        let now = Instant::now();
        let mut lb = balancer(
            LoadBalancingStrategy::RoundRobin,
            ReadWriteSplit::IncludePrimary,
        );
        assert_eq!(
            lb.candidates(Intent::Read, &targets, &bans, now),
            ids(&[0, 1, 2, 3])
        );
        assert_eq!(
            lb.candidates(Intent::Read, &targets, &bans, now),
            ids(&[1, 2, 3, 0])
        );
        let counts = first_picks(&mut lb, &targets, &bans, 10_000);
        assert_eq!(counts, [2_500; 4]);
    }

    #[test]
    fn least_active_connections_prefers_idle_servers() {
        let mut targets = shard(3);
        targets[0].active = 9;
        targets[1].active = 4;
        targets[2].active = 0;
        targets[3].active = 7;
        let bans = Bans::new(4);
        let now = Instant::now();
        let mut lb = balancer(
            LoadBalancingStrategy::LeastActiveConnections,
            ReadWriteSplit::IncludePrimary,
        );
        for _ in 0..3 {
            assert_eq!(
                lb.candidates(Intent::Read, &targets, &bans, now),
                ids(&[2, 1, 3, 0])
            );
        }
        // Equally busy servers take turns instead of piling on the first.
        for target in &mut targets {
            target.active = 1;
        }
        let counts = first_picks(&mut lb, &targets, &bans, 10_000);
        assert_eq!(counts, [2_500; 4]);
    }

    #[test]
    fn least_active_connections_shares_evenly_among_the_least_busy() {
        // One busy server: the three idle ones split the reads equally.
        let mut targets = shard(3);
        targets[0].active = 1;
        let bans = Bans::new(4);
        let mut lb = balancer(
            LoadBalancingStrategy::LeastActiveConnections,
            ReadWriteSplit::IncludePrimary,
        );
        let counts = first_picks(&mut lb, &targets, &bans, 9_000);
        assert_eq!(counts, [0, 3_000, 3_000, 3_000]);
        // Two busy ones: the other two alternate, and the busy follow.
        targets[2].active = 2;
        let now = Instant::now();
        let firsts: Vec<u16> = (0..4)
            .map(|_| lb.candidates(Intent::Read, &targets, &bans, now)[0].0)
            .collect();
        assert_eq!(
            firsts.iter().filter(|&&id| id == 1).count(),
            2,
            "{firsts:?}"
        );
        assert_eq!(
            firsts.iter().filter(|&&id| id == 3).count(),
            2,
            "{firsts:?}"
        );
        let order = lb.candidates(Intent::Read, &targets, &bans, now);
        assert_eq!(
            &order[2..],
            ids(&[0, 2]),
            "busy servers last, least busy first"
        );
    }

    #[test]
    fn weighted_round_robin_follows_lb_weight_smoothly() {
        let mut targets = shard(2);
        targets[0].weight = 1;
        targets[1].weight = 2;
        targets[2].weight = 5;
        let bans = Bans::new(3);
        let mut lb = balancer(
            LoadBalancingStrategy::WeightedRoundRobin,
            ReadWriteSplit::IncludePrimary,
        );
        // 10 000 = 1 250 rounds of total weight 8: exact shares.
        let counts = first_picks(&mut lb, &targets, &bans, 10_000);
        assert_eq!(counts, [1_250, 2_500, 6_250]);
        // Smooth: weights 5, 1, 1 interleave as a a b a c a a (nginx's example).
        targets[0].weight = 5;
        targets[1].weight = 1;
        targets[2].weight = 1;
        let mut lb = balancer(
            LoadBalancingStrategy::WeightedRoundRobin,
            ReadWriteSplit::IncludePrimary,
        );
        let now = Instant::now();
        let firsts: Vec<u16> = (0..7)
            .map(|_| lb.candidates(Intent::Read, &targets, &bans, now)[0].0)
            .collect();
        assert_eq!(firsts, [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn weight_zero_is_tried_last_and_all_zero_is_round_robin() {
        let mut targets = shard(2);
        targets[1].weight = 0;
        let bans = Bans::new(3);
        let now = Instant::now();
        let mut lb = balancer(
            LoadBalancingStrategy::WeightedRoundRobin,
            ReadWriteSplit::IncludePrimary,
        );
        for _ in 0..10 {
            let order = lb.candidates(Intent::Read, &targets, &bans, now);
            assert_eq!(order.len(), 3);
            assert_eq!(order[2], TargetId(1), "{order:?}");
        }
        for target in &mut targets {
            target.weight = 0;
        }
        let counts = first_picks(&mut lb, &targets, &bans, 9_000);
        assert_eq!(counts, [3_000; 3]);
    }

    #[test]
    fn exclude_primary_reads_replicas_with_the_primary_as_last_resort() {
        let targets = shard(2);
        let mut bans = Bans::new(3);
        let now = Instant::now();
        for split in [
            ReadWriteSplit::ExcludePrimary,
            ReadWriteSplit::PreferPrimary,
        ] {
            let mut lb = balancer(LoadBalancingStrategy::Random, split);
            let counts = first_picks(&mut lb, &targets, &bans, 10_000);
            assert_eq!(counts[0], 0, "{split:?}: {counts:?}");
            assert_near(&counts, &[0, 5_000, 5_000], 300);
            let order = lb.candidates(Intent::Read, &targets, &bans, now);
            assert_eq!(order.len(), 3);
            assert_eq!(order[2], PRIMARY, "{split:?}");
        }
        bans.ban(TargetId(1), now, MINUTE, BanReason::ConnectFailed);
        bans.ban(TargetId(2), now, MINUTE, BanReason::ConnectFailed);
        for split in [
            ReadWriteSplit::ExcludePrimary,
            ReadWriteSplit::PreferPrimary,
        ] {
            let mut lb = balancer(LoadBalancingStrategy::RoundRobin, split);
            assert_eq!(lb.candidates(Intent::Read, &targets, &bans, now), [PRIMARY]);
        }
    }

    #[test]
    fn include_primary_if_replica_banned_adds_the_primary_on_any_ban() {
        let targets = shard(2);
        let mut bans = Bans::new(3);
        let now = Instant::now();
        let mut lb = balancer(
            LoadBalancingStrategy::RoundRobin,
            ReadWriteSplit::IncludePrimaryIfReplicaBanned,
        );
        assert_eq!(
            lb.candidates(Intent::Read, &targets, &bans, now),
            ids(&[1, 2, 0])
        );
        assert_eq!(
            lb.candidates(Intent::Read, &targets, &bans, now),
            ids(&[2, 1, 0])
        );
        let counts = first_picks(&mut lb, &targets, &bans, 10_000);
        assert_eq!(counts, [0, 5_000, 5_000]);

        bans.ban(TargetId(2), now, MINUTE, BanReason::HealthCheckFailed);
        let counts = first_picks(&mut lb, &targets, &bans, 10_000);
        assert_eq!(counts, [5_000, 5_000, 0]);
        let order = lb.candidates(Intent::Read, &targets, &bans, now);
        assert!(
            !order.contains(&TargetId(2)),
            "banned replica listed: {order:?}"
        );

        // A shard of one primary reads from it.
        let alone = shard(0);
        assert_eq!(
            lb.candidates(Intent::Read, &alone, &Bans::new(1), now),
            [PRIMARY]
        );
    }

    #[test]
    fn include_primary_balances_over_everyone_and_skips_bans() {
        let targets = shard(3);
        let mut bans = Bans::new(4);
        let now = Instant::now();
        bans.ban(TargetId(3), now, MINUTE, BanReason::ReplicaLag);
        let mut lb = balancer(
            LoadBalancingStrategy::Random,
            ReadWriteSplit::IncludePrimary,
        );
        let counts = first_picks(&mut lb, &targets, &bans, 9_000);
        assert_eq!(counts[3], 0);
        assert_near(&counts[..3], &[3_000, 3_000, 3_000], 300);
        // The retry order: the chosen one, then every other healthy server once.
        let mut order = lb.candidates(Intent::Read, &targets, &bans, now).to_vec();
        order.sort();
        assert_eq!(order, ids(&[0, 1, 2]));
    }

    #[test]
    fn a_stopped_replica_leaves_reads_on_the_primary() {
        // The "replica stopped → reads continue on the primary".
        let targets = shard(1);
        let mut bans = Bans::new(2);
        let now = Instant::now();
        let mut lb = balancer(
            LoadBalancingStrategy::RoundRobin,
            ReadWriteSplit::IncludePrimary,
        );
        assert_eq!(
            bans.ban(TargetId(1), now, MINUTE, BanReason::ConnectFailed),
            BanOutcome::Banned
        );
        for _ in 0..3 {
            assert_eq!(lb.candidates(Intent::Read, &targets, &bans, now), [PRIMARY]);
        }
    }

    #[test]
    fn bans_expire_after_ban_timeout() {
        let mut bans = Bans::new(2);
        let now = Instant::now();
        let replica = TargetId(1);
        assert_eq!(
            bans.ban(replica, now, MINUTE, BanReason::CheckoutTimeout),
            BanOutcome::Banned
        );
        assert!(bans.is_banned(replica, now));
        assert!(bans.is_banned(replica, now + MINUTE - Duration::from_millis(1)));
        assert_eq!(
            bans.ban_of(replica, now).map(|b| b.reason),
            Some(BanReason::CheckoutTimeout)
        );
        assert!(!bans.is_banned(replica, now + MINUTE));
        assert_eq!(bans.ban_of(replica, now + MINUTE), None);
        assert_eq!(bans.expire(now + MINUTE), [replica]);
        assert!(bans.expire(now + MINUTE).is_empty());

        // Expired bans count as in rotation for the failsafe, too.
        bans.ban(replica, now, MINUTE, BanReason::ConnectFailed);
        let later = now + 2 * MINUTE;
        assert_eq!(
            bans.ban(PRIMARY, later, MINUTE, BanReason::ConnectFailed),
            BanOutcome::Banned
        );

        bans.unban(PRIMARY);
        assert!(!bans.is_banned(PRIMARY, later));
    }

    #[test]
    fn ban_timeout_zero_disables_bans() {
        let mut bans = Bans::new(3);
        let now = Instant::now();
        assert_eq!(
            bans.ban(TargetId(1), now, Duration::ZERO, BanReason::ConnectFailed),
            BanOutcome::Disabled
        );
        assert!(!bans.is_banned(TargetId(1), now));
        assert_eq!(
            bans.ban(TargetId(9), now, MINUTE, BanReason::ConnectFailed),
            BanOutcome::UnknownTarget
        );
        assert!(!bans.is_banned(TargetId(9), now));
    }

    #[test]
    fn the_last_server_in_rotation_is_never_banned() {
        let now = Instant::now();
        let mut bans = Bans::new(1);
        assert_eq!(
            bans.ban(PRIMARY, now, MINUTE, BanReason::ConnectFailed),
            BanOutcome::LiftedAll
        );
        assert!(!bans.is_banned(PRIMARY, now));

        let mut bans = Bans::new(2);
        assert_eq!(
            bans.ban(TargetId(1), now, MINUTE, BanReason::ConnectFailed),
            BanOutcome::Banned
        );
        assert_eq!(
            bans.ban(PRIMARY, now, MINUTE, BanReason::ConnectFailed),
            BanOutcome::LiftedAll
        );
        assert!(!bans.is_banned(PRIMARY, now));
        assert!(!bans.is_banned(TargetId(1), now), "failsafe lifts the rest");
    }

    #[test]
    fn banning_every_replica_of_a_replica_only_shard_lifts_all_bans() {
        let targets: Vec<Target> = (0..3).map(|id| target(id, TargetRole::Replica)).collect();
        let mut bans = Bans::new(3);
        let now = Instant::now();
        assert_eq!(
            bans.ban(TargetId(0), now, MINUTE, BanReason::HealthCheckFailed),
            BanOutcome::Banned
        );
        assert_eq!(
            bans.ban(TargetId(1), now, MINUTE, BanReason::HealthCheckFailed),
            BanOutcome::Banned
        );
        assert_eq!(
            bans.ban(TargetId(2), now, MINUTE, BanReason::HealthCheckFailed),
            BanOutcome::LiftedAll
        );
        let mut lb = balancer(
            LoadBalancingStrategy::RoundRobin,
            ReadWriteSplit::ExcludePrimary,
        );
        assert_eq!(lb.candidates(Intent::Read, &targets, &bans, now).len(), 3);
    }

    #[test]
    fn a_ban_list_covering_every_listed_server_is_ignored() {
        // Bans for three servers, of which the caller now lists two, both banned.
        let mut bans = Bans::new(3);
        let now = Instant::now();
        bans.ban(TargetId(0), now, MINUTE, BanReason::ConnectFailed);
        bans.ban(TargetId(1), now, MINUTE, BanReason::ConnectFailed);
        let targets: Vec<Target> = (0..2).map(|id| target(id, TargetRole::Replica)).collect();
        let mut lb = balancer(
            LoadBalancingStrategy::RoundRobin,
            ReadWriteSplit::IncludePrimary,
        );
        assert_eq!(
            lb.candidates(Intent::Read, &targets, &bans, now),
            ids(&[0, 1])
        );
    }

    #[test]
    fn auto_servers_start_as_replicas() {
        assert_eq!(TargetRole::from(Role::Auto), TargetRole::Replica);
        assert_eq!(TargetRole::from(Role::Primary), TargetRole::Primary);
        assert_eq!(TargetRole::from(Role::Replica), TargetRole::Replica);
    }

    #[test]
    fn os_seeds_differ() {
        assert_ne!(os_seed(), os_seed());
    }
}
