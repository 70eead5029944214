//! One name's lookup, as Prometheus 2.42's `discovery/dns` does it
//! (`lookupWithSearchPath`, `lookupFromAnyServer`, `askServerForName`):
//! each name of the search list in turn, each server in turn, UDP with
//! EDNS0 (4096 bytes) and TCP when the answer is truncated.
//!
//! Outcomes, as Prometheus decides them: the first `NOERROR` answer
//! (records or none) is the result; `NXDOMAIN` from a server for every
//! name of the list is an empty result; any name for which no server gave
//! either is a failure, and the name's last good targets stay.
//!
//! Messages are built and parsed by hickory-proto; the exchange is ours,
//! async on tokio sockets, bounded by DNS itself (64 KiB) and by the
//! `timeout` of each query. Unlike miekg's client (one try per server, 2 s
//! timeouts), `timeout` and `attempts` are honoured as Go's resolver and
//! glibc honour them.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{Name, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::config::RecordKind;
use super::resolv::ResolvConf;

/// The UDP payload size Prometheus advertises (miekg's `DefaultMsgSize`).
const EDNS_PAYLOAD: u16 = 4096;
/// The largest DNS message (TCP's length prefix is 16 bits).
const MAX_MESSAGE: usize = 65535;
/// Per-name failure details kept in a message.
const MAX_DETAILS: usize = 4;

/// Where queries go and how long they may take.
#[derive(Debug, Clone)]
pub struct Resolver {
    /// The servers in order, as shown in messages, with their address (or
    /// why there is none: a `nameserver` that is not an IP address).
    pub servers: Vec<(String, Result<SocketAddr, String>)>,
    /// Search list, `ndots`, `timeout`, `attempts`.
    pub conf: ResolvConf,
}

impl Resolver {
    /// The resolver `/etc/resolv.conf` describes: its servers on port 53.
    pub fn system(conf: ResolvConf) -> Result<Resolver, Failure> {
        if conf.servers.is_empty() {
            return Err(Failure::new(
                Kind::ResolvConf,
                format!("no nameserver in {}", super::resolv::RESOLV_CONF),
            ));
        }
        let servers = conf
            .servers
            .iter()
            .map(|s| {
                let addr = s
                    .parse()
                    .map(|ip| SocketAddr::new(ip, ResolvConf::PORT))
                    .or_else(|_| format!("[{s}]:{}", ResolvConf::PORT).parse())
                    .map_err(|_| format!("nameserver {s:?} is not an IP address"));
                (s.clone(), addr)
            })
            .collect();
        Ok(Resolver { servers, conf })
    }

    /// `nameservers:` instead of `/etc/resolv.conf`: no search list, the
    /// default timeout and attempts.
    pub fn given(servers: &[SocketAddr]) -> Resolver {
        Resolver {
            servers: servers.iter().map(|s| (s.to_string(), Ok(*s))).collect(),
            conf: ResolvConf::default(),
        }
    }
}

/// Why a query or a lookup failed: the `error` label of
/// `sdbridge_source_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `/etc/resolv.conf` is missing, unreadable or names no server.
    ResolvConf,
    /// No answer within `timeout`.
    Timeout,
    /// The server could not be reached (refused, unreachable, ...).
    Network,
    /// The server answered with an error (`SERVFAIL`, `REFUSED`, ...).
    Rcode,
    /// The answer could not be read (malformed, truncated over TCP).
    Decode,
    /// The name cannot be put in a query (an empty label, too long).
    Name,
}

impl Kind {
    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            Kind::ResolvConf => "dns_resolv_conf",
            Kind::Timeout => "dns_timeout",
            Kind::Network => "dns_network",
            Kind::Rcode => "dns_rcode",
            Kind::Decode => "dns_decode",
            Kind::Name => "dns_name",
        }
    }
}

/// A failed query or lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What kind of failure (the last one met, for a lookup).
    pub kind: Kind,
    /// What happened, with the server and name.
    pub message: String,
}

impl Failure {
    fn new(kind: Kind, message: String) -> Failure {
        Failure { kind, message }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The query type of a record kind.
pub fn query_type(kind: RecordKind) -> RecordType {
    match kind {
        RecordKind::Srv => RecordType::SRV,
        RecordKind::A => RecordType::A,
        RecordKind::Aaaa => RecordType::AAAA,
        RecordKind::Mx => RecordType::MX,
        RecordKind::Ns => RecordType::NS,
    }
}

/// Prometheus's `lookupWithSearchPath`: the answer records for `name`
/// (none for `NXDOMAIN` everywhere), or why there is no answer.
pub async fn lookup(
    name: &str,
    qtype: RecordType,
    resolver: &Resolver,
) -> Result<Vec<Record>, Failure> {
    let mut failures: Vec<Failure> = Vec::new();
    for lname in resolver.conf.name_list(name) {
        match lookup_from_any_server(&lname, qtype, resolver).await {
            // A later name may still answer, but "no such name" can no
            // longer be concluded.
            Err(f) => failures.push(f),
            Ok(m) if m.metadata.response_code == ResponseCode::NoError => return Ok(m.answers),
            Ok(_) => {}
        }
    }
    match failures.last() {
        None => Ok(Vec::new()),
        Some(last) => {
            let mut details: Vec<&str> = failures
                .iter()
                .take(MAX_DETAILS)
                .map(|f| f.message.as_str())
                .collect();
            let more = failures.len().saturating_sub(MAX_DETAILS);
            let more = format!("and {more} more");
            if failures.len() > MAX_DETAILS {
                details.push(&more);
            }
            Err(Failure::new(
                last.kind,
                format!(
                    "could not resolve {name:?}: all servers responded with errors to at least one search domain ({})",
                    details.join("; ")
                ),
            ))
        }
    }
}

/// Prometheus's `lookupFromAnyServer`: the first `NOERROR` or `NXDOMAIN`
/// answer for `name` from the servers in turn (`attempts` rounds of them).
async fn lookup_from_any_server(
    name: &str,
    qtype: RecordType,
    resolver: &Resolver,
) -> Result<Message, Failure> {
    // As miekg's client, shared by the servers of one name: once an
    // answer came truncated, the following queries go over TCP.
    let mut tcp = false;
    let mut last: Option<Failure> = None;
    for _ in 0..resolver.conf.attempts.max(1) {
        for (shown, addr) in &resolver.servers {
            let result = match addr {
                Ok(addr) => ask(name, qtype, *addr, &mut tcp, resolver.conf.timeout).await,
                Err(e) => Err(Failure::new(Kind::Network, e.clone())),
            };
            match result {
                Ok(m)
                    if matches!(
                        m.metadata.response_code,
                        ResponseCode::NoError | ResponseCode::NXDomain
                    ) =>
                {
                    return Ok(m)
                }
                Ok(m) => {
                    last = Some(Failure::new(
                        Kind::Rcode,
                        format!("{shown}: {name}: {}", m.metadata.response_code),
                    ))
                }
                Err(e) => last = Some(Failure::new(e.kind, format!("{shown}: {name}: {e}"))),
            }
            if let Some(f) = &last {
                tracing::debug!(server = %shown, name, error = %f, "DNS resolution failed");
            }
        }
    }
    Err(last.unwrap_or_else(|| Failure::new(Kind::ResolvConf, format!("{name}: no server to ask"))))
}

/// Prometheus's `askServerForName`: one query to one server, over TCP
/// again (without EDNS0) when the UDP answer is truncated.
async fn ask(
    name: &str,
    qtype: RecordType,
    server: SocketAddr,
    tcp: &mut bool,
    timeout: Duration,
) -> Result<Message, Failure> {
    // miekg's `SetQuestion(dns.Fqdn(name))`: its `IsFqdn` takes a name
    // ending in a 2- or 4-byte rune and a dot for a relative one, so such
    // a name gets a second dot and fails, as in Prometheus.
    let qname = wire_name(&super::resolv::fqdn(name)).map_err(|e| Failure::new(Kind::Name, e))?;
    let response = exchange(&qname, qtype, server, *tcp, true, timeout).await?;
    if !response.metadata.truncation {
        return Ok(response);
    }
    if *tcp {
        return Err(Failure::new(
            Kind::Decode,
            "got truncated message on TCP (64kiB limit exceeded?)".into(),
        ));
    }
    *tcp = true;
    let response = exchange(&qname, qtype, server, true, false, timeout).await?;
    if response.metadata.truncation {
        return Err(Failure::new(
            Kind::Decode,
            "got truncated message on TCP (64kiB limit exceeded?)".into(),
        ));
    }
    Ok(response)
}

/// The query miekg's `SetQuestion` (recursion desired) and, with `edns`,
/// `SetEdns0(4096, false)` make.
fn query(qname: &Name, qtype: RecordType, edns: bool) -> Result<(u16, Vec<u8>), Failure> {
    let mut msg = Message::query();
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(qname.clone(), qtype));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(EDNS_PAYLOAD);
        msg.set_edns(e);
    }
    let bytes = msg
        .to_vec()
        .map_err(|e| Failure::new(Kind::Name, format!("cannot encode the query: {e}")))?;
    Ok((msg.metadata.id, bytes))
}

/// Sends one query and reads its answer, within `timeout`.
async fn exchange(
    qname: &Name,
    qtype: RecordType,
    server: SocketAddr,
    tcp: bool,
    edns: bool,
    timeout: Duration,
) -> Result<Message, Failure> {
    let (id, bytes) = query(qname, qtype, edns)?;
    let io = |e: std::io::Error| Failure::new(Kind::Network, e.to_string());
    let answer = async {
        if tcp {
            let mut stream = TcpStream::connect(server).await.map_err(io)?;
            let mut framed = Vec::with_capacity(bytes.len() + 2);
            framed.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
            framed.extend_from_slice(&bytes);
            stream.write_all(&framed).await.map_err(io)?;
            let len = stream.read_u16().await.map_err(io)?;
            let mut buf = vec![0; usize::from(len)];
            stream.read_exact(&mut buf).await.map_err(io)?;
            let m = decode(&buf)?;
            if m.metadata.id != id {
                return Err(Failure::new(Kind::Decode, "id mismatch".into()));
            }
            Ok(m)
        } else {
            let local: SocketAddr = if server.is_ipv4() {
                ([0, 0, 0, 0], 0).into()
            } else {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let socket = UdpSocket::bind(local).await.map_err(io)?;
            socket.connect(server).await.map_err(io)?;
            socket.send(&bytes).await.map_err(io)?;
            let mut buf = vec![0; MAX_MESSAGE];
            loop {
                let n = socket.recv(&mut buf).await.map_err(io)?;
                let m = decode(&buf[..n])?;
                // A stray or forged datagram: keep waiting for ours.
                if m.metadata.id == id && m.metadata.message_type == MessageType::Response {
                    return Ok(m);
                }
            }
        }
    };
    match tokio::time::timeout(timeout, answer).await {
        Ok(result) => result,
        Err(_) => Err(Failure::new(
            Kind::Timeout,
            format!("no answer within {timeout:?}"),
        )),
    }
}

fn decode(bytes: &[u8]) -> Result<Message, Failure> {
    Message::from_vec(bytes)
        .map_err(|e| Failure::new(Kind::Decode, format!("cannot read the answer: {e}")))
}

/// A fully qualified presentation-format name as a wire name, with
/// miekg's `packDomainName` rules: `\DDD` (decimal) and `\c` escapes, no
/// leading or doubled dot but for the root, labels under 64 bytes.
pub fn wire_name(name: &str) -> Result<Name, String> {
    if name == "." {
        return Ok(Name::root());
    }
    let invalid = |why: &str| format!("{name:?} is not a valid domain name: {why}");
    let bytes = name.as_bytes();
    let mut labels: Vec<Vec<u8>> = Vec::new();
    let mut label: Vec<u8> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => {
                let ddd = bytes
                    .get(i + 1..i + 4)
                    .filter(|d| d.iter().all(u8::is_ascii_digit));
                match (ddd, bytes.get(i + 1)) {
                    (Some(d), _) if i + 3 < bytes.len() => {
                        let v = d.iter().fold(0u32, |v, c| v * 10 + u32::from(c - b'0'));
                        // miekg's dddToByte wraps, as Go's byte arithmetic does.
                        label.push((v % 256) as u8);
                        i += 4;
                    }
                    (_, Some(&c)) => {
                        label.push(c);
                        i += 2;
                    }
                    (_, None) => return Err(invalid("dangling escape")),
                }
                continue;
            }
            b'.' => {
                if label.is_empty() {
                    return Err(invalid("empty label"));
                }
                if label.len() >= 64 {
                    return Err(invalid("a label longer than 63 bytes"));
                }
                labels.push(std::mem::take(&mut label));
            }
            c => label.push(c),
        }
        i += 1;
    }
    if !label.is_empty() {
        return Err(invalid("not fully qualified"));
    }
    let mut wire = Name::from_labels(labels).map_err(|e| invalid(&e.to_string()))?;
    wire.set_fqdn(true);
    Ok(wire)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_encoded_with_miekg_s_rules() {
        let labels = |n: &str| -> Vec<Vec<u8>> {
            wire_name(n).unwrap().iter().map(|l| l.to_vec()).collect()
        };
        assert_eq!(
            labels("_x._tcp.Db."),
            [b"_x".to_vec(), b"_tcp".to_vec(), b"Db".to_vec()]
        );
        assert_eq!(labels("a\\.b.c."), [b"a.b".to_vec(), b"c".to_vec()]);
        assert_eq!(labels("a\\065\\\\.c."), [b"aA\\".to_vec(), b"c".to_vec()]);
        assert_eq!(labels("서비스."), ["서비스".as_bytes().to_vec()]);
        assert_eq!(wire_name(".").unwrap(), Name::root());
        for bad in ["a..b.", ".a.", "a", "a\\", &format!("{}.", "x".repeat(64))] {
            assert!(wire_name(bad).is_err(), "{bad:?}");
        }
        let long = format!("{}.", vec!["x".repeat(63); 5].join("."));
        assert!(wire_name(&long).is_err(), "over 255 bytes");
    }

    #[test]
    fn nameservers_of_resolv_conf_are_ips_on_port_53() {
        let r = Resolver::system(ResolvConf::parse(
            "nameserver 127.0.0.1\nnameserver ::1\nnameserver dns.example\n",
        ))
        .unwrap();
        assert_eq!(r.servers[0].1, Ok("127.0.0.1:53".parse().unwrap()));
        assert_eq!(r.servers[1].1, Ok("[::1]:53".parse().unwrap()));
        assert!(r.servers[2]
            .1
            .as_ref()
            .unwrap_err()
            .contains("not an IP address"));
        let none = Resolver::system(ResolvConf::parse("search a\n")).unwrap_err();
        assert_eq!(none.kind, Kind::ResolvConf);
        assert_eq!(none.message, "no nameserver in /etc/resolv.conf");
    }
}
