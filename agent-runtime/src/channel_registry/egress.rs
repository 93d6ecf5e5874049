//! Where answers may be sent. A webhook channel's `callbackUrl` is written by
//! whoever may write ChatChannels, and the runtime POSTs to it from inside the
//! cluster: never to a link-local address, where clouds serve their instance
//! metadata and credentials (169.254.169.254, fd00:ec2::254, fe80::/10). Other
//! internal addresses are the NetworkPolicy's to restrict (docs/webhooks.md): an
//! in-cluster receiver is a normal callback.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Whether `ip` is one an answer is never sent to: link-local or unspecified, or the
/// metadata address some clouds serve over IPv6 (`fd00:ec2::254`).
pub fn is_forbidden(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local() || v4.is_unspecified(),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_forbidden(IpAddr::V4(v4));
            }
            (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6.is_unspecified()
                || v6 == std::net::Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254)
        }
    }
}

/// Why `url` may not be sent to, when its host is an address [`is_forbidden`]
/// refuses (a name is checked when it is resolved: see [`resolver`]).
pub fn refusal(url: &str) -> Option<String> {
    let parsed = reqwest::Url::parse(url).ok()?;
    let host = parsed.host_str()?;
    let ip: IpAddr = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .parse()
        .ok()?;
    is_forbidden(ip).then(|| forbidden_message(&ip.to_string()))
}

fn forbidden_message(host: &str) -> String {
    format!(
        "{host} is a link-local address (where clouds serve instance metadata): answers are never sent there; set callbackUrl to the receiver's address"
    )
}

/// The client answers are sent with: the model client's settings (no redirects,
/// timeouts), names resolved by [`resolver`].
pub fn client() -> Result<reqwest::Client, reqwest::Error> {
    crate::providers::upstream_client_builder()
        .dns_resolver(resolver())
        .build()
}

/// A resolver that leaves out the addresses [`is_forbidden`] refuses, and fails a
/// name that resolves to nothing else.
pub fn resolver() -> Arc<NoLinkLocal> {
    Arc::new(NoLinkLocal)
}

/// See [`resolver`].
pub struct NoLinkLocal;

/// A name [`resolver`] refused: it resolves only to addresses [`is_forbidden`]
/// refuses.
#[derive(Debug)]
pub struct Forbidden(String);

impl std::fmt::Display for Forbidden {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Forbidden {}

/// The refusal of [`resolver`] behind a failed request, if that is why it failed
/// (a request error does not say its causes in its own text).
pub fn forbidden_cause(error: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(forbidden) = error.downcast_ref::<Forbidden>() {
            return Some(forbidden.0.clone());
        }
        cause = error.source();
    }
    None
}

impl Resolve for NoLinkLocal {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| !is_forbidden(a.ip()))
                .collect();
            if allowed.is_empty() && !found.is_empty() {
                let error: Box<dyn std::error::Error + Send + Sync> =
                    Box::new(Forbidden(forbidden_message(&host)));
                return Err(error);
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_local_and_metadata_addresses_are_forbidden() {
        for forbidden in [
            "169.254.169.254",
            "169.254.0.1",
            "0.0.0.0",
            "fe80::1",
            "febf::1",
            "fd00:ec2::254",
            "::",
            "::ffff:169.254.169.254",
        ] {
            assert!(is_forbidden(forbidden.parse().unwrap()), "{forbidden}");
        }
        for allowed in [
            "127.0.0.1",
            "10.0.0.7",
            "198.18.0.16",
            "8.8.8.8",
            "::1",
            "fd00::1",
            "fec0::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_forbidden(allowed.parse().unwrap()), "{allowed}");
        }
    }

    #[test]
    fn a_url_with_a_forbidden_address_is_refused_by_name() {
        let said = refusal("http://169.254.169.254/latest/meta-data/").unwrap();
        assert!(
            said.starts_with("169.254.169.254 is a link-local address"),
            "{said}"
        );
        assert!(refusal("http://[fe80::1]:8080/hook").is_some());
        assert!(refusal("http://[::ffff:169.254.169.254]/").is_some());
        assert_eq!(refusal("http://127.0.0.1:9/hook"), None);
        assert_eq!(refusal("https://hooks.example.com/x"), None);
        assert_eq!(refusal("not a url"), None);
    }

    /// A resolver that refuses every name as [`resolver`] refuses a link-local one.
    struct RefuseAll;

    impl Resolve for RefuseAll {
        fn resolve(&self, name: Name) -> Resolving {
            let error: Box<dyn std::error::Error + Send + Sync> =
                Box::new(Forbidden(forbidden_message(name.as_str())));
            Box::pin(async move { Err(error) })
        }
    }

    #[tokio::test]
    async fn a_refused_name_is_found_behind_the_request_error() {
        // Refused while resolving: no connection is made.
        let client = reqwest::Client::builder()
            .no_proxy()
            .dns_resolver(Arc::new(RefuseAll))
            .build()
            .unwrap();
        let error = client
            .post("http://metadata.test/")
            .send()
            .await
            .unwrap_err();
        let said = forbidden_cause(&error).expect("the refusal");
        assert!(
            said.starts_with("metadata.test is a link-local address"),
            "{said}"
        );
        let other = std::io::Error::other("connection refused");
        assert_eq!(forbidden_cause(&other), None);
    }

    #[tokio::test]
    async fn names_resolve_without_forbidden_addresses() {
        // An address: nothing is looked up, so no query can leave the machine.
        let addrs: Vec<SocketAddr> = resolver()
            .resolve("127.0.0.1".parse().unwrap())
            .await
            .expect("an address resolves to itself")
            .collect();
        assert!(!addrs.is_empty());
        assert!(addrs.iter().all(|a| a.ip().is_loopback()), "{addrs:?}");
    }
}
