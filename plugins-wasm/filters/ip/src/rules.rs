//! The ip filter's rules (nbdkit-ip-filter(1), nbdkit's filters/ip/ip.c): parsing `allow=` and
//! `deny=` lists, and deciding whether a client may connect. Plain Rust, unit-tested natively.
//!
//! A decision can be premature: before a client has had its chance to upgrade to TLS, a
//! `dn:` or `issuer-dn:` rule cannot be evaluated, and the verdict waits for the options
//! that come after STARTTLS (nbdkit ≥ 1.42 checks again when a client lists or opens exports).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// One rule of an `allow=` or `deny=` list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rule {
    /// `all`, `any`
    Any,
    /// `allipv4`, `anyipv4`
    AnyIpv4,
    /// `allipv6`, `anyipv6`
    AnyIpv6,
    /// `allunix`, `anyunix`
    AnyUnix,
    /// `allvsock`, `anyvsock`, `vsock-cid:`, `vsock-port:`: accepted as nbdkit accepts them;
    /// nbdbox serves no AF_VSOCK clients, so they match nobody (as in an nbdkit built
    /// without AF_VSOCK).
    Vsock,
    /// `A.B.C.D[/NN]`
    Ipv4 {
        network: Ipv4Addr,
        prefix: u32,
    },
    /// `A:B:...[/NN]`
    Ipv6 {
        network: Ipv6Addr,
        prefix: u32,
    },
    /// `dn:DN`: the subject of the client's certificate, exactly.
    Dn(String),
    /// `issuer-dn:DN`: the issuer of the client's certificate, exactly.
    IssuerDn(String),
    /// `pid:N`, `uid:N`, `gid:N`: the process on the other end of a Unix socket.
    Pid(u32),
    Uid(u32),
    Gid(u32),
}

/// Where the client connects from, as `host.peer-name` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Ip(IpAddr),
    Unix,
}

impl Source {
    /// `IP:PORT`, `[IPv6%SCOPE]:PORT` or `unix`; None for anything else.
    pub fn from_peer_name(name: &str) -> Option<Source> {
        if name == "unix" {
            return Some(Source::Unix);
        }
        name.parse::<SocketAddr>().ok().map(|addr| Source::Ip(addr.ip()))
    }
}

/// What the client's certificate says, as far as it is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Certificate {
    /// Not yet known: the client may still upgrade to TLS.
    Pending,
    /// Known: the subject and issuer DNs (RFC 4514) of the certificate the client presented,
    /// or none (no TLS, PSK, no client certificate).
    Known {
        dn: Option<String>,
        issuer_dn: Option<String>,
    },
}

pub struct Client {
    pub source: Source,
    pub certificate: Certificate,
    /// A Unix socket client's (pid, uid, gid).
    pub credentials: Option<(u32, u32, u32)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny,
    /// It depends on a certificate the client has not shown yet.
    Undecided,
}

/// The keyword rules, which nbdkit matches without regard to case.
const KEYWORDS: &[(&str, Rule)] = &[
    ("all", Rule::Any),
    ("any", Rule::Any),
    ("allipv4", Rule::AnyIpv4),
    ("anyipv4", Rule::AnyIpv4),
    ("allipv6", Rule::AnyIpv6),
    ("anyipv6", Rule::AnyIpv6),
    ("allunix", Rule::AnyUnix),
    ("anyunix", Rule::AnyUnix),
    ("allvsock", Rule::Vsock),
    ("anyvsock", Rule::Vsock),
];

/// Security labels (SO_PEERSEC, SELinux) are not given to components.
const SECURITY_RULE: &str = "security:";

/// `s` without `prefix`, compared without regard to ASCII case.
fn strip_prefix_nocase<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &s[prefix.len()..])
}

/// A DN holds commas, so a `dn:` or `issuer-dn:` rule takes the rest of the list.
fn starts_dn_rule(s: &str) -> bool {
    strip_prefix_nocase(s, "dn:").is_some() || strip_prefix_nocase(s, "issuer-dn:").is_some()
}

/// The rules of one `allow=` or `deny=` value (`key` names it in messages): comma-separated,
/// a trailing comma allowed, an empty entry not.
pub fn parse_list(key: &str, value: &str) -> Result<Vec<Rule>, String> {
    let mut rules = Vec::new();
    let mut rest = value;
    while !rest.is_empty() {
        let (entry, after) = if starts_dn_rule(rest) {
            (rest, "")
        } else {
            rest.split_once(',').unwrap_or((rest, ""))
        };
        if entry.is_empty() {
            return Err(format!("{key}: empty entry in rule list"));
        }
        rules.push(parse_rule(key, entry)?);
        rest = after;
    }
    Ok(rules)
}

fn parse_rule(key: &str, entry: &str) -> Result<Rule, String> {
    if let Some((_, rule)) = KEYWORDS.iter().find(|(word, _)| word.eq_ignore_ascii_case(entry)) {
        return Ok(rule.clone());
    }
    if strip_prefix_nocase(entry, SECURITY_RULE).is_some() {
        return Err(format!(
            "{SECURITY_RULE} rules match the security label of a Unix socket's client, which nbdbox \
             does not give filters"
        ));
    }
    for (kind, make) in [
        ("pid:", Rule::Pid as fn(u32) -> Rule),
        ("uid:", Rule::Uid),
        ("gid:", Rule::Gid),
    ] {
        if let Some(id) = strip_prefix_nocase(entry, kind) {
            return nbdkit_parse::parse_u32(kind, id).map(make);
        }
    }
    for kind in ["vsock-cid:", "vsock-port:"] {
        if let Some(id) = strip_prefix_nocase(entry, kind) {
            nbdkit_parse::parse_u32(kind, id)?;
            return Ok(Rule::Vsock);
        }
    }
    if let Some(dn) = strip_prefix_nocase(entry, "dn:") {
        return dn_rule("dn:", dn).map(Rule::Dn);
    }
    if let Some(dn) = strip_prefix_nocase(entry, "issuer-dn:") {
        return dn_rule("issuer-dn:", dn).map(Rule::IssuerDn);
    }
    if let Some((address, prefix)) = entry.split_once('/') {
        // nbdkit parses the prefix length first (nbdkit_parse_unsigned: 0x.. and 0.. too).
        let prefix = nbdkit_parse::parse_unsigned(key, prefix)?;
        return match address.parse::<IpAddr>() {
            Ok(IpAddr::V4(network)) if prefix <= 32 => Ok(Rule::Ipv4 { network, prefix }),
            Ok(IpAddr::V6(network)) if prefix <= 128 => Ok(Rule::Ipv6 { network, prefix }),
            Ok(IpAddr::V4(_)) => Err(format!("prefix is > 32 in {key}={entry}")),
            Ok(IpAddr::V6(_)) => Err(format!("prefix is > 128 in {key}={entry}")),
            Err(_) => Err(format!("cannot parse address \"{address}\" from {key}={entry}")),
        };
    }
    match entry.parse::<IpAddr>() {
        Ok(IpAddr::V4(network)) => Ok(Rule::Ipv4 { network, prefix: 32 }),
        Ok(IpAddr::V6(network)) => Ok(Rule::Ipv6 { network, prefix: 128 }),
        Err(_) => Err(format!("don't know how to parse rule: {key}={entry}")),
    }
}

fn dn_rule(kind: &str, dn: &str) -> Result<String, String> {
    if dn.is_empty() {
        return Err(format!("{kind} rules need a Distinguished Name"));
    }
    Ok(dn.to_owned())
}

/// The first `prefix` bits of `a` and `b` agree.
fn same_network(a: u128, b: u128, prefix: u32, bits: u32) -> bool {
    let mask = match prefix {
        0 => 0,
        _ => u128::MAX << (bits - prefix),
    };
    (a ^ b) & mask == 0
}

impl Rule {
    /// Whether the rule matches `client`; None while it depends on a pending certificate.
    fn matches(&self, client: &Client) -> Option<bool> {
        Some(match (self, client.source) {
            (Rule::Any, _) => true,
            (Rule::AnyIpv4, Source::Ip(ip)) => ip.is_ipv4(),
            (Rule::AnyIpv6, Source::Ip(ip)) => ip.is_ipv6(),
            (Rule::AnyUnix, source) => source == Source::Unix,
            (Rule::Ipv4 { network, prefix }, Source::Ip(IpAddr::V4(ip))) => {
                same_network(u32::from(*network).into(), u32::from(ip).into(), *prefix, 32)
            }
            (Rule::Ipv6 { network, prefix }, Source::Ip(IpAddr::V6(ip))) => {
                same_network(u128::from(*network), u128::from(ip), *prefix, 128)
            }
            (Rule::Pid(id), _) => client.credentials.is_some_and(|(pid, _, _)| pid == *id),
            (Rule::Uid(id), _) => client.credentials.is_some_and(|(_, uid, _)| uid == *id),
            (Rule::Gid(id), _) => client.credentials.is_some_and(|(_, _, gid)| gid == *id),
            (Rule::Dn(wanted) | Rule::IssuerDn(wanted), _) => {
                let Certificate::Known { dn, issuer_dn } = &client.certificate else {
                    return None;
                };
                let actual = if matches!(self, Rule::Dn(_)) { dn } else { issuer_dn };
                actual.as_deref() == Some(wanted.as_str())
            }
            _ => false,
        })
    }
}

/// Whether any rule matches: yes if one does; unknown if none does but some cannot tell yet.
fn any_matches(rules: &[Rule], client: &Client) -> Option<bool> {
    let mut verdict = Some(false);
    for rule in rules {
        match rule.matches(client) {
            Some(true) => return Some(true),
            None => verdict = None,
            Some(false) => {}
        }
    }
    verdict
}

/// nbdkit's order: a client the allow list matches is allowed, then one the deny list
/// matches is denied, and anyone else is allowed.
pub fn decide(allow: &[Rule], deny: &[Rule], client: &Client) -> Verdict {
    match any_matches(allow, client) {
        Some(true) => return Verdict::Allow,
        None => return Verdict::Undecided,
        Some(false) => {}
    }
    match any_matches(deny, client) {
        Some(true) => Verdict::Deny,
        None => Verdict::Undecided,
        Some(false) => Verdict::Allow,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(value: &str) -> Vec<Rule> {
        parse_list("allow", value).unwrap()
    }

    fn from(peer: &str) -> Client {
        Client {
            source: Source::from_peer_name(peer).unwrap(),
            certificate: Certificate::Known {
                dn: None,
                issuer_dn: None,
            },
            credentials: None,
        }
    }

    fn with_certificate(peer: &str, dn: &str, issuer_dn: &str) -> Client {
        Client {
            certificate: Certificate::Known {
                dn: Some(dn.into()),
                issuer_dn: Some(issuer_dn.into()),
            },
            ..from(peer)
        }
    }

    fn pending(peer: &str) -> Client {
        Client {
            certificate: Certificate::Pending,
            ..from(peer)
        }
    }

    fn allowed(allow: &str, deny: &str, client: &Client) -> Verdict {
        decide(&rules(allow), &parse_list("deny", deny).unwrap(), client)
    }

    #[test]
    fn keywords_ignore_case() {
        assert_eq!(
            rules("ALL,Any,anyIPv4,allipv6,AllUnix,anyvsock"),
            [
                Rule::Any,
                Rule::Any,
                Rule::AnyIpv4,
                Rule::AnyIpv6,
                Rule::AnyUnix,
                Rule::Vsock
            ]
        );
    }

    #[test]
    fn addresses_and_networks() {
        assert_eq!(
            rules("127.0.0.1,10.0.0.0/8,::1,fe80::/10,::ffff:1.2.3.4/100"),
            [
                Rule::Ipv4 {
                    network: Ipv4Addr::LOCALHOST,
                    prefix: 32
                },
                Rule::Ipv4 {
                    network: Ipv4Addr::new(10, 0, 0, 0),
                    prefix: 8
                },
                Rule::Ipv6 {
                    network: Ipv6Addr::LOCALHOST,
                    prefix: 128
                },
                Rule::Ipv6 {
                    network: "fe80::".parse().unwrap(),
                    prefix: 10
                },
                Rule::Ipv6 {
                    network: "::ffff:1.2.3.4".parse().unwrap(),
                    prefix: 100
                },
            ]
        );
        // Prefix lengths are read as nbdkit_parse_unsigned reads numbers.
        assert_eq!(
            rules("10.0.0.0/0x10"),
            [Rule::Ipv4 {
                network: Ipv4Addr::new(10, 0, 0, 0),
                prefix: 16
            }]
        );
        assert_eq!(
            rules("10.0.0.0/010"),
            [Rule::Ipv4 {
                network: Ipv4Addr::new(10, 0, 0, 0),
                prefix: 8
            }]
        );
    }

    #[test]
    fn malformed_lists_are_refused_with_nbdkit_s_messages() {
        let refused = |value: &str| parse_list("deny", value).unwrap_err();
        assert_eq!(refused(",all"), "deny: empty entry in rule list");
        assert_eq!(refused("all,,all"), "deny: empty entry in rule list");
        assert_eq!(refused("10.0.0.0/33"), "prefix is > 32 in deny=10.0.0.0/33");
        assert_eq!(refused("::/129"), "prefix is > 128 in deny=::/129");
        assert_eq!(
            refused("host.example.com/8"),
            "cannot parse address \"host.example.com\" from deny=host.example.com/8"
        );
        assert_eq!(refused("10.0.0.0/"), "deny: empty string where we expected a number");
        assert_eq!(refused("10.0.0.0/-1"), "deny: negative numbers are not allowed");
        assert_eq!(
            refused("10.0.0.0/8x"),
            "deny: could not parse number: \"8x\": trailing garbage"
        );
        assert_eq!(refused("01.2.3.4"), "don't know how to parse rule: deny=01.2.3.4");
        assert_eq!(refused("localhost"), "don't know how to parse rule: deny=localhost");
        assert_eq!(refused("1.2.3"), "don't know how to parse rule: deny=1.2.3");
        assert!(refused("vsock-cid:x").contains("vsock-cid:"));
        assert_eq!(refused("dn:"), "dn: rules need a Distinguished Name");
    }

    #[test]
    fn unix_peers_match_by_pid_uid_and_gid() {
        let client = Client {
            credentials: Some((42, 1000, 100)),
            ..from("unix")
        };
        assert_eq!(rules("uid:1000,GID:7"), [Rule::Uid(1000), Rule::Gid(7)]);
        assert_eq!(allowed("uid:1000", "all", &client), Verdict::Allow);
        assert_eq!(allowed("gid:100", "all", &client), Verdict::Allow);
        assert_eq!(allowed("pid:42", "all", &client), Verdict::Allow);
        assert_eq!(allowed("uid:0", "all", &client), Verdict::Deny);
        // A TCP client has no credentials: no uid rule matches it.
        assert_eq!(allowed("uid:1000", "all", &from("127.0.0.1:5")), Verdict::Deny);
        assert!(parse_list("allow", "uid:x").is_err());
        let message = parse_list("allow", "security:system_u:object_r:svirt_t:s0").unwrap_err();
        assert!(
            message.starts_with("security: rules match the security label"),
            "{message}"
        );
    }

    #[test]
    fn empty_values_and_trailing_commas_are_fine() {
        assert_eq!(rules(""), []);
        assert_eq!(rules("all,"), [Rule::Any]);
    }

    #[test]
    fn a_dn_takes_the_rest_of_the_list() {
        assert_eq!(
            rules("127.0.0.1,dn:CN=client.example.com,O=nbdbox tests"),
            [
                Rule::Ipv4 {
                    network: Ipv4Addr::LOCALHOST,
                    prefix: 32
                },
                Rule::Dn("CN=client.example.com,O=nbdbox tests".into())
            ]
        );
        assert_eq!(
            rules("Issuer-DN:CN=ca,O=x,all"),
            [Rule::IssuerDn("CN=ca,O=x,all".into())]
        );
    }

    #[test]
    fn peer_names_as_the_host_gives_them() {
        assert_eq!(
            Source::from_peer_name("127.0.0.1:40000"),
            Some(Source::Ip(Ipv4Addr::LOCALHOST.into()))
        );
        assert_eq!(
            Source::from_peer_name("[::1]:40000"),
            Some(Source::Ip(Ipv6Addr::LOCALHOST.into()))
        );
        assert_eq!(
            Source::from_peer_name("[fe80::1%2]:40000"),
            Some(Source::Ip("fe80::1".parse().unwrap()))
        );
        assert_eq!(Source::from_peer_name("unix"), Some(Source::Unix));
        assert_eq!(Source::from_peer_name("vsock:3"), None);
    }

    #[test]
    fn networks_match_by_prefix() {
        let v4 = from("192.168.2.77:1");
        assert_eq!(allowed("", "192.168.2.0/24", &v4), Verdict::Deny);
        assert_eq!(allowed("", "192.168.3.0/24", &v4), Verdict::Allow);
        assert_eq!(allowed("", "192.168.2.64/27", &v4), Verdict::Deny);
        assert_eq!(allowed("", "192.168.2.96/27", &v4), Verdict::Allow);
        assert_eq!(allowed("", "0.0.0.0/0", &v4), Verdict::Deny);
        assert_eq!(allowed("", "192.168.2.77", &v4), Verdict::Deny);
        assert_eq!(allowed("", "192.168.2.78", &v4), Verdict::Allow);
        let v6 = from("[2001:db8::8:800:200c:417a]:1");
        assert_eq!(allowed("", "2001:db8::/32", &v6), Verdict::Deny);
        assert_eq!(allowed("", "2001:db9::/32", &v6), Verdict::Allow);
        assert_eq!(allowed("", "2001:db8::8:800:200c:4100/121", &v6), Verdict::Deny);
        assert_eq!(allowed("", "2001:db8::8:800:200c:4100/122", &v6), Verdict::Allow);
        assert_eq!(allowed("", "::/0", &v6), Verdict::Deny);
        assert_eq!(allowed("", "2001:db8::8:800:200c:417a", &v6), Verdict::Deny);
    }

    #[test]
    fn families_never_cross() {
        let v4 = from("10.1.2.3:1");
        let v6 = from("[::1]:1");
        let unix = from("unix");
        // An IPv4 rule never matches an IPv6 client, a v4-mapped one included (nbdkit
        // compares within the address family of the socket).
        let mapped = from("[::ffff:10.1.2.3]:1");
        assert_eq!(allowed("", "10.0.0.0/8", &mapped), Verdict::Allow);
        assert_eq!(allowed("", "::ffff:10.0.0.0/104", &mapped), Verdict::Deny);
        assert_eq!(allowed("", "anyipv4", &v6), Verdict::Allow);
        assert_eq!(allowed("", "anyipv6", &v4), Verdict::Allow);
        assert_eq!(allowed("", "anyipv4,anyipv6", &unix), Verdict::Allow);
        assert_eq!(allowed("", "::/0,0.0.0.0/0", &unix), Verdict::Allow);
        assert_eq!(allowed("", "anyunix", &unix), Verdict::Deny);
        assert_eq!(allowed("", "anyunix", &v4), Verdict::Allow);
        assert_eq!(
            allowed("", "anyvsock,vsock-cid:2,vsock-port:10809", &v4),
            Verdict::Allow
        );
        assert_eq!(allowed("", "all", &unix), Verdict::Deny);
    }

    #[test]
    fn allow_comes_first_then_deny_then_allow_by_default() {
        let client = from("127.0.0.1:1");
        assert_eq!(allowed("127.0.0.1", "all", &client), Verdict::Allow);
        assert_eq!(allowed("10.0.0.0/8", "all", &client), Verdict::Deny);
        assert_eq!(allowed("all", "127.0.0.1", &client), Verdict::Allow);
        assert_eq!(allowed("10.0.0.0/8", "", &client), Verdict::Allow);
        assert_eq!(allowed("", "", &client), Verdict::Allow);
    }

    #[test]
    fn certificates_match_exactly() {
        let subject = "CN=good.example.com,O=nbdbox tests";
        let good = with_certificate("unix", subject, "CN=ca");
        assert_eq!(allowed(&format!("dn:{subject}"), "all", &good), Verdict::Allow);
        assert_eq!(allowed("issuer-dn:CN=ca", "all", &good), Verdict::Allow);
        assert_eq!(allowed("dn:CN=good.example.com", "all", &good), Verdict::Deny);
        assert_eq!(
            allowed("dn:cn=good.example.com,o=nbdbox tests", "all", &good),
            Verdict::Deny
        );
        assert_eq!(allowed("issuer-dn:CN=other-ca", "all", &good), Verdict::Deny);
        assert_eq!(allowed("", &format!("dn:{subject}"), &good), Verdict::Deny);
        // No certificate (plaintext, PSK) matches no DN.
        let plain = from("unix");
        assert_eq!(allowed(&format!("dn:{subject}"), "all", &plain), Verdict::Deny);
        assert_eq!(allowed("", &format!("dn:{subject}"), &plain), Verdict::Allow);
    }

    #[test]
    fn a_pending_certificate_defers_only_what_depends_on_it() {
        let early = pending("127.0.0.1:1");
        assert_eq!(allowed("dn:CN=x", "all", &early), Verdict::Undecided);
        assert_eq!(allowed("", "issuer-dn:CN=x", &early), Verdict::Undecided);
        // The address after the DN is part of the DN.
        assert_eq!(allowed("dn:CN=x,127.0.0.1", "all", &early), Verdict::Undecided);
        // Decided whatever the certificate says.
        assert_eq!(allowed("127.0.0.1,dn:CN=x", "all", &early), Verdict::Allow);
        assert_eq!(allowed("", "10.0.0.0/8", &early), Verdict::Allow);
        assert_eq!(allowed("", "all", &early), Verdict::Deny);
        assert_eq!(allowed("10.0.0.0/8", "all,dn:CN=x", &early), Verdict::Deny);
    }
}
