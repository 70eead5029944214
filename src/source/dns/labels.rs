//! Answer records to targets and labels, exactly as Prometheus's
//! `refreshOne` makes them, then to HTTP SD groups.
//!
//! Per record, by its own type (whatever was asked): SRV gives
//! `target:port` and `__meta_dns_srv_record_target`/`_port`; MX and NS
//! their host with the configured port and `__meta_dns_mx_record_target` /
//! `__meta_dns_ns_record_target`; A and AAAA the address with the port
//! (IPv6 in brackets, an IPv4-mapped one as IPv4, as Go prints it); CNAMEs
//! (which come with A answers) are skipped, other types skipped with a
//! warning. Names keep miekg's presentation form in labels (final dot,
//! `\.` and `\DDD` escapes) and lose their final dots in the address.
//!
//! Prometheus gives each target its own labels inside one group per name;
//! HTTP SD groups cannot, so the targets of a name are grouped by equal
//! labels. The empty labels Prometheus sets (the SRV ones of an A target)
//! are left out: Prometheus drops empty labels before relabelling, so
//! what it discovers is the same. Groups are sorted by labels, targets
//! within them by address, so the body does not change with the order in
//! which a server rotates its answers.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};

use hickory_proto::rr::{Name, RData, Record};

use crate::targetgroup::{LabelSet, TargetGroup};

/// The configured name.
pub const NAME: &str = "__meta_dns_name";
/// An SRV record's target, with its final dot.
pub const SRV_TARGET: &str = "__meta_dns_srv_record_target";
/// An SRV record's port.
pub const SRV_PORT: &str = "__meta_dns_srv_record_port";
/// An MX record's exchange, with its final dot.
pub const MX_TARGET: &str = "__meta_dns_mx_record_target";
/// An NS record's name server, with its final dot.
pub const NS_TARGET: &str = "__meta_dns_ns_record_target";

/// The groups of `name`'s answer; `port` for all but SRV targets. Records
/// of no use are passed to `skipped`.
pub fn groups(
    name: &str,
    port: u16,
    answers: &[Record],
    mut skipped: impl FnMut(&Record),
) -> Vec<TargetGroup> {
    let mut targets: Vec<(BTreeMap<String, String>, String)> = Vec::new();
    for record in answers {
        let mut labels = BTreeMap::new();
        labels.insert(NAME.to_string(), name.to_string());
        let address = match &record.data {
            RData::SRV(srv) => {
                let target = presentation(&srv.target);
                let address = join_host_port(target.trim_end_matches('.'), srv.port);
                labels.insert(SRV_TARGET.to_string(), target);
                labels.insert(SRV_PORT.to_string(), srv.port.to_string());
                address
            }
            RData::MX(mx) => {
                let target = presentation(&mx.exchange);
                let address = join_host_port(target.trim_end_matches('.'), port);
                labels.insert(MX_TARGET.to_string(), target);
                address
            }
            RData::NS(ns) => {
                let target = presentation(&ns.0);
                let address = join_host_port(target.trim_end_matches('.'), port);
                labels.insert(NS_TARGET.to_string(), target);
                address
            }
            RData::A(a) => join_host_port(&a.0.to_string(), port),
            RData::AAAA(a) => join_host_port(&go_ipv6(a.0), port),
            // CNAME responses can occur with "Type: A" requests.
            RData::CNAME(_) => continue,
            _ => {
                skipped(record);
                continue;
            }
        };
        // Prometheus's empty labels are absent labels.
        labels.retain(|_, v| !v.is_empty());
        targets.push((labels, address));
    }
    targets.sort();
    let mut out: Vec<TargetGroup> = Vec::new();
    for (labels, address) in targets {
        match out.last_mut() {
            Some(g) if g.labels.0 == labels => g.targets.push(address),
            _ => out.push(TargetGroup {
                targets: vec![address],
                labels: LabelSet(labels),
            }),
        }
    }
    out
}

/// A wire name as miekg's `UnpackDomainName` writes it: each label
/// followed by a dot, `. ' @ ; ( ) " \` and space escaped with a
/// backslash, other bytes outside `' '..='~'` as `\DDD`; the root is `.`.
pub fn presentation(name: &Name) -> String {
    let mut s = String::new();
    for label in name.iter() {
        for &b in label {
            match b {
                b'.' | b' ' | b'\'' | b'@' | b';' | b'(' | b')' | b'"' | b'\\' => {
                    s.push('\\');
                    s.push(char::from(b));
                }
                b if !(b' '..=b'~').contains(&b) => s.push_str(&format!("\\{b:03}")),
                b => s.push(char::from(b)),
            }
        }
        s.push('.');
    }
    if s.is_empty() {
        s.push('.');
    }
    s
}

/// An IPv6 address as Go's `net.IP.String` prints it: an IPv4-mapped one
/// as IPv4, others in RFC 5952's form (as Rust prints them).
fn go_ipv6(ip: Ipv6Addr) -> String {
    match ip.to_ipv4_mapped() {
        Some(v4) => v4.to_string(),
        None => IpAddr::V6(ip).to_string(),
    }
}

/// Go's `net.JoinHostPort`: brackets around a host with a colon.
fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, NS, SRV, TXT};

    fn name(s: &str) -> Name {
        super::super::lookup::wire_name(s).unwrap()
    }

    fn record(data: RData) -> Record {
        Record::from_rdata(name("x.example."), 30, data)
    }

    fn labels(pairs: &[(&str, &str)]) -> LabelSet {
        LabelSet(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn srv_records_give_target_port_and_their_labels() {
        let answers = [
            record(RData::SRV(SRV::new(10, 5, 9104, name("db2.example.")))),
            record(RData::SRV(SRV::new(10, 5, 9100, name("db1.example.")))),
            record(RData::SRV(SRV::new(20, 5, 9100, name("db1.example.")))),
            record(RData::SRV(SRV::new(0, 0, 80, Name::root()))),
            record(RData::A(A::new(127, 0, 0, 1))),
        ];
        let mut skipped = 0;
        let g = groups("_m._tcp.example", 0, &answers, |_| skipped += 1);
        assert_eq!(skipped, 0);
        let srv =
            |t: &str, p: &str| labels(&[(NAME, "_m._tcp.example"), (SRV_TARGET, t), (SRV_PORT, p)]);
        assert_eq!(
            g,
            [
                // The A record in an SRV answer is a target too, as in
                // Prometheus (with the configured port, 0 here).
                TargetGroup::new(["127.0.0.1:0"], labels(&[(NAME, "_m._tcp.example")])),
                TargetGroup::new([":80"], srv(".", "80")),
                TargetGroup::new(
                    ["db1.example:9100", "db1.example:9100"],
                    srv("db1.example.", "9100")
                ),
                TargetGroup::new(["db2.example:9104"], srv("db2.example.", "9104")),
            ]
        );
    }

    #[test]
    fn address_records_share_one_group_and_go_s_formatting() {
        let answers = [
            record(RData::CNAME(CNAME(name("alias.example.")))),
            record(RData::AAAA(AAAA("::1".parse().unwrap()))),
            record(RData::AAAA(AAAA("::ffff:127.0.0.2".parse().unwrap()))),
            record(RData::AAAA(AAAA("fe80:0:0:1::".parse().unwrap()))),
            record(RData::AAAA(AAAA("::1.2.3.4".parse().unwrap()))),
            record(RData::A(A::new(127, 0, 0, 10))),
            record(RData::TXT(TXT::new(vec!["x".into()]))),
        ];
        let mut skipped = Vec::new();
        let g = groups("db.example", 9100, &answers, |r| {
            skipped.push(r.record_type())
        });
        assert_eq!(skipped, [hickory_proto::rr::RecordType::TXT]);
        assert_eq!(g.len(), 1);
        assert_eq!(g[0].labels, labels(&[(NAME, "db.example")]));
        assert_eq!(
            g[0].targets,
            [
                "127.0.0.10:9100",
                "127.0.0.2:9100",
                "[::102:304]:9100",
                "[::1]:9100",
                "[fe80:0:0:1::]:9100",
            ]
        );
    }

    #[test]
    fn mx_and_ns_names_keep_miekg_s_escapes() {
        let odd = Name::from_labels(vec![&b"we b"[..], b"a.b", b"\x01\xc3", b"Example"]).unwrap();
        assert_eq!(presentation(&odd), "we\\ b.a\\.b.\\001\\195.Example.");
        assert_eq!(presentation(&Name::root()), ".");
        let answers = [
            record(RData::MX(MX::new(10, name("mail.example.")))),
            record(RData::NS(NS(name("ns1.example.")))),
        ];
        let g = groups("example", 25, &answers, |_| {});
        assert_eq!(
            g,
            [
                TargetGroup::new(
                    ["mail.example:25"],
                    labels(&[(NAME, "example"), (MX_TARGET, "mail.example.")])
                ),
                TargetGroup::new(
                    ["ns1.example:25"],
                    labels(&[(NAME, "example"), (NS_TARGET, "ns1.example.")])
                ),
            ]
        );
        assert!(groups("example", 25, &[], |_| {}).is_empty());
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;
    use crate::source::dns::lookup::wire_name;
    use crate::source::dns::resolv::{fqdn, is_fqdn, ResolvConf};

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// A wire name written as miekg writes it reads back as the same
        /// labels, whatever bytes they hold.
        #[test]
        fn presentation_reads_back(labels in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..20), 0..6)) {
            let name = Name::from_labels(labels.clone()).unwrap();
            let back = wire_name(&presentation(&name)).unwrap();
            let back: Vec<Vec<u8>> = back.iter().map(<[u8]>::to_vec).collect();
            prop_assert_eq!(back, labels);
        }

        /// Every name a lookup tries ends with a dot (ASCII ones without
        /// escapes fully qualified: miekg's `IsFqdn` misjudges some after
        /// a multi-byte rune, and so does the port), and none of the readers panics on
        /// any text.
        #[test]
        fn name_lists_end_with_a_dot(name in ".{0,40}", conf in ".{0,200}") {
            let conf = ResolvConf::parse(&conf);
            for n in conf.name_list(&name) {
                prop_assert!(n.ends_with('.'), "{:?}", n);
                // A trailing backslash escapes the dot added after it, in
                // miekg's `Fqdn` as here: such a name is not fully qualified.
                prop_assert!(!n.is_ascii() || n.contains('\\') || is_fqdn(&n), "{:?}", n);
                let _ = wire_name(&fqdn(&n));
            }
        }
    }
}
