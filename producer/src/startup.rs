//! Building and running the API: one path for `xcam serve` and for the tests.
//!
//! [`Application::build`] connects to everything, applies migrations and binds the listener;
//! [`Application::run_until_stopped`] serves until its shutdown future resolves, then stops the
//! reconciler and the sweeper, lets in-flight requests finish and waits for running ingestions (up to a grace
//! period) instead of dropping them half-way.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use axum::{
    Router,
    extract::Request,
    http::{HeaderName, HeaderValue, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use axum_server::tls_rustls::RustlsConfig;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower_http::{request_id::PropagateRequestIdLayer, trace::TraceLayer};
use xcam_shared::{
    blob::BlobStore,
    bundle, db, jobs,
    patience::{outage_in, through_outages},
};

use crate::{
    config::ServeArgs,
    ingest::{Decoders, spool::Spool},
    queue::Queue,
    reconciler::Reconciler,
    routes,
    state::{AppState, Pools, Settings},
    sweeper::{Retention, Sweeper},
    tls,
};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// A built API, bound and ready to serve.
pub struct Application {
    listener: TcpListener,
    tls: Option<RustlsConfig>,
    state: AppState,
    reconcile_every: Duration,
    sweep_every: Duration,
    retention: Retention,
    grace: Duration,
    header_timeout: Duration,
}

impl Application {
    /// Connects to Postgres, Redis and the blob store, applies migrations, loads the model
    /// catalogue and binds `args.bind`.
    pub async fn build(args: &ServeArgs) -> anyhow::Result<Self> {
        let state = build_state(args).await?;
        let tls = match args.tls() {
            Some((cert, key)) => Some(tls::server_config(cert, key).await?),
            None => None,
        };
        let listener = TcpListener::bind(args.bind)
            .await
            .with_context(|| format!("cannot listen on XCAM_BIND={}", args.bind))?;
        Ok(Self {
            listener,
            tls,
            state,
            reconcile_every: args.reconcile_every,
            sweep_every: args.sweep_every,
            retention: Retention {
                batches: args.retention,
                log: args.log_retention,
            },
            grace: args.shutdown_grace,
            header_timeout: args.header_timeout,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serves until `shutdown` resolves; then drains as the module says.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            listener,
            tls,
            state,
            reconcile_every,
            sweep_every,
            retention,
            grace,
            header_timeout,
        } = self;
        let stop = CancellationToken::new();
        let tasks = state.tasks.clone();
        let background = state.pools.background.clone();
        let reconciler = Reconciler::new(background.clone(), state.queue.clone(), reconcile_every);
        let leases = state.pools.leases.clone();
        tasks.spawn(reconciler.run(reconcile_every, leases.clone(), stop.clone()));
        routes::metrics::install();
        let eraser = crate::erase::Eraser {
            db: background.clone(),
            ..state.eraser()
        };
        let sweeper = Sweeper {
            eraser: eraser.clone(),
            models: state.models.keys().cloned().collect(),
            retention,
            producers_silent_after: state.queue.tuning.orphan_after,
        };
        tasks.spawn(sweeper.run(sweep_every, leases, stop.clone()));
        tasks.spawn(heartbeat(
            background,
            state.settings.producer_id.clone(),
            state.queue.tuning.orphan_after / 3,
            stop.clone(),
        ));
        let me = state.settings.producer_id.clone();
        tracing::info!(
            addr = %listener.local_addr()?,
            tls = tls.is_some(),
            models = ?state.models.keys().collect::<Vec<_>>(),
            blobs = state.blobs.url(),
            "xcam serving"
        );
        let signal = stop.clone();
        let stopped = async move {
            shutdown.await;
            signal.cancel();
        };
        // The client's address goes into the audit trail.
        let service = app(state).into_make_service_with_connect_info::<SocketAddr>();
        let handle = axum_server::Handle::new();
        let stopping = handle.clone();
        tokio::spawn(async move {
            stopped.await;
            stopping.graceful_shutdown(Some(grace));
        });
        let listener = listener.into_std()?;
        let served = match tls {
            None => {
                let mut server = axum_server::from_tcp(listener)?.http1_only();
                slow_clients_time_out(server.http_builder(), header_timeout);
                server.handle(handle).serve(service).await
            }
            Some(config) => {
                let mut server = axum_server::from_tcp_rustls(listener, config)?.http1_only();
                slow_clients_time_out(server.http_builder(), header_timeout);
                server.handle(handle).serve(service).await
            }
        };
        stop.cancel();
        tasks.close();
        if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
            tracing::warn!(
                running = tasks.len(),
                grace = ?grace,
                "shutdown grace period over with background work still running"
            );
            let own = db::producers::Interrupted::Own(&me);
            if let Err(e) = crate::sweeper::interrupt_ingestions(&eraser, own).await {
                tracing::warn!(error = %e, "could not end this server's unfinished ingestions; another producer will");
            }
        }
        if let Err(e) = db::producers::stopped(&eraser.db, &me).await {
            tracing::warn!(error = %e, "could not record this server's stop");
        }
        served.context("serving HTTP")
    }
}

/// A client that sends its headers too slowly, or holds a connection idle, is cut off after
/// `timeout`, so no number of such clients ties up the server. (Bodies have their own idle
/// timeout: [`body_idle`].)
fn slow_clients_time_out(
    builder: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    timeout: Duration,
) {
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(timeout);
}

/// Tells the other producers this one is alive, so they leave its ingestions alone.
async fn heartbeat(db: sqlx::PgPool, me: String, every: Duration, stop: CancellationToken) {
    crate::periodic::every(every, stop, || async {
        if let Err(e) = db::producers::heartbeat(&db, &me).await {
            tracing::warn!(error = %e, "heartbeat to Postgres failed");
        }
    })
    .await;
}

/// Connects to everything, applies migrations, loads the model catalogue.
pub async fn build_state(args: &ServeArgs) -> anyhow::Result<AppState> {
    let [api, uploads, metrics, background] = Pools::sizes(args.db.max_connections);
    let (db, pools) = through_outages("Postgres", outage_in, || async {
        let db = db::connect_sized(&args.db, api).await?;
        let pools = Pools {
            uploads: db::connect_sized(&args.db, uploads).await?,
            metrics: db::connect_sized(&args.db, metrics).await?,
            background: db::connect_sized(&args.db, background).await?,
            leases: db::connect_sized(&args.db, Pools::LEASED_TASKS).await?,
        };
        db::migrate(&db).await?;
        anyhow::Ok((db, pools))
    })
    .await?;
    let redis = through_outages("Redis", outage_in, || jobs::connect(&args.redis)).await?;
    let blobs = BlobStore::from_args(&args.blob)?;
    let models = bundle::discover(&args.models_dir)
        .with_context(|| format!("XCAM_MODELS_DIR={}", args.models_dir.display()))?;
    if models.is_empty() {
        anyhow::bail!(
            "XCAM_MODELS_DIR={} holds no model bundle (a directory with model.toml)",
            args.models_dir.display()
        );
    }
    let producer_id = xcam_shared::instance_name();
    let host = xcam_shared::hostname();
    through_outages("Postgres", db::is_outage, || {
        db::producers::register(&db, &producer_id, &host)
    })
    .await?;
    let upload_dir = args.upload_dir.clone().unwrap_or_else(std::env::temp_dir);
    let spool = Spool::open(&upload_dir)
        .with_context(|| format!("XCAM_UPLOAD_DIR={}", upload_dir.display()))?;
    Ok(AppState {
        db,
        pools,
        queue: Queue {
            redis,
            prefix: args.redis.queue_prefix.clone(),
            tuning: jobs::QueueTuning {
                orphan_after: args.redis.orphan_after,
                ..Default::default()
            },
        },
        blobs,
        models: Arc::new(models),
        settings: Arc::new(Settings {
            spool: Arc::new(spool),
            max_upload_bytes: args.max_upload_bytes,
            limits: args.limits(),
            image_limits: args.image_limits(),
            allowed_hosts: args.allowed_hosts(),
            tls: args.tls().is_some(),
            pseudonym_key: args.pseudonym_key()?,
            producer_id,
            ingestions: Arc::new(tokio::sync::Semaphore::new(args.max_ingestions as usize)),
            decoders: Arc::new(Decoders::new(args.decoders())),
            body_idle: args.body_idle_timeout,
        }),
        tasks: TaskTracker::new(),
    })
}

/// The router with its outer layers: every request gets an id (the caller's, when it is short
/// and plain), a span that carries it, and the id back on the response.
pub fn app(state: AppState) -> Router {
    let allowed: Arc<[String]> = state.settings.allowed_hosts.clone().into();
    let idle = state.settings.body_idle;
    routes::router(state)
        .layer(axum::middleware::from_fn(move |request, next| {
            allowed_host(allowed.clone(), request, next)
        }))
        .layer(axum::middleware::from_fn(security_headers))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &Request| {
            let id = request
                .headers()
                .get(&REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            tracing::info_span!("request", method = %request.method(), uri = %request.uri().path(), request_id = %id)
        }))
        .layer(axum::middleware::from_fn(request_id))
        .layer(axum::middleware::map_request(move |request: Request| {
            body_idle(idle, request)
        }))
}

/// Wraps the body so that it fails once nothing arrives for `idle` (the upload route answers
/// 408 `body_timeout`): a client trickling a body cannot hold a connection and a spool file.
async fn body_idle(idle: Duration, request: Request) -> Request {
    request.map(|body| axum::body::Body::new(tower_http::timeout::TimeoutBody::new(idle, body)))
}

/// What a browser may do with any answer of this API: run scripts and load styles, images and
/// data from this origin only, no inline script, never inside a frame, never sniff a type, never
/// send a Referer. (Inline style attributes stay allowed: the dashboard's progress bars and
/// Swagger UI set widths with them; they cannot run code.)
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// Refuses a request whose Host is not one the API answers to: behind a DNS-rebinding name, a
/// page on another site would otherwise read the API through the victim's browser. Liveness
/// and readiness answer any Host, for orchestrators that probe by address.
async fn allowed_host(allowed: Arc<[String]>, request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if path == "/healthz" || path == "/readyz" {
        return next.run(request).await;
    }
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().host())
        .map(host_name)
        .unwrap_or_default();
    if allowed.contains(&host) {
        next.run(request).await
    } else {
        crate::error::ApiError::HostNotAllowed(host).into_response()
    }
}

/// The host part of a Host header, lower case, without port or IPv6 brackets.
fn host_name(raw: &str) -> String {
    let raw = raw.trim().to_ascii_lowercase();
    if let Some(rest) = raw.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default().to_owned();
    }
    match raw.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host.to_owned(),
        _ => raw,
    }
}

/// Keeps a caller's `x-request-id` only when it is at most 64 of `[A-Za-z0-9._-]`, else sets
/// a fresh one: the id travels into logs and jobs, so it must be short and harmless.
async fn request_id(mut request: Request, next: Next) -> Response {
    let plain = request.headers().get(&REQUEST_ID).is_some_and(|v| {
        let b = v.as_bytes();
        !b.is_empty()
            && b.len() <= 64
            && b.iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
    });
    if !plain {
        let id = uuid::Uuid::now_v7().to_string();
        if let Ok(value) = HeaderValue::from_str(&id) {
            request.headers_mut().insert(REQUEST_ID, value);
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, http::Request, routing::get};
    use tower::ServiceExt;

    use super::*;

    async fn id_after(sent: Option<&str>) -> String {
        let app = Router::new()
            .route(
                "/",
                get(|request: Request<Body>| async move {
                    request.headers()[REQUEST_ID].to_str().unwrap().to_owned()
                }),
            )
            .layer(axum::middleware::from_fn(request_id));
        let mut request = Request::builder().uri("/");
        if let Some(id) = sent {
            request = request.header(REQUEST_ID, id);
        }
        let response = app
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[test]
    fn host_names_lose_their_port_and_brackets() {
        assert_eq!(host_name("LocalHost:8080"), "localhost");
        assert_eq!(host_name("127.0.0.1"), "127.0.0.1");
        assert_eq!(host_name("[::1]:8080"), "::1");
        assert_eq!(host_name("xcam.example.org"), "xcam.example.org");
    }

    #[tokio::test]
    async fn a_plain_request_id_is_kept_and_anything_else_replaced() {
        assert_eq!(id_after(Some("abc-123_x.y")).await, "abc-123_x.y");
        for bad in ["", "has space", "semi;colon", &"x".repeat(65)] {
            let id = id_after(Some(bad)).await;
            assert!(
                id != bad && id.parse::<uuid::Uuid>().is_ok(),
                "{bad:?} → {id}"
            );
        }
        assert!(id_after(None).await.parse::<uuid::Uuid>().is_ok());
    }
}
