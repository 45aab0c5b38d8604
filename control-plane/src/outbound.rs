//! Requests the control plane makes to URLs it was given: edges and webhooks. Such a URL could
//! point inside the network the control plane runs in (its loopback, a metadata service, a
//! private range), so by default only public addresses are reached: checked on the address
//! each request actually connects to, after resolution, never by the name alone. Redirects are
//! not followed, URLs carry no credentials, and answers are read only up to a limit.
//!
//! `Targets` admits private ranges by CIDR for on-premises setups (`--allow-targets`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::model::Refusal;

/// Which addresses outbound requests may reach: every public one, and private ones inside the
/// ranges allowed.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    allowed: Arc<[IpNet]>,
}

impl Targets {
    /// Public addresses, and these ranges too.
    pub fn allowing(ranges: impl IntoIterator<Item = IpNet>) -> Self {
        Self { allowed: ranges.into_iter().collect() }
    }

    /// Whether a request may connect to `address`.
    pub fn admits(&self, address: IpAddr) -> bool {
        let address = unmapped(address);
        !is_private(address) || self.allowed.iter().any(|range| range.contains(&address))
    }

    /// Checks a URL as given: `http` or `https` with a host (else 400), no user name or
    /// password, and, when the host is an address (in any of its spellings), one that may be
    /// reached (else 422). A name is checked when a request resolves it.
    pub fn check_url(&self, field: &str, text: &str) -> Result<url::Url, Refusal> {
        let malformed = |why: &str| Refusal::Malformed(format!("`{field}` {why}"));
        let refuse = |why: String| Refusal::Unprocessable(format!("`{field}`: {why}"));
        let url = url::Url::parse(text).map_err(|_| malformed("is not a URL"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(malformed("must be an http or https URL with a host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(refuse("must not carry a user name or password".into()));
        }
        let address = match url.host() {
            Some(url::Host::Ipv4(address)) => IpAddr::V4(address),
            Some(url::Host::Ipv6(address)) => IpAddr::V6(address),
            Some(url::Host::Domain(_)) | None => return Ok(url),
        };
        if !self.admits(address) {
            return Err(refuse(format!("{address} is a private address; see --allow-targets")));
        }
        Ok(url)
    }

    /// An HTTP client for given URLs: it connects only to addresses `admits` takes (its
    /// resolver drops the others), follows no redirect, and gives up after `timeout`. It takes
    /// no proxy from the environment: a proxy would resolve names where they go unchecked.
    pub fn client(&self, timeout: Duration) -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .timeout(timeout)
            .tcp_nodelay(true)
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(self.clone()))
            .user_agent(concat!("rollgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a plain HTTP client always builds")
    }
}

impl Resolve for Targets {
    fn resolve(&self, name: Name) -> Resolving {
        let targets = self.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let resolved: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let admitted: Vec<SocketAddr> =
                resolved.iter().copied().filter(|address| targets.admits(address.ip())).collect();
            if admitted.is_empty() {
                let error = format!("`{host}` resolves to no public address; see --allow-targets");
                return Err(error.into());
            }
            Ok(Box::new(admitted.into_iter()) as Addrs)
        })
    }
}

/// Reads at most `limit` bytes of a response's body: an answer from a given URL is never
/// trusted to be small.
pub async fn read_limited(mut response: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        body.extend_from_slice(&chunk[..chunk.len().min(limit - body.len())]);
        if body.len() == limit {
            break;
        }
    }
    body
}

/// The start of `text`, at most `limit` bytes, on a character boundary.
pub fn excerpt(text: &str, limit: usize) -> &str {
    let mut end = text.len().min(limit);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Why a request to a given URL failed, without the URL (it may hold a secret, as Slack's
/// webhook paths do).
pub fn failure(error: reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "it did not answer in time"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "the request failed"
    };
    let mut cause = std::error::Error::source(&error);
    let mut detail = String::new();
    while let Some(error) = cause {
        detail = error.to_string();
        cause = error.source();
    }
    if detail.is_empty() { kind.to_owned() } else { format!("{kind}: {}", excerpt(&detail, 200)) }
}

/// An IPv4 address written as IPv6 (`::ffff:127.0.0.1`, or NAT64's `64:ff9b::7f00:1`) is
/// judged as the IPv4 address it carries.
fn unmapped(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None if v6.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0] => {
                let [.., a, b] = v6.segments();
                IpAddr::V4(Ipv4Addr::from((u32::from(a) << 16) | u32::from(b)))
            }
            None => address,
        },
        v4 => v4,
    }
}

/// Loopback, unspecified, link-local (where metadata services answer), private, shared
/// (carrier-grade NAT), unique-local, multicast, broadcast and reserved addresses.
fn is_private(address: IpAddr) -> bool {
    match address {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_unspecified()
                || v4.is_link_local()
                || v4.is_private()
                || v4.is_multicast()
                || v4.is_broadcast()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && v4.octets()[2] == 0)
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || v6 == Ipv6Addr::from([0, 0, 0, 0, 0, 0xffff, 0, 0])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_targets_are_refused_in_every_spelling() {
        let targets = Targets::default();
        for url in [
            "http://127.0.0.1:8787/",
            "http://localhost.:1",
            "http://[::1]/",
            "http://0.0.0.0/",
            "http://169.254.169.254/latest/meta-data/",
            "http://2130706433/",
            "http://0x7f000001/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://10.1.2.3/",
            "http://172.16.0.1/",
            "http://192.168.1.1/",
            "http://100.64.0.1/",
            "http://[fd00:ec2::254]/",
            "http://[fe80::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[64:ff9b::a9fe:a9fe]/",
        ] {
            let checked = targets.check_url("url", url);
            let is_name =
                checked.as_ref().is_ok_and(|url| matches!(url.host(), Some(url::Host::Domain(_))));
            assert!(checked.is_err() || is_name, "{url} was admitted");
        }
        for url in ["https://hooks.slack.com/services/T/B/x", "http://93.184.216.34:8080/edge"] {
            assert!(targets.check_url("url", url).is_ok(), "{url}");
        }
        for url in
            ["https://user:secret@hooks.example/x", "ftp://example.com/", "http://", "not a url"]
        {
            assert!(targets.check_url("url", url).is_err(), "{url}");
        }
    }

    #[test]
    fn allowed_ranges_admit_their_private_addresses_only() {
        let targets =
            Targets::allowing(["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()]);
        assert!(targets.check_url("url", "http://127.0.0.1:8787/").is_ok());
        assert!(targets.check_url("url", "http://[::1]:8787/").is_ok());
        assert!(targets.check_url("url", "http://169.254.169.254/").is_err());
        assert!(targets.check_url("url", "http://10.0.0.1/").is_err());
    }

    #[tokio::test]
    async fn names_that_resolve_to_private_addresses_are_not_reached() {
        let refused = Targets::default().resolve("localhost".parse().unwrap()).await;
        let error = refused.err().expect("localhost is loopback").to_string();
        assert!(error.contains("no public address"), "{error}");
        let allowed =
            Targets::allowing(["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()]);
        let addresses: Vec<_> =
            allowed.resolve("localhost".parse().unwrap()).await.unwrap().collect();
        assert!(
            addresses.iter().all(|address| address.ip().is_loopback()) && !addresses.is_empty()
        );
    }
}
