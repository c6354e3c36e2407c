//! S3: nbdkit-S3-plugin(1), a disk in S3 or any S3-compatible service (Ceph RGW, MinIO...).
//! One object served read-only (`bucket=`, `key=`), or with `size=` and `object-size=` a
//! writable disk striped over objects `KEY/%016x` (missing objects read as zeroes; trim
//! deletes whole objects), laid out as nbdkit's plugins/S3/S3.py does.
//!
//! `endpoint-url=` is the grant: the host reaches that origin only and makes the requests;
//! this component signs them (AWS Signature Version 4, `sigv4`) and reads object ranges
//! straight into the request buffer.

mod credentials;
mod layout;
mod sigv4;
mod xml;

use base64::Engine;
use md5::{Digest, Md5};
use nbdbox_sdk::http::{self, Header, Method, Options, Origin, Response};
use nbdbox_sdk::prelude::*;
use nbdbox_sdk::{counter_add, grants, parse_size};
use sigv4::Credentials;
use std::rc::Rc;

#[derive(Default)]
struct S3 {
    /// The key the endpoint was granted under (`endpoint-url` or nbdkit's `endpoint_url`).
    endpoint_key: Option<&'static str>,
    access_key: Option<String>,
    secret_key: Option<String>,
    session_token: Option<String>,
    credentials_file: Option<&'static str>,
    profile: Option<String>,
    region: Option<String>,
    bucket: Option<String>,
    key: Option<String>,
    size: Option<u64>,
    object_size: Option<u64>,
    /// Made ready by get_ready.
    endpoint: Option<Rc<Endpoint>>,
}

/// Every PUT body is a whole object, built in this component's memory, and every
/// read-modify-write reads one into a host scratch buffer (at most 64 MiB).
const MAX_OBJECT_SIZE: u64 = 64 << 20;
/// Keys per DeleteObjects request (S3's limit).
const DELETE_BATCH: usize = 1000;
/// Read-modify-writes of objects in the same stripe take turns, over every instance.
const LOCK_STRIPES: u64 = 64;
const LOCK_WAIT_NS: u64 = 1_000_000;
/// Seconds one request may take (boto3's default read timeout is 60 s per read).
const REQUEST_TIMEOUT: u32 = 300;

impl Plugin for S3 {
    const NAME: &'static str = "S3";
    const DESCRIPTION: &'static str = "A disk in Amazon S3 or an S3-compatible service";
    const CONFIG_KEYS: &'static [Key] = &[
        Key::new(
            "endpoint-url",
            Kind::Url,
            "endpoint-url=<URL>  The S3 service (https://s3.REGION.amazonaws.com, Ceph, MinIO...).",
        ),
        Key::new("endpoint_url", Kind::Url, "endpoint_url=<URL>  Same as endpoint-url."),
        Key::new("bucket", Kind::Text, "bucket=<BUCKET>  The bucket (required)."),
        Key::new(
            "key",
            Kind::Text,
            "key=<KEY>  The object, or the prefix of the objects with size= (required).",
        ),
        Key::new("size", Kind::Size, "size=<SIZE>  Size of a disk striped over objects."),
        Key::new(
            "object-size",
            Kind::Size,
            "object-size=<SIZE>  Size of each object of a striped disk.",
        ),
        Key::new("access-key", Kind::Text, "access-key=<ID>  AWS access key id."),
        Key::new("access_key", Kind::Text, "access_key=<ID>  Same as access-key."),
        Key::new("secret-key", Kind::Text, "secret-key=<KEY>  AWS secret access key."),
        Key::new("secret_key", Kind::Text, "secret_key=<KEY>  Same as secret-key."),
        Key::new(
            "session-token",
            Kind::Text,
            "session-token=<TOKEN>  Token of temporary credentials.",
        ),
        Key::new(
            "session_token",
            Kind::Text,
            "session_token=<TOKEN>  Same as session-token.",
        ),
        Key::new(
            "credentials-file",
            Kind::InputFile,
            "credentials-file=<FILE>  AWS shared credentials file (~/.aws/credentials).",
        ),
        Key::new(
            "profile",
            Kind::Text,
            "profile=<NAME>  Profile in the credentials file (default: default).",
        ),
        Key::new(
            "region",
            Kind::Text,
            "region=<REGION>  Signing region (default: from an AWS endpoint, else us-east-1).",
        ),
    ];
    type Connection = S3Connection;

    fn config(&mut self, key: &str, value: &str) -> Result<()> {
        let text = Some(value.to_owned());
        match key {
            "endpoint-url" => self.endpoint_key = Some("endpoint-url"),
            "endpoint_url" => self.endpoint_key = Some("endpoint_url"),
            "bucket" => self.bucket = text,
            "key" => self.key = text,
            "size" => self.size = Some(parse_size(key, value)?),
            "object-size" => self.object_size = Some(parse_size(key, value)?),
            "access-key" | "access_key" => self.access_key = text,
            "secret-key" | "secret_key" => self.secret_key = text,
            "session-token" | "session_token" => self.session_token = text,
            "credentials-file" => self.credentials_file = Some("credentials-file"),
            "profile" => self.profile = text,
            // region
            _ => self.region = text,
        }
        Ok(())
    }

    fn config_complete(&mut self) -> Result<()> {
        let invalid = |why: &str| Err(error(Errno::Einval, why));
        if self.bucket.is_none() {
            return invalid("bucket parameter missing");
        }
        if self.key.is_none() {
            return invalid("key parameter missing");
        }
        if self.endpoint_key.is_none() {
            return invalid(
                "endpoint-url parameter missing: nbdbox reaches only the service named on the command \
                 line (for AWS: endpoint-url=https://s3.REGION.amazonaws.com)",
            );
        }
        match (self.size, self.object_size) {
            (None, None) => {}
            (Some(size), Some(object_size)) => {
                if object_size == 0 || size % object_size != 0 {
                    return invalid("`size` must be a multiple of `object-size`");
                }
                if object_size > MAX_OBJECT_SIZE {
                    return invalid("`object-size` may be at most 64M");
                }
            }
            _ => return invalid("`size` and `object-size` parameters must always be specified together"),
        }
        if self.access_key.is_some() != self.secret_key.is_some() {
            return invalid("access-key and secret-key must be given together");
        }
        if self.access_key.is_some() && self.credentials_file.is_some() {
            return invalid("give the keys either as parameters or in credentials-file, not both");
        }
        Ok(())
    }

    /// Fail at startup, not at the first client: the service must answer, with these
    /// credentials, for the object (or the bucket of a striped disk). Only the first
    /// instance asks; the others are configured the same way.
    fn get_ready(&mut self) -> Result<()> {
        let endpoint = Rc::new(self.endpoint()?);
        if counter_add("instances", 1) == 1 {
            let key = self.key.as_deref().unwrap_or_default();
            if self.size.is_some() {
                endpoint.list(&format!("{key}/"), None, None, 1)?;
            } else {
                endpoint.head(key)?;
            }
        }
        self.endpoint = Some(endpoint);
        Ok(())
    }

    fn open(&self, _readonly: bool, _export_name: &str) -> Result<S3Connection> {
        let endpoint = self
            .endpoint
            .clone()
            .ok_or_else(|| error(Errno::Eio, "the plugin was not made ready"))?;
        let key = self.key.clone().unwrap_or_default();
        let disk = match (self.size, self.object_size) {
            (Some(size), Some(object_size)) => Disk::Striped { size, object_size },
            _ => {
                let (size, etag) = endpoint.head(&key)?;
                Disk::Object { size, etag }
            }
        };
        Ok(S3Connection { endpoint, key, disk })
    }
}

impl S3 {
    fn credentials(&self) -> Result<Option<Credentials>> {
        if let (Some(access_key), Some(secret_key)) = (&self.access_key, &self.secret_key) {
            return Ok(Some(Credentials {
                access_key: access_key.clone(),
                secret_key: secret_key.clone(),
                session_token: self.session_token.clone(),
            }));
        }
        let Some(file_key) = self.credentials_file else {
            // Unsigned requests: public buckets.
            return Ok(None);
        };
        let file = grants::open_file(file_key)?;
        let text = file.read(nbdbox_sdk::to_usize(file.size()?)? as u32, 0)?;
        let profile = self.profile.as_deref().unwrap_or("default");
        credentials::from_file(&String::from_utf8_lossy(&text), profile)
            .map(Some)
            .map_err(|why| error(Errno::Einval, format!("{file_key}: {why}")))
    }

    fn endpoint(&self) -> Result<Endpoint> {
        let origin = http::open(
            self.endpoint_key.unwrap_or("endpoint-url"),
            &Options {
                ca_file_key: None,
                ca_directory_key: None,
                verify_tls: true,
                timeout_seconds: REQUEST_TIMEOUT,
                connect_timeout_seconds: 0,
                // A redirect would need a new signature: S3 clients do not follow them.
                follow_redirects: false,
                user_agent: Some(format!("nbdbox-S3/{}", env!("CARGO_PKG_VERSION"))),
                connections: 16,
            },
        )?;
        let bucket = self.bucket.as_deref().unwrap_or_default();
        let (host, root) = addressing(&origin.url(), bucket);
        let region = self.region.clone().unwrap_or_else(|| region_of(&host));
        Ok(Endpoint {
            origin,
            host,
            root,
            region,
            credentials: self.credentials()?,
        })
    }
}

/// The Host header the host sends for `url` (its authority, without a default port), and
/// the path of `bucket` on it: `/BUCKET` (path style), or the URL's own path when the host
/// name already starts with `BUCKET.` (virtual-hosted style). A path in the URL is kept as a
/// prefix.
fn addressing(url: &str, bucket: &str) -> (String, String) {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, ""),
    };
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let default_port = if scheme.eq_ignore_ascii_case("https") {
        "443"
    } else {
        "80"
    };
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') && port == default_port => host,
        _ => authority,
    };
    let path = path.split(['?', '#']).next().unwrap_or("").trim_end_matches('/');
    let virtual_hosted = host
        .to_ascii_lowercase()
        .starts_with(&format!("{}.", bucket.to_ascii_lowercase()));
    let root = if virtual_hosted {
        path.to_owned()
    } else {
        format!("{path}/{}", sigv4::uri_encode(bucket, false))
    };
    (host.to_owned(), root)
}

/// The region an AWS endpoint names (`s3.REGION.amazonaws.com`, `s3-REGION.amazonaws.com`,
/// `s3.dualstack.REGION...`); us-east-1 otherwise, which S3-compatible services accept.
fn region_of(host: &str) -> String {
    let host = host.split(':').next().unwrap_or(host).to_ascii_lowercase();
    let labels: Vec<&str> = host.split('.').collect();
    if host.ends_with(".amazonaws.com") {
        for (i, label) in labels.iter().enumerate() {
            if let Some(region) = label.strip_prefix("s3-") {
                return region.to_owned();
            }
            if *label == "s3" {
                let next = labels[i + 1..].iter().find(|l| **l != "dualstack");
                if let Some(region) = next.filter(|l| **l != "amazonaws") {
                    return (*region).to_owned();
                }
            }
        }
    }
    "us-east-1".to_owned()
}

/// The granted service, and how to sign for it.
struct Endpoint {
    origin: Origin,
    host: String,
    /// The bucket's path.
    root: String,
    region: String,
    credentials: Option<Credentials>,
}

/// One page of a listing.
struct Listing {
    keys: Vec<String>,
    next: Option<String>,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The code and message of an S3 error answer, for the log.
fn refusal(what: &str, response: &Response) -> Error {
    let body = String::from_utf8_lossy(&response.body);
    let code = xml::first(&body, "Code").unwrap_or_default();
    let message = xml::first(&body, "Message").unwrap_or_default();
    error(
        Errno::Eio,
        format!("{what}: HTTP {} {code} {message}", response.status)
            .trim_end()
            .to_owned(),
    )
}

impl Endpoint {
    fn object_path(&self, name: &str) -> String {
        format!("{}/{}", self.root, sigv4::uri_encode(name, true))
    }

    /// The signed headers of a request (none without credentials), with `extra` added.
    fn headers(&self, method: &str, target: &str, payload: &[u8], extra: &[(&str, &str)]) -> Vec<Header> {
        let mut headers: Vec<Header> = extra
            .iter()
            .map(|(name, value)| Header {
                name: (*name).to_owned(),
                value: (*value).to_owned(),
            })
            .collect();
        if let Some(credentials) = &self.credentials {
            let date = sigv4::amz_date(now());
            let request = sigv4::Request {
                method,
                target,
                host: &self.host,
                payload,
                extra,
                date: &date,
            };
            headers.extend(
                sigv4::sign(credentials, &self.region, &request)
                    .into_iter()
                    .map(|(name, value)| Header { name, value }),
            );
        }
        headers
    }

    fn send(&self, method: Method, target: &str, body: &[u8], extra: &[(&str, &str)]) -> Result<Response> {
        let name = match method {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Put => "PUT",
            Method::Post => "POST",
            Method::Delete => "DELETE",
        };
        let headers = self.headers(name, target, body, extra);
        self.origin.send(method, target, &headers, body)
    }

    /// HEAD: the object's size and entity tag.
    fn head(&self, name: &str) -> Result<(u64, Option<String>)> {
        let target = self.object_path(name);
        let response = self.send(Method::Head, &target, &[], &[])?;
        if response.status != 200 {
            return Err(refusal(&format!("HEAD {target}"), &response));
        }
        let header = |wanted: &str| {
            response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(wanted))
                .map(|h| h.value.clone())
        };
        let size = header("content-length")
            .and_then(|l| l.parse().ok())
            .ok_or_else(|| error(Errno::Eio, format!("HEAD {target}: no Content-Length")))?;
        Ok((size, header("etag")))
    }

    /// Whether the object exists (HEAD 200 or 404).
    fn exists(&self, name: &str) -> Result<bool> {
        let target = self.object_path(name);
        let response = self.send(Method::Head, &target, &[], &[])?;
        match response.status {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(refusal(&format!("HEAD {target}"), &response)),
        }
    }

    /// A range GET of `count` bytes at `offset` of the object into [at, at + count) of `dst`.
    fn read_into(&self, name: &str, etag: Option<&str>, dst: &ReadBuf, at: u32, count: u32, offset: u64) -> Result<()> {
        let target = self.object_path(name);
        let headers = self.headers("GET", &target, &[], &[]);
        self.origin.read_into(&target, etag, &headers, dst, at, count, offset)
    }

    /// Like `read_into` for a block of a striped disk, where a missing object is zeroes.
    fn read_block_into(&self, name: &str, dst: &ReadBuf, at: u32, count: u32, offset: u64) -> Result<()> {
        let Err(failed) = self.read_into(name, None, dst, at, count, offset) else {
            return Ok(());
        };
        // The host answers a failed range GET with EIO whatever the status: ask whether
        // the object is there at all.
        match self.exists(name) {
            Ok(false) => {
                dst.zero(at, count);
                Ok(())
            }
            // Written meanwhile by another connection: read it again.
            Ok(true) => self.read_into(name, None, dst, at, count, offset),
            Err(_) => Err(failed),
        }
    }

    fn put(&self, name: &str, body: &[u8]) -> Result<()> {
        let target = self.object_path(name);
        let response = self.send(Method::Put, &target, body, &[])?;
        if !(200..300).contains(&response.status) {
            return Err(refusal(&format!("PUT {target}"), &response));
        }
        Ok(())
    }

    /// One page (ListObjectsV2) of the keys under `prefix` after `start_after`.
    fn list(&self, prefix: &str, start_after: Option<&str>, token: Option<&str>, max: u32) -> Result<Listing> {
        let mut params = vec![
            "list-type=2".to_owned(),
            format!("max-keys={max}"),
            format!("prefix={}", sigv4::uri_encode(prefix, false)),
        ];
        if let Some(after) = start_after {
            params.push(format!("start-after={}", sigv4::uri_encode(after, false)));
        }
        if let Some(token) = token {
            params.push(format!("continuation-token={}", sigv4::uri_encode(token, false)));
        }
        let target = format!("{}/?{}", self.root, params.join("&"));
        let response = self.send(Method::Get, &target, &[], &[])?;
        if response.status != 200 {
            return Err(refusal(&format!("listing {prefix}"), &response));
        }
        let body = String::from_utf8_lossy(&response.body);
        let truncated = xml::first(&body, "IsTruncated").is_some_and(|t| t == "true");
        Ok(Listing {
            keys: xml::all(&body, "Key"),
            next: xml::first(&body, "NextContinuationToken").filter(|_| truncated),
        })
    }

    /// DeleteObjects, quiet: only failures are answered.
    fn delete(&self, names: &[String]) -> Result<()> {
        let body = xml::delete_request(names).into_bytes();
        let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(&body));
        let target = format!("{}/?delete", self.root);
        let response = self.send(Method::Post, &target, &body, &[("Content-MD5", &md5)])?;
        let answer = String::from_utf8_lossy(&response.body);
        if response.status != 200 || answer.contains("<Error>") {
            return Err(refusal(&format!("deleting {} objects", names.len()), &response));
        }
        Ok(())
    }
}

/// Exclusive use of one stripe of objects for a read-modify-write, over every instance of
/// the plugin (a host counter: 1 while held). nbdkit's S3.py locks per object in-process.
struct StripeLock {
    name: String,
}

impl StripeLock {
    fn take(block: u64) -> Result<StripeLock> {
        let name = format!("rmw-{}", block % LOCK_STRIPES);
        while counter_add(&name, 1) != 1 {
            counter_add(&name, -1);
            if !nbdbox_sdk::sleep(LOCK_WAIT_NS) {
                return Err(error(
                    Errno::Eio,
                    "waiting too long for another write to the same objects",
                ));
            }
        }
        Ok(StripeLock { name })
    }
}

impl Drop for StripeLock {
    fn drop(&mut self) {
        counter_add(&self.name, -1);
    }
}

enum Disk {
    /// One object, read-only.
    Object { size: u64, etag: Option<String> },
    /// Objects `KEY/%016x` of `object_size` bytes.
    Striped { size: u64, object_size: u64 },
}

struct S3Connection {
    endpoint: Rc<Endpoint>,
    key: String,
    disk: Disk,
}

impl S3Connection {
    fn object_size(&self) -> Result<u64> {
        match self.disk {
            Disk::Striped { object_size, .. } => Ok(object_size),
            Disk::Object { .. } => Err(error(Errno::Erofs, "a single object is read-only")),
        }
    }

    /// Replace [within, within + bytes.len()) of block `block`, keeping the rest of it.
    fn modify(&self, block: u64, within: u64, bytes: &[u8]) -> Result<()> {
        let object_size = self.object_size()?;
        let name = layout::object_name(&self.key, block);
        let _lock = StripeLock::take(block)?;
        let scratch = ReadBuf::new(object_size as u32);
        self.endpoint
            .read_block_into(&name, &scratch, 0, object_size as u32, 0)?;
        let mut object = scratch.read(0, object_size as u32);
        object[within as usize..within as usize + bytes.len()].copy_from_slice(bytes);
        self.endpoint.put(&name, &object)
    }

    /// Delete the objects of `blocks` that exist (listing them first, as nbdkit does, so a
    /// large trim costs requests for the data there is, not for the range).
    fn delete_blocks(&self, blocks: std::ops::Range<u64>) -> Result<()> {
        if blocks.is_empty() {
            return Ok(());
        }
        let prefix = format!("{}/", self.key);
        let start_after = (blocks.start > 0).then(|| layout::object_name(&self.key, blocks.start - 1));
        let end = layout::object_name(&self.key, blocks.end);
        let mut batch = Vec::new();
        let mut token = None;
        'pages: loop {
            let page = self
                .endpoint
                .list(&prefix, start_after.as_deref(), token.as_deref(), DELETE_BATCH as u32)?;
            for name in page.keys {
                if name >= end {
                    break 'pages;
                }
                // Only the disk's own objects: 16 hex digits after the prefix.
                let block = &name[prefix.len()..];
                if block.len() != 16 || !block.bytes().all(|b| b.is_ascii_hexdigit()) {
                    continue;
                }
                batch.push(name);
                if batch.len() == DELETE_BATCH {
                    self.endpoint.delete(&std::mem::take(&mut batch))?;
                }
            }
            match page.next {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        self.endpoint.delete(&batch)
    }
}

#[nbdbox_sdk::connection]
impl Connection for S3Connection {
    fn get_size(&self) -> Result<u64> {
        Ok(match self.disk {
            Disk::Object { size, .. } | Disk::Striped { size, .. } => size,
        })
    }

    fn block_size(&self) -> Result<Option<BlockSize>> {
        Ok(match self.disk {
            // nbdkit's S3.py: more or less arbitrary for one object.
            Disk::Object { .. } => Some(BlockSize {
                minimum: 1,
                preferred: 512 * 1024,
                maximum: u32::MAX,
            }),
            // Requests of one object each: anything smaller is a read-modify-write.
            Disk::Striped { object_size, .. } => {
                let preferred = object_size as u32;
                (preferred.is_power_of_two() && (512..=32 << 20).contains(&preferred)).then_some(BlockSize {
                    minimum: 1,
                    preferred,
                    maximum: preferred,
                })
            }
        })
    }

    fn capabilities(&self) -> Result<Capabilities> {
        let implied = Capabilities::implied(Self::IMPLEMENTS);
        Ok(match self.disk {
            Disk::Object { .. } => Capabilities {
                can_multi_conn: true,
                ..implied.read_only()
            },
            // Every request is done when S3 has the objects: flush and FUA have nothing to
            // do. Zero deletes whole objects, so it is fast.
            Disk::Striped { .. } => Capabilities {
                can_fua: FuaMode::Native,
                can_fast_zero: true,
                can_multi_conn: true,
                can_cache: CacheMode::None,
                ..implied
            },
        })
    }

    fn pread(&self, dst: &ReadBuf, count: u32, offset: u64, _flags: CmdFlags) -> Result<()> {
        match &self.disk {
            Disk::Object { etag, .. } => self
                .endpoint
                .read_into(&self.key, etag.as_deref(), dst, 0, count, offset),
            Disk::Striped { object_size, .. } => {
                for piece in layout::pieces(offset, count.into(), *object_size) {
                    let name = layout::object_name(&self.key, piece.block);
                    self.endpoint
                        .read_block_into(&name, dst, piece.at as u32, piece.len as u32, piece.within)?;
                }
                Ok(())
            }
        }
    }

    fn pwrite(&self, src: &WriteBuf, count: u32, offset: u64, _flags: CmdFlags) -> Result<()> {
        let object_size = self.object_size()?;
        for piece in layout::pieces(offset, count.into(), object_size) {
            let bytes = src.read(piece.at as u32, piece.len as u32);
            if piece.is_whole(object_size) {
                self.endpoint
                    .put(&layout::object_name(&self.key, piece.block), &bytes)?;
            } else {
                self.modify(piece.block, piece.within, &bytes)?;
            }
        }
        Ok(())
    }

    fn flush(&self, _flags: CmdFlags) -> Result<()> {
        Ok(())
    }

    fn trim(&self, count: u64, offset: u64, _flags: CmdFlags) -> Result<()> {
        self.delete_blocks(layout::whole_blocks(offset, count, self.object_size()?))
    }

    /// Whole objects are deleted (a missing object reads as zeroes), the ends rewritten.
    /// Unlike nbdkit's S3.py, MAY_TRIM does not skip the ends: they must read as zeroes.
    fn zero(&self, count: u64, offset: u64, _flags: CmdFlags) -> Result<()> {
        let object_size = self.object_size()?;
        for piece in layout::partial_ends(offset, count, object_size) {
            self.modify(piece.block, piece.within, &vec![0; piece.len as usize])?;
        }
        self.delete_blocks(layout::whole_blocks(offset, count, object_size))
    }

    /// A hint for one object: the host fetches the range in the background.
    fn cache(&self, count: u64, offset: u64, _flags: CmdFlags) -> Result<()> {
        if let Disk::Object { etag, .. } = &self.disk {
            let target = self.endpoint.object_path(&self.key);
            let headers = self.endpoint.headers("GET", &target, &[], &[]);
            self.endpoint
                .origin
                .prefetch(&target, etag.as_deref(), &headers, count, offset);
        }
        Ok(())
    }
}

nbdbox_sdk::plugin!(S3);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_style_virtual_hosted_style_and_host_headers() {
        assert_eq!(
            addressing("http://127.0.0.1:4569", "b"),
            ("127.0.0.1:4569".into(), "/b".into())
        );
        assert_eq!(
            addressing("https://s3.eu-west-1.amazonaws.com:443/", "my bucket"),
            ("s3.eu-west-1.amazonaws.com".into(), "/my%20bucket".into())
        );
        assert_eq!(
            addressing("https://disks.s3.amazonaws.com", "disks"),
            ("disks.s3.amazonaws.com".into(), "".into())
        );
        assert_eq!(
            addressing("http://[::1]:80/rgw/", "b"),
            ("[::1]".into(), "/rgw/b".into())
        );
        assert_eq!(
            addressing("http://user@ceph.example.com:7480", "b"),
            ("ceph.example.com:7480".into(), "/b".into())
        );
    }

    #[test]
    fn regions_from_aws_endpoints() {
        assert_eq!(region_of("s3.eu-west-1.amazonaws.com"), "eu-west-1");
        assert_eq!(region_of("bucket.s3.ap-south-1.amazonaws.com"), "ap-south-1");
        assert_eq!(region_of("s3-us-west-2.amazonaws.com"), "us-west-2");
        assert_eq!(region_of("s3.dualstack.eu-central-1.amazonaws.com"), "eu-central-1");
        assert_eq!(region_of("s3.amazonaws.com"), "us-east-1");
        assert_eq!(region_of("127.0.0.1:9000"), "us-east-1");
    }
}
