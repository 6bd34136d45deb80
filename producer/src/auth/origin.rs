//! Reading credentials off a request, and telling the dashboard's own requests from a page on
//! another origin that rides on its cookie.

use axum::http::{HeaderMap, header};

use super::SESSION_COOKIE;

/// A secret a request presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    Bearer(String),
    Session(String),
}

/// The bearer token, else the session cookie; `Authorization` wins when both are present.
/// A malformed `Authorization` header counts as a bearer that matches nothing, so it is
/// refused as such instead of falling back to the cookie.
pub fn credential(headers: &HeaderMap) -> Option<Credential> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let value = value.to_str().unwrap_or_default().trim();
        let token = value
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim().to_owned())
            .unwrap_or_default();
        return Some(Credential::Bearer(token));
    }
    cookie(headers, SESSION_COOKIE).map(Credential::Session)
}

/// The value of a cookie, from any `Cookie` header.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Whether a request comes from a page of this very origin. Browsers send `Sec-Fetch-Site`
/// (Fetch Metadata) and `Origin` on every cross-origin write, and neither can be set by a
/// page's script; a request with neither is refused, since a browser that sends neither cannot
/// be told apart from a forged one.
pub fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return site.as_bytes() == b"same-origin";
    }
    let (Some(origin), Some(host)) = (
        headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        headers.get(header::HOST).and_then(|v| v.to_str().ok()),
    ) else {
        return false;
    };
    origin
        .split_once("://")
        .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host))
}

/// Whether a request shows signs of coming from another origin's page (for sign-in, which has
/// no session yet but must not be driven by another site).
pub fn foreign(headers: &HeaderMap) -> bool {
    let browser = headers.contains_key("sec-fetch-site") || headers.contains_key(header::ORIGIN);
    browser && !same_origin(headers)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn bearer_wins_over_the_cookie_and_a_bad_header_is_not_the_cookie() {
        let both = headers(&[
            ("authorization", "Bearer abc"),
            ("cookie", "a=1; xcam_session=s3"),
        ]);
        assert_eq!(credential(&both), Some(Credential::Bearer("abc".into())));
        let cookie_only = headers(&[("cookie", "a=1; xcam_session=s3")]);
        assert_eq!(
            credential(&cookie_only),
            Some(Credential::Session("s3".into()))
        );
        let basic = headers(&[
            ("authorization", "Basic eDp5"),
            ("cookie", "xcam_session=s3"),
        ]);
        assert_eq!(credential(&basic), Some(Credential::Bearer(String::new())));
        assert_eq!(credential(&HeaderMap::new()), None);
    }

    #[test]
    fn same_origin_needs_fetch_metadata_or_a_matching_origin() {
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-origin")])));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "same-site")])));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(same_origin(&headers(&[
            ("origin", "http://127.0.0.1:8080"),
            ("host", "127.0.0.1:8080")
        ])));
        assert!(!same_origin(&headers(&[
            ("origin", "http://127.0.0.1:9999"),
            ("host", "127.0.0.1:8080")
        ])));
        assert!(!same_origin(&headers(&[("host", "127.0.0.1:8080")])));
        assert!(!foreign(&headers(&[("host", "127.0.0.1:8080")])));
        assert!(foreign(&headers(&[
            ("origin", "http://evil.example"),
            ("host", "127.0.0.1:8080")
        ])));
    }
}
