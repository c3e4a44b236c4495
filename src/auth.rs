//! `[proxy] auth`: HTTP Basic proxy authentication (RFC 9110 §11.7.1, RFC 7617). The expected
//! token is encoded once per config; a request's token is compared in constant time.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::HeaderMap;
use http::header::PROXY_AUTHORIZATION;

use crate::config::ProxyAuth;
use crate::error::ProxyError;

/// The `Proxy-Authenticate` challenge sent with a 407.
pub(crate) const CHALLENGE: &str = "Basic realm=\"splitway\", charset=\"UTF-8\"";

/// The credentials of one config, ready to compare.
#[derive(Clone)]
pub struct Basic {
    /// base64("username:password"), RFC 7617 §2 (UTF-8, as the challenge's charset says).
    token: Vec<u8>,
}

impl Basic {
    pub fn new(auth: &ProxyAuth) -> Self {
        Self {
            token: STANDARD
                .encode(format!("{}:{}", auth.username, auth.password))
                .into_bytes(),
        }
    }

    /// Whether the request carries these credentials: exactly one `Proxy-Authorization` field
    /// (RFC 9110 §11.7.2 defines one credential per request; a request with several would be
    /// several guesses for the price of one), a `407` without the right one, a `400` with more.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), ProxyError> {
        let mut fields = headers.get_all(PROXY_AUTHORIZATION).iter();
        let (Some(value), None) = (fields.next(), fields.next()) else {
            return Err(match headers.contains_key(PROXY_AUTHORIZATION) {
                true => {
                    ProxyError::BadRequest("more than one Proxy-Authorization field: send the credentials once".into())
                }
                false => ProxyError::AuthRequired,
            });
        };
        let value = value.as_bytes();
        // The scheme is case-insensitive (RFC 9110 §11.1); one or more spaces follow it.
        let matches = value.split_at_checked(5).is_some_and(|(scheme, token)| {
            scheme.eq_ignore_ascii_case(b"basic")
                && token.first() == Some(&b' ')
                && constant_time_eq(token.trim_ascii(), &self.token)
        });
        if matches { Ok(()) } else { Err(ProxyError::AuthRequired) }
    }
}

/// Compares without an early exit, so the time taken does not tell how many leading bytes
/// of a guess were right. The length is not secret (it follows from the password's length).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Basic {
        fn allows(&self, headers: &HeaderMap) -> bool {
            self.check(headers).is_ok()
        }
    }

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(PROXY_AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn basic_credentials_are_checked() {
        // RFC 7617 §2's example: Aladdin / open sesame.
        let basic = Basic::new(&ProxyAuth {
            username: "Aladdin".into(),
            password: "open sesame".into(),
        });
        assert!(basic.allows(&headers("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")));
        assert!(basic.allows(&headers("basic   QWxhZGRpbjpvcGVuIHNlc2FtZQ==")));
        assert!(!basic.allows(&headers("Basic QWxhZGRpbjpvcGVuIHNlc2FtZR==")));
        assert!(!basic.allows(&headers("Bearer QWxhZGRpbjpvcGVuIHNlc2FtZQ==")));
        assert!(!basic.allows(&headers("BasicQWxhZGRpbjpvcGVuIHNlc2FtZQ==")));
        assert!(!basic.allows(&headers("Basic")));
        assert!(matches!(basic.check(&HeaderMap::new()), Err(ProxyError::AuthRequired)));
    }

    #[test]
    fn exactly_one_field_a_second_is_a_bad_request() {
        let basic = Basic::new(&ProxyAuth {
            username: "Aladdin".into(),
            password: "open sesame".into(),
        });
        let mut h = HeaderMap::new();
        h.append(PROXY_AUTHORIZATION, "Basic d3Jvbmc6Z3Vlc3M=".parse().unwrap());
        h.append(
            PROXY_AUTHORIZATION,
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==".parse().unwrap(),
        );
        let e = basic.check(&h).expect_err("two fields are two guesses");
        assert!(matches!(e, ProxyError::BadRequest(_)), "{e:?}");
        assert_eq!(e.status(), http::StatusCode::BAD_REQUEST);
    }

    #[test]
    fn utf8_credentials_are_encoded_as_utf8() {
        let basic = Basic::new(&ProxyAuth {
            username: "test".into(),
            password: "123£".into(),
        });
        // RFC 7617 §2.1's example.
        assert!(basic.allows(&headers("Basic dGVzdDoxMjPCow==")));
    }
}
