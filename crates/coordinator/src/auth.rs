//! Bearer tokens: the admin API's (`--api-token`) and the workers' (`--worker-token`).
//! Several tokens may be in force at once, so one can be rotated without downtime (add
//! the new one, move the clients, remove the old one). Tokens never appear in logs or
//! `Debug` output, and are compared in constant time.
//!
//! Without admin tokens the admin API is open, which a coordinator allows only on a
//! loopback address (or with `--insecure-open-api`, see [`check_open_api`]); likewise the
//! worker stream without worker tokens (`--insecure-open-workers`, see
//! [`check_open_workers`]): whoever registers as a worker receives the jobs' arguments and
//! reports their results.

use std::fmt;
use std::net::SocketAddr;

use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

/// The tokens one kind of caller may present; empty means none is asked for.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Tokens(Vec<String>);

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tokens({} redacted)", self.0.len())
    }
}

impl Tokens {
    /// The non-empty tokens of `tokens` (surrounding whitespace removed).
    pub fn new(tokens: impl IntoIterator<Item = impl Into<String>>) -> Tokens {
        Tokens(
            tokens
                .into_iter()
                .map(|token| token.into().trim().to_owned())
                .filter(|token| !token.is_empty())
                .collect(),
        )
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `token` is one of these (compared in constant time).
    pub fn accepts(&self, token: &str) -> bool {
        self.0.iter().any(|known| same(known, token))
    }

    /// The tokens in force, for deriving per-token secrets (the console's sessions).
    pub(crate) fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// The token to present when this node calls another coordinator (the first one).
    pub fn first(&self) -> Option<&str> {
        self.0.first().map(String::as_str)
    }

    /// Checks the `authorization: Bearer …` of a gRPC call; `who` names the flag that sets
    /// the tokens, for the message.
    pub fn check(&self, metadata: &MetadataMap, who: &str) -> Result<(), Status> {
        let authorization = metadata
            .get("authorization")
            .and_then(|value| value.to_str().ok());
        self.check_authorization(authorization, who)
    }

    /// Checks the value of an `Authorization` header (gRPC metadata or HTTP).
    pub fn check_authorization(
        &self,
        authorization: Option<&str>,
        who: &str,
    ) -> Result<(), Status> {
        if self.0.is_empty() {
            return Ok(());
        }
        let presented = authorization
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim);
        match presented {
            None => Err(Status::unauthenticated(format!(
                "this coordinator requires a bearer token (the `authorization: Bearer <token>` header, one of its {who} tokens)"
            ))),
            Some(token) if self.accepts(token) => Ok(()),
            Some(_) => Err(Status::unauthenticated(format!(
                "the bearer token is not one of this coordinator's {who} tokens"
            ))),
        }
    }

    /// A tonic interceptor accepting only calls with one of these tokens.
    pub fn interceptor(
        &self,
        who: &'static str,
    ) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone + use<> {
        let tokens = self.clone();
        move |request: Request<()>| {
            tokens.check(request.metadata(), who)?;
            Ok(request)
        }
    }
}

/// Compares in time that depends on the lengths only, not on where the bytes differ.
fn same(known: &str, presented: &str) -> bool {
    let (known, presented) = (known.as_bytes(), presented.as_bytes());
    known.len() == presented.len()
        && known
            .iter()
            .zip(presented)
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
}

/// Refuses to serve an admin API without tokens on an address other machines can reach,
/// unless the operator said so (`--insecure-open-api`).
pub fn check_open_api(api_tokens: &Tokens, addr: SocketAddr, insecure: bool) -> Result<(), String> {
    if api_tokens.is_empty() && !addr.ip().is_loopback() && !insecure {
        return Err(format!(
            "refusing to serve the admin API without a token on {addr}, which is not a loopback address: \
             give --api-token (CRONFLEET_API_TOKEN), listen on 127.0.0.1, or pass --insecure-open-api"
        ));
    }
    Ok(())
}

/// Refuses a worker stream open to anyone (no worker token) on an address that is not a
/// loopback one, unless `insecure`.
pub fn check_open_workers(
    worker_tokens: &Tokens,
    addr: SocketAddr,
    insecure: bool,
) -> Result<(), String> {
    if worker_tokens.is_empty() && !addr.ip().is_loopback() && !insecure {
        return Err(format!(
            "refusing to take workers without a token on {addr}, which is not a loopback address \
             (anyone who reaches it could register as a worker and receive every job's arguments): \
             give --worker-token (CRONFLEET_WORKER_TOKEN) here and to the workers, listen on 127.0.0.1, \
             or pass --insecure-open-workers"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_worker_stream_is_refused_off_loopback() {
        let open = Tokens::default();
        let public: SocketAddr = "0.0.0.0:50051".parse().unwrap();
        let local: SocketAddr = "[::1]:50051".parse().unwrap();
        assert!(check_open_workers(&open, local, false).is_ok());
        assert!(check_open_workers(&open, public, true).is_ok());
        assert!(check_open_workers(&Tokens::new(["t"]), public, false).is_ok());
        let refused = check_open_workers(&open, public, false).unwrap_err();
        assert!(
            refused.contains("0.0.0.0:50051")
                && refused.contains("--worker-token")
                && refused.contains("--insecure-open-workers"),
            "{refused}"
        );
    }

    fn metadata(authorization: Option<&str>) -> MetadataMap {
        let mut metadata = MetadataMap::new();
        if let Some(value) = authorization {
            metadata.insert("authorization", value.parse().unwrap());
        }
        metadata
    }

    #[test]
    fn any_configured_token_passes_and_nothing_else() {
        let tokens = Tokens::new(["old-token", " new-token ", ""]);
        assert!(
            tokens
                .check(&metadata(Some("Bearer old-token")), "api")
                .is_ok()
        );
        assert!(
            tokens
                .check(&metadata(Some("Bearer new-token")), "api")
                .is_ok()
        );
        for bad in [
            None,
            Some("Bearer"),
            Some("Bearer other"),
            Some("old-token"),
            Some("Bearer old-toke"),
        ] {
            let error = tokens.check(&metadata(bad), "api").unwrap_err();
            assert_eq!(error.code(), tonic::Code::Unauthenticated, "{bad:?}");
            assert!(
                !error.message().contains("old-token"),
                "tokens are never echoed"
            );
        }
        assert!(
            Tokens::default().check(&metadata(None), "api").is_ok(),
            "no tokens: open"
        );
        assert_eq!(format!("{tokens:?}"), "Tokens(2 redacted)");
    }

    #[test]
    fn an_open_api_is_refused_off_loopback() {
        let open = Tokens::default();
        let public: SocketAddr = "0.0.0.0:50051".parse().unwrap();
        let local: SocketAddr = "127.0.0.1:50051".parse().unwrap();
        assert!(check_open_api(&open, local, false).is_ok());
        assert!(check_open_api(&open, public, true).is_ok());
        assert!(check_open_api(&Tokens::new(["t"]), public, false).is_ok());
        let refused = check_open_api(&open, public, false).unwrap_err();
        assert!(
            refused.contains("0.0.0.0:50051") && refused.contains("--api-token"),
            "{refused}"
        );
    }
}
