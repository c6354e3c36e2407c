//! ip: allow or deny clients by where they connect from and by the certificate they present
//! (nbdkit's filters/ip/ip.c, nbdkit-ip-filter(1)). `allow=` and `deny=` (repeatable) take
//! comma-separated rules; the allow list is checked first, then the deny list, and a client
//! neither matches is allowed.
//!
//! The check runs in preconnect, and again when a client lists or opens exports (nbdkit ≥
//! 1.42): under `--tls=on` a client's certificate only exists after STARTTLS, so `dn:` and
//! `issuer-dn:` rules are decided then, and a client they deny gets no export list either.
//! `pid:`, `uid:` and `gid:` rules match a Unix socket client's credentials (SO_PEERCRED, which
//! the host gives as `host.peer-credentials`); `security:` rules need an SELinux label the host
//! does not give, and are refused at configuration.
//!
//! State: none beyond the rules.

mod rules;

use nbdbox_filter_sdk::prelude::*;
use nbdbox_filter_sdk::{debug, is_tls, peer_credentials, peer_name, peer_tls_dn, peer_tls_issuer_dn};
use rules::{Certificate, Client, Rule, Source, Verdict};

#[derive(Default)]
struct Ip {
    allow: Vec<Rule>,
    deny: Vec<Rule>,
}

/// When the rules are checked.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// In preconnect: a client without TLS may still upgrade.
    Preconnect,
    /// Listing or opening exports: whatever TLS the client has, it has now.
    Negotiation,
}

impl Ip {
    fn verdict(&self, stage: Stage) -> Verdict {
        if self.allow.is_empty() && self.deny.is_empty() {
            return Verdict::Allow;
        }
        // nbdkit fails closed when it cannot tell where the client is (a client on stdin).
        let Some(source) = peer_name().as_deref().and_then(Source::from_peer_name) else {
            return Verdict::Deny;
        };
        let certificate = if is_tls() {
            Certificate::Known {
                dn: peer_tls_dn(),
                issuer_dn: peer_tls_issuer_dn(),
            }
        } else if stage == Stage::Preconnect {
            Certificate::Pending
        } else {
            Certificate::Known {
                dn: None,
                issuer_dn: None,
            }
        };
        let credentials = peer_credentials().map(|c| (c.pid, c.uid, c.gid));
        let client = Client {
            source,
            certificate,
            credentials,
        };
        rules::decide(&self.allow, &self.deny, &client)
    }

    fn check(&self, stage: Stage) -> Result<()> {
        match self.verdict(stage) {
            Verdict::Allow => Ok(()),
            Verdict::Undecided => {
                debug("ip: the client's certificate decides: checking again after STARTTLS");
                Ok(())
            }
            Verdict::Deny => Err(error(
                Errno::Eperm,
                "client not permitted to connect because of source address restriction",
            )),
        }
    }
}

impl Filter for Ip {
    const NAME: &'static str = "ip";
    const DESCRIPTION: &'static str = "nbdkit ip filter";
    const CONFIG_KEYS: &'static [Key] = &[
        Key::new("allow", Kind::Text, "allow=addr[,addr...]: set allow list"),
        Key::new("deny", Kind::Text, "deny=addr[,addr...]: set deny list"),
    ];
    type Connection = ();

    /// Repeated keys append to their list, as in nbdkit.
    fn config(&mut self, key: &str, value: &str) -> Result<()> {
        let parsed = rules::parse_list(key, value).map_err(|message| error(Errno::Einval, message))?;
        let list = if key == "allow" {
            &mut self.allow
        } else {
            &mut self.deny
        };
        list.extend(parsed);
        Ok(())
    }

    fn preconnect(&self, readonly: bool) -> Result<()> {
        self.check(Stage::Preconnect)?;
        next::preconnect(readonly)
    }

    fn list_exports(&self, readonly: bool) -> Result<Vec<Export>> {
        self.check(Stage::Negotiation)?;
        next::list_exports(readonly)
    }

    /// A denied client learns nothing of the layers below, not even the default name.
    fn default_export(&self, readonly: bool) -> Option<String> {
        (self.verdict(Stage::Negotiation) != Verdict::Deny)
            .then(|| next::default_export(readonly))
            .flatten()
    }

    fn open_next(&self, readonly: bool, export_name: &str) -> Result<next::Connection> {
        self.check(Stage::Negotiation)?;
        next::Connection::open(readonly, export_name)
    }

    fn open(&self, _next: &Next, _readonly: bool, _export_name: &str) -> Result<()> {
        Ok(())
    }
}

nbdbox_filter_sdk::filter!(Ip);
