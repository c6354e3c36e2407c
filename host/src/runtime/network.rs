//! Network grants: the HTTP origins and stream endpoints named by config keys of kind `url`,
//! `nbd-uri`, `unix-socket` and `tcp-host`/`tcp-port`. The host checks each value at startup
//! and makes every connection itself: a component reaches the granted origin or endpoint
//! only, and never supplies a scheme, host or port (wit/network.wit).
//!
//! HTTP goes through one pool of connections per grant and set of options, shared by every
//! instance and client connection (nbdkit-curl-plugin ≥ 1.34's `connections=`). The host
//! checks what libcurl does not: a range read must come back as 206 with the asked-for start
//! and exactly the asked-for length, so a server that ignores Range gives EIO, never wrong
//! bytes. Time spent waiting on the network is credited to the call's deadline (`clock`);
//! each request is bounded by its own timeouts, and the server's shutdown cuts it.

use super::clock;
use crate::api::{Errno, Error};
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::ops::{Deref, DerefMut};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use ureq::http::{self, Uri};
use ureq::Agent;

/// A network grant, checked at startup.
pub enum NetGrant {
    /// `url`: an http(s) URL; its origin is what the component may reach.
    Url(Arc<UrlGrant>),
    /// `nbd-uri`, `unix-socket`, or `tcp-host`: where a stream may connect.
    Endpoint(Endpoint),
    /// `tcp-port`: the port paired with a `tcp-host` grant.
    Port(u16),
}

/// A stream endpoint.
#[derive(Clone, Debug)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp { host: String, port: Option<u16> },
}

fn invalid(why: String) -> Error {
    Error::new(Errno::Inval, why)
}

/// The port of an http(s) URI, explicit or the scheme's.
fn port_of(uri: &Uri) -> u16 {
    uri.port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") { 443 } else { 80 })
}

/// `scheme://host:port` of an http(s) URI.
fn origin_of(uri: &Uri) -> String {
    format!(
        "{}://{}:{}",
        uri.scheme_str().unwrap_or("?"),
        uri.host().unwrap_or("?").to_ascii_lowercase(),
        port_of(uri)
    )
}

/// Check a `url` value: http or https, with a host.
pub fn url_grant(value: &str) -> Result<NetGrant, Error> {
    let uri: Uri = value.parse().map_err(|e| invalid(format!("not a valid URL: {e}")))?;
    match uri.scheme_str() {
        Some("http" | "https") if uri.host().is_some_and(|h| !h.is_empty()) => {}
        _ => {
            return Err(invalid(
                "only http:// and https:// URLs with a host can be granted".into(),
            ))
        }
    }
    Ok(NetGrant::Url(Arc::new(UrlGrant {
        origin: origin_of(&uri),
        uri,
        agents: Mutex::default(),
        prefetcher: Mutex::default(),
    })))
}

/// Check an `nbd-uri` value: `nbd://host[:port][/export]` or `nbd+unix://[/export]?socket=PATH`
/// (TLS forms are refused: the host cannot yet speak TLS to an upstream).
pub fn nbd_uri_grant(value: &str) -> Result<NetGrant, Error> {
    let bad = |why: &str| invalid(format!("not an NBD URI nbdbox can connect to: {why}"));
    if let Some(rest) = value.strip_prefix("nbd+unix://") {
        let query = rest.split_once('?').map(|(_, q)| q).unwrap_or("");
        let socket = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("socket="))
            .ok_or_else(|| bad("nbd+unix:// needs ?socket=PATH"))?;
        return Ok(NetGrant::Endpoint(Endpoint::Unix(
            std::path::absolute(percent_decode(socket)).map_err(|e| bad(&e.to_string()))?,
        )));
    }
    let rest = value
        .strip_prefix("nbd://")
        .ok_or_else(|| bad("expected nbd:// or nbd+unix://"))?;
    let authority = rest.split(['/', '?']).next().unwrap_or("");
    let (host, port) = split_host_port(authority).ok_or_else(|| bad("no host"))?;
    Ok(NetGrant::Endpoint(Endpoint::Tcp {
        host,
        port: Some(port.unwrap_or(10809)),
    }))
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`.
fn split_host_port(authority: &str) -> Option<(String, Option<u16>)> {
    if authority.is_empty() {
        return None;
    }
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':').map(|p| p.parse().ok()).unwrap_or(Some(10809))?;
        return Some((host.to_owned(), Some(port)));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host.to_owned(), Some(port.parse().ok()?))),
        None => Some((authority.to_owned(), None)),
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn unix_socket_grant(value: &str) -> Result<NetGrant, Error> {
    let path = std::path::absolute(value).map_err(|e| invalid(e.to_string()))?;
    Ok(NetGrant::Endpoint(Endpoint::Unix(path)))
}

pub fn tcp_host_grant(value: &str) -> Result<NetGrant, Error> {
    if value.is_empty() || value.contains(['/', ' ']) {
        return Err(invalid("not a host name or address".into()));
    }
    Ok(NetGrant::Endpoint(Endpoint::Tcp {
        host: value.trim_matches(|c| c == '[' || c == ']').to_owned(),
        port: None,
    }))
}

pub fn tcp_port_grant(value: &str) -> Result<NetGrant, Error> {
    value
        .parse::<u16>()
        .ok()
        .filter(|&p| p != 0)
        .map(NetGrant::Port)
        .ok_or_else(|| invalid("not a TCP port number".into()))
}

// ---------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------

/// How a component asked for requests to be made (WIT `http.options`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpOptions {
    /// PEM certificates that replace the system's (cainfo=), and more to trust (capath=).
    pub ca_file: Option<Vec<u8>>,
    pub ca_directory: Option<Vec<Vec<u8>>>,
    pub verify_tls: bool,
    pub timeout: Option<Duration>,
    pub connect_timeout: Duration,
    pub follow_redirects: bool,
    pub user_agent: Option<String>,
    pub connections: usize,
}

/// A granted URL: its origin, and the pools of connections made for it.
pub struct UrlGrant {
    uri: Uri,
    /// `scheme://host:port`, lower case, explicit port.
    origin: String,
    agents: Mutex<Vec<(HttpOptions, Pool)>>,
    prefetcher: Mutex<Option<Arc<Prefetcher>>>,
}

/// One header a component gave.
pub struct Header {
    pub name: String,
    pub value: String,
}

/// What a probe found.
pub struct Object {
    pub size: u64,
    pub path: String,
    pub etag: Option<String>,
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<Header>,
    pub body: Vec<u8>,
}

/// The largest body `send` returns to a component.
const MAX_SEND_BODY: u64 = 1 << 20;
/// Redirects a probe follows at most, as libcurl's default.
const MAX_REDIRECTS: usize = 10;
/// The headers only the host sets.
const HOST_HEADERS: [&str; 6] = [
    "host",
    "range",
    "content-length",
    "connection",
    "transfer-encoding",
    "if-match",
];

/// The connections made for one set of options, and the cap on requests in flight over
/// them: `connections=` (nbdkit's curl, ≥ 1.34). Without the cap, more requests at once than
/// idle connections would each open a connection the pool then closes, a TLS handshake each.
#[derive(Clone)]
struct Pool {
    agent: Agent,
    slots: Arc<Slots>,
}

/// A counting semaphore for a pool's requests in flight.
struct Slots {
    free: Mutex<usize>,
    freed: Condvar,
}

/// One request's place in its pool, given back when its answer has been read and dropped.
struct Slot(Arc<Slots>);

impl Slots {
    fn new(count: usize) -> Arc<Slots> {
        Arc::new(Slots {
            free: Mutex::new(count.max(1)),
            freed: Condvar::new(),
        })
    }

    /// Wait for a free slot; the wait counts as time blocked on the network.
    fn take(self: &Arc<Self>) -> Slot {
        waiting(|| {
            let free = self.free.lock().unwrap_or_else(|p| p.into_inner());
            let mut free = self
                .freed
                .wait_while(free, |free| *free == 0)
                .unwrap_or_else(|p| p.into_inner());
            *free -= 1;
        });
        Slot(self.clone())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.0.freed.notify_one();
    }
}

/// A response, holding its request's slot until it is dropped (its body read or abandoned).
struct Answer {
    response: http::Response<ureq::Body>,
    _slot: Slot,
}

impl Deref for Answer {
    type Target = http::Response<ureq::Body>;
    fn deref(&self) -> &Self::Target {
        &self.response
    }
}

impl DerefMut for Answer {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.response
    }
}

/// An origin a component opened, with its options.
#[derive(Clone)]
pub struct Origin {
    grant: Arc<UrlGrant>,
    pool: Pool,
    options: HttpOptions,
}

fn eio(why: String) -> Error {
    Error::new(Errno::Io, why)
}

/// Credit the time `f` spends waiting on the network to the calls in progress.
fn waiting<R>(f: impl FnOnce() -> R) -> R {
    let start = Instant::now();
    let result = f();
    clock::add_blocked(start.elapsed());
    result
}

impl UrlGrant {
    pub fn url(&self) -> String {
        self.uri.to_string()
    }

    /// The pool for `options`, made on first use and kept for the grant's life.
    fn pool(&self, options: &HttpOptions) -> Result<Pool, Error> {
        let mut agents = self.agents.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, pool)) = agents.iter().find(|(o, _)| o == options) {
            return Ok(pool.clone());
        }
        let pool = Pool {
            agent: new_agent(options)?,
            slots: Slots::new(options.connections),
        };
        agents.push((options.clone(), pool.clone()));
        Ok(pool)
    }

    /// Stop every request in flight: the server is shutting down.
    pub fn shut_down(&self) {
        let agents = std::mem::take(&mut *self.agents.lock().unwrap_or_else(|p| p.into_inner()));
        for (_, pool) in agents {
            pool.agent.shutdown();
        }
    }
}

fn new_agent(options: &HttpOptions) -> Result<Agent, Error> {
    use ureq::config::AutoHeaderValue;
    use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};
    // Any URL may redirect to https: the agent's TLS must be there before its first request.
    #[cfg(libssl_on_demand)]
    crate::libssl::load().map_err(eio)?;
    let mut certs = Vec::new();
    for pem in options.ca_file.iter().chain(options.ca_directory.iter().flatten()) {
        for item in ureq::tls::parse_pem(pem) {
            match item {
                Ok(ureq::tls::PemItem::Certificate(c)) => certs.push(c.to_owned()),
                Ok(_) => {}
                Err(e) => return Err(invalid(format!("reading certificates: {e}"))),
            }
        }
    }
    let roots = match (&options.ca_file, certs.is_empty()) {
        (None, _) if options.ca_directory.is_none() => RootCerts::PlatformVerifier,
        (_, true) => return Err(invalid("cainfo/capath hold no certificate".into())),
        _ => RootCerts::new_with_certs(&certs.iter().map(Certificate::to_owned).collect::<Vec<_>>()),
    };
    let tls = TlsConfig::builder()
        .provider(TlsProvider::NativeTls)
        .root_certs(roots)
        .disable_verification(!options.verify_tls)
        .build();
    let user_agent = match &options.user_agent {
        Some(agent) => AutoHeaderValue::Provided(Arc::new(agent.clone())),
        None => AutoHeaderValue::None,
    };
    let config = Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent(user_agent)
        .accept(AutoHeaderValue::None)
        .accept_encoding(AutoHeaderValue::None)
        .timeout_global(options.timeout)
        .timeout_connect(Some(options.connect_timeout))
        .max_idle_connections_per_host(options.connections.max(1))
        .max_idle_connections(options.connections.max(1))
        .no_delay(true)
        .tls_config(tls)
        .build();
    Ok(Agent::new_with_config(config))
}

impl Origin {
    pub fn open(grant: Arc<UrlGrant>, options: HttpOptions) -> Result<Origin, Error> {
        Ok(Origin {
            pool: grant.pool(&options)?,
            grant,
            options,
        })
    }

    pub fn url(&self) -> String {
        self.grant.url()
    }

    /// The absolute URI for `path` on the granted origin: `path` must be a path (and query),
    /// never a URL of its own.
    fn target(&self, path: &str) -> Result<Uri, Error> {
        if !path.starts_with('/') || path.chars().any(|c| c.is_control() || c == ' ') {
            return Err(Error::new(
                Errno::Acces,
                format!("'{path}' is not a path on the granted origin {}", self.grant.origin),
            ));
        }
        let authority = self.grant.uri.authority().map(|a| a.as_str()).unwrap_or("");
        let scheme = self.grant.uri.scheme_str().unwrap_or("http");
        format!("{scheme}://{authority}{path}")
            .parse()
            .map_err(|e| invalid(format!("'{path}': {e}")))
    }

    /// The granted URL's own path and query.
    fn granted_path(&self) -> String {
        self.grant
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".into())
    }

    /// A request with the component's headers, refusing those only the host sets.
    fn request(&self, method: http::Method, uri: &Uri, headers: &[Header]) -> Result<http::request::Builder, Error> {
        let mut builder = http::Request::builder().method(method).uri(uri.clone());
        for h in headers {
            let lower = h.name.to_ascii_lowercase();
            if HOST_HEADERS.contains(&lower.as_str()) {
                return Err(Error::new(
                    Errno::Acces,
                    format!("the {} header is set by the host", h.name),
                ));
            }
            if h.name.chars().chain(h.value.chars()).any(|c| c.is_control()) {
                return Err(Error::new(
                    Errno::Acces,
                    format!("header '{}' holds a control character", h.name),
                ));
            }
            builder = builder.header(h.name.as_str(), h.value.as_str());
        }
        Ok(builder)
    }

    /// Run a request; one that fails on the wire before any answer is sent again once on a
    /// fresh connection, as libcurl does for a kept-alive connection the server closed.
    fn run(&self, what: &str, make: impl Fn() -> Result<http::Request<Vec<u8>>, Error>) -> Result<Answer, Error> {
        let slot = self.pool.slots.take();
        let mut tries = 0;
        loop {
            tries += 1;
            let request = make()?;
            match waiting(|| self.pool.agent.run(request)) {
                Ok(response) => return Ok(Answer { response, _slot: slot }),
                Err(e) if tries == 1 && retryable(&e) => continue,
                Err(e) => return Err(eio(format!("{what}: {e}"))),
            }
        }
    }

    /// Follow a redirect answer to the next URI, within the origin.
    fn redirected(&self, from: &Uri, location: &str) -> Result<Uri, Error> {
        let next: Uri = if location.starts_with("http://") || location.starts_with("https://") {
            location
                .parse()
                .map_err(|e| eio(format!("redirect to '{location}': {e}")))?
        } else if location.starts_with('/') {
            self.target(location)?
        } else {
            let base = from.path().rsplit_once('/').map(|(dir, _)| dir).unwrap_or("");
            self.target(&format!("{base}/{location}"))?
        };
        if origin_of(&next) != self.grant.origin {
            return Err(Error::new(
                Errno::Acces,
                format!(
                    "redirect to {next} refused: this plugin was granted only the origin {}",
                    self.grant.origin
                ),
            ));
        }
        Ok(next)
    }

    /// HEAD, or where HEAD is refused a GET of the first byte; follows redirects within the
    /// origin when asked to.
    pub fn probe(&self, path: Option<&str>, headers: &[Header]) -> Result<Object, Error> {
        let mut uri = self.target(&path.map(str::to_owned).unwrap_or_else(|| self.granted_path()))?;
        for _ in 0..=MAX_REDIRECTS {
            let head = self.run(&format!("HEAD {uri}"), || {
                self.request(http::Method::HEAD, &uri, headers)?
                    .body(Vec::new())
                    .map_err(|e| invalid(e.to_string()))
            })?;
            if let Some(location) = self.redirect_location(&head) {
                uri = self.redirected(&uri, &location)?;
                continue;
            }
            let path = uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
            let etag = header(&head, "etag");
            let length = header(&head, "content-length").and_then(|l| l.parse::<u64>().ok());
            let ranges = header(&head, "accept-ranges").is_some_and(|r| r.eq_ignore_ascii_case("bytes"));
            if head.status().is_success() && length.is_some() && ranges {
                return Ok(Object {
                    size: length.unwrap_or(0),
                    path,
                    etag,
                });
            }
            // S3-style presigned URLs answer GET but not HEAD: the size is in Content-Range.
            let mut get = self.run(&format!("GET {uri} bytes=0-0"), || {
                self.request(http::Method::GET, &uri, headers)?
                    .header("Range", "bytes=0-0")
                    .body(Vec::new())
                    .map_err(|e| invalid(e.to_string()))
            })?;
            let size = (get.status() == 206)
                .then(|| header(&get, "content-range"))
                .flatten()
                .and_then(|r| r.rsplit_once('/').and_then(|(_, total)| total.parse::<u64>().ok()));
            let _ = waiting(|| get.body_mut().read_to_vec());
            return match size {
                Some(size) => Ok(Object {
                    size,
                    path,
                    etag: etag.or_else(|| header(&get, "etag")),
                }),
                None => Err(eio(format!(
                    "{uri}: cannot find the size, or the server does not serve byte ranges (HEAD {}, GET bytes=0-0 {})",
                    head.status().as_u16(),
                    get.status().as_u16()
                ))),
            };
        }
        Err(eio(format!("{uri}: more than {MAX_REDIRECTS} redirects")))
    }

    fn redirect_location(&self, response: &http::Response<ureq::Body>) -> Option<String> {
        let redirect = matches!(response.status().as_u16(), 301 | 302 | 303 | 307 | 308);
        (redirect && self.options.follow_redirects)
            .then(|| header(response, "location"))
            .flatten()
    }

    /// GET one range straight into `dst`: 206, the asked-for start, exactly `dst.len()` bytes.
    pub fn read_into(
        &self,
        path: &str,
        etag: Option<&str>,
        headers: &[Header],
        dst: &mut [u8],
        offset: u64,
    ) -> Result<(), Error> {
        if let Some(prefetcher) = self.grant.prefetcher() {
            if prefetcher.serve(path, dst, offset) {
                return Ok(());
            }
        }
        self.get_range(path, etag, headers, dst, offset)
    }

    fn get_range(
        &self,
        path: &str,
        etag: Option<&str>,
        headers: &[Header],
        dst: &mut [u8],
        offset: u64,
    ) -> Result<(), Error> {
        let count = dst.len() as u64;
        let mut response = self.range_request(path, etag, headers, offset, count)?;
        let what = response.what.clone();
        if response.end != offset + count {
            return Err(eio(format!("{what}: the answer ends elsewhere ({})", response.end)));
        }
        response.read_exactly(dst)
    }

    /// Up to `count` bytes from `offset`, as many as the object has there.
    fn get_up_to(
        &self,
        path: &str,
        etag: Option<&str>,
        headers: &[Header],
        offset: u64,
        count: u64,
    ) -> Result<Vec<u8>, Error> {
        let mut response = self.range_request(path, etag, headers, offset, count)?;
        let mut bytes = vec![0; (response.end - offset) as usize];
        response.read_exactly(&mut bytes)?;
        Ok(bytes)
    }

    /// A range GET whose answer is a 206 starting at `offset` and ending at or before
    /// `offset + count` (the server clips a range that runs past the end of the object).
    fn range_request(
        &self,
        path: &str,
        etag: Option<&str>,
        headers: &[Header],
        offset: u64,
        count: u64,
    ) -> Result<RangeAnswer, Error> {
        let uri = self.target(path)?;
        let last = offset + count.max(1) - 1;
        let what = format!("GET {uri} bytes={offset}-{last}");
        let mut response = self.run(&what, || {
            let mut request = self.request(http::Method::GET, &uri, headers)?;
            request = request.header("Range", format!("bytes={offset}-{last}"));
            if let Some(etag) = etag {
                request = request.header("If-Match", etag);
            }
            request.body(Vec::new()).map_err(|e| invalid(e.to_string()))
        })?;
        let status = response.status().as_u16();
        if status != 206 {
            let why = match status {
                200 => "the server ignored the Range header (200)".to_owned(),
                412 => "the object changed since it was opened (412)".to_owned(),
                _ => format!("HTTP status {status}"),
            };
            let _ = waiting(|| response.body_mut().read_to_vec());
            // A missing object is ENOENT, so that a plugin can tell it from a failure.
            let errno = if status == 404 { Errno::NoEnt } else { Errno::Io };
            return Err(Error::new(errno, format!("{what}: {why}")));
        }
        // Content-Range: bytes START-END/TOTAL
        let range = header(&response, "content-range").and_then(|r| {
            let (start, end) = r.strip_prefix("bytes ")?.split('/').next()?.split_once('-')?;
            Some((start.parse::<u64>().ok()?, end.parse::<u64>().ok()?))
        });
        match range {
            Some((start, end)) if start == offset && end >= start && end <= last => Ok(RangeAnswer {
                what,
                end: end + 1,
                response,
            }),
            _ => Err(eio(format!("{what}: the answer covers another range ({range:?})"))),
        }
    }

    /// Any other request; a body of more than 1 MiB in the answer is an error.
    pub fn send(&self, method: &str, path: &str, headers: &[Header], body: Vec<u8>) -> Result<Response, Error> {
        let method: http::Method = method.parse().map_err(|_| invalid(format!("method {method}")))?;
        let uri = self.target(path)?;
        let what = format!("{method} {uri}");
        let mut response = self.run(&what, || {
            self.request(method.clone(), &uri, headers)?
                .body(body.clone())
                .map_err(|e| invalid(e.to_string()))
        })?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(name, value)| Header {
                name: name.as_str().to_owned(),
                value: String::from_utf8_lossy(value.as_bytes()).into_owned(),
            })
            .collect();
        let body = waiting(|| {
            response
                .body_mut()
                .with_config()
                .limit(MAX_SEND_BODY)
                .read_to_vec()
                .map_err(|e| eio(format!("{what}: body: {e}")))
        })?;
        Ok(Response { status, headers, body })
    }

    /// fadvise(WILLNEED) for HTTP: queue the range for the grant's background fetchers.
    pub fn prefetch(&self, path: &str, etag: Option<&str>, headers: &[Header], count: u64, offset: u64) {
        let Ok(uri) = self.target(path) else { return };
        let Ok(_) = self.request(http::Method::GET, &uri, headers) else {
            return;
        };
        let prefetcher = self.grant.prefetcher_or_start(self);
        prefetcher.want(path, etag, headers, count, offset);
    }
}

/// A 206 answer to a range GET whose body is still to be read.
struct RangeAnswer {
    what: String,
    /// One past the last byte of the range the answer holds.
    end: u64,
    response: Answer,
}

impl RangeAnswer {
    /// Exactly `dst.len()` bytes, and then the end of the body: a longer body is wrong, and
    /// reading to the end lets the connection go back to the pool.
    fn read_exactly(&mut self, dst: &mut [u8]) -> Result<(), Error> {
        let what = &self.what;
        let mut body = self.response.body_mut().as_reader();
        waiting(|| {
            body.read_exact(dst).map_err(|e| eio(format!("{what}: body: {e}")))?;
            match body.read(&mut [0; 1]) {
                Ok(0) => Ok(()),
                Ok(_) => Err(eio(format!("{what}: the body is longer than the range"))),
                Err(e) => Err(eio(format!("{what}: body: {e}"))),
            }
        })
    }
}

fn header<B>(response: &http::Response<B>, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Errors that happened on the wire before any answer: worth one more try.
fn retryable(e: &ureq::Error) -> bool {
    matches!(
        e,
        ureq::Error::Io(_) | ureq::Error::Protocol(_) | ureq::Error::ConnectionFailed
    )
}

// ---------------------------------------------------------------------------------------
// Background prefetch
// ---------------------------------------------------------------------------------------

/// Prefetched data is fetched and kept in chunks of this size, aligned to it.
const CHUNK: u64 = 1 << 20;
/// Chunks kept per grant (32 MiB); the oldest finished one goes first.
const MAX_CHUNKS: usize = 32;
/// Chunks fetched beyond the hint, so sequential readers stay ahead.
const LOOKAHEAD: u64 = 4;
/// Connections the fetchers use at once.
const FETCHERS: usize = 4;

enum ChunkState {
    Wanted,
    Fetching,
    Ready(Arc<[u8]>),
}

struct Chunk {
    path: String,
    index: u64,
    etag: Option<String>,
    headers: Vec<(String, String)>,
    state: ChunkState,
}

/// A bounded cache of chunks that background threads fetch for a grant.
pub struct Prefetcher {
    origin: Origin,
    chunks: Mutex<Vec<Chunk>>,
    changed: std::sync::Condvar,
}

impl UrlGrant {
    fn prefetcher(&self) -> Option<Arc<Prefetcher>> {
        self.prefetcher.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Started on the first hint, after the server daemonized.
    fn prefetcher_or_start(&self, origin: &Origin) -> Arc<Prefetcher> {
        let mut slot = self.prefetcher.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(prefetcher) = &*slot {
            return prefetcher.clone();
        }
        let prefetcher = Arc::new(Prefetcher {
            origin: origin.clone(),
            chunks: Mutex::default(),
            changed: std::sync::Condvar::new(),
        });
        for n in 0..FETCHERS {
            let worker = prefetcher.clone();
            let _ = std::thread::Builder::new()
                .name(format!("prefetch-{n}"))
                .spawn(move || worker.fetch_forever());
        }
        *slot = Some(prefetcher.clone());
        prefetcher
    }
}

impl Prefetcher {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Chunk>> {
        self.chunks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn want(&self, path: &str, etag: Option<&str>, headers: &[Header], count: u64, offset: u64) {
        let first = offset / CHUNK;
        let last = (offset + count.max(1) - 1) / CHUNK + LOOKAHEAD;
        let mut chunks = self.lock();
        for index in first..=last {
            if chunks.iter().any(|c| c.path == path && c.index == index) {
                continue;
            }
            // Make room: the oldest finished chunk goes; in-flight ones stay.
            if chunks.len() >= MAX_CHUNKS {
                match chunks.iter().position(|c| !matches!(c.state, ChunkState::Fetching)) {
                    Some(oldest) => {
                        chunks.remove(oldest);
                    }
                    None => break,
                }
            }
            chunks.push(Chunk {
                path: path.to_owned(),
                index,
                etag: etag.map(str::to_owned),
                headers: headers.iter().map(|h| (h.name.clone(), h.value.clone())).collect(),
                state: ChunkState::Wanted,
            });
        }
        self.changed.notify_all();
    }

    /// Copy [offset, offset + dst.len()) from chunks that are there or being fetched
    /// (waiting for those); false when any part is missing.
    fn serve(&self, path: &str, dst: &mut [u8], offset: u64) -> bool {
        let end = offset + dst.len() as u64;
        let mut chunks = self.lock();
        loop {
            let mut pending = false;
            for index in offset / CHUNK..=(end - 1) / CHUNK {
                match chunks
                    .iter()
                    .find(|c| c.path == path && c.index == index)
                    .map(|c| &c.state)
                {
                    None => return false,
                    Some(ChunkState::Ready(_)) => {}
                    Some(_) => pending = true,
                }
            }
            if !pending {
                break;
            }
            let start = Instant::now();
            chunks = self.changed.wait(chunks).unwrap_or_else(|p| p.into_inner());
            clock::add_blocked(start.elapsed());
        }
        for chunk in chunks.iter().filter(|c| c.path == path) {
            let ChunkState::Ready(bytes) = &chunk.state else {
                continue;
            };
            let chunk_start = chunk.index * CHUNK;
            let chunk_end = chunk_start + bytes.len() as u64;
            let (from, to) = (offset.max(chunk_start), end.min(chunk_end));
            if from < to {
                dst[(from - offset) as usize..(to - offset) as usize]
                    .copy_from_slice(&bytes[(from - chunk_start) as usize..(to - chunk_start) as usize]);
            }
        }
        // A chunk shorter than CHUNK is the end of the object: the read must lie within.
        let covered: u64 = chunks
            .iter()
            .filter(|c| c.path == path)
            .filter_map(|c| match &c.state {
                ChunkState::Ready(b) => Some((c.index * CHUNK, c.index * CHUNK + b.len() as u64)),
                _ => None,
            })
            .map(|(s, e)| e.min(end).saturating_sub(s.max(offset)))
            .sum();
        covered == dst.len() as u64
    }

    fn fetch_forever(&self) {
        loop {
            let job = {
                let mut chunks = self.lock();
                loop {
                    if let Some(chunk) = chunks.iter_mut().find(|c| matches!(c.state, ChunkState::Wanted)) {
                        chunk.state = ChunkState::Fetching;
                        break (
                            chunk.path.clone(),
                            chunk.index,
                            chunk.etag.clone(),
                            chunk.headers.clone(),
                        );
                    }
                    chunks = self.changed.wait(chunks).unwrap_or_else(|p| p.into_inner());
                }
            };
            let (path, index, etag, headers) = job;
            let headers: Vec<Header> = headers
                .into_iter()
                .map(|(name, value)| Header { name, value })
                .collect();
            let fetched = self.fetch(&path, index, etag.as_deref(), &headers);
            let mut chunks = self.lock();
            match fetched {
                // A failed prefetch is forgotten: the direct read then reports the real error.
                Err(_) => chunks.retain(|c| !(c.path == path && c.index == index)),
                Ok(bytes) => {
                    if let Some(chunk) = chunks.iter_mut().find(|c| c.path == path && c.index == index) {
                        chunk.state = ChunkState::Ready(bytes.into());
                    }
                }
            }
            self.changed.notify_all();
        }
    }

    /// One chunk: as much of [index * CHUNK, +CHUNK) as the object has.
    fn fetch(&self, path: &str, index: u64, etag: Option<&str>, headers: &[Header]) -> Result<Vec<u8>, Error> {
        self.origin.get_up_to(path, etag, headers, index * CHUNK, CHUNK)
    }
}

// ---------------------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------------------

/// How long a stream read waits before it looks at the shutdown flag again.
const STREAM_POLL: Duration = Duration::from_millis(500);
/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// A connected stream to a granted endpoint.
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Endpoint {
    pub fn connect(&self, port: Option<u16>) -> Result<Stream, Error> {
        let failed = |e: io::Error| eio(format!("connecting to {self}: {e}"));
        waiting(|| match self {
            Endpoint::Unix(path) => {
                let s = UnixStream::connect(path).map_err(failed)?;
                s.set_read_timeout(Some(STREAM_POLL)).map_err(failed)?;
                Ok(Stream::Unix(s))
            }
            Endpoint::Tcp { host, port: own } => {
                let port = own.or(port).unwrap_or(10809);
                let addrs = (host.as_str(), port).to_socket_addrs().map_err(failed)?;
                let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
                for addr in addrs {
                    match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                        Ok(s) => {
                            let _ = s.set_nodelay(true);
                            s.set_read_timeout(Some(STREAM_POLL)).map_err(failed)?;
                            return Ok(Stream::Tcp(s));
                        }
                        Err(e) => last = e,
                    }
                }
                Err(failed(last))
            }
        })
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
            Endpoint::Tcp { host, port } => write!(f, "{host}:{}", port.unwrap_or(10809)),
        }
    }
}

impl Stream {
    pub fn send(&mut self, data: &[u8]) -> Result<(), Error> {
        waiting(|| match self {
            Stream::Tcp(s) => s.write_all(data),
            Stream::Unix(s) => s.write_all(data),
        })
        .map_err(|e| eio(format!("sending: {e}")))
    }

    /// Exactly `dst.len()` bytes, looking at `cut` between waits so that a shutdown ends it.
    pub fn receive(&mut self, dst: &mut [u8], cut: impl Fn() -> bool) -> Result<(), Error> {
        let mut filled = 0;
        waiting(|| {
            while filled < dst.len() {
                let read = match self {
                    Stream::Tcp(s) => s.read(&mut dst[filled..]),
                    Stream::Unix(s) => s.read(&mut dst[filled..]),
                };
                match read {
                    Ok(0) => return Err(eio("the server closed the connection".into())),
                    Ok(n) => filled += n,
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                        if cut() {
                            return Err(Error::new(Errno::Shutdown, "the server is shutting down"));
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(eio(format!("receiving: {e}"))),
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_that_can_be_granted() {
        assert!(url_grant("http://127.0.0.1:8080/disk.img").is_ok());
        assert!(url_grant("https://example.com/disk.img?x=1").is_ok());
        for bad in [
            "file:///etc/passwd",
            "ftp://host/x",
            "/disk.img",
            "http:///x",
            "nonsense",
        ] {
            assert!(url_grant(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn nbd_uris() {
        let endpoint = |uri: &str| match nbd_uri_grant(uri) {
            Ok(NetGrant::Endpoint(e)) => e.to_string(),
            _ => "refused".into(),
        };
        assert_eq!(endpoint("nbd://localhost"), "localhost:10809");
        assert_eq!(endpoint("nbd://127.0.0.1:10810/export"), "127.0.0.1:10810");
        assert_eq!(endpoint("nbd://[::1]:99/x"), "::1:99");
        assert_eq!(endpoint("nbd+unix:///x?socket=/tmp/s%20k"), "unix:/tmp/s k");
        assert_eq!(endpoint("nbds://host"), "refused");
        assert_eq!(endpoint("nbd+unix:///x"), "refused");
    }

    #[test]
    fn origins_name_the_port() {
        let uri: Uri = "HTTPS://Example.COM/x".parse().unwrap();
        assert_eq!(origin_of(&uri), "https://example.com:443");
        let uri: Uri = "http://h:8080/x".parse().unwrap();
        assert_eq!(origin_of(&uri), "http://h:8080");
    }
}
