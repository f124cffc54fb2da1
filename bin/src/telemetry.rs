//! Logging setup (human or JSON lines) and helpers that keep secrets out of logs.

use crate::config::LogFormat;
use crate::env_vars::RUST_LOG;
use tracing_subscriber::EnvFilter;

/// Installs the global tracing subscriber; `RUST_LOG`, when set, overrides `filter`.
pub fn init_logging(format: LogFormat, filter: &str) {
    let filter = std::env::var(RUST_LOG)
        .ok()
        .and_then(|directives| EnvFilter::try_new(directives).ok())
        .unwrap_or_else(|| EnvFilter::new(filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    if let Err(error) = installed {
        eprintln!("logging already initialised: {error}");
    }
}

/// `scheme://user:***@host/...`: a URL fit for logs and error messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<unparseable url>".to_owned();
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = match authority.rsplit_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split(':').next().unwrap_or("");
            format!("{user}:***@{host}")
        }
        None => authority.to_owned(),
    };
    if path.is_empty() {
        format!("{scheme}://{host}")
    } else {
        format!("{scheme}://{host}/{path}")
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_are_masked() {
        let check = |url: &str, expected: &str| assert_eq!(redact_url(url), expected);
        check(
            "amqp://guest:secret@127.0.0.1:5672/%2f",
            "amqp://guest:***@127.0.0.1:5672/%2f",
        );
        check("amqp://host:5672", "amqp://host:5672");
        check("amqps://u:p@a@host", "amqps://u:***@host");
        check("no scheme", "<unparseable url>");
    }
}
