//! curl: a disk image served over HTTP(S), as nbdkit-curl-plugin(1), read-only. The URL is a
//! grant: the host makes every request, to the URL's origin only, and checks each answer (a
//! range read must come back as exactly that range). This component chooses headers and
//! reads into the request buffer; it never sees a socket.

use nbdbox_sdk::http::{self, Header, Object, Options, Origin};
use nbdbox_sdk::parse_bool;
use nbdbox_sdk::prelude::*;

#[derive(Default)]
struct Curl {
    url_given: bool,
    ca_file: Option<String>,
    ca_directory: Option<String>,
    verify_tls: Option<bool>,
    headers: Vec<Header>,
    user: Option<String>,
    password: Option<String>,
    user_agent: Option<String>,
    timeout: u32,
    connect_timeout: u32,
    follow_redirects: Option<bool>,
    connections: u32,
    protocols: Option<String>,
    /// `-D curl.verbose=1` (nbdkit's curl debug flag): a debug line per request.
    verbose: bool,
}

fn seconds(key: &str, value: &str) -> Result<u32> {
    value.parse().map_err(|_| {
        error(
            Errno::Einval,
            format!("{key}: '{value}' is not a whole number of seconds"),
        )
    })
}

/// `Name: value`, as curl's `-H` and nbdkit's `header=` take it.
fn header(value: &str) -> Result<Header> {
    let (name, value) = value
        .split_once(':')
        .ok_or_else(|| error(Errno::Einval, format!("header: '{value}' is not 'Name: value'")))?;
    Ok(Header {
        name: name.trim().to_owned(),
        value: value.trim().to_owned(),
    })
}

/// RFC 4648 base64, for the Basic authorization of `user=` and `password=`.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, &b| (n << 8) | u32::from(b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

impl Plugin for Curl {
    const NAME: &'static str = "curl";
    const DESCRIPTION: &'static str = "A disk image served over HTTP or HTTPS";
    const MAGIC_CONFIG_KEY: Option<&'static str> = Some("url");
    const CONFIG_KEYS: &'static [Key] = &[
        Key::new("url", Kind::Url, "[url=]<URL>  The disk image (http:// or https://)."),
        Key::new(
            "cainfo",
            Kind::InputFile,
            "cainfo=<FILE>  PEM certificates to trust instead of the system's.",
        ),
        Key::new(
            "capath",
            Kind::InputDirectory,
            "capath=<DIR>  A directory of PEM certificates to trust too.",
        ),
        Key::new(
            "sslverify",
            Kind::Bool,
            "sslverify=false  Do not verify the server's certificate.",
        ),
        Key::new(
            "header",
            Kind::Text,
            "header=<NAME: VALUE>  An extra request header (repeatable).",
        ),
        Key::new("cookie", Kind::Text, "cookie=<COOKIE>  The Cookie header."),
        Key::new("user", Kind::Text, "user=<USER>  User for basic authentication."),
        Key::new(
            "password",
            Kind::Password,
            "password=<PASSWORD>|+FILE|-|-FD  Password for basic authentication.",
        ),
        Key::new("user-agent", Kind::Text, "user-agent=<STRING>  The User-Agent header."),
        Key::new(
            "timeout",
            Kind::Text,
            "timeout=<SECS>  Time one request may take (default: none).",
        ),
        Key::new(
            "connect-timeout",
            Kind::Text,
            "connect-timeout=<SECS>  Time a connection may take to open.",
        ),
        Key::new(
            "followlocation",
            Kind::Bool,
            "followlocation=false  Do not follow redirects (same origin only).",
        ),
        Key::new(
            "connections",
            Kind::Text,
            "connections=<N>  Connections to the server at most (default 4).",
        ),
        Key::new(
            "protocols",
            Kind::Text,
            "protocols=<P,...>  Schemes allowed (http, https).",
        ),
    ];
    // Requests are independent range GETs: the host runs several at once over its pool.
    type Connection = CurlConnection;

    fn config(&mut self, key: &str, value: &str) -> Result<()> {
        match key {
            "url" => self.url_given = true,
            "cainfo" => self.ca_file = Some(key.into()),
            "capath" => self.ca_directory = Some(key.into()),
            "sslverify" => self.verify_tls = Some(parse_bool(key, value)?),
            "header" => self.headers.push(header(value)?),
            "cookie" => self.headers.push(Header {
                name: "Cookie".into(),
                value: value.into(),
            }),
            "user" => self.user = Some(value.into()),
            "password" => self.password = Some(value.into()),
            "user-agent" => self.user_agent = Some(value.into()),
            "timeout" => self.timeout = seconds(key, value)?,
            "connect-timeout" => self.connect_timeout = seconds(key, value)?,
            "followlocation" => self.follow_redirects = Some(parse_bool(key, value)?),
            "connections" => {
                self.connections = value.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                    error(
                        Errno::Einval,
                        format!("connections: '{value}' is not a positive number"),
                    )
                })?
            }
            // protocols
            _ => self.protocols = Some(value.to_ascii_lowercase()),
        }
        Ok(())
    }

    fn config_complete(&mut self) -> Result<()> {
        if !self.url_given {
            return Err(error(Errno::Einval, "you must supply the url=<URL> parameter"));
        }
        if let Some(user) = &self.user {
            let credentials = format!("{user}:{}", self.password.as_deref().unwrap_or(""));
            self.headers.push(Header {
                name: "Authorization".into(),
                value: format!("Basic {}", base64(credentials.as_bytes())),
            });
        }
        Ok(())
    }

    /// Fail at startup, not at the first client: the URL must answer with a size.
    fn get_ready(&mut self) -> Result<()> {
        self.verbose = nbdbox_sdk::debug_flag("verbose").is_some_and(|v| v != 0);
        self.open_origin()?.probe(None, &self.headers).map(drop)
    }

    fn open(&self, _readonly: bool, _export_name: &str) -> Result<CurlConnection> {
        let origin = self.open_origin()?;
        let object = origin.probe(None, &self.headers)?;
        Ok(CurlConnection {
            origin,
            object,
            headers: self.headers.clone(),
            verbose: self.verbose,
        })
    }
}

impl Curl {
    fn open_origin(&self) -> Result<Origin> {
        let origin = http::open(
            "url",
            &Options {
                ca_file_key: self.ca_file.clone(),
                ca_directory_key: self.ca_directory.clone(),
                verify_tls: self.verify_tls.unwrap_or(true),
                timeout_seconds: self.timeout,
                connect_timeout_seconds: self.connect_timeout,
                follow_redirects: self.follow_redirects.unwrap_or(true),
                user_agent: self.user_agent.clone(),
                connections: if self.connections == 0 { 4 } else { self.connections },
            },
        )?;
        if let Some(protocols) = &self.protocols {
            let url = origin.url();
            let scheme = url.split(':').next().unwrap_or("");
            if !protocols.split(',').any(|p| p.trim() == scheme) {
                return Err(error(
                    Errno::Eacces,
                    format!("protocols: {scheme} is not one of {protocols}"),
                ));
            }
        }
        Ok(origin)
    }
}

struct CurlConnection {
    origin: Origin,
    object: Object,
    headers: Vec<Header>,
    verbose: bool,
}

#[nbdbox_sdk::connection]
impl Connection for CurlConnection {
    fn get_size(&self) -> Result<u64> {
        Ok(self.object.size)
    }

    fn capabilities(&self) -> Result<Capabilities> {
        // Reads of a fixed object: several clients may read at once (nbdkit ≥ 1.34).
        Ok(Capabilities {
            can_multi_conn: true,
            ..Capabilities::implied(Self::IMPLEMENTS)
        })
    }

    fn pread(&self, dst: &ReadBuf, count: u32, offset: u64, _flags: CmdFlags) -> Result<()> {
        let object = &self.object;
        if self.verbose {
            let last = offset + u64::from(count.max(1)) - 1;
            nbdbox_sdk::debug(&format!("GET {} bytes={offset}-{last}", object.path));
        }
        self.origin.read_into(
            &object.path,
            object.etag.as_deref(),
            &self.headers,
            dst,
            0,
            count,
            offset,
        )
    }

    /// A hint: the host fetches the range in the background, so readahead pays off.
    fn cache(&self, count: u64, offset: u64, _flags: CmdFlags) -> Result<()> {
        let object = &self.object;
        self.origin
            .prefetch(&object.path, object.etag.as_deref(), &self.headers, count, offset);
        Ok(())
    }
}

nbdbox_sdk::plugin!(Curl);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_as_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
    }

    #[test]
    fn headers_as_curl_takes_them() {
        let h = header("X-Token:  abc: def ").unwrap();
        assert_eq!((h.name.as_str(), h.value.as_str()), ("X-Token", "abc: def"));
        assert!(header("no colon").is_err());
    }
}
