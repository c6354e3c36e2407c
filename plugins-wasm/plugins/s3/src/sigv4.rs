//! AWS Signature Version 4 for S3 requests (the "Authorization header" form). The host sets
//! Host and Range itself: Host is signed with the value it will send (the granted URL's
//! authority, without a default port); Range is left out of the signed headers, which S3
//! allows. The payload is always hashed (`x-amz-content-sha256`).

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// An access key pair, and the token of temporary credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub access_key: String,
    pub secret_key: String,
    pub session_token: Option<String>,
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hmac(key: &[u8], data: &str) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(data.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// RFC 3986 percent-encoding as SigV4 wants it: unreserved characters stay, everything else
/// is %XX in upper case; `/` stays too when `keep_slash` (object paths).
pub fn uri_encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for &b in text.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `YYYYMMDDTHHMMSSZ` for seconds since the epoch (UTC).
pub fn amz_date(epoch_seconds: u64) -> String {
    let (year, month, day) = calendar::civil_from_days((epoch_seconds / 86400) as i64);
    let secs = epoch_seconds % 86400;
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// What one request is, for signing.
pub struct Request<'a> {
    pub method: &'a str,
    /// The path as sent (already encoded), with its query if any.
    pub target: &'a str,
    /// The Host header's value.
    pub host: &'a str,
    pub payload: &'a [u8],
    /// Further headers this request sends and signs (Content-MD5...), or only signs.
    pub extra: &'a [(&'a str, &'a str)],
    /// `amz_date` of the time of signing.
    pub date: &'a str,
}

/// The headers to send for `request` signed with `credentials` for `region`: the
/// x-amz-* headers and Authorization (the caller sends `request.extra` itself).
pub fn sign(credentials: &Credentials, region: &str, request: &Request) -> Vec<(String, String)> {
    let payload_hash = sha256_hex(request.payload);
    let mut signed: Vec<(String, String)> = vec![
        ("host".into(), request.host.to_owned()),
        ("x-amz-content-sha256".into(), payload_hash.clone()),
        ("x-amz-date".into(), request.date.to_owned()),
    ];
    if let Some(token) = &credentials.session_token {
        signed.push(("x-amz-security-token".into(), token.clone()));
    }
    for (name, value) in request.extra {
        signed.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    signed.sort();
    let (path, query) = request.target.split_once('?').unwrap_or((request.target, ""));
    // Sorted by name, then value; a parameter without a value gets an empty one.
    let mut params: Vec<(&str, &str)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect();
    params.sort();
    let params: Vec<String> = params.iter().map(|(name, value)| format!("{name}={value}")).collect();
    let canonical_headers: String = signed.iter().map(|(n, v)| format!("{n}:{v}\n")).collect();
    let signed_names = signed.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(";");
    let canonical_request = format!(
        "{}\n{path}\n{}\n{canonical_headers}\n{signed_names}\n{payload_hash}",
        request.method,
        params.join("&")
    );
    let day = &request.date[..8];
    let scope = format!("{day}/{region}/s3/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{}\n{scope}\n{}",
        request.date,
        sha256_hex(canonical_request.as_bytes())
    );
    let key = [day, region, "s3", "aws4_request"]
        .iter()
        .fold(format!("AWS4{}", credentials.secret_key).into_bytes(), |key, part| {
            hmac(&key, part)
        });
    let signature = hex(&hmac(&key, &string_to_sign));
    let mut headers: Vec<(String, String)> = signed
        .into_iter()
        .filter(|(name, _)| name.starts_with("x-amz-"))
        .collect();
    headers.push((
        "Authorization".into(),
        format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_names}, Signature={signature}",
            credentials.access_key
        ),
    ));
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example credentials of the S3 documentation's SigV4 examples
    /// ("Signature Calculations for the Authorization Header").
    fn example() -> Credentials {
        Credentials {
            access_key: "AKIAIOSFODNN7EXAMPLE".into(),
            secret_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        }
    }

    fn signature(headers: &[(String, String)]) -> String {
        let auth = &headers.iter().find(|(n, _)| n == "Authorization").unwrap().1;
        auth.rsplit_once("Signature=").unwrap().1.to_owned()
    }

    #[test]
    fn the_documented_get_object_example() {
        let request = Request {
            method: "GET",
            target: "/test.txt",
            host: "examplebucket.s3.amazonaws.com",
            payload: b"",
            extra: &[("Range", "bytes=0-9")],
            date: "20130524T000000Z",
        };
        let headers = sign(&example(), "us-east-1", &request);
        assert_eq!(
            signature(&headers),
            "f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        );
        let auth = &headers.iter().find(|(n, _)| n == "Authorization").unwrap().1;
        assert!(auth.starts_with(
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, \
             SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, Signature="
        ));
    }

    #[test]
    fn the_documented_bucket_examples() {
        // GET Bucket (List Objects), and GET Bucket Lifecycle (a sub-resource without value).
        for (target, expected) in [
            (
                "/?max-keys=2&prefix=J",
                "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7",
            ),
            (
                "/?lifecycle",
                "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543",
            ),
        ] {
            let request = Request {
                method: "GET",
                target,
                host: "examplebucket.s3.amazonaws.com",
                payload: b"",
                extra: &[],
                date: "20130524T000000Z",
            };
            assert_eq!(
                signature(&sign(&example(), "us-east-1", &request)),
                expected,
                "{target}"
            );
        }
    }

    #[test]
    fn a_session_token_is_sent_and_signed() {
        let credentials = Credentials {
            session_token: Some("token".into()),
            ..example()
        };
        let request = Request {
            method: "PUT",
            target: "/b/k",
            host: "127.0.0.1:9000",
            payload: b"data",
            extra: &[],
            date: "20240101T120000Z",
        };
        let headers = sign(&credentials, "us-east-1", &request);
        let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "x-amz-content-sha256",
                "x-amz-date",
                "x-amz-security-token",
                "Authorization"
            ]
        );
        assert_eq!(headers[0].1, sha256_hex(b"data"));
        assert!(headers[3]
            .1
            .contains("SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token,"));
    }

    #[test]
    fn dates_and_encoding() {
        assert_eq!(amz_date(1_369_353_600), "20130524T000000Z");
        assert_eq!(amz_date(951_782_400 + 3723), "20000229T010203Z");
        assert_eq!(amz_date(0), "19700101T000000Z");
        assert_eq!(uri_encode("disk/0000000000000001", true), "disk/0000000000000001");
        assert_eq!(uri_encode("a b+c/d~", false), "a%20b%2Bc%2Fd~");
        assert_eq!(uri_encode("é", true), "%C3%A9");
    }
}
