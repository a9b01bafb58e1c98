//! Where requests may come from when authentication is off. Every caller is then the local
//! admin, so the browser is the attacker's way in: a page on any site can send simple
//! cross-site requests (a form POST to `/v1/admin/projections/catalog/rebuild`), and DNS
//! rebinding turns the attacker's own host name into 127.0.0.1 to read answers. Two checks
//! close both: the `Host` must be a loopback name or address (or the configured public URL's
//! host), and a state-changing request that says where it comes from (`Origin`, or
//! `Sec-Fetch-Site`) must come from this server's own origin.

use poem::http::{header, Method};
use poem::Request;

use super::error::ApiError;

/// What auth-off mode lets in.
#[derive(Debug, Clone)]
pub struct LocalGuard {
    /// Hosts (lowercase, without port) besides the loopback ones: the public URL's.
    extra_hosts: Vec<String>,
    /// Origins (`scheme://host[:port]`, lowercase) besides this request's own.
    extra_origins: Vec<String>,
}

/// `host[:port]` without the port (IPv6 literals keep their brackets), lowercase.
fn host_of(authority: &str) -> String {
    let authority = authority.trim().to_ascii_lowercase();
    if authority.starts_with('[') {
        return authority
            .split_once(']')
            .map_or(authority.clone(), |(h, _)| format!("{h}]"));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host.to_owned(),
        _ => authority,
    }
}

fn is_loopback(host: &str) -> bool {
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `scheme://authority` of a URL, lowercase, without a default port's noise.
fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    (!authority.is_empty()).then(|| format!("{}://{}", scheme.to_ascii_lowercase(), authority.to_ascii_lowercase()))
}

impl LocalGuard {
    /// The guard of a server whose clients reach it at `public_url`.
    pub fn new(public_url: &str) -> Self {
        let extra_origins: Vec<String> = origin_of(public_url).into_iter().collect();
        let extra_hosts = extra_origins
            .iter()
            .filter_map(|o| o.split_once("://").map(|(_, a)| host_of(a)))
            .collect();
        Self {
            extra_hosts,
            extra_origins,
        }
    }

    /// Refuses a request from a foreign host or a foreign page.
    ///
    /// # Errors
    /// FORBIDDEN with the code HOST_NOT_ALLOWED or CROSS_ORIGIN_REFUSED.
    pub fn check(&self, req: &Request) -> Result<(), ApiError> {
        let authority = req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .or_else(|| req.uri().authority().map(|a| a.as_str().to_owned()));
        let Some(authority) = authority else {
            return Err(refuse_host("(none)"));
        };
        let host = host_of(&authority);
        if !is_loopback(&host) && !self.extra_hosts.contains(&host) {
            return Err(refuse_host(&authority));
        }
        if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
            return Ok(());
        }
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("null").trim().to_ascii_lowercase();
            let own = ["http", "https"]
                .iter()
                .any(|scheme| origin == format!("{scheme}://{}", authority.to_ascii_lowercase()));
            if !own && !self.extra_origins.contains(&origin) {
                return Err(refuse_origin(&format!("the page at {origin}")));
            }
        }
        // Browsers that send no Origin still say whether a request crosses sites.
        let site = req
            .headers()
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("none");
        if !matches!(site, "same-origin" | "none") && !req.headers().contains_key(header::ORIGIN) {
            return Err(refuse_origin(&format!("a {site} request")));
        }
        Ok(())
    }
}

fn refuse_host(authority: &str) -> ApiError {
    ApiError::with(
        403,
        "HOST_NOT_ALLOWED",
        format!(
            "authentication is off, so this server answers only requests addressed to a loopback name \
             or its public URL; Host {authority:?} is neither (set VODSOURCE_PUBLIC_URL, or turn \
             authentication on)"
        ),
        serde_json::json!({ "host": authority }),
    )
}

fn refuse_origin(what: &str) -> ApiError {
    ApiError::with(
        403,
        "CROSS_ORIGIN_REFUSED",
        format!("authentication is off, so changes are accepted only from this server's own pages; {what} is refused"),
        serde_json::Value::Null,
    )
}

#[cfg(test)]
mod tests {
    use poem::http::HeaderValue;

    use super::*;

    fn request(method: Method, host: &str, headers: &[(&'static str, &str)]) -> Request {
        let mut req = Request::builder().method(method).uri_str("/v1/videos").finish();
        req.headers_mut()
            .insert(header::HOST, HeaderValue::from_str(host).expect("host"));
        for (name, value) in headers {
            req.headers_mut()
                .insert(*name, HeaderValue::from_str(value).expect("value"));
        }
        req
    }

    fn code(result: Result<(), ApiError>) -> String {
        result.err().map(|e| e.body().error.code.clone()).unwrap_or_default()
    }

    #[test]
    fn loopback_hosts_pass_and_others_are_refused() {
        let guard = LocalGuard::new("http://127.0.0.1:8080");
        for host in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST",
            "[::1]:8080",
            "127.9.9.9",
            "app.localhost:1",
        ] {
            assert!(guard.check(&request(Method::GET, host, &[])).is_ok(), "{host}");
        }
        for host in [
            "evil.example:8080",
            "10.0.0.1:8080",
            "localhost.evil.example",
            "[::2]:8080",
        ] {
            assert_eq!(
                code(guard.check(&request(Method::GET, host, &[]))),
                "HOST_NOT_ALLOWED",
                "{host}"
            );
        }
        let public = LocalGuard::new("https://Media.Example.org/base");
        assert!(public.check(&request(Method::GET, "media.example.org", &[])).is_ok());
        assert!(public
            .check(&request(
                Method::POST,
                "media.example.org",
                &[("origin", "https://media.example.org")]
            ))
            .is_ok());
    }

    #[test]
    fn changes_from_another_origin_are_refused() {
        let guard = LocalGuard::new("http://127.0.0.1:8080");
        let host = "127.0.0.1:8080";
        assert!(
            guard.check(&request(Method::POST, host, &[])).is_ok(),
            "curl sends no Origin"
        );
        assert!(guard
            .check(&request(Method::POST, host, &[("origin", "http://127.0.0.1:8080")]))
            .is_ok());
        assert!(guard
            .check(&request(Method::DELETE, host, &[("sec-fetch-site", "same-origin")]))
            .is_ok());
        for headers in [
            vec![("origin", "https://evil.example")],
            vec![("origin", "http://localhost:3000")],
            vec![("origin", "null")],
            vec![("sec-fetch-site", "cross-site")],
            vec![("sec-fetch-site", "same-site")],
        ] {
            assert_eq!(
                code(guard.check(&request(Method::POST, host, &headers))),
                "CROSS_ORIGIN_REFUSED",
                "{headers:?}"
            );
        }
        assert!(
            guard
                .check(&request(Method::GET, host, &[("origin", "https://evil.example")]))
                .is_ok(),
            "a read's answer is the browser's to withhold (no CORS headers)"
        );
    }
}
