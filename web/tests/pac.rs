//! `GET /proxy.pac`: the proxy auto-config file, through `warp::test::request()`, and its
//! `FindProxyForURL` run by node.

mod common;

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use common::{HOST, PROXY, harness};
use netmix_web::{render_pac, routes};
use warp::http::StatusCode;
use warp::hyper::body::Bytes;

/// What the PAC answers for everything that is not local, with the test context's address.
const VIA_NETMIX: &str = "PROXY 127.0.0.1:1080; SOCKS5 127.0.0.1:1080";

async fn get_pac(proxy: Option<SocketAddr>, host: &str) -> warp::http::Response<Bytes> {
    let mut h = harness();
    h.ctx.config.proxy = proxy;
    warp::test::request()
        .method("GET")
        .path("/proxy.pac")
        .header("host", host)
        .reply(&routes(h.ctx))
        .await
}

fn text(res: &warp::http::Response<Bytes>) -> &str {
    std::str::from_utf8(res.body()).expect("utf-8 body")
}

#[tokio::test]
async fn pac_is_served_without_a_token_as_a_pac_file() {
    let res = get_pac(Some(PROXY), HOST).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.headers()["content-type"],
        "application/x-ns-proxy-autoconfig"
    );
    // The security headers of every route, too.
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    let pac = text(&res);
    assert!(pac.contains(&format!("\"{VIA_NETMIX}\"")), "{pac}");
    // No fallback to a direct connection after the proxy entries.
    assert!(!pac.contains("; DIRECT"), "{pac}");
}

#[tokio::test]
async fn pac_names_the_address_in_both_entries() {
    for (listen, named) in [
        ("127.0.0.1:1080", "127.0.0.1:1080"),
        ("0.0.0.0:3128", "127.0.0.1:3128"),
        ("[::]:1080", "[::1]:1080"),
        ("192.168.7.2:1080", "192.168.7.2:1080"),
    ] {
        let res = get_pac(Some(listen.parse().unwrap()), HOST).await;
        let pac = text(&res);
        let entry = format!("\"PROXY {named}; SOCKS5 {named}\"");
        assert!(pac.contains(&entry), "{listen}: no {entry} in {pac}");
        assert!(!pac.contains("0.0.0.0") && !pac.contains("[::]"), "{pac}");
    }
}

#[tokio::test]
async fn pac_sends_loopback_direct() {
    let res = get_pac(Some(PROXY), HOST).await;
    let pac = text(&res);
    for check in [
        "h == \"localhost\"",
        "dnsDomainIs(h, \".localhost\")",
        "h == \"::1\"",
        "/^127\\.",
        "isPlainHostName(h)",
    ] {
        assert!(pac.contains(check), "no {check} in {pac}");
    }
    assert_eq!(pac.matches("return \"DIRECT\";").count(), 2, "{pac}");
}

#[tokio::test]
async fn pac_without_a_proxy_address_is_404_with_a_reason() {
    let res = get_pac(None, HOST).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let body = text(&res);
    assert_eq!(body.lines().count(), 1, "{body:?}");
    assert!(body.contains("proxy"), "{body:?}");
}

#[tokio::test]
async fn pac_is_behind_the_host_guard() {
    let res = get_pac(Some(PROXY), "evil.example:5000").await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let res = warp::test::request()
        .method("POST")
        .path("/proxy.pac")
        .header("host", HOST)
        .reply(&routes(harness().ctx))
        .await;
    assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[test]
fn pac_text_is_plausible_javascript() {
    let pac = render_pac(PROXY);
    assert!(
        pac.contains("function FindProxyForURL(url, host) {"),
        "{pac}"
    );
    // Braces and parentheses balance, and never close before they open (string literals and
    // comments hold none of them).
    for (open, close) in [('{', '}'), ('(', ')'), ('[', ']')] {
        let mut depth = 0i32;
        for c in pac.chars() {
            if c == open {
                depth += 1;
            } else if c == close {
                depth -= 1;
                assert!(depth >= 0, "{close} before its {open} in {pac}");
            }
        }
        assert_eq!(depth, 0, "unbalanced {open}{close} in {pac}");
    }
    assert_eq!(pac.matches('"').count() % 2, 0, "odd number of quotes");
    // ES3 only (Windows runs PAC files in JScript).
    let code: Vec<&str> = pac
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect();
    for line in code {
        for modern in ["let ", "const ", "=>", "`"] {
            assert!(!line.contains(modern), "{modern:?} in {line:?}");
        }
    }
}

/// The PAC helper functions browsers provide (the subset the file may use), as plain JS, then
/// the PAC, then one line per case with `FindProxyForURL(url, host)`'s answer.
fn node_script(pac: &str, cases: &[(&str, &str)]) -> String {
    let mut script = String::from(
        r#"
function isPlainHostName(h) { return h.indexOf(".") < 0; }
function dnsDomainIs(h, d) { return h.length >= d.length && h.substring(h.length - d.length) == d; }
function shExpMatch(s, p) {
  var re = "^" + p.replace(/[.+^${}()|\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".") + "$";
  return new RegExp(re).test(s);
}
function isInNet(h, net, mask) {
  // A name would need a DNS lookup per request: the PAC must not ask for one.
  if (!/^[0-9.]+$/.test(h)) throw new Error("isInNet on a name (DNS lookup): " + h);
  var n = function (a) { return a.split(".").reduce(function (x, y) { return x * 256 + Number(y); }, 0); };
  var m = n(mask);
  return (n(h) & m) >>> 0 == (n(net) & m) >>> 0;
}
function dnsResolve(h) { throw new Error("dnsResolve called: " + h); }
function isResolvable(h) { throw new Error("isResolvable called: " + h); }
"#,
    );
    script.push_str(pac);
    for (url, host) in cases {
        script.push_str(&format!(
            "console.log(FindProxyForURL({}, {}));\n",
            serde_json::to_string(url).unwrap(),
            serde_json::to_string(host).unwrap()
        ));
    }
    script
}

/// Runs the PAC through node with stub helper functions. Node is required (`scripts/test.sh`
/// installs it, for the dashboard's browser test too): without it this test fails rather than
/// pass unchecked.
#[test]
fn pac_answers_as_expected_when_run_by_node() {
    let cases = [
        ("http://127.0.0.1/", "127.0.0.1", "DIRECT"),
        ("http://127.8.9.10:8080/x", "127.8.9.10", "DIRECT"),
        ("http://localhost/", "localhost", "DIRECT"),
        ("http://LocalHost:5000/", "LocalHost", "DIRECT"),
        ("http://app.localhost/", "app.localhost", "DIRECT"),
        ("http://[::1]:8080/", "[::1]", "DIRECT"),
        ("http://[::1]:8080/", "::1", "DIRECT"),
        ("http://nas/", "nas", "DIRECT"),
        ("http://198.18.0.1/", "198.18.0.1", VIA_NETMIX),
        ("https://example.com/", "example.com", VIA_NETMIX),
        ("http://127.example.com/", "127.example.com", VIA_NETMIX),
        (
            "http://localhost.example.com/",
            "localhost.example.com",
            VIA_NETMIX,
        ),
        ("http://[2001:db8::1]/", "[2001:db8::1]", VIA_NETMIX),
    ];
    let pairs: Vec<(&str, &str)> = cases.iter().map(|&(u, h, _)| (u, h)).collect();
    let script = node_script(&render_pac(PROXY), &pairs);
    let child = Command::new("node")
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = child.unwrap_or_else(|err| {
        panic!(
            "this test runs the PAC file through node, which is not available ({err}): \
             install it (apt-get install -y nodejs), as scripts/test.sh does"
        )
    });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "node failed on the PAC: {}\n{script}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers = String::from_utf8(out.stdout).unwrap();
    let answers: Vec<&str> = answers.lines().collect();
    assert_eq!(answers.len(), cases.len(), "{answers:?}");
    for ((url, host, expected), got) in cases.iter().zip(answers) {
        assert_eq!(got, *expected, "FindProxyForURL({url:?}, {host:?})");
    }
}
