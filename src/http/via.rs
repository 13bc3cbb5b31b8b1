//! Watchtower's `Via` entry, and loop detection with it (RFC 9110 §7.6.3).
//!
//! Every forwarded request and response gets `Via: 1.1 watchtower-<8 hex digits>`. The digits
//! are random per run, so the pseudonym names this one instance: a request that arrives already
//! carrying it has been through this proxy before and would go round forever (a route or an
//! upstream proxy pointing back at Watchtower, a real server that proxies to it), and is
//! answered `508 Loop Detected` instead. Another Watchtower chained in front or behind has its
//! own pseudonym and is not mistaken for a loop.

use super::head::{Field, list_items};

/// Watchtower's Via pseudonym and the field line carrying it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via {
    /// `Via: 1.1 <pseudonym>\r\n`.
    line: Box<[u8]>,
}

const PREFIX: &[u8] = b"Via: 1.1 ";

impl Via {
    /// A Via entry with `pseudonym` as its received-by (a token: no spaces, commas or CR/LF).
    pub fn named(pseudonym: &str) -> Via {
        debug_assert!(
            !pseudonym.is_empty()
                && pseudonym
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b',' && b != b'(')
        );
        let mut line = Vec::with_capacity(PREFIX.len() + pseudonym.len() + 2);
        line.extend_from_slice(PREFIX);
        line.extend_from_slice(pseudonym.as_bytes());
        line.extend_from_slice(b"\r\n");
        Via {
            line: line.into_boxed_slice(),
        }
    }

    /// `watchtower-` and 32 random bits in hex: this run's pseudonym.
    pub fn for_this_run() -> Via {
        let mut bytes = [0u8; 4];
        // The system generator failing is no reason to refuse to start; the process id and the
        // clock still tell instances apart.
        if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).is_err() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            bytes = (std::process::id() ^ nanos).to_be_bytes();
        }
        Via::named(&format!("watchtower-{:08x}", u32::from_be_bytes(bytes)))
    }

    /// The whole field line, CRLF included.
    pub fn line(&self) -> &[u8] {
        &self.line
    }

    /// The received-by pseudonym, e.g. `watchtower-1f2e3d4c`.
    pub fn pseudonym(&self) -> &str {
        let inner = &self.line[PREFIX.len()..self.line.len() - 2];
        std::str::from_utf8(inner).unwrap_or("watchtower")
    }

    /// True when a Via field of the head `head` (as received, request or response) lists this
    /// pseudonym as a received-by: the message has passed through this instance already.
    pub fn seen_in(&self, head: &[u8]) -> bool {
        let ours = self.pseudonym().as_bytes();
        let mut lines = head.split(|&b| b == b'\n');
        lines.next(); // the request or status line
        for line in lines {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                break;
            }
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let name = std::str::from_utf8(&line[..colon]).unwrap_or("");
            if Field::of(name) != Field::Via {
                continue;
            }
            // Each element: received-protocol RWS received-by [ RWS comment ].
            let listed = list_items(&line[colon + 1..]).any(|item| {
                item.split(|b| b.is_ascii_whitespace())
                    .filter(|word| !word.is_empty())
                    .nth(1)
                    .is_some_and(|by| by.eq_ignore_ascii_case(ours))
            });
            if listed {
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_run_has_its_own_pseudonym() {
        let a = Via::for_this_run();
        let b = Via::for_this_run();
        assert_ne!(a, b, "two runs drew the same 32 bits");
        assert!(a.pseudonym().starts_with("watchtower-"));
        assert_eq!(a.pseudonym().len(), "watchtower-".len() + 8);
        assert_eq!(
            a.line(),
            format!("Via: 1.1 {}\r\n", a.pseudonym()).as_bytes()
        );
    }

    #[test]
    fn finds_its_own_entry_among_others() {
        let via = Via::named("watchtower-0000abcd");
        let looped = [
            "GET / HTTP/1.1\r\nHost: a\r\nVia: 1.1 watchtower-0000abcd\r\n\r\n",
            "GET / HTTP/1.1\r\nvia: 1.0 corp, 1.1 WATCHTOWER-0000ABCD (note)\r\n\r\n",
            "GET / HTTP/1.1\r\nVia: 1.0 corp\r\nVIA:1.1   watchtower-0000abcd\r\nX: y\r\n\r\n",
            "HTTP/1.1 200 OK\r\nVia: HTTP/1.1 watchtower-0000abcd\r\n\r\n",
        ];
        for head in looped {
            assert!(via.seen_in(head.as_bytes()), "{head:?}");
        }
        let clean = [
            "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            // Another Watchtower (chained on purpose) has another pseudonym.
            "GET / HTTP/1.1\r\nVia: 1.1 watchtower-0000abce, 1.1 watchtower\r\n\r\n",
            // Only the received-by counts, not a comment or another field.
            "GET / HTTP/1.1\r\nVia: 1.1 corp (watchtower-0000abcd)\r\n\r\n",
            "GET / HTTP/1.1\r\nX-Via: 1.1 watchtower-0000abcd\r\n\r\n",
            // The body is not the head.
            "GET / HTTP/1.1\r\nHost: a\r\n\r\nVia: 1.1 watchtower-0000abcd\r\n",
        ];
        for head in clean {
            assert!(!via.seen_in(head.as_bytes()), "{head:?}");
        }
    }
}
