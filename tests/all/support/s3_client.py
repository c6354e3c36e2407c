#!/usr/bin/python3
"""A small S3 client for the S3 plugin's tests, standard library only, with requests signed
(AWS Signature Version 4) independently of the plugin's own signer.

    s3_client.py ENDPOINT ACCESS_KEY SECRET_KEY mkbucket BUCKET
    s3_client.py ENDPOINT ACCESS_KEY SECRET_KEY put BUCKET KEY FILE
    s3_client.py ENDPOINT ACCESS_KEY SECRET_KEY get BUCKET KEY FILE   (exit 2: no such key)
    s3_client.py ENDPOINT ACCESS_KEY SECRET_KEY list BUCKET PREFIX    (one key per line)
"""

import datetime
import hashlib
import hmac
import re
import sys
import urllib.error
import urllib.parse
import urllib.request


def sign(key, text):
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def request(endpoint, access, secret, method, path, query="", body=b""):
    url = urllib.parse.urlsplit(endpoint)
    now = datetime.datetime.now(datetime.timezone.utc)
    date, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
    payload = hashlib.sha256(body).hexdigest()
    headers = {"host": url.netloc, "x-amz-content-sha256": payload, "x-amz-date": date}
    names = ";".join(sorted(headers))
    canonical_query = "&".join(sorted(q if "=" in q else q + "=" for q in query.split("&") if q))
    canonical = "\n".join(
        [method, path, canonical_query]
        + [f"{n}:{headers[n]}" for n in sorted(headers)]
        + ["", names, payload]
    )
    scope = f"{day}/us-east-1/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + secret).encode()
    for part in (day, "us-east-1", "s3", "aws4_request"):
        key = sign(key, part)
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={access}/{scope}, SignedHeaders={names}, Signature={signature}"
    )
    del headers["host"]
    target = endpoint.rstrip("/") + path + ("?" + query if query else "")
    req = urllib.request.Request(target, data=body if method == "PUT" else None, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def main():
    endpoint, access, secret, command, bucket, *rest = sys.argv[1:]
    quote = lambda s: urllib.parse.quote(s, safe="/~")
    if command == "mkbucket":
        status, body = request(endpoint, access, secret, "PUT", f"/{quote(bucket)}")
    elif command == "put":
        key, file = rest
        with open(file, "rb") as f:
            status, body = request(endpoint, access, secret, "PUT", f"/{quote(bucket)}/{quote(key)}", body=f.read())
    elif command == "get":
        key, file = rest
        status, body = request(endpoint, access, secret, "GET", f"/{quote(bucket)}/{quote(key)}")
        if status == 404:
            sys.exit(2)
        if status == 200:
            with open(file, "wb") as f:
                f.write(body)
            return
    elif command == "list":
        (prefix,) = rest
        query = "list-type=2&prefix=" + urllib.parse.quote(prefix, safe="~")
        status, body = request(endpoint, access, secret, "GET", f"/{quote(bucket)}", query)
        if status == 200:
            for key in re.findall(r"<Key>([^<]*)</Key>", body.decode()):
                print(key)
            return
    else:
        sys.exit(f"unknown command {command}")
    if status >= 300:
        sys.exit(f"{command}: HTTP {status}: {body.decode(errors='replace')}")


main()
