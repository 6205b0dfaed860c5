//! The bound on failed logins. Each client may present a wrong token [`MAX_FAILURES`] times in a
//! fixed window of [`WINDOW`] (counted from its first failure); after that every attempt of that
//! client, right token or wrong, gets 429 Too Many Requests with `Retry-After` until the window
//! ends. A client is its IP address as the server saw the connection (an IPv6 client by its /64
//! network, which one host usually has whole); `X-Forwarded-For` is not trusted, so behind a
//! reverse proxy every client shares the proxy's limit.
//!
//! Memory is bounded: at most [`MAX_CLIENTS`] clients are tracked. A new client past that first
//! drops the clients whose windows have ended, then the one whose window began first.
//!
//! The limiter takes the time from its caller (`now`), so tests drive it without sleeping.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use http::request::Parts;

/// Default of [`LoginLimits::max_failures`]: wrong tokens a client may present per window.
pub const MAX_FAILURES: u32 = 10;
/// Default of [`LoginLimits::window`].
pub const WINDOW: Duration = Duration::from_secs(60);
/// Default of [`LoginLimits::max_clients`].
pub const MAX_CLIENTS: usize = 4096;

/// How many failures are allowed, per how long, for how many clients at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLimits {
    /// Wrong tokens a client may present in one window; the next attempt is refused.
    pub max_failures: u32,
    /// How long a window lasts from a client's first failure in it.
    pub window: Duration,
    /// How many clients are tracked at most.
    pub max_clients: usize,
}

impl Default for LoginLimits {
    fn default() -> Self {
        Self {
            max_failures: MAX_FAILURES,
            window: WINDOW,
            max_clients: MAX_CLIENTS,
        }
    }
}

/// Who a failure is counted against: an IPv4 address, or the /64 network of an IPv6 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientKey(IpAddr);

impl ClientKey {
    /// The client at `ip` (an IPv4-mapped IPv6 address is its IPv4 address).
    pub fn new(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                Self(IpAddr::V6(Ipv6Addr::from(octets)))
            }
            v4 => Self(v4),
        }
    }

    /// The client of a request with these extensions: the peer address the server recorded
    /// (`ConnectInfo`), or one key shared by every request without one.
    pub fn of(extensions: &http::Extensions) -> Self {
        extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(Self(IpAddr::V4(Ipv4Addr::UNSPECIFIED)), |ConnectInfo(addr)| Self::new(addr.ip()))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientKey {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Self::of(&parts.extensions))
    }
}

/// One client's current window.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    failures: u32,
}

/// Failed logins per client, within [`LoginLimits`].
#[derive(Debug)]
pub struct LoginLimiter {
    limits: LoginLimits,
    clients: HashMap<ClientKey, Window>,
}

impl LoginLimiter {
    /// A limiter tracking nobody yet.
    pub fn new(limits: LoginLimits) -> Self {
        Self {
            limits,
            clients: HashMap::new(),
        }
    }

    /// How long `window` has run at `now`, if it has not ended.
    fn elapsed(&self, window: &Window, now: Instant) -> Option<Duration> {
        Some(now.saturating_duration_since(window.start)).filter(|elapsed| *elapsed < self.limits.window)
    }

    /// Whether `client` may present a token at `now`; if not, how long until it may.
    pub fn check(&self, client: ClientKey, now: Instant) -> Result<(), Duration> {
        match self.clients.get(&client) {
            Some(window) if window.failures >= self.limits.max_failures => match self.elapsed(window, now) {
                Some(elapsed) => Err(self.limits.window - elapsed),
                None => Ok(()),
            },
            _ => Ok(()),
        }
    }

    /// Counts a wrong token of `client` at `now`.
    pub fn record_failure(&mut self, client: ClientKey, now: Instant) {
        if let Some(window) = self.clients.get(&client).copied() {
            let next = match self.elapsed(&window, now) {
                Some(_) => Window {
                    failures: window.failures.saturating_add(1),
                    ..window
                },
                None => Window { start: now, failures: 1 },
            };
            self.clients.insert(client, next);
            return;
        }
        if self.clients.len() >= self.limits.max_clients.max(1) {
            self.make_room(now);
        }
        self.clients.insert(client, Window { start: now, failures: 1 });
    }

    /// Drops the clients whose windows have ended, then, while still full, the client whose
    /// window began first.
    fn make_room(&mut self, now: Instant) {
        let window = self.limits.window;
        self.clients.retain(|_, w| now.saturating_duration_since(w.start) < window);
        while self.clients.len() >= self.limits.max_clients.max(1) {
            let Some(oldest) = self.clients.iter().min_by_key(|(_, w)| w.start).map(|(key, _)| *key) else {
                break;
            };
            self.clients.remove(&oldest);
        }
    }

    /// How many clients are tracked.
    pub fn tracked(&self) -> usize {
        self.clients.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(n: u32) -> ClientKey {
        ClientKey::new(IpAddr::V4(Ipv4Addr::from(n)))
    }

    const LIMITS: LoginLimits = LoginLimits {
        max_failures: 3,
        window: Duration::from_secs(60),
        max_clients: 100,
    };

    #[test]
    fn a_client_is_refused_after_its_failures_until_its_window_ends() {
        let mut limiter = LoginLimiter::new(LIMITS);
        let t0 = Instant::now();
        let at = |seconds: u64| t0 + Duration::from_secs(seconds);
        for second in 0..3 {
            assert_eq!(limiter.check(client(1), at(second)), Ok(()));
            limiter.record_failure(client(1), at(second));
        }
        // The window began with the first failure, at 0 s.
        assert_eq!(limiter.check(client(1), at(10)), Err(Duration::from_secs(50)));
        assert_eq!(limiter.check(client(2), at(10)), Ok(()), "another client is not limited");
        assert_eq!(limiter.check(client(1), at(59)), Err(Duration::from_secs(1)));
        assert_eq!(limiter.check(client(1), at(60)), Ok(()));
        // A new window: three more failures.
        limiter.record_failure(client(1), at(60));
        limiter.record_failure(client(1), at(61));
        assert_eq!(limiter.check(client(1), at(62)), Ok(()));
        limiter.record_failure(client(1), at(62));
        assert_eq!(limiter.check(client(1), at(62)), Err(Duration::from_secs(58)));
    }

    #[test]
    fn ipv6_clients_are_their_64_networks() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ClientKey::new(a), ClientKey::new(b));
        assert_ne!(ClientKey::new(a), ClientKey::new(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(ClientKey::new(mapped), ClientKey::new("192.0.2.7".parse().unwrap()));
        assert_eq!(ClientKey::of(&http::Extensions::new()), ClientKey::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED)));
    }

    #[test]
    fn memory_stays_bounded_under_many_clients() {
        let mut limiter = LoginLimiter::new(LIMITS);
        let t0 = Instant::now();
        // A limited client, then far more distinct clients than are tracked, within its window.
        for _ in 0..3 {
            limiter.record_failure(client(0), t0);
        }
        for n in 1..=10_000 {
            limiter.record_failure(client(n), t0 + Duration::from_millis(u64::from(n)));
            assert!(limiter.tracked() <= LIMITS.max_clients);
        }
        assert_eq!(limiter.tracked(), LIMITS.max_clients);
        // The newest clients are kept, the oldest evicted.
        limiter.record_failure(client(10_000), t0 + Duration::from_secs(11));
        limiter.record_failure(client(10_000), t0 + Duration::from_secs(11));
        assert!(limiter.check(client(10_000), t0 + Duration::from_secs(11)).is_err());
        assert_eq!(limiter.check(client(0), t0 + Duration::from_secs(11)), Ok(()), "evicted as the oldest");
        // Clients whose windows ended are dropped before any live one.
        let later = t0 + Duration::from_secs(120);
        limiter.record_failure(client(20_000), later);
        assert_eq!(limiter.tracked(), 1);
    }
}
