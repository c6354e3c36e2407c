//! The little XML S3 speaks that this plugin needs: the keys of a ListObjectsV2 answer, the
//! code and message of an error, and the body of a DeleteObjects request. S3's answers are
//! flat enough that elements are found by name.

/// The text of every `<tag>...</tag>` element, in order, with entities decoded.
pub fn all(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        rest = &rest[start + open.len()..];
        let Some(end) = rest.find(&close) else { break };
        out.push(unescape(&rest[..end]));
        rest = &rest[end + close.len()..];
    }
    out
}

pub fn first(xml: &str, tag: &str) -> Option<String> {
    all(xml, tag).into_iter().next()
}

fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let Some(semi) = rest.find(';') else { break };
        let entity = &rest[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .map(|hex| u32::from_str_radix(hex, 16).ok())
                .unwrap_or_else(|| entity.strip_prefix('#').and_then(|dec| dec.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The body of a quiet DeleteObjects request for `keys` (at most 1000).
pub fn delete_request(keys: &[String]) -> String {
    let objects: String = keys
        .iter()
        .map(|key| format!("<Object><Key>{}</Key></Object>", escape(key)))
        .collect();
    format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Delete><Quiet>true</Quiet>{objects}</Delete>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_gives_its_keys_and_continuation() {
        let answer = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
            <ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\
            <Name>b</Name><Prefix>d&amp;k/</Prefix><KeyCount>2</KeyCount><IsTruncated>true</IsTruncated>\
            <Contents><Key>d&amp;k/0000000000000000</Key><Size>4</Size></Contents>\
            <Contents><Key>d&amp;k/0000000000000003</Key><Size>4</Size></Contents>\
            <NextContinuationToken>1/a+b=</NextContinuationToken></ListBucketResult>";
        assert_eq!(all(answer, "Key"), ["d&k/0000000000000000", "d&k/0000000000000003"]);
        assert_eq!(first(answer, "IsTruncated").as_deref(), Some("true"));
        assert_eq!(first(answer, "NextContinuationToken").as_deref(), Some("1/a+b="));
        assert_eq!(first(answer, "Missing"), None);
    }

    #[test]
    fn entities_are_decoded() {
        assert_eq!(
            unescape("a&lt;b&gt;&quot;&apos;&#65;&#x42;&bogus;&"),
            "a<b>\"'AB&bogus;&"
        );
    }

    #[test]
    fn a_delete_request_escapes_keys() {
        assert_eq!(
            delete_request(&["a<b".into(), "c".into()]),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Delete><Quiet>true</Quiet>\
             <Object><Key>a&lt;b</Key></Object><Object><Key>c</Key></Object></Delete>"
        );
    }
}
