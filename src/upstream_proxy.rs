//! An upstream HTTP proxy for pass-through traffic (`[upstream] proxy`, `no_proxy`), as
//! corporate networks require.
//!
//! Pass-through HTTP goes to the proxy in absolute form (`GET http://host/path HTTP/1.1`);
//! CONNECT tunnels and TLS pass-through ask the proxy for a tunnel (`CONNECT host:port`) first.
//! Credentials in the URL (`http://user:pass@host:port`, percent-encoded as RFC 3986 §3.2.1
//! has it) are sent as `Proxy-Authorization: Basic`. Local routes never use the proxy, nor
//! loopback destinations (`localhost`, `*.localhost`, `127.0.0.0/8`, `::1`: the proxy's
//! loopback is not this machine's), nor destinations `no_proxy` lists, in the syntax curl and most tools read from
//! `NO_PROXY`: `*` for everything; a domain (`example.com`, `.example.com` or `*.example.com`)
//! matching itself and its subdomains; an IP address or a CIDR block (`10.0.0.0/8`, `::1`);
//! any of these with `:port` to match that port only.

use std::fmt;
use std::net::IpAddr;

/// Where pass-through traffic goes instead of straight to the real server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamProxy {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    /// `user:password`, decoded, for `Proxy-Authorization: Basic`.
    pub credentials: Option<String>,
    /// Destinations reached directly.
    pub no_proxy: Vec<NoProxy>,
}

/// One `no_proxy` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoProxy {
    /// `*`: nothing goes through the proxy.
    All,
    /// A domain and its subdomains (lowercase, no leading dot), on `port` or any.
    Domain { name: String, port: Option<u16> },
    /// An address block (a single address is a /32 or /128), on `port` or any.
    Block {
        net: IpAddr,
        bits: u8,
        port: Option<u16>,
    },
}

/// The port an `http://` proxy URL without one means (curl's default).
pub const DEFAULT_PROXY_PORT: u16 = 1080;

impl UpstreamProxy {
    /// Parses `http://[user[:password]@]host[:port][/]`; the error says what is wrong.
    pub fn parse(url: &str) -> Result<UpstreamProxy, String> {
        let rest = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) => {
                return Err(format!(
                    "{scheme}:// proxies are not supported; give an http:// proxy URL"
                ));
            }
            None => return Err(format!("{url:?} is not a URL like \"http://proxy:3128\"")),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#']) {
            return Err(format!("{url:?} has a path; give only http://host:port"));
        }
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((userinfo, hostport)) => (Some(userinfo), hostport),
            None => (None, rest),
        };
        let credentials = userinfo
            .map(|u| percent_decode(u).ok_or("the user name or password has a bad %-escape"))
            .transpose()?;
        let (host, port) = split_host_port(hostport)
            .ok_or_else(|| format!("{hostport:?} is not a host with an optional :port"))?;
        Ok(UpstreamProxy {
            host: host.to_owned(),
            port: port.unwrap_or(DEFAULT_PROXY_PORT),
            credentials,
            no_proxy: Vec::new(),
        })
    }

    /// True when `host:port` is to be reached directly: loopback, or listed in `no_proxy`.
    pub fn bypasses(&self, host: &str, port: u16) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host = host.strip_suffix('.').unwrap_or(host);
        let ip = host.parse::<IpAddr>().ok();
        let loopback = ip.is_some_and(|ip| ip.is_loopback())
            || host.eq_ignore_ascii_case("localhost")
            || host
                .get(host.len().saturating_sub(".localhost".len())..)
                .is_some_and(|end| end.eq_ignore_ascii_case(".localhost"));
        loopback
            || self
                .no_proxy
                .iter()
                .any(|rule| rule.matches(host, ip, port))
    }

    /// The `Proxy-Authorization` value, when the URL had credentials.
    pub fn authorization(&self) -> Option<String> {
        self.credentials
            .as_ref()
            .map(|c| format!("Basic {}", base64(c.as_bytes())))
    }

    /// `host:port` as dialled and logged.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// The URL without the password.
impl fmt::Display for UpstreamProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self
            .credentials
            .as_deref()
            .map(|c| c.split(':').next().unwrap_or(""))
        {
            Some(user) => write!(f, "http://{user}:***@{}", self.authority()),
            None => write!(f, "http://{}", self.authority()),
        }
    }
}

impl NoProxy {
    /// Parses one entry; the error says what is wrong.
    pub fn parse(entry: &str) -> Result<NoProxy, String> {
        let entry = entry.trim();
        if entry == "*" {
            return Ok(NoProxy::All);
        }
        if entry.is_empty() {
            return Err("an empty entry".to_owned());
        }
        // CIDR first: "::1/128" would otherwise read as a host and a port.
        if let Some((net, bits)) = entry.split_once('/') {
            let net: IpAddr = net
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .map_err(|_| format!("{entry:?}: {net:?} is not an IP address"))?;
            let max = if net.is_ipv4() { 32 } else { 128 };
            let bits: u8 = bits
                .parse()
                .ok()
                .filter(|b| *b <= max)
                .ok_or_else(|| format!("{entry:?}: the prefix length must be 0-{max}"))?;
            return Ok(NoProxy::Block {
                net,
                bits,
                port: None,
            });
        }
        if let Ok(ip) = entry
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            return Ok(NoProxy::Block {
                net: ip,
                bits: if ip.is_ipv4() { 32 } else { 128 },
                port: None,
            });
        }
        let (host, port) = split_host_port(entry)
            .ok_or_else(|| format!("{entry:?} is not a domain, address or CIDR block"))?;
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(NoProxy::Block {
                net: ip,
                bits: if ip.is_ipv4() { 32 } else { 128 },
                port,
            });
        }
        let name = host.trim_start_matches("*.").trim_start_matches('.');
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        {
            return Err(format!("{entry:?} is not a domain, address or CIDR block"));
        }
        Ok(NoProxy::Domain { name, port })
    }

    fn matches(&self, host: &str, ip: Option<IpAddr>, port: u16) -> bool {
        match self {
            NoProxy::All => true,
            NoProxy::Domain { name, port: p } => {
                p.is_none_or(|p| p == port)
                    && (host.eq_ignore_ascii_case(name)
                        || (host.len() > name.len()
                            && host.as_bytes()[host.len() - name.len() - 1] == b'.'
                            && host[host.len() - name.len()..].eq_ignore_ascii_case(name)))
            }
            NoProxy::Block { net, bits, port: p } => {
                p.is_none_or(|p| p == port) && ip.is_some_and(|ip| in_block(ip, *net, *bits))
            }
        }
    }
}

/// True when `ip` is inside the block `net/bits` (of its own family).
pub(crate) fn in_block(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host_port(text: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => (host, Some(port)),
            Some(_) => return None,
            None => (text, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p != 0)?),
        None => None,
    };
    Some((host, port))
}

/// `%XX` escapes decoded (RFC 3986 §2.1); `None` for a bad escape or bytes that are not UTF-8.
pub(crate) fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Standard base64 with padding (RFC 4648 §4), for Basic credentials.
pub(crate) fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> shift) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proxy_urls() {
        let p = UpstreamProxy::parse("http://corp.example:3128").unwrap();
        assert_eq!(
            (p.host.as_str(), p.port, p.credentials),
            ("corp.example", 3128, None)
        );
        let p = UpstreamProxy::parse("HTTP://al%40ice:p%3Ass@[::1]:8080/").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("::1", 8080));
        assert_eq!(p.credentials.as_deref(), Some("al@ice:p:ss"));
        assert_eq!(p.to_string(), "http://al@ice:***@[::1]:8080");
        assert_eq!(UpstreamProxy::parse("http://proxy").unwrap().port, 1080);
        for (bad, why) in [
            ("proxy:3128", "not a URL"),
            ("https://proxy:443", "https:// proxies are not supported"),
            ("socks5://proxy:1080", "socks5:// proxies"),
            ("http://proxy:3128/path", "has a path"),
            ("http://proxy:0", "not a host"),
            ("http://proxy:99999", "not a host"),
            ("http://:3128", "not a host"),
            ("http://u:%zz@proxy", "bad %-escape"),
        ] {
            let e = UpstreamProxy::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn basic_credentials_are_base64() {
        // RFC 7617 §2's example.
        let p = UpstreamProxy::parse("http://Aladdin:open%20sesame@proxy:1").unwrap();
        assert_eq!(
            p.authorization().as_deref(),
            Some("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")
        );
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
    }

    fn with_rules(rules: &[&str]) -> UpstreamProxy {
        let mut p = UpstreamProxy::parse("http://proxy:3128").unwrap();
        p.no_proxy = rules.iter().map(|r| NoProxy::parse(r).unwrap()).collect();
        p
    }

    #[test]
    fn no_proxy_rules_match_like_curl() {
        let p = with_rules(&[
            "example.com",
            ".corp.test",
            "*.dev.test",
            "api.test:8443",
            "10.0.0.0/8",
            "192.168.1.7",
            "::1",
            "[fd00::]/8",
        ]);
        let direct = [
            ("example.com", 80),
            ("WWW.Example.com.", 443),
            ("corp.test", 80),
            ("a.b.corp.test", 80),
            ("x.dev.test", 80),
            ("api.test", 8443),
            ("10.20.30.40", 80),
            ("192.168.1.7", 8080),
            ("[::1]", 80),
            ("fd12::1", 80),
        ];
        for (host, port) in direct {
            assert!(p.bypasses(host, port), "{host}:{port} should go direct");
        }
        let proxied = [
            ("notexample.com", 80),
            ("example.com.evil.test", 80),
            ("api.test", 443),
            ("11.0.0.1", 80),
            ("192.168.1.8", 80),
            ("fe80::1", 80),
        ];
        for (host, port) in proxied {
            assert!(
                !p.bypasses(host, port),
                "{host}:{port} should use the proxy"
            );
        }
        assert!(with_rules(&["*"]).bypasses("anything.test", 1));
        assert!(!with_rules(&[]).bypasses("anything.test", 1));
        // Loopback never goes to the proxy.
        for host in [
            "localhost",
            "LOCALHOST.",
            "app.localhost",
            "127.0.0.1",
            "127.1.2.3",
            "[::1]",
        ] {
            assert!(with_rules(&[]).bypasses(host, 80), "{host}");
        }
    }

    #[test]
    fn bad_no_proxy_entries_are_named() {
        for (bad, why) in [
            ("", "empty"),
            ("10.0.0.0/33", "0-32"),
            ("::/129", "0-128"),
            ("nonsense/8", "not an IP address"),
            ("a b", "not a domain"),
            ("host:port", "not a domain"),
        ] {
            let e = NoProxy::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }
}
