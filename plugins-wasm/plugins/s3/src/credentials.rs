//! The AWS shared credentials file (what boto3 reads from ~/.aws/credentials, and what
//! nbdkit-S3-plugin(1) recommends over command-line keys): INI sections named after
//! profiles, with `aws_access_key_id`, `aws_secret_access_key` and `aws_session_token`.

use crate::sigv4::Credentials;

/// The credentials of `profile`; `[profile NAME]` (the config file's spelling) is accepted
/// for `[NAME]`.
pub fn from_file(text: &str, profile: &str) -> Result<Credentials, String> {
    let mut in_profile = false;
    let mut found = false;
    let (mut access_key, mut secret_key, mut session_token) = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let section = section.trim();
            let name = section.strip_prefix("profile ").map_or(section, str::trim);
            in_profile = name == profile;
            found |= in_profile;
            continue;
        }
        if !in_profile {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = Some(value.trim().to_owned());
        match key.trim().to_ascii_lowercase().as_str() {
            "aws_access_key_id" => access_key = value,
            "aws_secret_access_key" => secret_key = value,
            "aws_session_token" => session_token = value,
            _ => {}
        }
    }
    if !found {
        return Err(format!("there is no profile [{profile}]"));
    }
    match (access_key, secret_key) {
        (Some(access_key), Some(secret_key)) => Ok(Credentials {
            access_key,
            secret_key,
            session_token,
        }),
        _ => Err(format!(
            "profile [{profile}] needs aws_access_key_id and aws_secret_access_key"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# comment\n[default]\naws_access_key_id = AKID\naws_secret_access_key=SECRET \n\n\
                        [profile other]\n; another comment\naws_access_key_id = K2\n\
                        aws_secret_access_key = S2\naws_session_token = T2\n[broken]\naws_access_key_id = X\n";

    #[test]
    fn profiles_are_found_by_name() {
        assert_eq!(
            from_file(FILE, "default"),
            Ok(Credentials {
                access_key: "AKID".into(),
                secret_key: "SECRET".into(),
                session_token: None
            })
        );
        assert_eq!(from_file(FILE, "other").unwrap().session_token.as_deref(), Some("T2"));
        assert!(from_file(FILE, "nope").unwrap_err().contains("no profile [nope]"));
        assert!(from_file(FILE, "broken").unwrap_err().contains("aws_secret_access_key"));
    }
}
