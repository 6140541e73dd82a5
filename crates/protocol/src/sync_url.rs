//! URL handling for app sync.

/// The identity of an SDK URL, as the Inngest server normalises it: without the `deployId` and
/// `probe` query parameters, without a default port, and with loopback hosts spelled `localhost`.
/// Used to recognise the same app across syncs; calls still go to the URL the SDK gave.
pub fn normalize_app_url(raw: &str) -> String {
    let Ok(mut url) = url::Url::parse(raw) else {
        return raw.trim().to_string();
    };
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| k != "deployId" && k != "probe")
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if kept.is_empty() {
        url.set_query(None);
    } else {
        url.query_pairs_mut().clear().extend_pairs(kept);
    }
    if matches!(url.host_str(), Some("127.0.0.1") | Some("0.0.0.0")) {
        let _ = url.set_host(Some("localhost"));
    }
    // `url` already drops a port equal to the scheme's default.
    url.to_string()
}

/// The URL with its `deployId` parameter (if any) removed; this is where sluice sends sync `PUT`s.
pub fn strip_deploy_id(raw: &str) -> String {
    let Ok(mut url) = url::Url::parse(raw) else {
        return raw.to_string();
    };
    let kept: Vec<(String, String)> =
        url.query_pairs().filter(|(k, _)| k != "deployId").map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
    if kept.is_empty() {
        url.set_query(None);
    } else {
        url.query_pairs_mut().clear().extend_pairs(kept);
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_the_inngest_server() {
        assert_eq!(
            normalize_app_url("http://127.0.0.1:80/api/inngest?deployId=abc&probe=trust"),
            "http://localhost/api/inngest"
        );
        assert_eq!(normalize_app_url("https://0.0.0.0:443/x?keep=1&deployId=z"), "https://localhost/x?keep=1");
        assert_eq!(normalize_app_url("http://example.com:3000/api"), "http://example.com:3000/api");
    }
}
