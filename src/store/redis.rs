//! Redis store: every limit of one decision in one `EVALSHA` of a per-algorithm Lua script, checked
//! together and committed only if all pass, on Redis server time.
//!
//! - Keys are `{prefix}{algorithm}:{{key}}:{limit}:{period_us}`: the hash tag `{key}` puts every rate of one
//!   key in one cluster slot. A decision whose keys span several slots (ip + user + global on a cluster)
//!   is checked on every slot first and then committed slot by slot; each slot's part stays atomic, and
//!   a race between the check and the commit can charge one slot for a request another refused, never
//!   admit more than a limit. A prefix with its own hash tag (`"{rl}:"`) keeps everything in one slot.
//! - Each key's TTL is the time until its state equals a fresh key's, so idle keys disappear.
//! - Failures (errors, timeouts) are decided by the limiter's policy: allow, deny or a local memory
//!   limiter. No call waits on Redis longer than `timeout`, all its round trips together, but for the first
//!   connection of a process, which may take `connect_timeout` more (see `RedisStore::deadline`). After
//!   `breaker_failures` failures in a row the breaker opens: for `breaker_cooldown` no request waits on
//!   Redis, then one probes. A reconnection runs in a task of its own for up to `connect_timeout`: the probe
//!   stops waiting for it at its deadline and falls back, every other request falls back at once while it
//!   runs, and its outcome decides the breaker (connected: the next request probes on the new connection;
//!   failed: another cooldown). On a cluster each zone of `SLOTS_PER_ZONE` slots
//!   has a breaker of its own, so a dead node opens only its own slots' breakers and the keys of the
//!   live nodes stay limited by Redis. One log line per incident, however many zones it touches.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Client, IntoConnectionInfo, RedisError, Script};
use smallvec::SmallVec;

use crate::decision::Decision;
use crate::limiter::{check_costs, AlgorithmKind, AnyLimiter, CostExceedsLimit, CostedLimit};
use crate::rate::Rate;

pub mod concurrency;

const NANOS_PER_MICRO: u64 = 1_000;
/// Keys longer than this are stored by their SHA-1, so a client cannot make Redis hold huge keys.
const MAX_KEY_BYTES: usize = 200;
const URL_EXAMPLES: &str = "'redis://localhost:6379/0', 'rediss://user:pass@host:6380', \
     'redis+cluster://10.0.0.1:7000,10.0.0.2:7000' or 'redis+unix:///run/redis.sock'";

/// What a decision does when Redis cannot answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnBackendError {
    /// Let the request through (fail open).
    Allow,
    /// Refuse the request (fail closed).
    Deny,
    /// Decide with a local in-memory limiter of the same rules.
    Memory,
}

impl OnBackendError {
    pub fn parse(name: &str) -> Option<OnBackendError> {
        Some(match name {
            "allow" => OnBackendError::Allow,
            "deny" => OnBackendError::Deny,
            "memory" => OnBackendError::Memory,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            OnBackendError::Allow => "allow",
            OnBackendError::Deny => "deny",
            OnBackendError::Memory => "memory",
        }
    }
}

/// Connection settings, shared by every limiter on the same server.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConnectOptions {
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub breaker_failures: u32,
    pub breaker_cooldown: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_millis(250),
            breaker_failures: 3,
            breaker_cooldown: Duration::from_secs(1),
        }
    }
}

/// A storage URL that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlError(pub String);

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; expected a URL such as {URL_EXAMPLES}", self.0)
    }
}

impl std::error::Error for UrlError {}

/// How log lines leave the store: `(is_warning, message)`.
pub type LogFn = Arc<dyn Fn(bool, &str) + Send + Sync>;

#[derive(Clone)]
enum Target {
    Single(Box<Client>),
    Cluster(Box<ClusterClient>),
}

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// The URL with any password replaced by `***`, for messages.
fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let user = userinfo.split_once(':').map_or("", |(user, _)| user);
            format!("{scheme}://{user}:***{}", &rest[at..])
        }
        None => url.to_owned(),
    }
}

/// The database a URL names, by its path (`/2`, when `path_is_db`) or its query (`?db=2`, as redis-py reads
/// it): None when it names none. A database is a whole number from 0; how many a server has is its own
/// setting (16 by default), so a number it lacks is only found out when connecting.
fn database(rest: &str, path_is_db: bool, shown: &str) -> Result<Option<u32>, UrlError> {
    let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
    let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut named: Vec<&str> = Vec::new();
    if path_is_db {
        if let Some(slash) = before_query.find('/') {
            let path = before_query[slash..].trim_matches('/');
            if !path.is_empty() {
                named.push(path);
            }
        }
    }
    named.extend(query.split('&').filter_map(|pair| pair.strip_prefix("db=")));
    let mut database = None;
    for text in named {
        let number: u32 = text
            .parse()
            .ok()
            .filter(|_| text.bytes().all(|byte| byte.is_ascii_digit()))
            .ok_or_else(|| {
                UrlError(format!(
                    "storage {shown:?} names the database {text:?}, but a database is a whole number from 0 (0 to 15 \
                     on a server with the default `databases 16`)"
                ))
            })?;
        if database.is_some_and(|known| known != number) {
            return Err(UrlError(format!(
                "storage {shown:?} names two databases, {} and {number}",
                database.unwrap_or_default()
            )));
        }
        database = Some(number);
    }
    Ok(database)
}

fn parse_target(url: &str, options: &ConnectOptions) -> Result<Target, UrlError> {
    let shown = redacted(url);
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(UrlError(format!("storage {shown:?} has no scheme")));
    };
    let scheme = scheme.to_ascii_lowercase();
    let node_scheme = match scheme.as_str() {
        "redis" | "rediss" | "redis+unix" | "unix" => {
            let tcp = matches!(scheme.as_str(), "redis" | "rediss");
            let database = database(rest, tcp, &shown)?;
            let unusable =
                |error: RedisError| UrlError(format!("storage {shown:?} is not a usable Redis URL ({error})"));
            let mut info = format!("{scheme}://{rest}").into_connection_info().map_err(unusable)?;
            if let Some(database) = database {
                let settings = info.redis_settings().clone().set_db(i64::from(database));
                info = info.set_redis_settings(settings);
            }
            let client = Client::open(info).map_err(unusable)?;
            return Ok(Target::Single(Box::new(client)));
        }
        "redis+cluster" => "redis",
        "rediss+cluster" => "rediss",
        _ => return Err(UrlError(format!("storage {shown:?} has an unknown scheme {scheme:?}"))),
    };
    if database(rest, true, &shown)?.is_some_and(|database| database != 0) {
        return Err(UrlError(format!(
            "storage {shown:?} names a database other than 0, which a Redis Cluster does not have"
        )));
    }
    let (authority, tail) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => (&authority[..=at], &authority[at + 1..]),
        None => ("", authority),
    };
    let nodes: Vec<String> = hosts
        .split(',')
        .map(|host| format!("{node_scheme}://{userinfo}{}{tail}", host.trim()))
        .collect();
    if hosts.trim().is_empty() || nodes.iter().any(|node| node.contains(":///") || node.contains("://@")) {
        return Err(UrlError(format!("storage {shown:?} names no cluster node")));
    }
    let mut infos = Vec::with_capacity(nodes.len());
    for node in &nodes {
        infos.push(node.as_str().into_connection_info().map_err(|error| {
            UrlError(format!(
                "storage {shown:?}: node {:?} is not usable ({error})",
                redacted(node)
            ))
        })?);
    }
    ClusterClient::builder(infos)
        .connection_timeout(options.connect_timeout)
        .response_timeout(options.timeout)
        .retries(1)
        .min_retry_wait(10)
        .max_retry_wait(100)
        .build()
        .map(|client| Target::Cluster(Box::new(client)))
        .map_err(|error| UrlError(format!("storage {shown:?} is not a usable cluster URL ({error})")))
}

/// Counts since the store was created. `breaker_open` is 1 while requests skip Redis.
#[derive(Default)]
pub struct StoreCounts {
    pub redis_calls: AtomicU64,
    pub backend_errors: AtomicU64,
    pub timeouts: AtomicU64,
    pub incidents: AtomicU64,
    pub fallbacks: AtomicU64,
    pub deny_cache_hits: AtomicU64,
}

#[derive(Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
    probing: bool,
}

impl Breaker {
    fn is_healthy(&self) -> bool {
        self.failures == 0 && self.open_until.is_none()
    }
}

/// An outage from its first failure until every breaker is healthy again: logged once at each end.
#[derive(Default)]
struct Incident {
    started: Option<Instant>,
    fallbacks_at_start: u64,
}

/// Cluster slots per breaker zone: 128 zones of 128 slots. A node owns whole ranges of slots, so the
/// zones of a dead node fail and open while the others keep answering.
const SLOTS_PER_ZONE: usize = 128;
const CLUSTER_ZONES: usize = 16_384 / SLOTS_PER_ZONE;

/// Which breaker a call answers to: always 0 for one server; on a cluster, the zone of its keys' slot. A
/// decision whose keys span zones answers to each of them: it waits on Redis only when all are closed, and a
/// failure counts against the zone of the node that failed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Zone(usize);

enum Admit {
    Yes,
    Probe,
    No,
}

/// One Redis server or cluster: the connection, the breaker and the counts, shared by every limiter
/// created with the same URL and connection options.
pub struct RedisStore {
    /// This store, for the tasks that connect (see `connection`).
    me: Weak<RedisStore>,
    target: Target,
    shown_url: String,
    options: ConnectOptions,
    link: Mutex<Link>,
    breakers: Vec<Mutex<Breaker>>,
    incident: Mutex<Incident>,
    counts: StoreCounts,
    log: LogFn,
}

/// The connection to Redis of one process.
///
/// A process forked from one that had connected inherits the connection's socket, shared with the
/// parent, and its tasks, which ran on the parent's tokio threads and do not exist in the child. The child
/// connects afresh and never drops what it inherited: that would close nothing it could use and could
/// stop the parent's registration of the socket with the event queue both share.
struct Link {
    pid: u32,
    conn: Option<Conn>,
    /// The connection being made, in a task of its own: concurrent calls wait for this one rather than each
    /// making one, and a call that stops waiting leaves it going for the next.
    attempt: Option<Attempt>,
    /// Whether this process has connected: from then on no call waits on Redis longer than `timeout`.
    connected: bool,
}

/// What a connection attempt came to, once it has.
type Attempt = tokio::sync::watch::Receiver<Option<Result<Conn, BackendError>>>;

impl Link {
    fn new() -> Link {
        Link {
            pid: crate::process::id(),
            conn: None,
            attempt: None,
            connected: false,
        }
    }

    /// This process's link: the inherited one forgotten in a child process.
    fn here(&mut self) -> &mut Link {
        if self.pid != crate::process::id() {
            std::mem::forget(std::mem::replace(self, Link::new()));
        }
        self
    }
}

type Registry = Mutex<Vec<(String, ConnectOptions, Weak<RedisStore>)>>;
static STORES: Registry = Mutex::new(Vec::new());

/// Why Redis did not answer.
#[derive(Clone, Debug)]
pub enum BackendError {
    Timeout,
    /// The connection was not made within the call's timeout; the attempt goes on in its own task.
    Connecting,
    Redis(RedisError),
    Breaker,
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendError::Timeout => f.write_str("timed out"),
            BackendError::Connecting => f.write_str("timed out connecting"),
            BackendError::Redis(error) => write!(f, "{error}"),
            BackendError::Breaker => f.write_str("breaker open"),
        }
    }
}

impl RedisStore {
    /// The store for `url`, shared with other limiters using the same URL and options.
    pub fn shared(url: &str, options: &ConnectOptions, log: LogFn) -> Result<Arc<RedisStore>, UrlError> {
        let mut stores = STORES.lock();
        stores.retain(|(_, _, store)| store.strong_count() > 0);
        if let Some(store) = stores
            .iter()
            .filter(|(known, known_options, _)| known == url && known_options == options)
            .find_map(|(_, _, store)| store.upgrade())
        {
            return Ok(store);
        }
        let target = parse_target(url, options)?;
        let zones = if matches!(target, Target::Cluster(_)) {
            CLUSTER_ZONES
        } else {
            1
        };
        let store = Arc::new_cyclic(|me| RedisStore {
            me: Weak::clone(me),
            target,
            shown_url: redacted(url),
            options: options.clone(),
            link: Mutex::new(Link::new()),
            breakers: (0..zones).map(|_| Mutex::new(Breaker::default())).collect(),
            incident: Mutex::new(Incident::default()),
            counts: StoreCounts::default(),
            log,
        });
        stores.push((url.to_owned(), options.clone(), Arc::downgrade(&store)));
        Ok(store)
    }

    pub fn counts(&self) -> &StoreCounts {
        &self.counts
    }

    /// The wait `on_backend_error="deny"` tells a refused caller: the breaker's cooldown, at least a second.
    pub fn deny_retry_after_ns(&self) -> u64 {
        u64::try_from(self.options.breaker_cooldown.as_nanos())
            .unwrap_or(u64::MAX)
            .max(1_000_000_000)
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self.target, Target::Cluster(_))
    }

    /// Whether any breaker is open: some requests skip Redis now.
    pub fn breaker_open(&self) -> bool {
        self.breakers.iter().any(|breaker| breaker.lock().open_until.is_some())
    }

    /// The breaker zone of a call whose first Redis key is `key`.
    pub fn zone(&self, key: &str) -> Zone {
        if self.breakers.len() == 1 {
            Zone(0)
        } else {
            Zone(usize::from(cluster_slot(key)) / SLOTS_PER_ZONE)
        }
    }

    pub fn url(&self) -> &str {
        &self.shown_url
    }

    fn admit(&self, zone: Zone) -> Admit {
        let mut breaker = self.breakers[zone.0].lock();
        match breaker.open_until {
            None => Admit::Yes,
            // While a connection is being made the attempt is the probe: the others do not wait on it.
            Some(until) if Instant::now() >= until && !breaker.probing && !self.attempting() => {
                breaker.probing = true;
                Admit::Probe
            }
            Some(_) => Admit::No,
        }
    }

    fn succeeded(&self, zone: Zone) {
        {
            let mut breaker = self.breakers[zone.0].lock();
            if breaker.is_healthy() && !breaker.probing {
                drop(breaker);
                if self.incident.lock().started.is_none() {
                    return; // the common case: nothing was wrong
                }
            } else {
                *breaker = Breaker::default();
            }
        }
        let mut incident = self.incident.lock();
        let Some(started) = incident.started else {
            return;
        };
        if !self.breakers.iter().all(|breaker| breaker.lock().is_healthy()) {
            return; // another zone (a node still down) keeps the incident going
        }
        incident.started = None;
        let fallbacks = self.counts.fallbacks.load(Ordering::Relaxed) - incident.fallbacks_at_start;
        drop(incident);
        (self.log)(
            false,
            &format!(
                "ferrolimit: Redis at {} answers again after {:.1} s; {fallbacks} decisions were made without it",
                self.shown_url,
                started.elapsed().as_secs_f64()
            ),
        );
    }

    fn failed(&self, zone: Zone, error: &BackendError, policy: OnBackendError) {
        self.counts.backend_errors.fetch_add(1, Ordering::Relaxed);
        if matches!(error, BackendError::Timeout | BackendError::Connecting) {
            self.counts.timeouts.fetch_add(1, Ordering::Relaxed);
        }
        {
            let mut breaker = self.breakers[zone.0].lock();
            breaker.failures = breaker.failures.saturating_add(1);
            let probe_failed = breaker.probing;
            breaker.probing = false;
            if matches!(error, BackendError::Connecting) {
                // The attempt goes on and decides for the call that gave up on it (see `attempted`); an open
                // breaker stays as it is, letting no call probe meanwhile (see `admit`).
                if breaker.failures >= self.options.breaker_failures {
                    breaker
                        .open_until
                        .get_or_insert_with(|| Instant::now() + self.options.breaker_cooldown);
                }
            } else if probe_failed || breaker.failures >= self.options.breaker_failures {
                breaker.open_until = Some(Instant::now() + self.options.breaker_cooldown);
                if !self.is_cluster() {
                    // The probe after the cooldown connects afresh instead of waiting on a dead connection.
                    // (A cluster connection reconnects node by node by itself; dropping it would cut off the
                    // live nodes too.)
                    self.link.lock().here().conn = None;
                }
            }
        }
        let mut incident = self.incident.lock();
        if incident.started.is_none() {
            incident.started = Some(Instant::now());
            incident.fallbacks_at_start = self.counts.fallbacks.load(Ordering::Relaxed);
            drop(incident);
            self.counts.incidents.fetch_add(1, Ordering::Relaxed);
            (self.log)(
                true,
                &format!(
                    "ferrolimit: Redis at {} failed ({error}); deciding with on_backend_error={:?} until it answers \
                     again (counted in stats())",
                    self.shown_url,
                    policy.name()
                ),
            );
        }
    }

    /// Whether this process is making a connection now.
    fn attempting(&self) -> bool {
        let link = self.link.lock();
        link.pid == crate::process::id() && link.attempt.is_some()
    }

    /// This process's connection, or the attempt to make one (started now if none is under way).
    fn link_state(&self) -> Result<Conn, Attempt> {
        let mut link = self.link.lock();
        let link = link.here();
        if let Some(conn) = &link.conn {
            return Ok(conn.clone());
        }
        // An attempt whose task is gone without an outcome (its runtime shut down) is replaced.
        let attempt = match &link.attempt {
            Some(attempt) if attempt.borrow().is_some() || attempt.has_changed().is_ok() => attempt.clone(),
            _ => {
                let attempt = self.attempt(link.pid);
                link.attempt = Some(attempt.clone());
                attempt
            }
        };
        Err(attempt)
    }

    /// Starts connecting in a task of its own, which may take `connect_timeout` whatever its callers' deadlines.
    fn attempt(&self, pid: u32) -> Attempt {
        let (outcome, attempt) = tokio::sync::watch::channel(None);
        let target = self.target.clone();
        let ConnectOptions {
            connect_timeout,
            timeout,
            ..
        } = self.options;
        let store = Weak::clone(&self.me);
        let mine = attempt.clone();
        tokio::spawn(async move {
            let connect = async {
                match target {
                    Target::Single(client) => {
                        let config = ConnectionManagerConfig::new()
                            .set_connection_timeout(Some(connect_timeout))
                            .set_response_timeout(Some(timeout))
                            .set_number_of_retries(1)
                            .set_max_delay(Duration::from_millis(100));
                        ConnectionManager::new_with_config(*client, config)
                            .await
                            .map(Conn::Single)
                    }
                    Target::Cluster(client) => client.get_async_connection().await.map(Conn::Cluster),
                }
            };
            let made = tokio::time::timeout(connect_timeout, connect)
                .await
                .map_err(|_| BackendError::Timeout)
                .and_then(|made| made.map_err(BackendError::Redis));
            if let Some(store) = store.upgrade() {
                store.attempted(pid, &mine, &made);
            }
            outcome.send_replace(Some(made));
        });
        attempt
    }

    /// Records what the attempt `attempt` came to. A call may have given up waiting on it (`Connecting`), leaving
    /// it to decide for the breakers: a new connection lets the next call probe at once, a failure keeps every
    /// open breaker open for another cooldown. No call probes before that is done (see `admit`).
    fn attempted(&self, pid: u32, attempt: &Attempt, made: &Result<Conn, BackendError>) {
        // This process's link, and this attempt's: a task runs in the process that spawned it, and a child forked
        // since has a link of its own, which this connection must never reach.
        let ours = |link: &Link| {
            link.pid == pid
                && crate::process::id() == pid
                && link.attempt.as_ref().is_some_and(|known| known.same_channel(attempt))
        };
        if !ours(&self.link.lock()) {
            return;
        }
        let now = Instant::now();
        if made.is_err() {
            self.reopen(now + self.options.breaker_cooldown);
        }
        {
            let mut link = self.link.lock();
            if !ours(&link) {
                return;
            }
            link.attempt = None;
            if let Ok(conn) = made {
                link.conn = Some(conn.clone());
                link.connected = true;
            }
        }
        if made.is_ok() {
            self.reopen(now);
        }
    }

    /// Sets every open breaker to let a call probe at `until`.
    fn reopen(&self, until: Instant) {
        for breaker in &self.breakers {
            let mut breaker = breaker.lock();
            if breaker.open_until.is_some() {
                breaker.open_until = Some(until);
            }
        }
    }

    /// When a call starting now must have its answer, however many commands it sends: `timeout` from now once
    /// this process has connected, before that (the first connection) `connect_timeout` more.
    fn deadline(&self) -> tokio::time::Instant {
        let connected = {
            let link = self.link.lock();
            link.pid == crate::process::id() && link.connected
        };
        let budget = if connected {
            self.options.timeout
        } else {
            self.options.timeout + self.options.connect_timeout
        };
        tokio::time::Instant::now() + budget
    }

    /// This process's connection, waited for until `deadline` at most. A call that cannot wait any longer leaves
    /// the attempt to connect going, and fails with `Connecting`.
    async fn connection(&self, deadline: tokio::time::Instant) -> Result<Conn, BackendError> {
        let mut attempt = match self.link_state() {
            Ok(conn) => return Ok(conn),
            Err(attempt) => attempt,
        };
        let made = tokio::time::timeout_at(deadline, async {
            match attempt.wait_for(Option::is_some).await {
                Ok(made) => made.clone().expect("waited for an outcome"),
                Err(_) => Err(BackendError::Timeout), // the task was dropped: its runtime shut down
            }
        })
        .await;
        made.map_err(|_| BackendError::Connecting)?
    }

    /// Runs `script` with `keys` and `args`; `Err` when Redis did not answer by `deadline` (see `deadline`).
    async fn eval(
        &self,
        script: &Script,
        keys: &[String],
        args: &[String],
        deadline: tokio::time::Instant,
    ) -> Result<Vec<i64>, BackendError> {
        self.eval_sent(script, keys, args, deadline)
            .await
            .map_err(|failed| failed.error)
    }

    /// `eval`, a failure telling whether the script may have reached Redis: not when no connection was made in
    /// time, whether the attempt was still going (`Connecting`) or had failed, nor when the connection was refused.
    async fn eval_sent(
        &self,
        script: &Script,
        keys: &[String],
        args: &[String],
        deadline: tokio::time::Instant,
    ) -> Result<Vec<i64>, Unanswered> {
        let mut conn = self
            .connection(deadline)
            .await
            .map_err(|error| Unanswered { error, sent: false })?;
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(key);
        }
        for arg in args {
            invocation.arg(arg);
        }
        self.counts.redis_calls.fetch_add(1, Ordering::Relaxed);
        let call = async {
            match &mut conn {
                Conn::Single(conn) => invocation.invoke_async(conn).await,
                Conn::Cluster(conn) => invocation.invoke_async(conn).await,
            }
        };
        answered(tokio::time::timeout_at(deadline, call).await).map_err(|error| {
            // The connection manager reconnecting to a server that refuses it sends nothing.
            let sent = !matches!(&error, BackendError::Redis(error) if error.is_connection_refusal());
            Unanswered { error, sent }
        })
    }

    /// Runs one plain command on the connection the scripts use, within the call's timeout.
    async fn command<T: redis::FromRedisValue>(&self, command: redis::Cmd) -> Result<T, BackendError> {
        let deadline = self.deadline();
        let mut conn = self.connection(deadline).await?;
        let call = async {
            match &mut conn {
                Conn::Single(conn) => command.query_async(conn).await,
                Conn::Cluster(conn) => command.query_async(conn).await,
            }
        };
        answered(tokio::time::timeout_at(deadline, call).await)
    }

    /// One `PING` on the connection the scripts use: the floor a decision's round trip is measured against.
    pub async fn ping(&self) -> Result<(), BackendError> {
        self.command::<String>(redis::cmd("PING")).await.map(|_| ())
    }

    async fn delete(&self, keys: &[String]) -> Result<(), BackendError> {
        let mut command = redis::cmd("DEL");
        command.arg(keys);
        self.command::<i64>(command).await.map(|_| ())
    }
}

/// Why a call had no answer, and whether its command went out to Redis (which may run it yet).
pub struct Unanswered {
    pub error: BackendError,
    pub sent: bool,
}

/// A reply within the deadline, or why there was none.
fn answered<T>(reply: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>) -> Result<T, BackendError> {
    match reply {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) if error.is_timeout() => Err(BackendError::Timeout),
        Ok(Err(error)) => Err(BackendError::Redis(error)),
        Err(_) => Err(BackendError::Timeout),
    }
}

struct ProbeGuard<'a> {
    store: &'a RedisStore,
    zone: Zone,
    armed: bool,
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.store.breakers[self.zone.0].lock().probing = false;
        }
    }
}

/// Whether Redis Cluster would read no hash tag in keys starting with `prefix` although it has braces: its first
/// `{` is followed at once by `}` (an empty tag, which Redis Cluster ignores, hashing the whole key). The keys of
/// one decision would then land in different slots.
pub fn has_empty_hash_tag(prefix: &str) -> bool {
    prefix.find('{').is_some_and(|open| prefix[open + 1..].starts_with('}'))
}

/// `{prefix}{algorithm}:{{key}}`, the start of every Redis key of `key`. The key is the cluster hash tag, so `{`,
/// `}` (and `%`, to keep the escape one-to-one) are percent-escaped: a route template such as `/users/{id}`
/// must not cut the tag short and put every client of the route in one slot. The empty key is written `%`,
/// which no escaped key is: an empty tag `{}` is no tag to Redis Cluster, which would then hash each Redis key
/// of the key whole and refuse a script given two of them. Keys longer than `MAX_KEY_BYTES` are replaced by
/// their SHA-1.
pub fn tagged_key(prefix: &str, algorithm: &str, key: &str) -> String {
    let escaped;
    let key = if key.is_empty() {
        "%"
    } else if key.bytes().any(|byte| matches!(byte, b'{' | b'}' | b'%')) {
        escaped = key.replace('%', "%25").replace('{', "%7B").replace('}', "%7D");
        escaped.as_str()
    } else {
        key
    };
    let digest;
    let key = if key.len() > MAX_KEY_BYTES {
        digest = format!("sha1:{}", sha1_smol::Sha1::from(key).digest());
        digest.as_str()
    } else {
        key
    };
    format!("{prefix}{algorithm}:{{{key}}}")
}

/// CRC16-XMODEM of the key's hash tag (or the whole key), modulo 16384: Redis Cluster's slot.
pub fn cluster_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes
        .iter()
        .position(|&byte| byte == b'{')
        .and_then(|open| {
            bytes[open + 1..]
                .iter()
                .position(|&byte| byte == b'}')
                .filter(|&len| len > 0)
                .map(|len| &bytes[open + 1..=open + len])
        })
        .unwrap_or(bytes);
    let mut crc: u16 = 0;
    for &byte in tagged {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 == 0 {
                crc << 1
            } else {
                (crc << 1) ^ 0x1021
            };
        }
    }
    crc % 16_384
}

/// What a call asks of the limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Test = 0,
    Hit = 1,
    Peek = 2,
}

/// Where a decision came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Redis,
    DenyCache,
    Fallback,
}

/// A decision and the time it was made at (Redis server time, or the local clock on fallback).
#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    pub decision: Decision,
    pub now_ns: u64,
    pub source: Source,
}

/// Per-limiter settings.
#[derive(Clone, Debug)]
pub struct LimiterOptions {
    pub key_prefix: String,
    pub on_backend_error: OnBackendError,
    /// Entries of the local cache of denied requests; 0 turns it off.
    pub deny_cache_size: usize,
    /// Pass the fallback limiter's clock into the scripts instead of Redis `TIME` (tests only).
    pub use_local_clock: bool,
}

struct Denied {
    until: Instant,
    at: Instant,
    decision: Decision,
    now_ns: u64,
}

/// A limiter on Redis: the algorithm's script, the key scheme, the failure policy, the memory fallback.
pub struct RedisLimiter {
    store: Arc<RedisStore>,
    kind: AlgorithmKind,
    script: Script,
    options: LimiterOptions,
    fallback: Arc<AnyLimiter>,
    deny_cache: Mutex<HashMap<String, Denied>>,
    allowed: AtomicU64,
    denied: AtomicU64,
}

fn script_text(kind: AlgorithmKind) -> String {
    let algorithm = match kind {
        AlgorithmKind::Gcra => include_str!("lua/gcra.lua"),
        AlgorithmKind::TokenBucket | AlgorithmKind::LeakyBucket => include_str!("lua/bucket.lua"),
        AlgorithmKind::FixedWindow => include_str!("lua/fixed_window.lua"),
        AlgorithmKind::SlidingWindowCounter => include_str!("lua/sliding_window.lua"),
        AlgorithmKind::SlidingWindowLog => include_str!("lua/sliding_log.lua"),
    };
    [include_str!("lua/prelude.lua"), algorithm, include_str!("lua/main.lua")].concat()
}

/// A limit of one call: the Redis key, its rate, the units the call takes from it, and the caller's position
/// of the limit that named it first (a decision's `index`).
struct Limit {
    name: String,
    rate: Rate,
    cost: u64,
    index: usize,
}

impl RedisLimiter {
    pub fn new(
        store: Arc<RedisStore>,
        kind: AlgorithmKind,
        options: LimiterOptions,
        fallback: Arc<AnyLimiter>,
    ) -> Self {
        RedisLimiter {
            store,
            kind,
            script: Script::new(&script_text(kind)),
            options,
            fallback,
            deny_cache: Mutex::new(HashMap::new()),
            allowed: AtomicU64::new(0),
            denied: AtomicU64::new(0),
        }
    }

    pub fn store(&self) -> &RedisStore {
        &self.store
    }

    pub fn options(&self) -> &LimiterOptions {
        &self.options
    }

    /// (allowed, denied) decided by this limiter, fallbacks included.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.allowed.load(Ordering::Relaxed),
            self.denied.load(Ordering::Relaxed),
        )
    }

    /// The Redis key of `key` under `rate`: `{prefix}{algorithm}:{{key}}:{limit}:{period_us}` (see `tagged_key`).
    pub fn key_name(&self, key: &str, rate: Rate) -> String {
        format!(
            "{}:{}:{}",
            tagged_key(&self.options.key_prefix, self.kind.name(), key),
            rate.limit(),
            rate.period_ns() / NANOS_PER_MICRO
        )
    }

    /// One limit per distinct Redis key: the same counter named twice in one call is charged once, at the
    /// largest cost named for it, and reported as the first limit that named it, as in memory.
    fn limits(&self, limits: &[CostedLimit<'_>]) -> Vec<Limit> {
        let mut resolved: Vec<Limit> = Vec::with_capacity(limits.iter().map(|(_, rates, _)| rates.len()).sum());
        for (index, &(key, rates, cost)) in limits.iter().enumerate() {
            for &rate in rates {
                let name = self.key_name(key, rate);
                if let Some(limit) = resolved.iter_mut().find(|limit| limit.name == name) {
                    limit.cost = limit.cost.max(cost);
                } else {
                    resolved.push(Limit {
                        name,
                        rate,
                        cost,
                        index,
                    });
                }
            }
        }
        resolved
    }

    /// Decides `limits`, each at its own cost (checks them; commits if `mode` is `Hit` and all pass; a peek
    /// ignores the costs). A Redis failure is decided by the policy, never returned as an error; only a cost
    /// its limit could never admit is.
    pub async fn decide(&self, limits: &[CostedLimit<'_>], mode: Mode) -> Result<Outcome, CostExceedsLimit> {
        if mode != Mode::Peek {
            check_costs(limits)?;
        }
        let mut resolved = self.limits(limits);
        assert!(!resolved.is_empty(), "a decision needs a limit");
        if mode == Mode::Peek {
            for limit in &mut resolved {
                limit.cost = 1;
            }
        }
        // The positions are part of the key: a cached denial names the limit that bound it by position.
        let cache_key = (mode == Mode::Hit && self.options.deny_cache_size > 0).then(|| {
            let mut text = String::new();
            for limit in &resolved {
                text.push_str(&limit.index.to_string());
                text.push(' ');
                text.push_str(&limit.cost.to_string());
                text.push(' ');
                text.push_str(&limit.name);
                text.push('\n');
            }
            text
        });
        if let Some(outcome) = cache_key.as_deref().and_then(|key| self.cached_denial(key)) {
            self.denied.fetch_add(1, Ordering::Relaxed);
            return Ok(outcome);
        }
        let outcome = match self.run(&resolved, mode).await {
            Ok(outcome) => outcome,
            Err((zone, error)) => {
                if let Some(zone) = zone {
                    self.store.failed(zone, &error, self.options.on_backend_error);
                }
                self.store.counts.fallbacks.fetch_add(1, Ordering::Relaxed);
                self.fall_back(limits, &resolved, mode)
            }
        };
        if mode == Mode::Hit {
            let counter = if outcome.decision.allowed {
                &self.allowed
            } else {
                &self.denied
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        if let (Some(key), Source::Redis) = (cache_key, outcome.source) {
            if !outcome.decision.allowed && outcome.decision.retry_after_ns > 0 {
                self.remember_denial(key, &outcome);
            }
        }
        Ok(outcome)
    }

    fn cached_denial(&self, key: &str) -> Option<Outcome> {
        let mut cache = self.deny_cache.lock();
        let entry = cache.get(key)?;
        let now = Instant::now();
        if now >= entry.until {
            cache.remove(key);
            return None;
        }
        let elapsed_ns = u64::try_from(now.duration_since(entry.at).as_nanos()).unwrap_or(u64::MAX);
        let retry_after_ns = entry.decision.retry_after_ns.saturating_sub(elapsed_ns).max(1);
        let decision = Decision {
            retry_after_ns,
            reset_after_ns: entry
                .decision
                .reset_after_ns
                .saturating_sub(elapsed_ns)
                .max(retry_after_ns),
            ..entry.decision
        };
        let now_ns = entry.now_ns + elapsed_ns;
        drop(cache);
        self.store.counts.deny_cache_hits.fetch_add(1, Ordering::Relaxed);
        Some(Outcome {
            decision,
            now_ns,
            source: Source::DenyCache,
        })
    }

    fn remember_denial(&self, key: String, outcome: &Outcome) {
        let mut cache = self.deny_cache.lock();
        if cache.len() >= self.options.deny_cache_size {
            let now = Instant::now();
            cache.retain(|_, entry| entry.until > now);
            if cache.len() >= self.options.deny_cache_size {
                // Forgetting a denial only sends the next request to Redis.
                cache.clear();
            }
        }
        let at = Instant::now();
        cache.insert(
            key,
            Denied {
                until: at + Duration::from_nanos(outcome.decision.retry_after_ns),
                at,
                decision: outcome.decision,
                now_ns: outcome.now_ns,
            },
        );
    }

    /// Decides `limits` in Redis if every breaker zone they touch lets it; a failure comes back with the zone
    /// it counts against (None: a breaker was open, nothing was asked).
    async fn run(&self, limits: &[Limit], mode: Mode) -> Result<Outcome, (Option<Zone>, BackendError)> {
        let mut zones: SmallVec<[Zone; 2]> = SmallVec::new();
        for limit in limits {
            let zone = self.store.zone(&limit.name);
            if !zones.contains(&zone) {
                zones.push(zone);
            }
        }
        // A probe dropped half-way (its awaitable cancelled, or another zone open) must not leave the breaker
        // waiting for it.
        let mut probes: SmallVec<[ProbeGuard<'_>; 2]> = SmallVec::new();
        for &zone in &zones {
            match self.store.admit(zone) {
                Admit::Yes => {}
                Admit::Probe => probes.push(ProbeGuard {
                    store: &self.store,
                    zone,
                    armed: true,
                }),
                Admit::No => return Err((None, BackendError::Breaker)),
            }
        }
        // One deadline for the call, however many slots it asks on a cluster.
        let result = self.run_admitted(limits, mode, self.store.deadline()).await;
        if result.is_ok() {
            for &zone in &zones {
                self.store.succeeded(zone);
            }
        }
        result.map_err(|(zone, error)| (Some(zone), error))
    }

    /// `eval_group`, a failure tagged with the zone of the group's slot.
    async fn eval_in_zone(
        &self,
        limits: &[&Limit],
        mode: Mode,
        deadline: tokio::time::Instant,
    ) -> Result<Outcome, (Zone, BackendError)> {
        self.eval_group(limits, mode, deadline)
            .await
            .map_err(|error| (self.store.zone(&limits[0].name), error))
    }

    async fn run_admitted(
        &self,
        limits: &[Limit],
        mode: Mode,
        deadline: tokio::time::Instant,
    ) -> Result<Outcome, (Zone, BackendError)> {
        if self.store.is_cluster() {
            let mut slots: Vec<u16> = limits.iter().map(|limit| cluster_slot(&limit.name)).collect();
            slots.sort_unstable();
            slots.dedup();
            if slots.len() > 1 {
                let groups: Vec<Vec<&Limit>> = slots
                    .iter()
                    .map(|&slot| {
                        limits
                            .iter()
                            .filter(|limit| cluster_slot(&limit.name) == slot)
                            .collect()
                    })
                    .collect();
                return self.run_across_slots(&groups, mode, deadline).await;
            }
        }
        let all: Vec<&Limit> = limits.iter().collect();
        self.eval_in_zone(&all, mode, deadline).await
    }

    /// Every slot checked first; commits only when all passed, slot by slot.
    async fn run_across_slots(
        &self,
        groups: &[Vec<&Limit>],
        mode: Mode,
        deadline: tokio::time::Instant,
    ) -> Result<Outcome, (Zone, BackendError)> {
        let check_mode = if mode == Mode::Hit { Mode::Test } else { mode };
        let mut outcomes = Vec::with_capacity(groups.len());
        for group in groups {
            outcomes.push(self.eval_in_zone(group, check_mode, deadline).await?);
        }
        if mode == Mode::Hit && outcomes.iter().all(|outcome| outcome.decision.allowed) {
            outcomes.clear();
            for group in groups {
                let outcome = self.eval_in_zone(group, Mode::Hit, deadline).await?;
                let denied = !outcome.decision.allowed;
                outcomes.push(outcome);
                if denied {
                    break;
                }
            }
        }
        let now_ns = outcomes[0].now_ns;
        // The groups go by slot; in the caller's order, equally tight limits name the first, as on one node.
        outcomes.sort_unstable_by_key(|outcome| outcome.decision.index);
        let decision = Decision::tightest(outcomes.into_iter().map(|outcome| outcome.decision)).expect("a group");
        Ok(Outcome {
            decision,
            now_ns,
            source: Source::Redis,
        })
    }

    async fn eval_group(
        &self,
        limits: &[&Limit],
        mode: Mode,
        deadline: tokio::time::Instant,
    ) -> Result<Outcome, BackendError> {
        let keys: Vec<String> = limits.iter().map(|limit| limit.name.clone()).collect();
        let now_arg = if self.options.use_local_clock {
            (self.fallback.now_ns() / NANOS_PER_MICRO).to_string()
        } else {
            String::new()
        };
        // One cost for the call when its limits share it (the common case, and always for one limit); else each
        // key's own cost after the rates (see prelude.lua).
        let cost = limits[0].cost;
        let each_cost = limits.iter().any(|limit| limit.cost != cost);
        let mut args = Vec::with_capacity(3 + if each_cost { 3 } else { 2 } * limits.len());
        args.push(now_arg);
        args.push(cost.to_string());
        args.push((mode as u8).to_string());
        for limit in limits {
            args.push(limit.rate.limit().to_string());
            args.push((limit.rate.period_ns() / NANOS_PER_MICRO).max(1).to_string());
        }
        if each_cost {
            args.extend(limits.iter().map(|limit| limit.cost.to_string()));
        }
        let reply = self.store.eval(&self.script, &keys, &args, deadline).await?;
        if reply.len() != 2 + 4 * limits.len() {
            return Err(BackendError::Redis(RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "the limiter script answered with the wrong number of values",
            ))));
        }
        let micros = |value: i64| u64::try_from(value).unwrap_or(0).saturating_mul(NANOS_PER_MICRO);
        let decisions = limits.iter().enumerate().map(|(index, limit)| {
            let fields = &reply[2 + 4 * index..6 + 4 * index];
            Decision {
                allowed: fields[0] == 1,
                limit: limit.rate.limit(),
                remaining: u64::try_from(fields[1]).unwrap_or(0),
                reset_after_ns: micros(fields[2]),
                retry_after_ns: micros(fields[3]),
                period_ns: limit.rate.period_ns(),
                index: limit.index,
            }
        });
        Ok(Outcome {
            decision: Decision::tightest(decisions).expect("a limit"),
            now_ns: micros(reply[0]),
            source: Source::Redis,
        })
    }

    fn fall_back(&self, limits: &[CostedLimit<'_>], resolved: &[Limit], mode: Mode) -> Outcome {
        // Allowing or denying without Redis, the limit reported is the one a fresh request would leave least of
        // (of equals, the longest period, then the first named); the memory limiter reports its own binding one.
        let taken = |limit: &Limit| if mode == Mode::Peek { 0 } else { limit.cost };
        let (tightest, taken, index) = resolved
            .iter()
            .map(|limit| (limit.rate, taken(limit), limit.index))
            .min_by_key(|&(rate, taken, index)| (rate.limit() - taken, std::cmp::Reverse(rate.period_ns()), index))
            .expect("a limit");
        let (decision, now_ns) = match self.options.on_backend_error {
            OnBackendError::Memory => match mode {
                Mode::Hit => self.fallback.hit(limits).expect("cost checked"),
                Mode::Test => self.fallback.test(limits).expect("cost checked"),
                Mode::Peek => {
                    let uncosted: SmallVec<[(&str, &[Rate]); 4]> =
                        limits.iter().map(|&(key, rates, _)| (key, rates)).collect();
                    self.fallback.peek(&uncosted)
                }
            },
            OnBackendError::Allow => (
                Decision {
                    allowed: true,
                    limit: tightest.limit(),
                    remaining: tightest.limit() - taken,
                    reset_after_ns: 0,
                    retry_after_ns: 0,
                    period_ns: tightest.period_ns(),
                    index,
                },
                self.fallback.now_ns(),
            ),
            OnBackendError::Deny => {
                let retry_after_ns = self.store.deny_retry_after_ns();
                (
                    Decision {
                        allowed: false,
                        limit: tightest.limit(),
                        remaining: 0,
                        // Reported as the wait: a denial's reset is never before its retry.
                        reset_after_ns: retry_after_ns,
                        retry_after_ns,
                        period_ns: tightest.period_ns(),
                        index,
                    },
                    self.fallback.now_ns(),
                )
            }
        };
        Outcome {
            decision,
            now_ns,
            source: Source::Fallback,
        }
    }

    /// Forgets `key` in Redis and in the local fallback. Returns whether Redis confirmed it.
    pub async fn reset(&self, key: &str, rates: &[Rate]) -> bool {
        self.fallback.reset(key, rates);
        self.deny_cache.lock().clear();
        let names: Vec<String> = rates.iter().map(|&rate| self.key_name(key, rate)).collect();
        let Some(zone) = names.first().map(|name| self.store.zone(name)) else {
            return true;
        };
        let admit = self.store.admit(zone);
        if matches!(admit, Admit::No) {
            return false;
        }
        let _probe = ProbeGuard {
            store: &self.store,
            zone,
            armed: matches!(admit, Admit::Probe),
        };
        match self.store.delete(&names).await {
            Ok(()) => {
                self.store.succeeded(zone);
                true
            }
            Err(error) => {
                self.store.failed(zone, &error, self.options.on_backend_error);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> ConnectOptions {
        ConnectOptions::default()
    }

    #[test]
    fn slots_follow_the_hash_tag() {
        assert_eq!(cluster_slot("foo"), 12_182);
        assert_eq!(cluster_slot("123456789"), 12_739);
        assert_eq!(cluster_slot("a:{user:1}:x"), cluster_slot("b:{user:1}:y"));
        assert_eq!(cluster_slot("{}x"), cluster_slot("{}x"));
        assert_ne!(
            cluster_slot("{}x"),
            cluster_slot("{}y"),
            "an empty tag hashes the whole key"
        );
    }

    #[test]
    fn urls_are_checked_and_passwords_never_shown() {
        assert!(parse_target("redis://localhost:6379/0", &options()).is_ok());
        assert!(parse_target("rediss://user:secret@localhost:6380", &options()).is_ok());
        assert!(parse_target("redis+unix:///run/redis.sock", &options()).is_ok());
        assert!(parse_target("redis+cluster://127.0.0.1:7000,127.0.0.1:7001", &options()).is_ok());
        for bad in [
            "redis+cluster://",
            "mongodb://x",
            "redis//x",
            "redis+cluster://:secret@",
        ] {
            let Err(error) = parse_target(bad, &options()) else {
                panic!("{bad} was accepted");
            };
            assert!(error.to_string().contains("redis://localhost:6379/0"), "{error}");
        }
        let Err(error) = parse_target("redis://u:secret@host:notaport", &options()) else {
            panic!("a bad port was accepted");
        };
        assert!(!error.to_string().contains("secret"), "{error}");
        assert_eq!(redacted("redis://u:secret@h:1/0"), "redis://u:***@h:1/0");
    }

    fn database_of(url: &str) -> Result<i64, String> {
        match parse_target(url, &options()) {
            Ok(Target::Single(client)) => Ok(client.get_connection_info().redis_settings().db()),
            Ok(Target::Cluster(_)) => Ok(0),
            Err(error) => Err(error.to_string()),
        }
    }

    #[test]
    fn databases_are_checked_and_read_from_the_path_or_the_query() {
        assert_eq!(database_of("redis://h:1"), Ok(0));
        assert_eq!(database_of("redis://h:1/3"), Ok(3));
        assert_eq!(database_of("redis://h:1?db=2"), Ok(2));
        assert_eq!(database_of("redis://h:1/?db=2"), Ok(2));
        assert_eq!(database_of("redis://h:1/2?db=2"), Ok(2));
        assert_eq!(
            database_of("rediss://u:p@h:1/99"),
            Ok(99),
            "a server may have more than 16"
        );
        assert_eq!(database_of("redis+unix:///run/r.sock?db=4"), Ok(4));
        assert_eq!(database_of("REDIS://h:1/5"), Ok(5), "schemes are case-insensitive");
        assert_eq!(database_of("Redis+Cluster://h:1,h:2"), Ok(0));
        for (bad, says) in [
            ("redis://h:1/-1", "names the database \"-1\""),
            ("redis://h:1/abc", "names the database \"abc\""),
            ("redis://h:1?db=+1", "names the database \"+1\""),
            ("redis://h:1/99999999999", "names the database \"99999999999\""),
            ("redis+unix:///run/r.sock?db=-2", "names the database \"-2\""),
            ("redis://h:1/1?db=2", "names two databases, 1 and 2"),
            ("redis+cluster://h:1,h:2/3", "a database other than 0"),
        ] {
            let error = database_of(bad).expect_err(bad);
            assert!(error.contains(says), "{bad}: {error}");
        }
    }

    #[test]
    fn long_keys_are_digested() {
        let store = RedisStore::shared("redis://127.0.0.1:1", &options(), Arc::new(|_, _| {})).unwrap();
        let fallback = Arc::new(AnyLimiter::new(
            AlgorithmKind::Gcra,
            crate::clock::Clock::monotonic(),
            10,
            crate::store::memory::OnFull::Allow,
        ));
        let limiter = RedisLimiter::new(
            store,
            AlgorithmKind::Gcra,
            LimiterOptions {
                key_prefix: "p:".to_owned(),
                on_backend_error: OnBackendError::Allow,
                deny_cache_size: 0,
                use_local_clock: false,
            },
            fallback,
        );
        let rate = crate::rate::parse_rates("10/min").unwrap()[0];
        assert_eq!(limiter.key_name("user:1", rate), "p:gcra:{user:1}:10:60000000");
        let route = |ip: &str| limiter.key_name(&format!("GET /users/{{id}}:ip:{ip}"), rate);
        assert_eq!(route("1"), "p:gcra:{GET /users/%7Bid%7D:ip:1}:10:60000000");
        assert_ne!(
            cluster_slot(&route("1")),
            cluster_slot(&route("2")),
            "clients of one route spread over slots"
        );
        assert_ne!(limiter.key_name("a{b", rate), limiter.key_name("a%7Bb", rate));
        assert_eq!(
            limiter.key_name("", rate),
            "p:gcra:{%}:10:60000000",
            "an empty tag would be no tag"
        );
        assert_ne!(limiter.key_name("", rate), limiter.key_name("%", rate));
        let long = "x".repeat(10_000);
        assert!(limiter.key_name(&long, rate).len() < 100);
    }
}
