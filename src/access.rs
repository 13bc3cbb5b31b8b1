//! Who may use the proxy when it listens beyond loopback (`[proxy] listen = "0.0.0.0"`, for
//! phones and other devices): `[access] allow` (CIDR blocks) and `[access] users` (Basic
//! credentials in `Proxy-Authorization`).
//!
//! This machine's own clients (loopback addresses) are always let in. A client from an allowed
//! block is let in without credentials; any other client must send the credentials of a
//! configured user (`407 Proxy Authentication Required` asks for them), and without users it is
//! refused with `403 Forbidden`. Config validation refuses a non-loopback `listen` with no
//! rules at all, so the proxy is never open to a whole network by accident.

use std::net::IpAddr;

/// The configured rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// Address blocks let in without credentials: (network, prefix length).
    pub allow: Vec<(IpAddr, u8)>,
    /// `(user, password)` pairs accepted in `Proxy-Authorization: Basic`.
    pub users: Vec<(String, String)>,
}

/// What to do with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// 407: credentials missing or wrong.
    NeedsCredentials,
    /// 403: the address is not allowed and there are no users to log in as.
    Forbidden,
}

impl Access {
    /// True when no rule is configured.
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.users.is_empty()
    }

    /// Parses a CIDR block (`192.168.1.0/24`, `fd00::/8`) or one address.
    pub fn parse_block(text: &str) -> Result<(IpAddr, u8), String> {
        let (net, bits) = match text.split_once('/') {
            Some((net, bits)) => (net, Some(bits)),
            None => (text, None),
        };
        let net: IpAddr = net.trim().parse().map_err(|_| {
            format!("{text:?} is not an address or CIDR block like \"192.168.1.0/24\"")
        })?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => b
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|b| *b <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0-{max}"))?,
        };
        Ok((net, bits))
    }

    /// The verdict for a request from `client` whose head is `head` (as received); only the
    /// forward proxy asks for credentials (`forward`), the reverse listeners go by address.
    pub fn check(&self, client: IpAddr, head: &[u8], forward: bool) -> Verdict {
        self.check_credentials(client, head, forward.then_some("proxy-authorization"))
    }

    /// Like [`Access::check`], with the credentials read from the `credentials` field
    /// (`proxy-authorization` for the proxy, `authorization` for the admin API), or none.
    pub fn check_credentials(
        &self,
        client: IpAddr,
        head: &[u8],
        credentials: Option<&str>,
    ) -> Verdict {
        let client = client.to_canonical();
        if client.is_loopback()
            || self
                .allow
                .iter()
                .any(|(net, bits)| crate::upstream_proxy::in_block(client, *net, *bits))
        {
            return Verdict::Allowed;
        }
        let Some(field) = credentials.filter(|_| !self.users.is_empty()) else {
            return Verdict::Forbidden;
        };
        match basic_credentials(head, field) {
            Some((user, password)) if self.accepts(&user, &password) => Verdict::Allowed,
            _ => Verdict::NeedsCredentials,
        }
    }

    fn accepts(&self, user: &str, password: &str) -> bool {
        // Every pair is compared in full, so the time taken does not tell which part matched.
        self.users.iter().fold(false, |found, (u, p)| {
            found | (same(u.as_bytes(), user.as_bytes()) & same(p.as_bytes(), password.as_bytes()))
        })
    }
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `user:password` from the head's `field: Basic ...` (`Proxy-Authorization` or `Authorization`).
fn basic_credentials(head: &[u8], field: &str) -> Option<(String, String)> {
    let text = std::str::from_utf8(head).ok()?;
    let value = text.split("\r\n").skip(1).find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case(field)
            .then_some(value.trim())
    })?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(base64_decode(token.trim())?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes = text.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c)? << (18 - 6 * i);
        }
        let count = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => return None,
        };
        out.extend_from_slice(&n.to_be_bytes()[1..=count]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access() -> Access {
        Access {
            allow: vec![Access::parse_block("192.168.1.0/24").unwrap()],
            users: vec![("dev".into(), "s3cret".into())],
        }
    }

    fn head(auth: Option<&str>) -> Vec<u8> {
        let mut h = "GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\n".to_string();
        if let Some(a) = auth {
            h += &format!("Proxy-Authorization: {a}\r\n");
        }
        (h + "\r\n").into_bytes()
    }

    #[test]
    fn loopback_and_allowed_blocks_need_nothing_others_need_credentials() {
        let a = access();
        let lan = "192.168.1.20".parse().unwrap();
        let other: IpAddr = "10.0.0.5".parse().unwrap();
        assert_eq!(
            a.check("127.0.0.1".parse().unwrap(), &head(None), true),
            Verdict::Allowed
        );
        assert_eq!(
            a.check("::ffff:192.168.1.9".parse().unwrap(), &head(None), true),
            Verdict::Allowed
        );
        assert_eq!(a.check(lan, &head(None), true), Verdict::Allowed);
        assert_eq!(a.check(other, &head(None), true), Verdict::NeedsCredentials);
        // dev:s3cret
        assert_eq!(
            a.check(other, &head(Some("Basic ZGV2OnMzY3JldA==")), true),
            Verdict::Allowed
        );
        assert_eq!(
            a.check(other, &head(Some("basic ZGV2OnMzY3JldA==")), true),
            Verdict::Allowed
        );
        // dev:wrong
        assert_eq!(
            a.check(other, &head(Some("Basic ZGV2Ondyb25n")), true),
            Verdict::NeedsCredentials
        );
        assert_eq!(
            a.check(other, &head(Some("Bearer x")), true),
            Verdict::NeedsCredentials
        );
        assert_eq!(
            a.check(other, &head(Some("Basic !!!")), true),
            Verdict::NeedsCredentials
        );
        // Reverse listeners go by address only.
        assert_eq!(
            a.check(other, &head(Some("Basic ZGV2OnMzY3JldA==")), false),
            Verdict::Forbidden
        );
        let no_users = Access {
            users: vec![],
            ..access()
        };
        assert_eq!(no_users.check(other, &head(None), true), Verdict::Forbidden);
    }

    #[test]
    fn blocks_parse_with_clear_errors() {
        assert_eq!(Access::parse_block("10.0.0.0/8").unwrap().1, 8);
        assert_eq!(Access::parse_block("fd00::1").unwrap().1, 128);
        assert!(
            Access::parse_block("10.0.0.0/33")
                .unwrap_err()
                .contains("0-32")
        );
        assert!(
            Access::parse_block("lan")
                .unwrap_err()
                .contains("not an address")
        );
        assert_eq!(base64_decode("ZGV2OnMzY3JldA==").unwrap(), b"dev:s3cret");
        assert_eq!(base64_decode("Zm8").unwrap(), b"fo");
    }
}
