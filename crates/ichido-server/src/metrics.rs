//! Prometheus metrics: validations by outcome, validation latency, HTTP requests
//! by route (the matched path, never the raw URL) and status.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: Cow<'static, str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub method: Cow<'static, str>,
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ]
    .into_iter()
}

/// The server's metrics, registered in its own registry (no global state).
pub struct Metrics {
    registry: Registry,
    pub validations: Family<OutcomeLabels, Counter>,
    pub validation_seconds: Histogram,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_seconds: Family<RouteLabels, Histogram>,
    /// Set at each scrape, for a store that keeps an audit look-up index.
    pub audit_index_lag: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("ichido");
        let validations = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "validations",
            "OTP validations by outcome (ok or the error code)",
            validations.clone(),
        );
        let validation_seconds = Histogram::new(latency_buckets());
        registry.register(
            "validation_duration_seconds",
            "Time to decide one validation",
            validation_seconds.clone(),
        );
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by method, route and status",
            http_requests.clone(),
        );
        let http_seconds = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(latency_buckets())
        });
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            http_seconds.clone(),
        );
        let audit_index_lag = Gauge::default();
        registry.register(
            "audit_index_lag_events",
            "Audit events the SQLite audit look-up index has yet to file (look-ups scan them in the log); 0 for PostgreSQL",
            audit_index_lag.clone(),
        );
        Self {
            registry,
            validations,
            validation_seconds,
            http_requests,
            http_seconds,
            audit_index_lag,
        }
    }
}

impl Metrics {
    pub fn record_validation(&self, outcome: &'static str, started: Instant) {
        self.validations
            .get_or_create(&OutcomeLabels {
                outcome: Cow::Borrowed(outcome),
            })
            .inc();
        self.validation_seconds
            .observe(started.elapsed().as_secs_f64());
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            tracing::error!("metrics encoding failed");
        }
        out
    }
}

/// The layer counting every request by its matched route, method and
/// status, and timing it by route. A plain `tower` layer rather than
/// `axum::middleware::from_fn`, which boxes the request's future and the
/// rest of the route's service for every request.
#[derive(Clone)]
pub struct TrackLayer(pub Arc<Metrics>);

impl<S> tower::Layer<S> for TrackLayer {
    type Service = Track<S>;

    fn layer(&self, inner: S) -> Track<S> {
        Track {
            inner,
            metrics: Arc::clone(&self.0),
        }
    }
}

/// The service of [`TrackLayer`].
#[derive(Clone)]
pub struct Track<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S> tower::Service<Request> for Track<S>
where
    S: tower::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = TrackFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let started = Instant::now();
        let route = req
            .extensions()
            .get::<MatchedPath>()
            .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
        let method = method_label(req.method());
        TrackFuture {
            inner: self.inner.call(req),
            seen: Some(Seen {
                metrics: Arc::clone(&self.metrics),
                started,
                method,
                route,
            }),
        }
    }
}

/// What a request's count and time are recorded under, once it is answered.
struct Seen {
    metrics: Arc<Metrics>,
    started: Instant,
    method: Cow<'static, str>,
    route: String,
}

pin_project_lite::pin_project! {
    /// The future of [`Track`]: the route's own, then the count and time.
    pub struct TrackFuture<F> {
        #[pin]
        inner: F,
        seen: Option<Seen>,
    }
}

impl<F, E> Future for TrackFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = std::task::ready!(this.inner.poll(cx));
        if let (Ok(resp), Some(seen)) = (&out, this.seen.take()) {
            let labels = HttpLabels {
                method: seen.method,
                route: seen.route,
                status: resp.status().as_u16(),
            };
            seen.metrics.http_requests.get_or_create(&labels).inc();
            seen.metrics
                .http_seconds
                .get_or_create(&RouteLabels {
                    route: labels.route,
                })
                .observe(seen.started.elapsed().as_secs_f64());
        }
        Poll::Ready(out)
    }
}

/// The method as a label, without an allocation for the usual ones.
fn method_label(m: &Method) -> Cow<'static, str> {
    Cow::Borrowed(match m.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        "PATCH" => "PATCH",
        other => return Cow::Owned(other.to_owned()),
    })
}
