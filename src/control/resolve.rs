//! Server host names → socket addresses, resolved off the cores.
//!
//! getaddrinfo blocks, so no core ever calls it: control resolves every
//! `[[databases]]` host when it builds a snapshot (load, reload) and the
//! snapshot carries the addresses. Every `dns_ttl` (default
//! `DEFAULT_DNS_REFRESH_MS`) a helper thread resolves the names again, so a
//! slow DNS server never delays control's signal and cancel handling; control
//! publishes a new snapshot only when an address set changed.
//!
//! Owns the lookup, the per-(host, port) outcome and the rule for "changed".
//! Must not touch cores or open sockets.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};

/// A server as the config names it.
pub type HostPort = (String, u16);

/// What one (host, port) resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// In resolver order: the first is preferred, the rest are tried when
    /// it refuses (as libpq does with a name that has several addresses).
    Addrs(Vec<SocketAddr>),
    /// The lookup failed or found nothing; why, for the error at checkout.
    Failed(String),
}

impl Resolved {
    /// The same outcome, ignoring the order of addresses: round-robin DNS
    /// rotates it on every answer, which is no reason to drain a pool.
    pub fn same_as(&self, other: &Resolved) -> bool {
        match (self, other) {
            (Resolved::Addrs(a), Resolved::Addrs(b)) => sorted(a) == sorted(b),
            (Resolved::Failed(_), Resolved::Failed(_)) => true,
            _ => false,
        }
    }
}

fn sorted(addrs: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut addrs = addrs.to_vec();
    addrs.sort_unstable();
    addrs
}

/// Every server's addresses, as of one resolution.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerAddrs {
    by_server: HashMap<HostPort, Resolved>,
}

impl ServerAddrs {
    /// Resolves each distinct (host, port) once with `lookup`.
    pub fn resolve<'a>(
        servers: impl IntoIterator<Item = (&'a str, u16)>,
        mut lookup: impl FnMut(&str, u16) -> io::Result<Vec<SocketAddr>>,
    ) -> ServerAddrs {
        let mut by_server = HashMap::new();
        for (host, port) in servers {
            let key = (host.to_owned(), port);
            if by_server.contains_key(&key) {
                continue;
            }
            let resolved = match lookup(host, port) {
                Ok(addrs) if !addrs.is_empty() => Resolved::Addrs(addrs),
                Ok(_) => Resolved::Failed("no addresses found".into()),
                Err(error) => Resolved::Failed(error.to_string()),
            };
            by_server.insert(key, resolved);
        }
        ServerAddrs { by_server }
    }

    /// What `host:port` resolved to; a server this snapshot did not resolve
    /// cannot be reached.
    pub fn get(&self, host: &str, port: u16) -> Resolved {
        self.by_server
            .iter()
            .find(|((h, p), _)| h == host && *p == port)
            .map_or_else(
                || Resolved::Failed("not resolved".into()),
                |(_, resolved)| resolved.clone(),
            )
    }

    /// Servers named by a host name rather than an IP address: the ones a
    /// re-resolution can change.
    pub fn named(&self) -> Vec<HostPort> {
        self.by_server
            .keys()
            .filter(|(host, _)| host.parse::<IpAddr>().is_err())
            .cloned()
            .collect()
    }

    /// Servers that did not resolve, for a warning at load.
    pub fn failures(&self) -> impl Iterator<Item = (&HostPort, &str)> {
        self.by_server
            .iter()
            .filter_map(|(key, resolved)| match resolved {
                Resolved::Failed(reason) => Some((key, reason.as_str())),
                Resolved::Addrs(_) => None,
            })
    }

    /// `self` with the entries of `fresh` that changed, or None when nothing
    /// did. Entries `fresh` lacks (a reload added them meanwhile) stay, and
    /// entries `self` lacks (a reload removed them) are not brought back.
    pub fn updated(&self, fresh: &ServerAddrs) -> Option<ServerAddrs> {
        let mut next = self.clone();
        let mut changed = false;
        for (key, resolved) in &mut next.by_server {
            if let Some(new) = fresh.by_server.get(key) {
                if !resolved.same_as(new) {
                    *resolved = new.clone();
                    changed = true;
                }
            }
        }
        changed.then_some(next)
    }
}

/// getaddrinfo, via the standard library. An IP literal needs no lookup.
pub fn system_lookup(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let mut addrs: Vec<SocketAddr> = Vec::new();
    for addr in (host, port).to_socket_addrs()? {
        if !addrs.contains(&addr) {
            addrs.push(addr);
        }
    }
    Ok(addrs)
}

/// Drives periodic re-resolution: at most one lookup thread at a time, the
/// next one `period` after the last finished.
pub struct Refresher {
    period: Duration,
    next: Instant,
    in_flight: bool,
    tx: Sender<ServerAddrs>,
    rx: Receiver<ServerAddrs>,
}

impl Refresher {
    pub fn new(period: Duration, now: Instant) -> Refresher {
        // One result at a time is ever outstanding.
        let (tx, rx) = bounded(1);
        Refresher {
            period,
            next: now + period,
            in_flight: false,
            tx,
            rx,
        }
    }

    /// Where finished resolutions arrive; control selects on it.
    pub fn results(&self) -> &Receiver<ServerAddrs> {
        &self.rx
    }

    /// A reload may change `dns_ttl`.
    pub fn set_period(&mut self, period: Duration, now: Instant) {
        if period != self.period {
            self.period = period;
            self.next = now + period;
        }
    }

    /// Starts a lookup of `servers` on a helper thread when one is due.
    pub fn poll(&mut self, now: Instant, servers: Vec<HostPort>) {
        if self.in_flight || now < self.next || servers.is_empty() {
            return;
        }
        let tx = self.tx.clone();
        let spawned = std::thread::Builder::new()
            .name("sleddog-dns".into())
            .spawn(move || {
                let names = servers.iter().map(|(host, port)| (host.as_str(), *port));
                let _ = tx.send(ServerAddrs::resolve(names, system_lookup));
            });
        match spawned {
            Ok(_) => self.in_flight = true,
            Err(error) => {
                tracing::warn!(%error, "cannot start the DNS refresh thread; will retry");
                self.next = now + self.period;
            }
        }
    }

    /// A result arrived; schedule the next lookup.
    pub fn finished(&mut self, now: Instant) {
        self.in_flight = false;
        self.next = now + self.period;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    /// A fake DNS: (host, port, addresses) rows; any other name fails.
    type Table<'a> = &'a [(&'a str, u16, &'a [&'a str])];

    fn table(entries: Table<'_>) -> impl FnMut(&str, u16) -> io::Result<Vec<SocketAddr>> + '_ {
        move |host, port| {
            entries
                .iter()
                .find(|(h, p, _)| *h == host && *p == port)
                .map(|(_, _, addrs)| addrs.iter().map(|a| addr(a)).collect())
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such host"))
        }
    }

    #[test]
    fn each_server_is_looked_up_once_and_failures_are_kept() {
        let mut calls = 0;
        let entries: Table = &[("db", 5432, &["10.0.0.1:5432"])];
        let mut lookup = table(entries);
        let addrs = ServerAddrs::resolve(
            [("db", 5432), ("db", 5432), ("gone", 5432)],
            |host, port| {
                calls += 1;
                lookup(host, port)
            },
        );
        assert_eq!(calls, 2);
        assert_eq!(
            addrs.get("db", 5432),
            Resolved::Addrs(vec![addr("10.0.0.1:5432")])
        );
        assert_eq!(
            addrs.get("gone", 5432),
            Resolved::Failed("no such host".into())
        );
        assert!(matches!(addrs.get("db", 6432), Resolved::Failed(_)));
        assert_eq!(addrs.failures().count(), 1);
    }

    #[test]
    fn localhost_and_ip_literals_resolve() {
        let v4 = system_lookup("127.0.0.1", 5432).unwrap();
        assert_eq!(v4, [addr("127.0.0.1:5432")]);
        let v6 = system_lookup("::1", 5432).unwrap();
        assert_eq!(v6, [addr("[::1]:5432")]);
        let local = system_lookup("localhost", 5432).unwrap();
        assert!(local.iter().all(|a| a.ip().is_loopback()), "{local:?}");
        assert!(!local.is_empty());
        let addrs = ServerAddrs::resolve([("127.0.0.1", 1), ("localhost", 2)], system_lookup);
        assert_eq!(addrs.named(), [("localhost".to_string(), 2)]);
    }

    #[test]
    fn updated_only_when_the_set_of_addresses_changed() {
        let before: Table = &[
            ("a", 1, &["10.0.0.1:1", "10.0.0.2:1"]),
            ("b", 1, &["10.0.0.3:1"]),
        ];
        let rotated: Table = &[
            ("a", 1, &["10.0.0.2:1", "10.0.0.1:1"]),
            ("b", 1, &["10.0.0.3:1"]),
        ];
        let moved: Table = &[
            ("a", 1, &["10.0.0.2:1", "10.0.0.1:1"]),
            ("b", 1, &["10.0.0.9:1"]),
        ];
        let servers = [("a", 1), ("b", 1)];
        let current = ServerAddrs::resolve(servers, table(before));
        let same = ServerAddrs::resolve(servers, table(rotated));
        assert_eq!(current.updated(&same), None);
        let fresh = ServerAddrs::resolve(servers, table(moved));
        let next = current.updated(&fresh).unwrap();
        assert_eq!(next.get("b", 1), Resolved::Addrs(vec![addr("10.0.0.9:1")]));
        // Order of `a` is the old one: it did not change.
        assert_eq!(next.get("a", 1), current.get("a", 1));

        // A host that stops resolving is a change; one that keeps failing is not.
        let broken = ServerAddrs::resolve(servers, table(&[]));
        let failed = current.updated(&broken).unwrap();
        assert!(matches!(failed.get("a", 1), Resolved::Failed(_)));
        assert_eq!(failed.updated(&broken), None);
    }

    #[test]
    fn updated_ignores_servers_a_reload_added_or_removed() {
        let entries: Table = &[("a", 1, &["10.0.0.1:1"]), ("c", 1, &["10.0.0.7:1"])];
        let current = ServerAddrs::resolve([("a", 1), ("b", 1)], table(entries));
        let fresh = ServerAddrs::resolve([("a", 1), ("c", 1)], table(entries));
        assert_eq!(current.updated(&fresh), None);
    }

    #[test]
    fn refresher_runs_one_lookup_at_a_time() {
        let start = Instant::now();
        let period = Duration::from_secs(10);
        let mut refresher = Refresher::new(period, start);
        let servers = vec![("127.0.0.1".to_string(), 5432)];
        refresher.poll(start, servers.clone());
        assert!(refresher.results().is_empty(), "not due yet");
        refresher.poll(start + period, servers.clone());
        let fresh = refresher
            .results()
            .recv_timeout(Duration::from_secs(5))
            .unwrap();
        assert_eq!(
            fresh.get("127.0.0.1", 5432),
            Resolved::Addrs(vec![addr("127.0.0.1:5432")])
        );
        // Until `finished`, no second lookup starts.
        refresher.poll(start + period * 3, servers.clone());
        assert!(refresher
            .results()
            .recv_timeout(Duration::from_millis(200))
            .is_err());
        refresher.finished(start + period * 3);
        refresher.poll(start + period * 4, servers);
        assert!(refresher
            .results()
            .recv_timeout(Duration::from_secs(5))
            .is_ok());
    }
}
