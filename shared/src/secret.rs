//! Values that may carry credentials, and the only forms of them that are ever shown.
//!
//! A broker or database URL holds its password; a request URL may hold a token in its query.
//! Text made from either ends up in logs, in `ingest_items.last_error`, in dead-letter headers
//! and in terminals, so the secret must be gone before the text is made, not filtered after.

use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;

use crate::config::mask_url;

/// A URL that may hold a password (`AMQP_URL`, `DATABASE_URL`, ...). `Debug` and `Display` show
/// it with the password masked ([`mask_url`]), so that a configuration printed whole
/// (`debug!(?config)`) or a URL put into a message shows no secret; the URL itself is read only
/// through [`SecretUrl::expose`], by whatever connects with it.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL with its password, for a connection to use: never for a message.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&mask_url(&self.0), f)
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&mask_url(&self.0))
    }
}

/// What clap parses a flag or environment variable with: any text; validation comes after.
impl FromStr for SecretUrl {
    type Err = Infallible;

    fn from_str(text: &str) -> Result<Self, Infallible> {
        Ok(Self::new(text))
    }
}

impl From<String> for SecretUrl {
    fn from(url: String) -> Self {
        Self(url)
    }
}

impl From<&str> for SecretUrl {
    fn from(url: &str) -> Self {
        Self::new(url)
    }
}

/// A reqwest error and its causes on one line, without the request's URL. reqwest's own text
/// ends in `for url (<url>)`, query string included (it moves userinfo into a header, but a
/// token in the query stays), and its first words ("error sending request") say nothing without
/// the causes (connection refused, timed out, ...). Each cause is written once: some quote
/// their source's text already.
pub fn http_error(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_url_shows_no_password_but_gives_it_when_asked() {
        let url = SecretUrl::new("amqp://pokeq:hunter2@rabbit:5672/%2f");
        assert_eq!(url.to_string(), "amqp://pokeq:****@rabbit:5672/%2f");
        assert_eq!(format!("{url:?}"), "\"amqp://pokeq:****@rabbit:5672/%2f\"");
        assert_eq!(url.expose(), "amqp://pokeq:hunter2@rabbit:5672/%2f");
        let keywords: SecretUrl = "host=db user=app password=hunter2 dbname=pokeq"
            .parse()
            .unwrap();
        assert!(!format!("{keywords} {keywords:?}").contains("hunter2"));
    }

    #[tokio::test]
    async fn an_http_error_shows_neither_the_credentials_nor_the_query_of_its_url() {
        // Bound but not listening: connections are refused, and no one else takes the port.
        let closed = tokio::net::TcpSocket::new_v4().unwrap();
        closed.bind(([127, 0, 0, 1], 0).into()).unwrap();
        let port = closed.local_addr().unwrap().port();
        let error = reqwest::get(format!(
            "http://apiuser:ApiS3cret@127.0.0.1:{port}/api/v2/?token=QueryS3cret"
        ))
        .await
        .unwrap_err();
        assert!(
            error.to_string().contains("QueryS3cret"),
            "reqwest's own text has the query: {error}"
        );
        let text = http_error(error);
        assert!(!text.contains("S3cret"), "{text}");
        assert!(!text.contains("apiuser"), "{text}");
        assert!(text.contains("error sending request"), "{text}");
    }
}
