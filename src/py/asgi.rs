//! What the ASGI layers (`ferrolimit.starlette`, `ferrolimit.fastapi`) call on every request: the common
//! case, one limit on a memory limiter keyed by the client's address (resolved here, behind trusted proxies
//! too), decided in one native call.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use smallvec::SmallVec;

use super::errors::Error;
use super::headers::Pending;
use super::{send, Cost, Decision, HeaderRenderer, Limiter, Quota};
use crate::client;
use crate::limiter::{Capacity, CostExceedsLimit};
use crate::rate::Rate;

/// The scope key of a request's pending response fields, a `Pending`.
pub const SCOPE_PENDING: &str = "ferrolimit.pending";
/// The scope key of the `FastLimit` that serves the app.
pub const SCOPE_ENGINE: &str = "ferrolimit";

/// Requests allowed, refused, and refused in a dry run (so let through), for one limit name.
#[pyclass(module = "ferrolimit._core", frozen)]
#[derive(Default)]
pub struct Counts {
    allowed: AtomicU64,
    limited: AtomicU64,
    dry_run_limited: AtomicU64,
}

#[pymethods]
impl Counts {
    #[new]
    fn py_new() -> Self {
        Counts::default()
    }

    /// Requests allowed.
    #[getter]
    fn allowed(&self) -> u64 {
        self.allowed.load(Ordering::Relaxed)
    }

    /// Requests refused.
    #[getter]
    fn limited(&self) -> u64 {
        self.limited.load(Ordering::Relaxed)
    }

    /// Requests a dry run would have refused, let through.
    #[getter]
    fn dry_run_limited(&self) -> u64 {
        self.dry_run_limited.load(Ordering::Relaxed)
    }

    /// Counts more requests.
    #[pyo3(signature = (*, allowed = 0, limited = 0, dry_run_limited = 0))]
    fn add(&self, allowed: u64, limited: u64, dry_run_limited: u64) {
        self.allowed.fetch_add(allowed, Ordering::Relaxed);
        self.limited.fetch_add(limited, Ordering::Relaxed);
        self.dry_run_limited.fetch_add(dry_run_limited, Ordering::Relaxed);
    }

    /// `{"allowed": n, "limited": n, "dry_run_limited": n}`.
    fn as_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let counts = PyDict::new(py);
        counts.set_item("allowed", self.allowed())?;
        counts.set_item("limited", self.limited())?;
        counts.set_item("dry_run_limited", self.dry_run_limited())?;
        Ok(counts)
    }

    fn __repr__(&self) -> String {
        format!(
            "Counts(allowed={}, limited={}, dry_run_limited={})",
            self.allowed(),
            self.limited(),
            self.dry_run_limited()
        )
    }
}

/// The peer's address as the server put it in the scope (`scope["client"][0]`), if it is a str.
fn peer_of<'py>(scope: &Bound<'py, PyDict>) -> PyResult<Option<Bound<'py, PyString>>> {
    let Some(client) = scope.get_item(intern!(scope.py(), "client"))? else {
        return Ok(None);
    };
    let host = if let Ok(pair) = client.cast::<PyTuple>() {
        pair.get_item(0).ok()
    } else if let Ok(pair) = client.cast::<PyList>() {
        pair.get_item(0).ok()
    } else {
        None
    };
    Ok(host.and_then(|host| host.cast_into::<PyString>().ok()))
}

/// Every value of the forwarding header in the scope's raw ASGI headers, in order; None when the headers
/// are not the `[(bytes, bytes), ...]` ASGI describes.
fn header_values<'py>(scope: &Bound<'py, PyDict>, name: &[u8]) -> PyResult<Option<Vec<Bound<'py, PyBytes>>>> {
    let Some(headers) = scope.get_item(intern!(scope.py(), "headers"))? else {
        return Ok(Some(Vec::new()));
    };
    let Ok(headers) = headers.try_iter() else {
        return Ok(None);
    };
    let mut values = Vec::new();
    for pair in headers {
        let pair = pair?;
        let (key, value) = match pair.cast::<PyTuple>() {
            Ok(pair) if pair.len() == 2 => (pair.get_item(0)?, pair.get_item(1)?),
            _ => match (pair.get_item(0), pair.get_item(1)) {
                (Ok(key), Ok(value)) => (key, value),
                _ => return Ok(None),
            },
        };
        let Ok(key) = key.cast_into::<PyBytes>() else {
            return Ok(None);
        };
        if key.as_bytes().eq_ignore_ascii_case(name) {
            let Ok(value) = value.cast_into::<PyBytes>() else {
                return Ok(None);
            };
            values.push(value);
        }
    }
    Ok(Some(values))
}

/// Header bytes as text, decoded as latin-1 (borrowed when they are ASCII, as they nearly always are).
fn latin1(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) if text.is_ascii() => Cow::Borrowed(text),
        _ => Cow::Owned(bytes.iter().map(|&byte| char::from(byte)).collect()),
    }
}

/// `(network address, prefix length)` pairs as a `NetSet`; an error names the first that is not a network.
fn net_set(networks: Vec<(String, u8)>) -> PyResult<client::NetSet> {
    let mut parsed = Vec::with_capacity(networks.len());
    for (address, prefix) in networks {
        parsed.push((ip_address(&address)?, prefix));
    }
    Ok(client::NetSet::new(parsed)
        .map_err(|(address, prefix)| Error::Value(format!("{address}/{prefix} is not a network")))?)
}

fn ip_address(text: &str) -> PyResult<std::net::IpAddr> {
    Ok(text
        .parse()
        .map_err(|_| Error::Value(format!("{text:?} is not an IP address")))?)
}

/// The addresses and networks whose clients are exempt from a limit, matched as `ferrolimit.keys.IPSet`
/// matches them (which makes one with `IPSet.native()`).
#[pyclass(module = "ferrolimit._core", frozen)]
pub struct AddressSet {
    set: client::AddressSet,
}

#[pymethods]
impl AddressSet {
    /// `exact`: single addresses, written as Python writes them; `networks`: `(network address, prefix
    /// length)` pairs.
    #[new]
    fn py_new(exact: Vec<String>, networks: Vec<(String, u8)>) -> PyResult<Self> {
        for address in &exact {
            ip_address(address)?;
        }
        Ok(AddressSet {
            set: client::AddressSet::new(exact, net_set(networks)?),
        })
    }

    /// Whether `address` (a str) is in the set; False for anything else.
    fn __contains__(&self, address: &Bound<'_, PyAny>) -> bool {
        address
            .cast::<PyString>()
            .ok()
            .and_then(|text| text.to_str().ok().map(|text| self.set.contains(text)))
            .unwrap_or(false)
    }
}

/// How the ASGI layers find the client of a request: `ferrolimit.keys.ClientIdentifier`'s rules, run
/// natively on the common path (see `crate::client`).
#[pyclass(module = "ferrolimit._core", frozen)]
pub struct ClientResolver {
    resolver: client::Resolver,
}

impl ClientResolver {
    /// Runs `then` with the client address and key of the request in `scope`; None, having run nothing, when
    /// the client cannot be resolved here (no peer, a proxy that sent garbage, headers not as ASGI describes).
    fn with_client<R>(
        &self,
        scope: &Bound<'_, PyDict>,
        then: impl FnOnce(&str, &str) -> PyResult<R>,
    ) -> PyResult<Option<R>> {
        let Some(peer) = peer_of(scope)? else {
            return Ok(None);
        };
        let Ok(peer) = peer.to_str() else {
            return Ok(None);
        };
        let reads_headers = self.resolver.reads_headers();
        if !reads_headers && !peer.is_empty() && !peer.contains(':') {
            return then(peer, peer).map(Some); // an IPv4 peer and no proxy: the common case
        }
        let raw = if reads_headers {
            match header_values(scope, self.resolver.header.name())? {
                Some(raw) => raw,
                None => return Ok(None),
            }
        } else {
            Vec::new()
        };
        let values: SmallVec<[Cow<'_, str>; 2]> = raw.iter().map(|value| latin1(value.as_bytes())).collect();
        match self.resolver.resolve(peer, &values) {
            Some(client) => then(&client.address, &client.key).map(Some),
            None => Ok(None),
        }
    }
}

#[pymethods]
impl ClientResolver {
    /// `hops` proxies in front of every request, or the `trusted` proxies' networks as (address, prefix
    /// length) pairs; IPv6 clients keyed by their `/ipv6_prefix`; `proxy_header` `"x-forwarded-for"` or
    /// `"forwarded"`.
    #[new]
    #[pyo3(signature = (hops, trusted, ipv6_prefix, proxy_header))]
    fn py_new(hops: usize, trusted: Option<Vec<(String, u8)>>, ipv6_prefix: u8, proxy_header: &str) -> PyResult<Self> {
        let header = match proxy_header {
            "x-forwarded-for" => client::ProxyHeader::XForwardedFor,
            "forwarded" => client::ProxyHeader::Forwarded,
            other => {
                return Err(Error::Value(format!(
                    "proxy_header must be 'x-forwarded-for' or 'forwarded', got {other:?}"
                ))
                .into())
            }
        };
        if hops > client::MAX_HOPS || !(1..=128).contains(&ipv6_prefix) {
            return Err(Error::Value(format!(
                "hops must be 0 to {} and ipv6_prefix 1 to 128, got {hops} and {ipv6_prefix}",
                client::MAX_HOPS
            ))
            .into());
        }
        let trusted = trusted.map(net_set).transpose()?;
        Ok(ClientResolver {
            resolver: client::Resolver {
                hops,
                trusted,
                ipv6_prefix,
                header,
            },
        })
    }

    /// `(address, key)` of the client of a request from `peer` that carried `values` of the forwarding
    /// header, or None when it cannot be known.
    #[allow(clippy::needless_pass_by_value)] // pyo3 hands a Python list over as an owned Vec
    fn resolve(&self, peer: Option<&str>, values: Vec<String>) -> Option<(String, String)> {
        let client = self.resolver.resolve(peer?, &values)?;
        Some((client.address, client.key))
    }
}

/// One limit as the ASGI layers charge it on every request: a memory limiter, a key prefix, a rate, a cost,
/// how the decision is written on the response, and the counts of its limit name. The key is the prefix
/// followed by the client's address; the decision is offered to the request's pending fields.
#[pyclass(module = "ferrolimit._core", frozen)]
pub struct Charge {
    limiter: Py<Limiter>,
    prefix: String,
    rates: Vec<Rate>,
    cost: u64,
    renderer: Py<HeaderRenderer>,
    policy: String,
    counts: Py<Counts>,
    resolver: Py<ClientResolver>,
    /// Clients let through untouched: not charged, not counted, no fields.
    exempt: Option<client::AddressSet>,
    /// A refusal is only reported (the caller lets the request through), so its fields are not offered.
    dry_run: bool,
}

impl Charge {
    fn is_exempt(&self, address: &str) -> bool {
        self.exempt.as_ref().is_some_and(|exempt| exempt.contains(address))
    }

    /// Decides for `client`, offers the decision to `pending`, and counts it when allowed. A refusal comes
    /// back as a `Decision` for the caller to report; an allowance needs no object.
    fn decide<'py>(&self, py: Python<'py>, client: &str, pending: &Pending) -> PyResult<Option<Bound<'py, Decision>>> {
        let mut key: smallvec::SmallVec<[u8; 128]> = smallvec::SmallVec::new();
        key.extend_from_slice(self.prefix.as_bytes());
        key.extend_from_slice(client.as_bytes());
        let key = std::str::from_utf8(&key).expect("two str joined");
        let limiter = &self.limiter.get().limiter;
        let (decision, now_ns) = limiter
            .hit(&[(key, self.rates.as_slice(), self.cost)])
            .map_err(Error::from)?;
        if decision.allowed || !self.dry_run {
            self.renderer
                .get()
                .offer_to(pending, py, &decision, now_ns, &self.policy)?;
        }
        if decision.allowed {
            self.counts.get().allowed.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        }
        Ok(Some(Bound::new(py, Decision::from_core(decision, now_ns))?))
    }
}

#[pymethods]
impl Charge {
    #[new]
    #[pyo3(signature = (limiter, prefix, quota, cost, renderer, policy, counts, resolver, exempt = None, dry_run = false))]
    #[allow(clippy::too_many_arguments)]
    fn py_new(
        limiter: &Bound<'_, Limiter>,
        prefix: String,
        quota: Option<&Bound<'_, Quota>>,
        cost: Cost,
        renderer: &Bound<'_, HeaderRenderer>,
        policy: String,
        counts: &Bound<'_, Counts>,
        resolver: &Bound<'_, ClientResolver>,
        exempt: Option<&Bound<'_, AddressSet>>,
        dry_run: bool,
    ) -> PyResult<Self> {
        let held = limiter.get();
        if held.remote.is_some() {
            return Err(Error::Value(
                "a Charge decides in memory; a remote store is asked with hit_many_async".to_owned(),
            )
            .into());
        }
        let rates = quota.map_or_else(|| held.quota.rates.clone(), |quota| quota.get().rates.clone());
        super::usable(held.limiter.kind(), &rates, false)?;
        let cost = cost.units(|| Capacity::Rate(rates[0]))?;
        if let Some(rate) = rates.iter().find(|rate| rate.limit() < cost) {
            return Err(Error::from(CostExceedsLimit::of_rate(cost, *rate)).into());
        }
        Ok(Charge {
            limiter: limiter.clone().unbind(),
            prefix,
            rates,
            cost,
            renderer: renderer.clone().unbind(),
            policy,
            counts: counts.clone().unbind(),
            resolver: resolver.clone().unbind(),
            exempt: exempt.map(|exempt| exempt.get().set.clone()),
            dry_run,
        })
    }

    /// A middleware's whole common path for an HTTP `scope`: the client resolved, the decision offered to
    /// the request's pending fields (made, with `send` wrapped to write them, when no outer layer made them).
    /// Returns the `send` to pass on when allowed, `(decision, send, client key)` when refused, and None,
    /// having done nothing, when the client cannot be resolved here.
    fn admit<'py>(&self, scope: &Bound<'py, PyAny>, send: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let py = scope.py();
        let Ok(scope) = scope.cast::<PyDict>() else {
            return Ok(None);
        };
        self.resolver.get().with_client(scope, |address, client| {
            if self.is_exempt(address) {
                return Ok(send.clone());
            }
            let (pending, send) = send::attach(scope, send)?;
            Ok(match self.decide(py, client, pending.get())? {
                None => send,
                Some(refused) => {
                    PyTuple::new(py, [refused.into_any(), send, PyString::new(py, client).into_any()])?.into_any()
                }
            })
        })
    }

    /// The key prefix.
    #[getter]
    fn prefix(&self) -> &str {
        &self.prefix
    }
}

/// Hashes a route's address: a multiplication, its high bits folded into the low ones the table indexes by. The addresses are the app's own route objects, never
/// anything a client chooses, so no keyed hash is needed.
#[derive(Default)]
struct AddressHasher(u64);

impl std::hash::Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_usize(&mut self, address: usize) {
        let mixed = (address as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = mixed ^ (mixed >> 32);
    }
}

type ByAddress<V> = HashMap<usize, V, std::hash::BuildHasherDefault<AddressHasher>>;

/// A route's entry: the route and the `FastLimit` it was planned for (both compared by identity), the path of
/// the mounts it was planned under (see `mount_path`), and its charge.
struct RouteCharge {
    route: Py<PyAny>,
    engine: Py<PyAny>,
    mount: String,
    charge: Py<Charge>,
}

/// The path of the `Mount`s a request went through: `root_path` after Starlette's `app_root_path`, which only a
/// mount sets (as `ferrolimit.keys.mount_path`). None when the scope's values are not str.
fn mount_path(scope: &Bound<'_, PyDict>) -> PyResult<Option<String>> {
    let py = scope.py();
    let Some(app_root) = scope.get_item(intern!(py, "app_root_path"))? else {
        return Ok(Some(String::new()));
    };
    let Ok(app_root) = app_root.cast_into::<PyString>() else {
        return Ok(Some(String::new()));
    };
    let root = scope.get_item(intern!(py, "root_path"))?;
    let Some(root) = root.as_ref().and_then(|root| root.cast::<PyString>().ok()) else {
        return Ok(Some(String::new()));
    };
    let (Ok(app_root), Ok(root)) = (app_root.to_str(), root.to_str()) else {
        return Ok(None);
    };
    Ok(Some(root.strip_prefix(app_root).unwrap_or_default().to_owned()))
}

/// The charges of one FastAPI dependency, per matched route, for the routes where it is the only limit and
/// the common case applies. Bounded by the number of routes.
#[pyclass(module = "ferrolimit._core", frozen)]
#[derive(Default)]
pub struct RouteCharges {
    routes: Mutex<ByAddress<RouteCharge>>,
}

#[pymethods]
impl RouteCharges {
    #[new]
    fn py_new() -> Self {
        RouteCharges::default()
    }

    /// Charges `charge` for `route` served by `engine` and reached under the mount path `mount` from now on;
    /// None forgets the route.
    #[pyo3(signature = (route, engine, charge, mount))]
    fn set(
        &self,
        route: &Bound<'_, PyAny>,
        engine: &Bound<'_, PyAny>,
        charge: Option<&Bound<'_, Charge>>,
        mount: String,
    ) {
        let entry = charge.map(|charge| RouteCharge {
            route: route.clone().unbind(),
            engine: engine.clone().unbind(),
            mount,
            charge: charge.clone().unbind(),
        });
        // Swapped under the lock, dropped after it: no Python code runs while it is held.
        let previous = match entry {
            Some(entry) => self.routes.lock().insert(route.as_ptr() as usize, entry),
            None => self.routes.lock().remove(&(route.as_ptr() as usize)),
        };
        drop(previous);
    }

    /// The dependency's whole common path: True when the request's route has a charge here for the scope's
    /// `FastLimit`, its client is resolved, and the charge allowed it; `(decision, client key)` when the charge
    /// refused it; None, having done nothing, when the request must go the general way.
    fn admit<'py>(&self, scope: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let py = scope.py();
        let Ok(scope) = scope.cast::<PyDict>() else {
            return Ok(None);
        };
        let Some(pending) = scope.get_item(intern!(py, SCOPE_PENDING))? else {
            return Ok(None);
        };
        let Ok(pending) = pending.cast_into::<Pending>() else {
            return Ok(None);
        };
        // FastAPI's included routers: the effective route is worked out on the Python side.
        if scope
            .get_item(intern!(py, "fastapi"))?
            .is_some_and(|value| !value.is_none())
        {
            return Ok(None);
        }
        let Some(route) = scope.get_item(intern!(py, "route"))? else {
            return Ok(None);
        };
        let Some(engine) = scope.get_item(intern!(py, SCOPE_ENGINE))? else {
            return Ok(None);
        };
        // A request under another mount path than the charge's (one app mounted twice) goes the general way.
        let Some(mount) = mount_path(scope)? else {
            return Ok(None);
        };
        let charge = {
            let routes = self.routes.lock();
            match routes.get(&(route.as_ptr() as usize)) {
                Some(entry) if entry.route.is(&route) && entry.engine.is(&engine) && entry.mount == mount => {
                    entry.charge.clone_ref(py)
                }
                _ => return Ok(None),
            }
        };
        let charge = charge.get();
        charge.resolver.get().with_client(scope, |address, client| {
            let refused = if charge.is_exempt(address) {
                None // let through untouched
            } else {
                charge.decide(py, client, pending.get())?
            };
            Ok(match refused {
                None => pyo3::types::PyBool::new(py, true).to_owned().into_any(),
                Some(refused) => {
                    PyTuple::new(py, [refused.into_any(), PyString::new(py, client).into_any()])?.into_any()
                }
            })
        })
    }

    fn __len__(&self) -> usize {
        self.routes.lock().len()
    }
}
