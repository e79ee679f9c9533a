//! Who is asking: the client address behind trusted proxies and the key it is limited under.
//!
//! The same rules as `ferrolimit.keys.ClientIdentifier` (the reference, which the tests compare this with on
//! generated requests): the peer is the client unless it is a trusted proxy; only then is the forwarding
//! header read, from the right. IPv6 clients are keyed by their network (/64 by default). This one serves
//! the common per-request path natively.

use std::fmt::Write;
use std::net::{IpAddr, Ipv6Addr};

/// Nobody runs more proxies than this in front of an app; a longer header is cut from the left.
pub const MAX_HOPS: usize = 32;

/// Python's `str.strip()` for the characters a latin-1 header can hold: Unicode white space and the
/// information separators U+001C..U+001F.
fn is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// An address from a peer string or a header entry (`1.2.3.4`, `1.2.3.4:80`, `[::1]:80`, `"[::1]"`,
/// `fe80::1%eth0`), IPv4-mapped IPv6 folded to IPv4; None when it is not an address.
pub fn parse_address(text: &str) -> Option<IpAddr> {
    let text = text.trim_matches(is_space).trim_matches('"').trim_matches(is_space);
    if text.is_empty() || text.chars().count() > 64 {
        return None;
    }
    let text = if let Some(rest) = text.strip_prefix('[') {
        &rest[..rest.find(']')?]
    } else if text.matches(':').count() == 1 {
        text.split(':').next().unwrap_or_default()
    } else {
        text
    };
    let text = text.split('%').next().unwrap_or_default();
    // Python's parser takes ASCII only; so does Rust's, with the same octet and hextet rules.
    match text.parse::<IpAddr>().ok()? {
        IpAddr::V6(v6) => Some(v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)),
        v4 @ IpAddr::V4(_) => Some(v4),
    }
}

/// The text Python's `str()` gives an address: dotted IPv4; IPv6 in lower-case hextets with the longest
/// run of two or more zero hextets (the first of equal runs) written `::`.
pub fn format_address(address: IpAddr) -> String {
    match address {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format_v6(v6),
    }
}

fn format_v6(address: Ipv6Addr) -> String {
    let hextets = address.segments();
    let (mut best_start, mut best_len) = (0, 0);
    let mut index = 0;
    while index < 8 {
        if hextets[index] == 0 {
            let start = index;
            while index < 8 && hextets[index] == 0 {
                index += 1;
            }
            if index - start > best_len {
                (best_start, best_len) = (start, index - start);
            }
        } else {
            index += 1;
        }
    }
    let mut text = String::with_capacity(39);
    let write = |text: &mut String, part: &[u16]| {
        for (position, hextet) in part.iter().enumerate() {
            if position > 0 {
                text.push(':');
            }
            let _ = write!(text, "{hextet:x}");
        }
    };
    if best_len > 1 {
        write(&mut text, &hextets[..best_start]);
        text.push_str("::");
        write(&mut text, &hextets[best_start + best_len..]);
    } else {
        write(&mut text, &hextets);
    }
    text
}

/// Networks to match addresses against (the trusted proxies).
#[derive(Clone, Debug, Default)]
pub struct NetSet {
    networks: Vec<(IpAddr, u8)>,
}

impl NetSet {
    /// From `(network address, prefix length)` pairs; None names the first one that is not a network.
    pub fn new(networks: impl IntoIterator<Item = (IpAddr, u8)>) -> Result<NetSet, (IpAddr, u8)> {
        let mut set = NetSet::default();
        for (address, prefix) in networks {
            let bits = if address.is_ipv4() { 32 } else { 128 };
            if prefix > bits {
                return Err((address, prefix));
            }
            set.networks.push((address, prefix));
        }
        Ok(set)
    }

    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }

    /// Whether `text` is an address in one of the networks (False for anything that is not an address).
    pub fn contains(&self, text: &str) -> bool {
        parse_address(text).is_some_and(|address| self.contains_address(address))
    }

    pub fn contains_address(&self, address: IpAddr) -> bool {
        self.networks.iter().any(|&(network, prefix)| match (network, address) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                masked(u128::from(u32::from(network)), prefix, 32) == masked(u128::from(u32::from(address)), prefix, 32)
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                masked(u128::from(network), prefix, 128) == masked(u128::from(address), prefix, 128)
            }
            _ => false,
        })
    }
}

/// Addresses and networks clients are exempt by, as `ferrolimit.keys.IPSet` matches them: a single address
/// by its text (as Python writes it), and any address that parses to one of the single addresses or into
/// one of the networks; without networks, IPv4 text is matched by its text alone (no parsing).
#[derive(Clone, Debug, Default)]
pub struct AddressSet {
    exact: std::collections::HashSet<String>,
    networks: NetSet,
}

impl AddressSet {
    /// From the single addresses' text and the networks.
    pub fn new(exact: impl IntoIterator<Item = String>, networks: NetSet) -> AddressSet {
        AddressSet {
            exact: exact.into_iter().collect(),
            networks,
        }
    }

    pub fn contains(&self, address: &str) -> bool {
        if self.exact.contains(address) {
            return true;
        }
        // IPv6 in any spelling, IPv4-mapped IPv6 (a dual-stack server's IPv4 peers) parsed; usual IPv4 text
        // matches a single address by that text alone.
        (!self.networks.is_empty() || address.contains(':'))
            && parse_address(address).is_some_and(|parsed| {
                self.exact.contains(&format_address(parsed)) || self.networks.contains_address(parsed)
            })
    }
}

/// `value` with all but its first `prefix` of `bits` bits cleared.
fn masked(value: u128, prefix: u8, bits: u32) -> u128 {
    let host = bits - u32::from(prefix);
    if host >= 128 {
        0
    } else {
        value >> host << host
    }
}

/// Which forwarding header the proxies set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyHeader {
    XForwardedFor,
    Forwarded,
}

impl ProxyHeader {
    /// The header's lower-case name.
    pub fn name(self) -> &'static [u8] {
        match self {
            ProxyHeader::XForwardedFor => b"x-forwarded-for",
            ProxyHeader::Forwarded => b"forwarded",
        }
    }
}

/// How the client of a request is found and keyed.
#[derive(Clone, Debug)]
pub struct Resolver {
    /// Proxies in front of every request (0: the peer is the client unless `trusted` says otherwise).
    pub hops: usize,
    /// The proxies' networks: the header is read only from these peers.
    pub trusted: Option<NetSet>,
    pub ipv6_prefix: u8,
    pub header: ProxyHeader,
}

/// A resolved client: its address and the key it is limited under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Client {
    pub address: String,
    pub key: String,
}

impl Resolver {
    /// Whether the forwarding header can ever be read.
    pub fn reads_headers(&self) -> bool {
        self.hops > 0 || self.trusted.as_ref().is_some_and(|trusted| !trusted.is_empty())
    }

    /// The client of a request from `peer` (the ASGI `scope["client"][0]`) that carried `values` of the
    /// forwarding header, in order; None when it cannot be known (no peer, or a proxy sent garbage).
    pub fn resolve<S: AsRef<str>>(&self, peer: &str, values: &[S]) -> Option<Client> {
        if peer.is_empty() {
            return None;
        }
        let trusted_peer = match &self.trusted {
            Some(trusted) if !trusted.is_empty() => trusted.contains(peer),
            _ => self.hops > 0,
        };
        let address = if trusted_peer {
            self.through_proxies(peer, values)?
        } else {
            canonical(peer)
        };
        let key = self.key_of(&address);
        Some(Client { address, key })
    }

    /// The key of a resolved address: IPv6 grouped into its `/ipv6_prefix` network.
    pub fn key_of(&self, address: &str) -> String {
        if !address.contains(':') {
            return address.to_owned();
        }
        match parse_address(address) {
            None => address.to_owned(),
            Some(parsed @ IpAddr::V4(_)) => format_address(parsed),
            Some(full @ IpAddr::V6(_)) if self.ipv6_prefix >= 128 => format_address(full),
            Some(IpAddr::V6(v6)) => {
                let network = Ipv6Addr::from(masked(u128::from(v6), self.ipv6_prefix, 128));
                format!("{}/{}", format_v6(network), self.ipv6_prefix)
            }
        }
    }

    fn through_proxies<S: AsRef<str>>(&self, peer: &str, values: &[S]) -> Option<String> {
        let mut entries: Vec<&str> = match self.header {
            ProxyHeader::Forwarded => forwarded_for(values),
            // Python's `",".join(values).strip()`: with two values or more the joined text holds a comma.
            ProxyHeader::XForwardedFor
                if values.len() <= 1
                    && values
                        .iter()
                        .all(|value| value.as_ref().trim_matches(is_space).is_empty()) =>
            {
                Vec::new()
            }
            ProxyHeader::XForwardedFor => split_joined(values),
        };
        if entries.len() > MAX_HOPS {
            entries.drain(..entries.len() - MAX_HOPS);
        }
        entries.push(peer);
        let chain = entries;
        if self.trusted.is_none() {
            // chain[-1] is the nearest proxy; with n proxies chain[-(n + 1)] is who connected to the outermost.
            let index = (chain.len() - 1).saturating_sub(self.hops);
            if index == chain.len() - 1 {
                return Some(canonical(peer));
            }
            return parse_address(chain[index]).map(format_address);
        }
        let trusted = self.trusted.as_ref().expect("checked above");
        let mut outermost = None;
        for entry in chain.iter().rev() {
            let parsed = parse_address(entry)?; // a trusted proxy vouched for something that is not an address
            if !trusted.contains_address(parsed) {
                return Some(format_address(parsed));
            }
            outermost = Some(parsed);
        }
        outermost.map(format_address) // every hop is a trusted proxy: the outermost one is the client
    }
}

/// Python's `",".join(values).rsplit(",", MAX_HOPS)[-MAX_HOPS:]`, without building the joined text.
fn split_joined<S: AsRef<str>>(values: &[S]) -> Vec<&str> {
    let mut pieces: Vec<&str> = Vec::new();
    // Walk the values from the right, splitting each; the comma joining two values splits as well.
    for value in values.iter().rev() {
        for piece in value.as_ref().rsplit(',') {
            pieces.push(piece);
            if pieces.len() > MAX_HOPS {
                break;
            }
        }
        if pieces.len() > MAX_HOPS {
            break;
        }
    }
    pieces.truncate(MAX_HOPS);
    pieces.reverse();
    pieces
}

/// The `for=` node of each RFC 7239 element, left to right; an element without one gives `""`.
fn forwarded_for<S: AsRef<str>>(values: &[S]) -> Vec<&str> {
    let mut nodes = Vec::new();
    for value in values {
        for element in value.as_ref().split(',') {
            let node = element
                .split(';')
                .find_map(|pair| {
                    let (name, content) = pair.split_once('=').unwrap_or((pair, ""));
                    name.trim_matches(is_space)
                        .eq_ignore_ascii_case("for")
                        .then_some(content)
                })
                .unwrap_or("");
            nodes.push(node);
        }
    }
    nodes
}

/// `text` as an address reads when it is one, else as it is (a peer named by the server, not an IP).
fn canonical(text: &str) -> String {
    if !text.contains(':') {
        return text.to_owned();
    }
    parse_address(text).map_or_else(|| text.to_owned(), format_address)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver(hops: usize, trusted: Option<&[(&str, u8)]>) -> Resolver {
        Resolver {
            hops,
            trusted: trusted.map(|networks| {
                NetSet::new(
                    networks
                        .iter()
                        .map(|&(address, prefix)| (address.parse().unwrap(), prefix)),
                )
                .unwrap()
            }),
            ipv6_prefix: 64,
            header: ProxyHeader::XForwardedFor,
        }
    }

    #[test]
    fn addresses_parse_and_print_as_python_does() {
        for (text, expected) in [
            ("1.2.3.4", Some("1.2.3.4")),
            (" \"1.2.3.4:80\" ", Some("1.2.3.4")),
            ("[2001:DB8::1]:443", Some("2001:db8::1")),
            ("fe80::1%eth0", Some("fe80::1")),
            ("::ffff:10.0.0.1", Some("10.0.0.1")),
            ("2001:db8:0:1:1:1:1:1", Some("2001:db8:0:1:1:1:1:1")),
            ("2001:0:0:1:0:0:0:1", Some("2001:0:0:1::1")),
            ("1:0:0:2:0:0:3:4", Some("1::2:0:0:3:4")),
            ("::", Some("::")),
            ("\u{1c}10.0.0.1", Some("10.0.0.1")),
            ("010.0.0.1", None),
            ("256.0.0.1", None),
            ("unknown", None),
            ("", None),
            ("[::1", None),
        ] {
            assert_eq!(parse_address(text).map(format_address).as_deref(), expected, "{text:?}");
        }
    }

    #[test]
    fn the_header_is_read_only_from_trusted_peers() {
        let values = vec!["203.0.113.9, 198.51.100.2".to_owned()];
        assert_eq!(resolver(0, None).resolve("10.0.0.1", &values).unwrap().key, "10.0.0.1");
        assert_eq!(
            resolver(1, None).resolve("10.0.0.1", &values).unwrap().key,
            "198.51.100.2"
        );
        assert_eq!(
            resolver(2, None).resolve("10.0.0.1", &values).unwrap().key,
            "203.0.113.9"
        );
        let cidrs = resolver(0, Some(&[("10.0.0.0", 8), ("198.51.100.0", 24)]));
        assert_eq!(cidrs.resolve("10.0.0.1", &values).unwrap().key, "203.0.113.9");
        assert_eq!(cidrs.resolve("192.0.2.1", &values).unwrap().key, "192.0.2.1");
        assert_eq!(cidrs.resolve("10.0.0.1", &["junk".to_owned()]), None);
    }

    #[test]
    fn ipv6_clients_share_their_network() {
        let keyed = resolver(0, None);
        assert_eq!(
            keyed.resolve::<&str>("2001:db8:1:2:aaaa::1", &[]).unwrap().key,
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            keyed.resolve::<&str>("2001:db8:1:2:bbbb::2", &[]).unwrap().key,
            "2001:db8:1:2::/64"
        );
        assert_eq!(keyed.resolve::<&str>("testclient", &[]).unwrap().key, "testclient");
    }

    #[test]
    fn long_headers_keep_the_last_hops() {
        let values = vec![(0..1000)
            .map(|i| format!("10.0.{}.{}", i / 250, i % 250))
            .collect::<Vec<_>>()
            .join(",")];
        assert_eq!(split_joined(&values).len(), MAX_HOPS);
        assert_eq!(
            resolver(32, None).resolve("10.9.9.9", &values).unwrap().key,
            "10.0.3.218"
        );
    }
}
