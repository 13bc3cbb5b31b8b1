//! DNS messages on the wire (RFC 1035 §4), as much as Watchtower's own DNS client needs: write
//! one standard query, and read the response to it into the addresses it names.
//!
//! [`encode_query`] writes a query for one host name and one record type (A or AAAA), class
//! IN, recursion desired. The query carries no OPT record: EDNS (RFC 6891) is not supported,
//! so a server answers over UDP in at most 512 bytes and sets the TC bit when the answer does
//! not fit; the client then asks again over TCP (the same message behind a 2-byte length
//! prefix, which is the client's business, not this module's).
//!
//! [`parse_response`] checks that a message answers the question that was sent (response
//! bit, standard-query opcode, ID, exactly one question with the same name, type and class
//! IN), then reads the answer section along the CNAME chain that starts at the question name
//! and collects the addresses at its end, and reads the authority section for the SOA record
//! whose TTL and MINIMUM field give the negative-caching TTL of RFC 2308 §5. The additional
//! section is not read. TTLs with the top bit set count as 0 (RFC 2181 §8).
//!
//! A response is untrusted input. Every read is bounds-checked (no indexing that can panic),
//! and memory grows only with records actually present in the message, never with a count
//! field. [`ParseError::Malformed`] is the answer for:
//! - a compression pointer that does not point strictly before the start of the name piece
//!   it is read from (so pointers can never loop), that points into the header, or a name
//!   that needs more than 128 pointer jumps;
//! - a label of type `01` or `10` (the abandoned extended and bit-string labels);
//! - a name longer than 255 bytes in wire form;
//! - counts that claim more records than the message holds, and records that run past its
//!   end, unless the TC bit is set: a truncated response gives what its complete records say;
//! - IN-class A/AAAA data that is not 4/16 bytes, CNAME or SOA data whose length does not
//!   match the names inside it;
//! - a CNAME chain that loops or is longer than 16 links, or that ends at a name which is not
//!   a host name the client could ask for.
//!
//! [`fuzz_dns_message`] is the entry point of the `dns_message` cargo-fuzz target and of its
//! corpus-replay test.

#![forbid(unsafe_code)]

use std::fmt;
use std::net::IpAddr;

/// Bytes in the fixed message header (RFC 1035 §4.1.1).
const HEADER_LEN: usize = 12;
/// Longest name in wire form, its final root label included (RFC 1035 §2.3.4).
const MAX_NAME_WIRE: usize = 255;
/// Longest host name in text form without a trailing dot: the wire limit minus the first
/// length byte and the root label.
const MAX_NAME_TEXT: usize = 253;
/// Longest label (RFC 1035 §2.3.4).
const MAX_LABEL: usize = 63;
/// Most compression pointers followed while reading one name.
const MAX_POINTER_JUMPS: usize = 128;
/// Most CNAME records followed from the question name.
const MAX_CNAME_HOPS: usize = 16;
/// Type, class, TTL and RDLENGTH: the fixed part of a resource record after its owner name.
const RR_FIXED_LEN: usize = 10;
/// SERIAL, REFRESH, RETRY, EXPIRE and MINIMUM: the fixed tail of SOA data.
const SOA_FIXED_LEN: usize = 20;
/// Largest TTL; larger values have the top bit set and count as 0 (RFC 2181 §8).
const MAX_TTL: u32 = 0x7fff_ffff;

const CLASS_IN: u16 = 1;
const TYPE_A: u16 = 1;
const TYPE_CNAME: u16 = 5;
const TYPE_SOA: u16 = 6;
const TYPE_AAAA: u16 = 28;

/// Header flag bits (RFC 1035 §4.1.1).
const FLAG_QR: u16 = 1 << 15;
const FLAG_TC: u16 = 1 << 9;
const FLAG_RD: u16 = 1 << 8;
const OPCODE_SHIFT: u16 = 11;
const OPCODE_MASK: u16 = 0xf;
const RCODE_MASK: u16 = 0xf;

/// Record types we ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RecordType {
    /// An IPv4 address (type 1).
    A,
    /// An IPv6 address (type 28, RFC 3596).
    Aaaa,
}

impl RecordType {
    /// The TYPE / QTYPE value on the wire.
    pub fn code(self) -> u16 {
        match self {
            RecordType::A => TYPE_A,
            RecordType::Aaaa => TYPE_AAAA,
        }
    }

    /// Whether `addr` is of the family this type names.
    fn holds(self, addr: IpAddr) -> bool {
        matches!(
            (self, addr),
            (RecordType::A, IpAddr::V4(_)) | (RecordType::Aaaa, IpAddr::V6(_))
        )
    }
}

impl fmt::Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecordType::A => "A",
            RecordType::Aaaa => "AAAA",
        })
    }
}

/// What is wrong with a host name given to [`encode_query`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameProblem {
    /// Nothing but an optional trailing dot.
    Empty,
    /// Two dots in a row, or a leading dot.
    EmptyLabel,
    /// A label longer than 63 bytes.
    LabelTooLong,
    /// Longer than 253 bytes without the trailing dot.
    TooLong,
    /// A character other than an ASCII letter, digit, `-` or `_`.
    BadChar(char),
}

/// A host name that cannot be put in a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameError {
    /// The name as given, cut to its first [`NameError::SHOWN_CHARS`] characters.
    name: String,
    problem: NameProblem,
}

impl NameError {
    /// Characters of the offending name kept for the message; a name from a request head
    /// can be kilobytes long.
    pub const SHOWN_CHARS: usize = 80;

    fn new(name: &str, problem: NameProblem) -> Self {
        let mut shown: String = name.chars().take(Self::SHOWN_CHARS).collect();
        if shown.len() < name.len() {
            shown.push('…');
        }
        NameError {
            name: shown,
            problem,
        }
    }

    /// The name (shortened with `…` when it was long).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What is wrong with it.
    pub fn problem(&self) -> NameProblem {
        self.problem
    }
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = &self.name;
        match self.problem {
            NameProblem::Empty => write!(f, "host name {name:?} is empty"),
            NameProblem::EmptyLabel => write!(f, "host name {name:?} has an empty label"),
            NameProblem::LabelTooLong => write!(
                f,
                "host name {name:?} has a label longer than {MAX_LABEL} bytes"
            ),
            NameProblem::TooLong => {
                write!(f, "host name {name:?} is longer than {MAX_NAME_TEXT} bytes")
            }
            NameProblem::BadChar(c) => write!(
                f,
                "host name {name:?} contains {c:?}, which is not a letter, digit, '-' or '_'"
            ),
        }
    }
}

impl std::error::Error for NameError {}

/// The response code of a response (RFC 1035 §4.1.1; the 4 header bits only, as there is no
/// EDNS extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rcode {
    NoError,
    FormErr,
    ServFail,
    NxDomain,
    NotImp,
    Refused,
    Other(u8),
}

impl Rcode {
    fn from_flags(flags: u16) -> Self {
        match flags & RCODE_MASK {
            0 => Rcode::NoError,
            1 => Rcode::FormErr,
            2 => Rcode::ServFail,
            3 => Rcode::NxDomain,
            4 => Rcode::NotImp,
            5 => Rcode::Refused,
            // The mask leaves 4 bits, so this never saturates.
            other => Rcode::Other(u8::try_from(other).unwrap_or(u8::MAX)),
        }
    }
}

impl fmt::Display for Rcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rcode::NoError => f.write_str("NOERROR"),
            Rcode::FormErr => f.write_str("FORMERR"),
            Rcode::ServFail => f.write_str("SERVFAIL"),
            Rcode::NxDomain => f.write_str("NXDOMAIN"),
            Rcode::NotImp => f.write_str("NOTIMP"),
            Rcode::Refused => f.write_str("REFUSED"),
            Rcode::Other(code) => write!(f, "RCODE{code}"),
        }
    }
}

/// What a response says about the question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub rcode: Rcode,
    /// TC bit: the caller retries over TCP. The other fields then hold only what the
    /// complete records of the cut message say.
    pub truncated: bool,
    /// Addresses of the requested type for the end of the CNAME chain that starts at the
    /// question name, in message order. Empty unless `rcode` is NOERROR.
    pub addrs: Vec<IpAddr>,
    /// When the chain ends at a name that has no records of the requested type in this
    /// message (the caller must query that name itself): that name, lowercased, no trailing
    /// dot. Only for NOERROR with at least one CNAME followed and no SOA in the authority
    /// section (an SOA there means the server already found no data at the target).
    pub cname_target: Option<String>,
    /// Seconds the answer may be cached: the minimum TTL over the CNAME records followed and
    /// the address records used; for NXDOMAIN / no data, the negative TTL of RFC 2308 §5 (min
    /// of the SOA record's TTL and its MINIMUM field, from the authority section, and of the
    /// CNAMEs followed) or None when there is no SOA. None for every other rcode.
    pub ttl: Option<u32>,
}

/// Why a datagram is not a valid answer to our question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Shorter than the 12-byte header.
    Short,
    /// The QR bit is clear: a query, not a response.
    NotAResponse,
    /// An opcode other than 0 (standard query).
    UnsupportedOpcode(u8),
    /// The ID is not the one we sent.
    IdMismatch,
    /// Not exactly one question, or not our name, type or class.
    QuestionMismatch,
    /// The message breaks the format; the text says how.
    Malformed(&'static str),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Short => write!(
                f,
                "the DNS message is shorter than its {HEADER_LEN}-byte header"
            ),
            ParseError::NotAResponse => f.write_str("the DNS message is a query, not a response"),
            ParseError::UnsupportedOpcode(op) => {
                write!(f, "the DNS response has opcode {op}, not a standard query")
            }
            ParseError::IdMismatch => f.write_str("the DNS response ID is not the query's"),
            ParseError::QuestionMismatch => {
                f.write_str("the DNS response is for a different question")
            }
            ParseError::Malformed(why) => write!(f, "malformed DNS response: {why}"),
        }
    }
}

impl std::error::Error for ParseError {}

/// Writes a standard query (RD=1, one question, class IN) for `name` (a host name, optional
/// trailing dot, ASCII; letters/digits/hyphen/underscore labels 1..=63 bytes, whole name <=
/// 253) into `out` (cleared first, and left empty on error). The name keeps the case it was
/// given.
pub fn encode_query(
    id: u16,
    name: &str,
    qtype: RecordType,
    out: &mut Vec<u8>,
) -> Result<(), NameError> {
    out.clear();
    host_name_wire(name).map_err(|problem| NameError::new(name, problem))?;
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    out.reserve(HEADER_LEN + trimmed.len() + 2 + 4);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&FLAG_RD.to_be_bytes());
    // QDCOUNT 1; ANCOUNT, NSCOUNT, ARCOUNT 0.
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    for label in trimmed.split('.') {
        // Checked above: 1..=63 bytes.
        out.push(u8::try_from(label.len()).unwrap_or(0));
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out.extend_from_slice(&qtype.code().to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(())
}

/// Parses a response to the query (id, name, qtype). Checks: length >= 12, QR=1, opcode 0, ID
/// equals `id`, exactly one question equal to `name` (ASCII case-insensitive, trailing dot
/// ignored), qtype and class IN. Then walks the answer section (and authority for SOA),
/// following CNAMEs from the question name (at most 16 hops; a CNAME loop is Malformed).
/// Records of other types/classes/owners are skipped (but must still parse). A/AAAA rdata
/// length must be exactly 4/16. The TC bit is reported even if the rest is cut short: a
/// truncated message whose records are incomplete gives `Ok(Answer { truncated: true, addrs:
/// whatever complete records were read, .. })` rather than an error, as long as header and
/// question are valid. A `name` that [`encode_query`] would refuse matches no response.
pub fn parse_response(
    msg: &[u8],
    id: u16,
    name: &str,
    qtype: RecordType,
) -> Result<Answer, ParseError> {
    let header = Header::read(msg).ok_or(ParseError::Short)?;
    if header.flags & FLAG_QR == 0 {
        return Err(ParseError::NotAResponse);
    }
    let opcode = (header.flags >> OPCODE_SHIFT) & OPCODE_MASK;
    if opcode != 0 {
        return Err(ParseError::UnsupportedOpcode(
            u8::try_from(opcode).unwrap_or(u8::MAX),
        ));
    }
    if header.id != id {
        return Err(ParseError::IdMismatch);
    }
    if header.qdcount != 1 {
        return Err(ParseError::QuestionMismatch);
    }
    let asked = host_name_wire(name).map_err(|_| ParseError::QuestionMismatch)?;
    let records_at = read_question(msg, &asked, qtype)?;

    let truncated = header.flags & FLAG_TC != 0;
    let rcode = Rcode::from_flags(header.flags);
    let sections = read_sections(msg, records_at, &header, truncated, qtype)?;
    let nothing = Answer {
        rcode,
        truncated,
        addrs: Vec::new(),
        cname_target: None,
        ttl: None,
    };
    if !matches!(rcode, Rcode::NoError | Rcode::NxDomain) {
        return Ok(nothing);
    }

    let chain = follow_chain(msg, &sections.links, asked)?;
    if rcode == Rcode::NoError && !chain.addrs.is_empty() {
        return Ok(Answer {
            ttl: min_ttl(chain.cname_ttl, chain.addr_ttl),
            addrs: chain.addrs,
            ..nothing
        });
    }
    if rcode == Rcode::NoError && chain.hops > 0 && sections.negative_ttl.is_none() {
        let target = chain.end.to_host_text().ok_or(ParseError::Malformed(
            "the CNAME chain ends at a name that is not a host name",
        ))?;
        return Ok(Answer {
            cname_target: Some(target),
            ttl: chain.cname_ttl,
            ..nothing
        });
    }
    Ok(Answer {
        ttl: sections
            .negative_ttl
            .map(|negative| negative.min(chain.cname_ttl.unwrap_or(negative))),
        ..nothing
    })
}

/// The question every fuzz input is parsed as an answer to (the corpus seeds use it).
const FUZZ_ID: u16 = 0x1234;
const FUZZ_NAME: &str = "example.test";
/// Characters a fuzz input's bytes are mapped to when it is read as a host name: mostly
/// valid ones, dots often enough for short labels, and a few that must be refused.
const FUZZ_NAME_CHARS: &[u8] =
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.......* ";
/// Input bytes read as a host name: enough to cross the 253-byte limit.
const FUZZ_NAME_BYTES: usize = 300;

/// Entry point for the fuzz target and its corpus replay test: must never panic, loop forever
/// or allocate unboundedly on any input. Parses `data` as a response to a fixed question (id
/// 0x1234, "example.test", A and AAAA) and to the question the data itself carries, checking
/// what every `Ok` answer promises; then round-trips: derives a name from the data, and if
/// `encode_query` accepts it, `parse_response` of the encoded query with QR set must return
/// `Ok` with no addrs (also for the name in upper case and with the trailing dot toggled).
#[doc(hidden)]
pub fn fuzz_dns_message(data: &[u8]) {
    let own = own_question(data);
    for qtype in [RecordType::A, RecordType::Aaaa] {
        check_answer(data, FUZZ_ID, FUZZ_NAME, qtype);
        if let Some((id, name)) = &own {
            check_answer(data, *id, name, qtype);
        }
    }
    check_round_trip(data);
}

/// The ID and question name of `data`, when it has a host name as its first question; so a
/// mutated message still gets past the question check.
fn own_question(data: &[u8]) -> Option<(u16, String)> {
    let id = read_u16(data, 0).ok()?;
    let (name, _) = read_name(data, HEADER_LEN).ok()?;
    Some((id, name.to_host_text()?))
}

/// Parses `data` and checks the promises an `Ok` answer makes.
fn check_answer(data: &[u8], id: u16, name: &str, qtype: RecordType) {
    let Ok(answer) = parse_response(data, id, name, qtype) else {
        return;
    };
    // The smallest address record: root owner, fixed part, 4 bytes of data.
    assert!(answer.addrs.len() <= data.len() / (1 + RR_FIXED_LEN + 4));
    assert!(answer.addrs.iter().all(|&addr| qtype.holds(addr)));
    assert!(answer.ttl.is_none_or(|ttl| ttl <= MAX_TTL));
    if answer.rcode != Rcode::NoError {
        assert!(answer.addrs.is_empty() && answer.cname_target.is_none());
    }
    if !matches!(answer.rcode, Rcode::NoError | Rcode::NxDomain) {
        assert_eq!(answer.ttl, None);
    }
    if !answer.addrs.is_empty() {
        assert!(answer.ttl.is_some());
    }
    if let Some(target) = &answer.cname_target {
        assert!(answer.addrs.is_empty());
        assert!(!target.ends_with('.') && *target == target.to_ascii_lowercase());
        assert!(encode_query(id, target, qtype, &mut Vec::new()).is_ok());
    }
}

/// Reads `data` as a host name, queries it, and parses the query (with QR set) as its own
/// answer.
fn check_round_trip(data: &[u8]) {
    let id = read_u16(data, 0).unwrap_or(0);
    let qtype = if data.len().is_multiple_of(2) {
        RecordType::A
    } else {
        RecordType::Aaaa
    };
    let name: String = data
        .iter()
        .skip(2)
        .take(FUZZ_NAME_BYTES)
        .map(|&b| match b {
            0xff => 'é',
            _ => FUZZ_NAME_CHARS
                .get(usize::from(b) % FUZZ_NAME_CHARS.len())
                .map_or('a', |&c| char::from(c)),
        })
        .collect();
    let mut query = Vec::new();
    if let Err(error) = encode_query(id, &name, qtype, &mut query) {
        assert!(query.is_empty());
        assert!(!error.to_string().is_empty());
        return;
    }
    let trimmed = name.strip_suffix('.').unwrap_or(&name);
    assert!(!trimmed.is_empty() && trimmed.len() <= MAX_NAME_TEXT);
    assert_eq!(query.len(), HEADER_LEN + trimmed.len() + 2 + 4);
    assert_eq!(
        parse_response(&query, id, &name, qtype),
        Err(ParseError::NotAResponse)
    );

    if let Some(flags) = query.get_mut(2) {
        *flags |= 0x80;
    }
    let toggled = match name.strip_suffix('.') {
        Some(trimmed) => trimmed.to_owned(),
        None => format!("{name}."),
    };
    let empty = Ok(Answer {
        rcode: Rcode::NoError,
        truncated: false,
        addrs: Vec::new(),
        cname_target: None,
        ttl: None,
    });
    for asked in [name.as_str(), &name.to_ascii_uppercase(), &toggled] {
        assert_eq!(parse_response(&query, id, asked, qtype), empty);
    }
    let other = match qtype {
        RecordType::A => RecordType::Aaaa,
        RecordType::Aaaa => RecordType::A,
    };
    assert_eq!(
        parse_response(&query, id, &name, other),
        Err(ParseError::QuestionMismatch)
    );
}

/// The fixed header fields the parser looks at.
struct Header {
    id: u16,
    flags: u16,
    qdcount: u16,
    ancount: u16,
    nscount: u16,
}

impl Header {
    fn read(msg: &[u8]) -> Option<Header> {
        if msg.len() < HEADER_LEN {
            return None;
        }
        Some(Header {
            id: read_u16(msg, 0).ok()?,
            flags: read_u16(msg, 2).ok()?,
            qdcount: read_u16(msg, 4).ok()?,
            ancount: read_u16(msg, 6).ok()?,
            nscount: read_u16(msg, 8).ok()?,
        })
    }
}

/// Why a read failed, before it is known whether a cut message is acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// The message ends before the thing being read does.
    Incomplete,
    /// The bytes break the format.
    Bad(&'static str),
}

fn read_array<const N: usize>(msg: &[u8], at: usize) -> Result<[u8; N], Fault> {
    msg.get(at..at.saturating_add(N))
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or(Fault::Incomplete)
}

fn read_u16(msg: &[u8], at: usize) -> Result<u16, Fault> {
    read_array(msg, at).map(u16::from_be_bytes)
}

fn read_u32(msg: &[u8], at: usize) -> Result<u32, Fault> {
    read_array(msg, at).map(u32::from_be_bytes)
}

/// A TTL as it may be used: values with the top bit set count as 0 (RFC 2181 §8).
fn usable_ttl(raw: u32) -> u32 {
    if raw > MAX_TTL { 0 } else { raw }
}

fn min_ttl(a: Option<u32>, b: Option<u32>) -> Option<u32> {
    a.into_iter().chain(b).min()
}

fn is_host_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_'
}

/// A domain name in wire form (length-prefixed labels; the root label left implicit),
/// ASCII-lowercased so that byte equality is DNS name equality. Lives on the stack.
#[derive(Clone)]
struct Name {
    labels: [u8; MAX_NAME_WIRE - 1],
    len: usize,
}

impl Name {
    fn root() -> Name {
        Name {
            labels: [0; MAX_NAME_WIRE - 1],
            len: 0,
        }
    }

    fn wire(&self) -> &[u8] {
        self.labels.get(..self.len).unwrap_or(&[])
    }

    /// Appends a label of 1..=63 bytes; fails when the name would pass 255 bytes.
    fn push_label(&mut self, label: &[u8]) -> Result<(), Fault> {
        let too_long = Fault::Bad("a name is longer than 255 bytes");
        let length = u8::try_from(label.len()).map_err(|_| too_long)?;
        let end = self.len + 1 + label.len();
        let (first, rest) = self
            .labels
            .get_mut(self.len..end)
            .and_then(|slot| slot.split_first_mut())
            .ok_or(too_long)?;
        *first = length;
        for (to, from) in rest.iter_mut().zip(label) {
            *to = from.to_ascii_lowercase();
        }
        self.len = end;
        Ok(())
    }

    fn labels(&self) -> impl Iterator<Item = &[u8]> {
        let mut rest = self.wire();
        std::iter::from_fn(move || {
            let (&length, tail) = rest.split_first()?;
            let (label, after) = tail.split_at_checked(usize::from(length))?;
            rest = after;
            Some(label)
        })
    }

    /// The name as a host name [`encode_query`] accepts (lowercase, no trailing dot), or None
    /// when it is the root or has a byte outside letters, digits, `-` and `_`.
    fn to_host_text(&self) -> Option<String> {
        let mut text = String::with_capacity(self.len);
        for label in self.labels() {
            if !label.iter().all(|&b| is_host_char(char::from(b))) {
                return None;
            }
            if !text.is_empty() {
                text.push('.');
            }
            text.extend(label.iter().map(|&b| char::from(b)));
        }
        (!text.is_empty()).then_some(text)
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        self.wire() == other.wire()
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for label in self.labels() {
            write!(f, "{}.", label.escape_ascii())?;
        }
        Ok(())
    }
}

/// Checks a host name as [`encode_query`] takes it and gives its wire form.
fn host_name_wire(name: &str) -> Result<Name, NameProblem> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() {
        return Err(NameProblem::Empty);
    }
    if trimmed.len() > MAX_NAME_TEXT {
        return Err(NameProblem::TooLong);
    }
    let mut wire = Name::root();
    for label in trimmed.split('.') {
        if label.is_empty() {
            return Err(NameProblem::EmptyLabel);
        }
        if let Some(bad) = label.chars().find(|&c| !is_host_char(c)) {
            return Err(NameProblem::BadChar(bad));
        }
        if label.len() > MAX_LABEL {
            return Err(NameProblem::LabelTooLong);
        }
        wire.push_label(label.as_bytes())
            .map_err(|_| NameProblem::TooLong)?;
    }
    Ok(wire)
}

/// Reads the (possibly compressed) name at `start` (RFC 1035 §4.1.4). Gives the name and the
/// offset just after it where it is stored, that is after its first pointer if it has one.
///
/// Every pointer must point strictly before the start of the piece of name it is read from
/// (`start` or the previous pointer's target) and not into the header, so the pieces start at
/// strictly decreasing offsets and no pointer sequence can loop.
fn read_name(msg: &[u8], start: usize) -> Result<(Name, usize), Fault> {
    let mut name = Name::root();
    let mut piece_start = start;
    let mut at = start;
    let mut stored_end = None;
    let mut jumps = 0;
    loop {
        let length = *msg.get(at).ok_or(Fault::Incomplete)?;
        match length >> 6 {
            0b00 if length == 0 => return Ok((name, stored_end.unwrap_or(at + 1))),
            0b00 => {
                let label_end = at + 1 + usize::from(length);
                let label = msg.get(at + 1..label_end).ok_or(Fault::Incomplete)?;
                name.push_label(label)?;
                at = label_end;
            }
            0b11 => {
                let low = *msg.get(at + 1).ok_or(Fault::Incomplete)?;
                let target = (usize::from(length & 0x3f) << 8) | usize::from(low);
                if target >= piece_start {
                    return Err(Fault::Bad("a compression pointer does not point backwards"));
                }
                if target < HEADER_LEN {
                    return Err(Fault::Bad("a compression pointer points into the header"));
                }
                jumps += 1;
                if jumps > MAX_POINTER_JUMPS {
                    return Err(Fault::Bad("a name has more than 128 compression pointers"));
                }
                stored_end.get_or_insert(at + 2);
                piece_start = target;
                at = target;
            }
            _ => return Err(Fault::Bad("a name has a label of unknown type")),
        }
    }
}

/// Reads the question and checks it is ours; gives the offset of the first record.
fn read_question(msg: &[u8], asked: &Name, qtype: RecordType) -> Result<usize, ParseError> {
    let malformed = |fault| match fault {
        Fault::Incomplete => ParseError::Malformed("the message ends inside the question"),
        Fault::Bad(why) => ParseError::Malformed(why),
    };
    let (qname, at) = read_name(msg, HEADER_LEN).map_err(malformed)?;
    let asked_type = read_u16(msg, at).map_err(malformed)?;
    let asked_class = read_u16(msg, at + 2).map_err(malformed)?;
    if qname != *asked || asked_type != qtype.code() || asked_class != CLASS_IN {
        return Err(ParseError::QuestionMismatch);
    }
    Ok(at + 4)
}

/// A resource record's fixed fields and where its data lies.
struct Record {
    owner_at: usize,
    rtype: u16,
    class: u16,
    ttl: u32,
    data_at: usize,
    data_end: usize,
}

/// Reads the record at `at`, checking its owner name and that its data is in the message.
fn read_record(msg: &[u8], at: usize) -> Result<Record, Fault> {
    let (_, fixed_at) = read_name(msg, at)?;
    let data_at = fixed_at + RR_FIXED_LEN;
    let data_end = data_at + usize::from(read_u16(msg, fixed_at + 8)?);
    if data_end > msg.len() {
        return Err(Fault::Incomplete);
    }
    Ok(Record {
        owner_at: at,
        rtype: read_u16(msg, fixed_at)?,
        class: read_u16(msg, fixed_at + 2)?,
        ttl: usable_ttl(read_u32(msg, fixed_at + 4)?),
        data_at,
        data_end,
    })
}

/// The record data this module understands.
enum Data {
    Addr(IpAddr),
    Cname { target_at: usize },
    Soa { minimum: u32 },
    Other,
}

/// Decodes and checks the data of IN-class A, AAAA, CNAME and SOA records.
fn read_data(msg: &[u8], record: &Record) -> Result<Data, &'static str> {
    if record.class != CLASS_IN {
        return Ok(Data::Other);
    }
    // Names inside the data are read from the message cut at the data's end, so one that
    // runs past it is Incomplete here, which is malformed rather than truncated.
    let scope = msg.get(..record.data_end).unwrap_or(&[]);
    let data = scope.get(record.data_at..).unwrap_or(&[]);
    let name_in_data = |at| match read_name(scope, at) {
        Ok((_, end)) => Ok(end),
        Err(Fault::Incomplete) => Err("a name runs past the end of its record data"),
        Err(Fault::Bad(why)) => Err(why),
    };
    match record.rtype {
        TYPE_A => <[u8; 4]>::try_from(data)
            .map(|octets| Data::Addr(IpAddr::from(octets)))
            .map_err(|_| "an A record's data is not 4 bytes"),
        TYPE_AAAA => <[u8; 16]>::try_from(data)
            .map(|octets| Data::Addr(IpAddr::from(octets)))
            .map_err(|_| "an AAAA record's data is not 16 bytes"),
        TYPE_CNAME => {
            if name_in_data(record.data_at)? != record.data_end {
                return Err("a CNAME record's data is longer than its name");
            }
            Ok(Data::Cname {
                target_at: record.data_at,
            })
        }
        TYPE_SOA => {
            let rname_at = name_in_data(record.data_at)?;
            let fixed_at = name_in_data(rname_at)?;
            if fixed_at + SOA_FIXED_LEN != record.data_end {
                return Err("an SOA record's data has the wrong length");
            }
            let minimum = read_u32(scope, fixed_at + 16)
                .map_err(|_| "an SOA record's data has the wrong length")?;
            Ok(Data::Soa {
                minimum: usable_ttl(minimum),
            })
        }
        _ => Ok(Data::Other),
    }
}

/// An answer-section record the CNAME chain may use.
struct Link {
    owner_at: usize,
    ttl: u32,
    kind: LinkKind,
}

enum LinkKind {
    Addr(IpAddr),
    Cname { target_at: usize },
}

/// What the answer and authority sections hold for us.
struct Sections {
    /// IN-class CNAME records and address records of the requested type, in message order.
    links: Vec<Link>,
    /// min(TTL, MINIMUM) of the first IN-class SOA record in the authority section.
    negative_ttl: Option<u32>,
}

/// Reads every answer and authority record from `at`. In a truncated message, stops quietly
/// at the first incomplete record.
fn read_sections(
    msg: &[u8],
    mut at: usize,
    header: &Header,
    truncated: bool,
    qtype: RecordType,
) -> Result<Sections, ParseError> {
    let mut sections = Sections {
        links: Vec::new(),
        negative_ttl: None,
    };
    for (count, is_answer) in [(header.ancount, true), (header.nscount, false)] {
        for _ in 0..count {
            let record = match read_record(msg, at) {
                Ok(record) => record,
                Err(Fault::Incomplete) if truncated => return Ok(sections),
                Err(Fault::Incomplete) if at >= msg.len() => {
                    return Err(ParseError::Malformed(
                        "the record counts claim more records than the message holds",
                    ));
                }
                Err(Fault::Incomplete) => {
                    return Err(ParseError::Malformed(
                        "a record runs past the end of the message",
                    ));
                }
                Err(Fault::Bad(why)) => return Err(ParseError::Malformed(why)),
            };
            at = record.data_end;
            let kind = match read_data(msg, &record).map_err(ParseError::Malformed)? {
                Data::Addr(addr) if is_answer && qtype.holds(addr) => LinkKind::Addr(addr),
                Data::Cname { target_at } if is_answer => LinkKind::Cname { target_at },
                Data::Soa { minimum } if !is_answer => {
                    sections.negative_ttl.get_or_insert(record.ttl.min(minimum));
                    continue;
                }
                _ => continue,
            };
            sections.links.push(Link {
                owner_at: record.owner_at,
                ttl: record.ttl,
                kind,
            });
        }
    }
    Ok(sections)
}

/// Where the CNAME chain from the question name leads.
struct Chain {
    /// The last name of the chain.
    end: Name,
    /// CNAME records followed.
    hops: usize,
    cname_ttl: Option<u32>,
    /// Addresses owned by `end`, in message order.
    addrs: Vec<IpAddr>,
    addr_ttl: Option<u32>,
}

/// Follows CNAME links from `start` until a name that owns addresses or no CNAME. At each
/// name the first CNAME in message order is the one followed.
fn follow_chain(msg: &[u8], links: &[Link], start: Name) -> Result<Chain, ParseError> {
    // Names owners are compared against are re-read from the message: a few bytes per link
    // instead of a 255-byte name each.
    let owned_by = |link: &Link, name: &Name| matches!(read_name(msg, link.owner_at), Ok((owner, _)) if owner == *name);
    let mut visited: Vec<Name> = Vec::new();
    let mut current = start;
    let mut cname_ttl = None;
    loop {
        let mut addrs = Vec::new();
        let mut addr_ttl = None;
        let mut next = None;
        for link in links.iter().filter(|link| owned_by(link, &current)) {
            match link.kind {
                LinkKind::Addr(addr) => {
                    addrs.push(addr);
                    addr_ttl = min_ttl(addr_ttl, Some(link.ttl));
                }
                LinkKind::Cname { target_at } => {
                    next.get_or_insert((target_at, link.ttl));
                }
            }
        }
        let Some((target_at, ttl)) = next.filter(|_| addrs.is_empty()) else {
            return Ok(Chain {
                end: current,
                hops: visited.len(),
                cname_ttl,
                addrs,
                addr_ttl,
            });
        };
        // Read once already, in read_data.
        let (target, _) = read_name(msg, target_at)
            .map_err(|_| ParseError::Malformed("a CNAME target cannot be read"))?;
        visited.push(current);
        if visited.contains(&target) {
            return Err(ParseError::Malformed("the CNAME chain loops"));
        }
        if visited.len() > MAX_CNAME_HOPS {
            return Err(ParseError::Malformed(
                "the CNAME chain is longer than 16 links",
            ));
        }
        cname_ttl = min_ttl(cname_ttl, Some(ttl));
        current = target;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const ID: u16 = FUZZ_ID;
    const QNAME: &str = FUZZ_NAME;
    /// QR, RD, RA: an ordinary recursive answer.
    const RESPONSE: u16 = 0x8180;
    const NXDOMAIN: u16 = RESPONSE | 3;
    const SERVFAIL: u16 = RESPONSE | 2;
    const TRUNCATED: u16 = RESPONSE | FLAG_TC;
    /// Offset of the first record in a message built by `message` (the question name
    /// `example.test` takes 14 bytes from offset 12).
    const FIRST_RECORD: usize = 30;
    const TYPE_TXT: u16 = 16;
    const CLASS_CH: u16 = 3;

    fn wire_name(text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        for label in text.split('.').filter(|l| !l.is_empty()) {
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
        out
    }

    fn header(flags: u16, counts: [u16; 4]) -> Vec<u8> {
        let mut out = ID.to_be_bytes().to_vec();
        out.extend_from_slice(&flags.to_be_bytes());
        for count in counts {
            out.extend_from_slice(&count.to_be_bytes());
        }
        out
    }

    fn question(name: &str, qtype: u16, class: u16) -> Vec<u8> {
        let mut out = wire_name(name);
        out.extend_from_slice(&qtype.to_be_bytes());
        out.extend_from_slice(&class.to_be_bytes());
        out
    }

    /// A record whose owner is given in wire form (so tests can use pointers).
    fn rr_wire(owner: &[u8], rtype: u16, class: u16, ttl: u32, data: &[u8]) -> Vec<u8> {
        let mut out = owner.to_vec();
        out.extend_from_slice(&rtype.to_be_bytes());
        out.extend_from_slice(&class.to_be_bytes());
        out.extend_from_slice(&ttl.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
        out
    }

    fn rr(owner: &str, rtype: u16, ttl: u32, data: &[u8]) -> Vec<u8> {
        rr_wire(&wire_name(owner), rtype, CLASS_IN, ttl, data)
    }

    fn a(owner: &str, ttl: u32, addr: [u8; 4]) -> Vec<u8> {
        rr(owner, TYPE_A, ttl, &addr)
    }

    fn aaaa(owner: &str, ttl: u32, addr: Ipv6Addr) -> Vec<u8> {
        rr(owner, TYPE_AAAA, ttl, &addr.octets())
    }

    fn cname(owner: &str, ttl: u32, target: &str) -> Vec<u8> {
        rr(owner, TYPE_CNAME, ttl, &wire_name(target))
    }

    fn soa(owner: &str, ttl: u32, minimum: u32) -> Vec<u8> {
        let mut data = wire_name("ns.test");
        data.extend_from_slice(&wire_name("admin.test"));
        for field in [2024_u32, 3600, 600, 86400, minimum] {
            data.extend_from_slice(&field.to_be_bytes());
        }
        rr(owner, TYPE_SOA, ttl, &data)
    }

    /// A response with the counts taken from the sections given.
    fn message_of(
        flags: u16,
        qtype: RecordType,
        answers: &[Vec<u8>],
        authority: &[Vec<u8>],
    ) -> Vec<u8> {
        let counts = [1, answers.len() as u16, authority.len() as u16, 0];
        let mut out = header(flags, counts);
        out.extend_from_slice(&question(QNAME, qtype.code(), CLASS_IN));
        for record in answers.iter().chain(authority) {
            out.extend_from_slice(record);
        }
        out
    }

    fn message(flags: u16, answers: &[Vec<u8>], authority: &[Vec<u8>]) -> Vec<u8> {
        message_of(flags, RecordType::A, answers, authority)
    }

    fn parse(msg: &[u8]) -> Result<Answer, ParseError> {
        parse_response(msg, ID, QNAME, RecordType::A)
    }

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    fn malformed(msg: &[u8]) -> bool {
        matches!(parse(msg), Err(ParseError::Malformed(_)))
    }

    /// A response whose one record is an A record with the given owner in wire form.
    fn a_owned_by(owner: &[u8]) -> Vec<u8> {
        let record = rr_wire(owner, TYPE_A, CLASS_IN, 1, &[192, 0, 2, 1]);
        message(RESPONSE, &[record], &[])
    }

    /// `example.test` CNAME `www.example.test` A 192.0.2.5, both names compressed.
    fn compressed() -> Vec<u8> {
        let www = [3, b'w', b'w', b'w', 0xc0, 12];
        let answers = [
            rr_wire(&[0xc0, 12], TYPE_CNAME, CLASS_IN, 70, &www),
            rr_wire(&www, TYPE_A, CLASS_IN, 80, &[192, 0, 2, 5]),
        ];
        message(RESPONSE, &answers, &[])
    }

    /// Overwrites a header count: 0 qd, 1 an, 2 ns, 3 ar.
    fn set_count(msg: &mut [u8], which: usize, count: u16) {
        msg[4 + 2 * which..6 + 2 * which].copy_from_slice(&count.to_be_bytes());
    }

    #[test]
    fn a_answer_gives_addresses_in_order_and_the_smallest_ttl() {
        let msg = message(
            RESPONSE,
            &[a(QNAME, 300, [192, 0, 2, 1]), a(QNAME, 200, [192, 0, 2, 2])],
            &[],
        );
        assert_eq!(
            parse(&msg),
            Ok(Answer {
                rcode: Rcode::NoError,
                truncated: false,
                addrs: vec![v4(192, 0, 2, 1), v4(192, 0, 2, 2)],
                cname_target: None,
                ttl: Some(200),
            })
        );
    }

    #[test]
    fn aaaa_answer_skips_a_records() {
        let addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
        let msg = message_of(
            RESPONSE,
            RecordType::Aaaa,
            &[a(QNAME, 60, [192, 0, 2, 1]), aaaa(QNAME, 120, addr)],
            &[],
        );
        let answer = parse_response(&msg, ID, QNAME, RecordType::Aaaa).unwrap();
        assert_eq!(answer.addrs, vec![IpAddr::V6(addr)]);
        assert_eq!(answer.ttl, Some(120));
    }

    #[test]
    fn question_name_matches_case_insensitively_with_or_without_trailing_dot() {
        let mut msg = header(RESPONSE, [1, 1, 0, 0]);
        msg.extend_from_slice(&question("ExAmPlE.TEST", TYPE_A, CLASS_IN));
        msg.extend_from_slice(&a("EXAMPLE.test", 5, [192, 0, 2, 9]));
        for asked in ["example.test", "EXAMPLE.TEST.", "Example.Test"] {
            let answer = parse_response(&msg, ID, asked, RecordType::A).unwrap();
            assert_eq!(answer.addrs, vec![v4(192, 0, 2, 9)]);
        }
    }

    #[test]
    fn cname_chain_is_followed_to_addresses_in_any_order_with_the_minimum_ttl() {
        let msg = message(
            RESPONSE,
            &[
                a("c.test", 300, [192, 0, 2, 7]),
                cname("b.test", 120, "C.test"),
                a("other.test", 1, [192, 0, 2, 99]),
                cname(QNAME, 600, "b.test"),
            ],
            &[],
        );
        assert_eq!(
            parse(&msg),
            Ok(Answer {
                rcode: Rcode::NoError,
                truncated: false,
                addrs: vec![v4(192, 0, 2, 7)],
                cname_target: None,
                ttl: Some(120),
            })
        );

        // The address TTL is the smallest.
        let msg = message(
            RESPONSE,
            &[cname(QNAME, 600, "b.test"), a("b.test", 30, [192, 0, 2, 7])],
            &[],
        );
        assert_eq!(parse(&msg).unwrap().ttl, Some(30));
    }

    #[test]
    fn cname_to_an_unanswered_name_gives_the_target() {
        let msg = message(RESPONSE, &[cname(QNAME, 50, "Edge.CDN.test.")], &[]);
        assert_eq!(
            parse(&msg),
            Ok(Answer {
                rcode: Rcode::NoError,
                truncated: false,
                addrs: vec![],
                cname_target: Some("edge.cdn.test".to_owned()),
                ttl: Some(50),
            })
        );
    }

    #[test]
    fn cname_to_a_name_that_is_not_a_host_name_is_malformed() {
        let msg = message(RESPONSE, &[cname(QNAME, 50, "*.cdn.test")], &[]);
        assert!(malformed(&msg));
    }

    #[test]
    fn cname_loops_are_malformed() {
        let to_self = message(RESPONSE, &[cname(QNAME, 50, QNAME)], &[]);
        assert!(malformed(&to_self));
        let two = message(
            RESPONSE,
            &[
                cname(QNAME, 50, "b.test"),
                cname("b.test", 50, "EXAMPLE.test"),
            ],
            &[],
        );
        assert_eq!(
            parse(&two),
            Err(ParseError::Malformed("the CNAME chain loops"))
        );
    }

    #[test]
    fn cname_chain_of_16_links_is_followed_and_17_is_malformed() {
        let chain = |links: usize| {
            let mut records = vec![cname(QNAME, 9, "n1.test")];
            for i in 1..links {
                records.push(cname(&format!("n{i}.test"), 9, &format!("n{}.test", i + 1)));
            }
            records.push(a(&format!("n{links}.test"), 9, [192, 0, 2, 1]));
            message(RESPONSE, &records, &[])
        };
        assert_eq!(parse(&chain(16)).unwrap().addrs, vec![v4(192, 0, 2, 1)]);
        assert_eq!(
            parse(&chain(17)),
            Err(ParseError::Malformed(
                "the CNAME chain is longer than 16 links"
            ))
        );
    }

    #[test]
    fn nxdomain_with_soa_gives_the_negative_ttl() {
        let msg = message(NXDOMAIN, &[], &[soa("test", 900, 60)]);
        assert_eq!(
            parse(&msg),
            Ok(Answer {
                rcode: Rcode::NxDomain,
                truncated: false,
                addrs: vec![],
                cname_target: None,
                ttl: Some(60),
            })
        );
        let msg = message(NXDOMAIN, &[], &[soa("test", 30, 3600)]);
        assert_eq!(parse(&msg).unwrap().ttl, Some(30));
        // After a CNAME, the CNAME's TTL bounds it too; the target is not asked again.
        let msg = message(
            NXDOMAIN,
            &[cname(QNAME, 20, "gone.test")],
            &[soa("test", 900, 60)],
        );
        let answer = parse(&msg).unwrap();
        assert_eq!((answer.ttl, answer.cname_target), (Some(20), None));
        // Without an SOA there is nothing to cache by.
        let msg = message(NXDOMAIN, &[], &[]);
        assert_eq!(parse(&msg).unwrap().ttl, None);
    }

    #[test]
    fn nodata_gives_the_negative_ttl_or_none() {
        let msg = message(
            RESPONSE,
            &[aaaa(QNAME, 300, Ipv6Addr::LOCALHOST)],
            &[soa("test", 900, 120)],
        );
        assert_eq!(
            parse(&msg),
            Ok(Answer {
                rcode: Rcode::NoError,
                truncated: false,
                addrs: vec![],
                cname_target: None,
                ttl: Some(120),
            })
        );
        let msg = message(RESPONSE, &[], &[]);
        assert_eq!(parse(&msg).unwrap().ttl, None);
        // NODATA at a CNAME target, with the target zone's SOA: not asked again.
        let msg = message(
            RESPONSE,
            &[cname(QNAME, 500, "b.test")],
            &[soa("test", 900, 120)],
        );
        let answer = parse(&msg).unwrap();
        assert_eq!((answer.ttl, answer.cname_target), (Some(120), None));
    }

    #[test]
    fn servfail_carries_nothing() {
        let msg = message(SERVFAIL, &[a(QNAME, 300, [192, 0, 2, 1])], &[]);
        assert_eq!(
            parse(&msg),
            Ok(Answer {
                rcode: Rcode::ServFail,
                truncated: false,
                addrs: vec![],
                cname_target: None,
                ttl: None,
            })
        );
        assert_eq!(Rcode::ServFail.to_string(), "SERVFAIL");
        assert_eq!(Rcode::NxDomain.to_string(), "NXDOMAIN");
        assert_eq!(Rcode::from_flags(RESPONSE | 9), Rcode::Other(9));
    }

    #[test]
    fn truncated_message_gives_its_complete_records() {
        let full = message(
            TRUNCATED,
            &[
                a(QNAME, 300, [192, 0, 2, 1]),
                a(QNAME, 300, [192, 0, 2, 2]),
                a(QNAME, 300, [192, 0, 2, 3]),
            ],
            &[],
        );
        // Each record: 14-byte owner, 10 fixed bytes, 4 of data.
        let third = FIRST_RECORD + 2 * 28;
        for cut in [third, third + 1, third + 12, full.len() - 1] {
            let answer = parse(&full[..cut]).unwrap();
            assert!(answer.truncated);
            assert_eq!(answer.addrs, vec![v4(192, 0, 2, 1), v4(192, 0, 2, 2)]);
        }
        assert_eq!(parse(&full).unwrap().addrs.len(), 3);
        // Without TC the same cuts are malformed.
        let mut plain = full.clone();
        plain[2..4].copy_from_slice(&RESPONSE.to_be_bytes());
        for cut in [third, third + 1, third + 12, full.len() - 1] {
            assert!(malformed(&plain[..cut]), "cut at {cut}");
        }
        // A cut question is malformed even with TC.
        assert!(matches!(
            parse(&full[..FIRST_RECORD - 1]),
            Err(ParseError::Malformed(_))
        ));
        // TC with no records at all.
        let empty = message(TRUNCATED, &[], &[]);
        assert!(parse(&empty).unwrap().truncated);
    }

    #[test]
    fn header_checks() {
        let good = message(RESPONSE, &[a(QNAME, 1, [192, 0, 2, 1])], &[]);
        assert_eq!(parse(&good[..11]), Err(ParseError::Short));
        assert_eq!(parse(&[]), Err(ParseError::Short));
        assert_eq!(
            parse_response(&good, ID + 1, QNAME, RecordType::A),
            Err(ParseError::IdMismatch)
        );
        let mut query = good.clone();
        query[2] &= 0x7f;
        assert_eq!(parse(&query), Err(ParseError::NotAResponse));
        let mut notify = good.clone();
        notify[2] |= 4 << 3;
        assert_eq!(parse(&notify), Err(ParseError::UnsupportedOpcode(4)));
    }

    #[test]
    fn question_mismatches() {
        let with_question = |q: Vec<u8>| {
            let mut msg = header(RESPONSE, [1, 0, 0, 0]);
            msg.extend_from_slice(&q);
            parse(&msg)
        };
        let mismatch = Err(ParseError::QuestionMismatch);
        assert_eq!(with_question(question("other.test", TYPE_A, 1)), mismatch);
        assert_eq!(
            with_question(question("example.test.x", TYPE_A, 1)),
            mismatch
        );
        assert_eq!(with_question(question("test", TYPE_A, 1)), mismatch);
        assert_eq!(with_question(question(QNAME, TYPE_AAAA, 1)), mismatch);
        assert_eq!(with_question(question(QNAME, TYPE_A, CLASS_CH)), mismatch);
        // A label holding a dot is not two labels.
        let mut dotted = vec![12];
        dotted.extend_from_slice(b"example.test\0\0\x01\0\x01");
        assert_eq!(with_question(dotted), mismatch);

        let mut msg = message(RESPONSE, &[], &[]);
        set_count(&mut msg, 0, 0);
        assert_eq!(parse(&msg), mismatch);
        set_count(&mut msg, 0, 2);
        assert_eq!(parse(&msg), mismatch);
        // A name we could not have asked for matches nothing.
        let msg = message(RESPONSE, &[], &[]);
        assert_eq!(parse_response(&msg, ID, "a..b", RecordType::A), mismatch);
    }

    #[test]
    fn compression_pointers_to_the_question_are_followed() {
        let msg = compressed();
        let answer = parse(&msg).unwrap();
        assert_eq!(answer.addrs, vec![v4(192, 0, 2, 5)]);
        assert_eq!(answer.ttl, Some(70));
    }

    #[test]
    fn bad_compression_pointers_are_malformed() {
        let at = FIRST_RECORD as u8;
        let forward = a_owned_by(&[0xc0, at + 2]);
        let to_self = a_owned_by(&[0xc0, at]);
        let past_end = a_owned_by(&[0xc0, 0xff]);
        // A label, then a pointer back to that label: a loop.
        let looped = a_owned_by(&[1, b'a', 0xc0, at]);
        let into_header = a_owned_by(&[0xc0, 4]);
        for msg in [forward, to_self, past_end, looped, into_header] {
            assert!(malformed(&msg), "{msg:?}");
        }
        // Labels of type 01 and 10.
        assert!(malformed(&a_owned_by(&[0x41, 0])));
        assert!(malformed(&a_owned_by(&[0x80, 0])));

        // A pointer back to a label that runs past the end: offset 29 is the question's
        // class byte (1), a one-byte label holding 0xc0, then a length of 29.
        let mut cut = message(RESPONSE, &[], &[]);
        set_count(&mut cut, 1, 1);
        cut.extend_from_slice(&[0xc0, 29]);
        assert_eq!(
            parse(&cut),
            Err(ParseError::Malformed(
                "a record runs past the end of the message"
            ))
        );
        // A pointer whose second byte is missing.
        let mut half = message(RESPONSE, &[], &[]);
        set_count(&mut half, 1, 1);
        half.push(0xc0);
        assert!(malformed(&half));
    }

    #[test]
    fn more_than_128_pointer_jumps_are_malformed() {
        // A skipped record whose data is a chain of pointers, each to the one before,
        // the first to the question name; then a record owned by the last pointer.
        let with_jumps = |pointers: usize| {
            let data_at = FIRST_RECORD + 2 + RR_FIXED_LEN;
            let mut data = Vec::new();
            for i in 0..pointers {
                let target = if i == 0 { 12 } else { data_at + 2 * (i - 1) };
                data.extend_from_slice(&(0xc000 | target as u16).to_be_bytes());
            }
            let last = data_at + 2 * (pointers - 1);
            let mut msg = message(RESPONSE, &[], &[]);
            set_count(&mut msg, 1, 2);
            msg.extend_from_slice(&rr_wire(&[0xc0, 12], 99, 1, 1, &data));
            msg.extend_from_slice(&rr_wire(
                &(0xc000 | last as u16).to_be_bytes(),
                TYPE_A,
                1,
                1,
                &[192, 0, 2, 1],
            ));
            msg
        };
        // Jumps: one to the last pointer, then `pointers` more.
        assert_eq!(
            parse(&with_jumps(127)).unwrap().addrs,
            vec![v4(192, 0, 2, 1)]
        );
        assert_eq!(
            parse(&with_jumps(128)),
            Err(ParseError::Malformed(
                "a name has more than 128 compression pointers"
            ))
        );
    }

    #[test]
    fn names_longer_than_255_bytes_are_malformed() {
        let name_of = |last: usize| {
            let mut labels = vec!["x".repeat(63); 3];
            labels.push("y".repeat(last));
            labels.join(".")
        };
        // 3 * 64 + 1 + 61 + 1 = 255 bytes: skipped as another owner.
        let fits = message(RESPONSE, &[a(&name_of(61), 1, [192, 0, 2, 1])], &[]);
        assert!(parse(&fits).unwrap().addrs.is_empty());
        let long = message(RESPONSE, &[a(&name_of(62), 1, [192, 0, 2, 1])], &[]);
        assert_eq!(
            parse(&long),
            Err(ParseError::Malformed("a name is longer than 255 bytes"))
        );
    }

    #[test]
    fn bogus_counts_are_malformed() {
        let mut msg = message(RESPONSE, &[a(QNAME, 1, [192, 0, 2, 1])], &[]);
        set_count(&mut msg, 1, 5);
        assert_eq!(
            parse(&msg),
            Err(ParseError::Malformed(
                "the record counts claim more records than the message holds"
            ))
        );
        set_count(&mut msg, 1, 1);
        set_count(&mut msg, 2, u16::MAX);
        assert!(malformed(&msg));
        // Records past the counts are not read: the additional section is ignored.
        set_count(&mut msg, 2, 0);
        msg.extend_from_slice(b"garbage");
        assert!(parse(&msg).is_ok());
    }

    #[test]
    fn record_data_of_the_wrong_length_is_malformed() {
        let five = message(RESPONSE, &[rr(QNAME, TYPE_A, 1, &[192, 0, 2, 1, 0])], &[]);
        assert_eq!(
            parse(&five),
            Err(ParseError::Malformed("an A record's data is not 4 bytes"))
        );
        // Even for another owner, and for AAAA when A was asked.
        let other = message(RESPONSE, &[rr("x.test", TYPE_AAAA, 1, &[0; 4])], &[]);
        assert!(malformed(&other));
        let mut long_cname = wire_name("b.test");
        long_cname.push(0);
        let cname_extra = message(RESPONSE, &[rr(QNAME, TYPE_CNAME, 1, &long_cname)], &[]);
        assert!(malformed(&cname_extra));
        let cname_short = message(RESPONSE, &[rr(QNAME, TYPE_CNAME, 1, &[1, b'b'])], &[]);
        assert!(malformed(&cname_short));
        let soa_bad = message(NXDOMAIN, &[], &[rr("test", TYPE_SOA, 1, &[0; 19])]);
        assert!(malformed(&soa_bad));
        // Other classes' data is not interpreted.
        let chaos = message(
            RESPONSE,
            &[rr_wire(
                &wire_name(QNAME),
                TYPE_A,
                CLASS_CH,
                1,
                &[1, 2, 3, 4, 5],
            )],
            &[],
        );
        assert!(parse(&chaos).is_ok());
    }

    #[test]
    fn records_of_other_owners_types_and_classes_are_skipped() {
        let msg = message(
            RESPONSE,
            &[
                a("other.test", 1, [192, 0, 2, 1]),
                rr(QNAME, TYPE_TXT, 1, b"\x05hello"),
                rr_wire(&wire_name(QNAME), TYPE_A, CLASS_CH, 1, &[192, 0, 2, 2]),
                cname("other.test", 1, QNAME),
                a(QNAME, 77, [192, 0, 2, 3]),
            ],
            &[rr("test", 2, 1, &wire_name("ns.test"))],
        );
        let answer = parse(&msg).unwrap();
        assert_eq!(answer.addrs, vec![v4(192, 0, 2, 3)]);
        assert_eq!(answer.ttl, Some(77));
    }

    #[test]
    fn ttls_with_the_top_bit_set_count_as_zero() {
        let msg = message(RESPONSE, &[a(QNAME, 0x8000_0000, [192, 0, 2, 1])], &[]);
        assert_eq!(parse(&msg).unwrap().ttl, Some(0));
    }

    #[test]
    fn encode_query_writes_the_exact_bytes() {
        let mut out = vec![1, 2, 3];
        encode_query(0xbeef, "Example.test.", RecordType::A, &mut out).unwrap();
        let expected: &[u8] = b"\xbe\xef\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\
            \x07Example\x04test\x00\x00\x01\x00\x01";
        assert_eq!(out, expected);
        encode_query(7, "a-b_c.d", RecordType::Aaaa, &mut out).unwrap();
        assert_eq!(out[..2], [0, 7]);
        assert_eq!(out[12..], *b"\x05a-b_c\x01d\x00\x00\x1c\x00\x01");
    }

    #[test]
    fn encode_query_refuses_bad_names() {
        let problem = |name: &str| {
            let mut out = vec![9];
            let error = encode_query(1, name, RecordType::A, &mut out).unwrap_err();
            assert!(out.is_empty());
            error.problem()
        };
        assert_eq!(problem(""), NameProblem::Empty);
        assert_eq!(problem("."), NameProblem::Empty);
        assert_eq!(problem("a..b"), NameProblem::EmptyLabel);
        assert_eq!(problem(".a"), NameProblem::EmptyLabel);
        assert_eq!(problem("a.."), NameProblem::EmptyLabel);
        assert_eq!(
            problem(&format!("{}.test", "x".repeat(64))),
            NameProblem::LabelTooLong
        );
        assert_eq!(problem("a b"), NameProblem::BadChar(' '));
        assert_eq!(problem("*.test"), NameProblem::BadChar('*'));
        assert_eq!(problem("café.test"), NameProblem::BadChar('é'));

        let labels = |last: usize| format!("{0}.{0}.{0}.{1}", "x".repeat(63), "y".repeat(last));
        assert_eq!(labels(62).len(), 254);
        assert_eq!(problem(&labels(62)), NameProblem::TooLong);
        let mut out = Vec::new();
        assert!(encode_query(1, &labels(61), RecordType::A, &mut out).is_ok());
        assert!(encode_query(1, &format!("{}.", labels(61)), RecordType::A, &mut out).is_ok());
        assert!(encode_query(1, &"x".repeat(63), RecordType::A, &mut out).is_ok());
    }

    #[test]
    fn errors_read_as_one_sentence() {
        let error = encode_query(1, "a..b", RecordType::A, &mut Vec::new()).unwrap_err();
        assert_eq!(error.to_string(), "host name \"a..b\" has an empty label");
        let long = "é".repeat(200);
        let error = encode_query(1, &long, RecordType::A, &mut Vec::new()).unwrap_err();
        assert_eq!(error.name().chars().count(), NameError::SHOWN_CHARS + 1);
        assert!(error.to_string().ends_with("is longer than 253 bytes"));
        assert_eq!(
            ParseError::Malformed("the CNAME chain loops").to_string(),
            "malformed DNS response: the CNAME chain loops"
        );
    }

    /// A small seeded generator (xorshift64*), so a failing run can be replayed.
    use crate::mutation::{Rng, mutate};

    fn seeds() -> Vec<(&'static str, Vec<u8>)> {
        let v6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
        let mut bogus_counts = message(RESPONSE, &[a(QNAME, 1, [192, 0, 2, 1])], &[]);
        set_count(&mut bogus_counts, 1, 9);
        let truncated = message(
            TRUNCATED,
            &[a(QNAME, 300, [192, 0, 2, 1]), a(QNAME, 300, [192, 0, 2, 2])],
            &[],
        );
        let at = FIRST_RECORD as u8;
        vec![
            (
                "a-answer.bin",
                message(
                    RESPONSE,
                    &[a(QNAME, 300, [192, 0, 2, 1]), a(QNAME, 200, [192, 0, 2, 2])],
                    &[],
                ),
            ),
            (
                "aaaa-answer.bin",
                message_of(RESPONSE, RecordType::Aaaa, &[aaaa(QNAME, 120, v6)], &[]),
            ),
            (
                "cname-chain.bin",
                message(
                    RESPONSE,
                    &[
                        cname(QNAME, 600, "b.test"),
                        cname("b.test", 120, "c.test"),
                        a("c.test", 300, [192, 0, 2, 7]),
                    ],
                    &[],
                ),
            ),
            (
                "cname-unanswered.bin",
                message(RESPONSE, &[cname(QNAME, 50, "edge.cdn.test")], &[]),
            ),
            (
                "cname-loop.bin",
                message(
                    RESPONSE,
                    &[cname(QNAME, 50, "b.test"), cname("b.test", 50, QNAME)],
                    &[],
                ),
            ),
            ("compressed.bin", compressed()),
            (
                "nxdomain-soa.bin",
                message(NXDOMAIN, &[], &[soa("test", 900, 60)]),
            ),
            (
                "nodata-soa.bin",
                message(RESPONSE, &[], &[soa("test", 900, 120)]),
            ),
            ("servfail.bin", message(SERVFAIL, &[], &[])),
            ("truncated.bin", truncated[..truncated.len() - 3].to_vec()),
            ("pointer-loop.bin", a_owned_by(&[1, b'a', 0xc0, at])),
            ("pointer-forward.bin", a_owned_by(&[0xc0, 0xff])),
            ("bogus-counts.bin", bogus_counts),
            (
                "a-rdlength-5.bin",
                message(RESPONSE, &[rr(QNAME, TYPE_A, 1, &[192, 0, 2, 1, 0])], &[]),
            ),
            (
                "other-owners.bin",
                message(
                    RESPONSE,
                    &[
                        a("other.test", 1, [192, 0, 2, 1]),
                        rr(QNAME, TYPE_TXT, 1, b"\x05hello"),
                        a(QNAME, 77, [192, 0, 2, 3]),
                    ],
                    &[],
                ),
            ),
        ]
    }

    /// Splices DNS-shaped pieces into a seed: pointers, label types, types, counts, TTLs.
    const PIECES: &[&[u8]] = &[
        b"\xc0\x0c",
        b"\xc0\x00",
        b"\xc0\x1e",
        b"\xc0\xff",
        b"\x3f",
        b"\x40",
        b"\x80",
        b"\x00",
        b"\x00\x01\x00\x01",
        b"\x00\x05\x00\x01",
        b"\x00\x06\x00\x01",
        b"\x00\x1c\x00\x01",
        b"\xff\xff\xff\xff",
        b"\x01a\x00",
        b"\x07example\x04test\x00",
    ];

    #[test]
    fn seeds_parse_as_their_names_say() {
        for (file, msg) in seeds() {
            let qtype = if file.starts_with("aaaa") {
                RecordType::Aaaa
            } else {
                RecordType::A
            };
            let result = parse_response(&msg, ID, QNAME, qtype);
            let bad = ["loop", "pointer", "bogus", "rdlength"]
                .iter()
                .any(|w| file.contains(w));
            assert_eq!(bad, result.is_err(), "{file}: {result:?}");
        }
    }

    /// Run longer with `WATCHTOWER_FUZZ_ROUNDS=200000 cargo test --release`.
    #[test]
    fn fuzz_entry_survives_seeds_and_mutations() {
        let (mut rng, rounds) = Rng::from_env();
        let seeds = seeds();
        for (_, msg) in &seeds {
            fuzz_dns_message(msg);
        }
        fuzz_dns_message(b"");
        let inputs: Vec<&[u8]> = seeds.iter().map(|(_, msg)| msg.as_slice()).collect();
        for _ in 0..rounds {
            let mut data = mutate(&mut rng, &inputs, PIECES);
            // And now and then a random ID or section count.
            if data.len() >= HEADER_LEN && rng.below(3) == 0 {
                let field = 2 * rng.below(6);
                data[field..field + 2].copy_from_slice(&(rng.next() as u16).to_be_bytes());
            }
            fuzz_dns_message(&data);
            // Random bytes behind a valid header and question.
            let mut noise = seeds[0].1[..FIRST_RECORD].to_vec();
            noise.extend((0..rng.below(64)).map(|_| rng.next() as u8));
            fuzz_dns_message(&noise);
        }
    }
}
