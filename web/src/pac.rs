//! The proxy auto-config (PAC) file served at `GET /proxy.pac`: a `FindProxyForURL` that sends
//! everything but this machine's own names through netmix's proxy port.
//!
//! Browsers and operating systems fetch a PAC URL plainly (no token, no custom header), so the
//! route needs none; it still sits behind the `Host` guard like every route. The script is
//! written for the oldest PAC engines in use (Windows' WinHTTP runs it in JScript): `var` only,
//! no arrow functions, nothing newer than ES3 besides the PAC helper functions.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// `Content-Type` of the `/proxy.pac` response (the type browsers expect for a PAC file).
pub(crate) const CONTENT_TYPE: &str = "application/x-ns-proxy-autoconfig";

/// Where in [`TEMPLATE`] the proxy address goes.
const PLACEHOLDER: &str = "@PROXY@";

/// The PAC script; [`PLACEHOLDER`] becomes the proxy address.
const TEMPLATE: &str = r#"// netmix proxy auto-configuration, served by the netmix dashboard at /proxy.pac.
// The proxy port @PROXY@ speaks HTTP (CONNECT and forward proxying), SOCKS5 and SOCKS4/4a.
function FindProxyForURL(url, host) {
  var h = host.toLowerCase();
  // Some clients pass IPv6 literals with their brackets, some without.
  if (h.charAt(0) == "[" && h.charAt(h.length - 1) == "]") {
    h = h.substring(1, h.length - 1);
  }
  // This machine goes DIRECT: netmix sends connections out through its network interfaces,
  // never loopback, so it could not reach a local service anyway. IPv4 loopback is matched as
  // a literal (127.0.0.0/8) rather than with isInNet, which would resolve every name in DNS.
  if (h == "localhost" || dnsDomainIs(h, ".localhost") || h == "::1" ||
      /^127\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$/.test(h)) {
    return "DIRECT";
  }
  // Plain host names (no dot: "nas", "printer") go DIRECT too. This is a judgement call: such
  // names almost always belong to the local network (its DNS search domain, mDNS, NetBIOS),
  // which netmix's uplinks may not reach or resolve the same way. An IPv6 literal has no dot
  // either, but is not a host name: some engines' isPlainHostName only looks for a dot.
  if (h.indexOf(":") < 0 && isPlainHostName(h)) {
    return "DIRECT";
  }
  // Everything else goes through netmix: as an HTTP proxy, or as SOCKS5 for clients that
  // prefer it. There is deliberately no "DIRECT" fallback: whoever points a client at netmix
  // wants its traffic to leave through netmix's uplinks, and a silent direct connection while
  // netmix is down would bypass them (and any policy the user set there) unnoticed.
  return "PROXY @PROXY@; SOCKS5 @PROXY@";
}
"#;

/// The address clients should use to reach a proxy listening on `listen`: `listen` itself,
/// except that an unspecified address (`0.0.0.0`, `::`) becomes loopback (`127.0.0.1`, `::1`) of
/// the same family.
pub(crate) fn client_addr(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), listen.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), listen.port())
        }
        _ => listen,
    }
}

/// The PAC file for a proxy listening on `listen`. It names `listen`, or loopback of the same
/// family when `listen` is unspecified (`0.0.0.0`, `::`); IPv6 addresses are written in
/// brackets (`[::1]:1080`).
pub fn render(listen: SocketAddr) -> String {
    TEMPLATE.replace(PLACEHOLDER, &client_addr(listen).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_addresses_become_loopback() {
        let cases = [
            ("0.0.0.0:1080", "127.0.0.1:1080"),
            ("[::]:1081", "[::1]:1081"),
            ("127.0.0.1:1080", "127.0.0.1:1080"),
            ("192.168.1.5:3128", "192.168.1.5:3128"),
            ("[fd00::5]:1080", "[fd00::5]:1080"),
        ];
        for (listen, expected) in cases {
            let listen: SocketAddr = listen.parse().unwrap();
            assert_eq!(client_addr(listen).to_string(), expected, "{listen}");
        }
    }

    #[test]
    fn render_names_the_address_in_every_proxy_entry() {
        let pac = render("[::]:1080".parse().unwrap());
        assert!(!pac.contains(PLACEHOLDER));
        assert!(pac.contains(r#"return "PROXY [::1]:1080; SOCKS5 [::1]:1080";"#));
    }
}
