//! The operator's Kubernetes client: kube's stack (base URI, retries of 429/503/504,
//! credentials, extra headers) over a connector that offers HTTP/2 as well as
//! HTTP/1.1, and a layer under it all that counts every request by method.
//!
//! kube's default client speaks HTTP/1.1 only, so each request in flight holds a TLS
//! connection of its own: a cold start of 2,000 agents (32 reconciles at once, the
//! six applies of each sent together) opened ~180 connections to the API server,
//! with their TLS and read buffers. Over HTTP/2 (what client-go uses) every request
//! and watch shares one connection, kept alive by pings as client-go does. An API
//! server that does not offer h2 gets HTTP/1.1 as before, and so does a kubeconfig
//! with a proxy (kube's own stack handles those). Every timeout of the kubeconfig's
//! `Config` is applied as kube applies it.

use std::time::Duration;

use hyper_timeout::TimeoutConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use kube::client::ConfigExt;
use kube::client::retry::RetryPolicy;
use tower::retry::RetryLayer;
use tower::{BoxError, ServiceBuilder};

use crate::metrics::Metrics;

/// How often the HTTP/2 connection is pinged while it carries streams (the watches
/// always do), and how long a ping may take before the connection is dropped
/// (client-go's `ReadIdleTimeout`, `PingTimeout`).
const PING_EVERY: Duration = Duration::from_secs(30);
const PING_TIMEOUT: Duration = Duration::from_secs(15);

/// A client for `config` whose every request is counted by method in
/// `metrics.requests`: the audit behind "no writes while idle".
pub fn client(config: kube::Config, metrics: &Metrics) -> Result<kube::Client, kube::Error> {
    let requests = metrics.requests.clone();
    let count =
        tower::util::MapRequestLayer::new(move |request: http::Request<kube::client::Body>| {
            requests
                .with_label_values(&[request.method().as_str()])
                .inc();
            request
        });
    if config.proxy_url.is_some() {
        return Ok(kube::client::ClientBuilder::try_from(config)?
            .with_layer(&count)
            .build());
    }

    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let mut tls = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config.rustls_client_config()?)
        .https_or_http();
    if let Some(name) = &config.tls_server_name {
        let name = name.clone().try_into().map_err(|e| {
            kube::Error::RustlsTls(kube::client::RustlsTlsError::InvalidServerName(e))
        })?;
        tls = tls.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name));
    }
    let mut connector = TimeoutConnector::new(tls.enable_all_versions().wrap_connector(http));
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let http_client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .http2_keep_alive_interval(PING_EVERY)
        .http2_keep_alive_timeout(PING_TIMEOUT)
        .build(connector);

    let service = ServiceBuilder::new()
        .layer(count)
        .layer(config.base_uri_layer())
        .option_layer(
            config
                .default_retry
                .then(|| RetryLayer::new(RetryPolicy::server_retry())),
        )
        .option_layer(config.auth_layer()?)
        .layer(config.extra_headers_layer()?)
        .map_err(BoxError::from)
        .service(http_client);
    Ok(kube::Client::new(service, config.default_namespace))
}
