//! A front: a small HTTP proxy before a real S3 server (Garage, s3s-fs) that behaves like a
//! store or a network this machine cannot reach. It re-signs every request it forwards with
//! the upstream's key (SigV4), so it can change what the upstream sees:
//!
//! * `path_prefix`: the store's S3 API lives under a path (Supabase: `/storage/v1/s3`);
//!   requests outside it get the bare 404 Supabase gives.
//! * `verify_nothing`: checksum headers and `Content-MD5` are stripped and the payload is sent
//!   as `UNSIGNED-PAYLOAD`, so the upstream stores whatever arrives (Supabase Storage).
//! * `refuse_checksum_headers`: a request with an `x-amz-checksum-*` header gets Backblaze
//!   B2's `400 InvalidArgument: Unsupported header`.
//! * `corrupt_puts`: the body of the first N object PUTs under `files/` gets one byte
//!   flipped on the way (a changed file or a bad link, as a store that verifies nothing sees it).
//! * `silent`: accepts connections and requests and never answers.
//! * `delay`: each request waits this long before it is passed on (a store far away).
//!
//! It runs on a thread of its own with its own runtime, so sync and async tests can use it.

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode,
};
use aws_sigv4::sign::v4;
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// How the front changes what passes through it.
#[derive(Clone, Debug, Default)]
pub struct FrontOptions {
    pub path_prefix: Option<String>,
    pub verify_nothing: bool,
    pub refuse_checksum_headers: bool,
    pub corrupt_puts: usize,
    /// The first this many object PUTs are answered 503 SlowDown, as a busy store does.
    pub unavailable_puts: usize,
    pub silent: bool,
    pub delay: Option<std::time::Duration>,
}

/// Where the front forwards to, and the key it signs with.
#[derive(Clone, Debug)]
pub struct Upstream {
    pub endpoint: String,
    pub region: String,
    pub key_id: String,
    pub secret: String,
}

/// What passed through, counted by the front.
#[derive(Debug, Default)]
pub struct FrontCounters {
    pub requests: AtomicU64,
    pub object_gets: AtomicU64,
    pub refused: AtomicU64,
    pub corrupted: AtomicU64,
    pub slowed_down: AtomicU64,
    pub outside_prefix: AtomicU64,
}

pub struct Front {
    /// The endpoint to give the client (with the prefix, if any).
    pub endpoint: String,
    pub counters: Arc<FrontCounters>,
    silent: Arc<std::sync::atomic::AtomicBool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct State {
    options: FrontOptions,
    silent: Arc<std::sync::atomic::AtomicBool>,
    upstream: Upstream,
    corrupt_left: AtomicUsize,
    unavailable_left: AtomicUsize,
    counters: Arc<FrontCounters>,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, BoxBody<Bytes, hyper::Error>>,
}

type Answer = Response<BoxBody<Bytes, hyper::Error>>;

impl Front {
    pub fn start(upstream: Upstream, options: FrontOptions) -> Front {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap();
        let endpoint = format!("http://{address}{}", options.path_prefix.clone().unwrap_or_default());
        let counters = Arc::new(FrontCounters::default());
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let silent = Arc::new(std::sync::atomic::AtomicBool::new(options.silent));
        let state = Arc::new(State {
            silent: silent.clone(),
            corrupt_left: AtomicUsize::new(options.corrupt_puts),
            unavailable_left: AtomicUsize::new(options.unavailable_puts),
            options,
            upstream,
            counters: counters.clone(),
            client: Client::builder(TokioExecutor::new()).build_http(),
        });
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(serve(listener, state, stopped));
            // Connections held open by a silent front end with the runtime.
            runtime.shutdown_background();
        });
        Front {
            endpoint,
            counters,
            silent,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Front {
    /// From now on, take requests and never answer them (true), or pass them on again.
    pub fn set_silent(&self, silent: bool) {
        self.silent.store(silent, Ordering::SeqCst);
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(listener: std::net::TcpListener, state: Arc<State>, mut stopped: tokio::sync::oneshot::Receiver<()>) {
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => continue,
            },
            _ = &mut stopped => return,
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(request, &state).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer(status: StatusCode, body: &str) -> Answer {
    let body = Full::new(Bytes::from(body.to_owned()))
        .map_err(|never| match never {})
        .boxed();
    Response::builder().status(status).body(body).unwrap()
}

async fn handle(request: Request<Incoming>, state: &State) -> Answer {
    state.counters.requests.fetch_add(1, Ordering::SeqCst);
    if state.silent.load(Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
    if let Some(delay) = state.options.delay {
        tokio::time::sleep(delay).await;
    }
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let rest = match &state.options.path_prefix {
        None => path,
        Some(prefix) => match path.strip_prefix(prefix.as_str()) {
            Some(rest) if rest.starts_with('/') => rest,
            _ => {
                // Supabase answers a path outside its S3 API with a 404 and no XML.
                state.counters.outside_prefix.fetch_add(1, Ordering::SeqCst);
                return answer(StatusCode::NOT_FOUND, "");
            }
        },
    };
    let checksum_headers: Vec<String> = parts
        .headers
        .keys()
        .map(|name| name.as_str().to_owned())
        .filter(|name| name.starts_with("x-amz-checksum-") || name == "x-amz-sdk-checksum-algorithm")
        .collect();
    if state.options.refuse_checksum_headers && !checksum_headers.is_empty() {
        state.counters.refused.fetch_add(1, Ordering::SeqCst);
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>InvalidArgument</Code>\
             <Message>Unsupported header '{}' received for this API call.</Message></Error>",
            checksum_headers[0]
        );
        return answer(StatusCode::BAD_REQUEST, &xml);
    }
    let Ok(body) = body.collect().await else {
        return answer(StatusCode::BAD_REQUEST, "");
    };
    let mut body = body.to_bytes().to_vec();
    if parts.method == hyper::Method::GET && rest.contains("/files/") {
        state.counters.object_gets.fetch_add(1, Ordering::SeqCst);
    }
    let is_object_put = parts.method == hyper::Method::PUT && rest.contains("/files/") && !body.is_empty();
    if is_object_put && take_one(&state.unavailable_left) {
        state.counters.slowed_down.fetch_add(1, Ordering::SeqCst);
        let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
                   <Message>Please reduce your request rate.</Message></Error>";
        return answer(StatusCode::SERVICE_UNAVAILABLE, xml);
    }
    if is_object_put && take_one(&state.corrupt_left) {
        let middle = body.len() / 2;
        body[middle] ^= 0xff;
        state.counters.corrupted.fetch_add(1, Ordering::SeqCst);
    }
    let mut headers = parts.headers.clone();
    let mut payload_hash = headers
        .get("x-amz-content-sha256")
        .and_then(|value| value.to_str().ok())
        .unwrap_or("UNSIGNED-PAYLOAD")
        .to_owned();
    for name in ["authorization", "x-amz-date", "x-amz-content-sha256", "host"] {
        headers.remove(name);
    }
    if state.options.verify_nothing {
        for name in checksum_headers.iter().map(String::as_str).chain(["content-md5"]) {
            headers.remove(name);
        }
        payload_hash = "UNSIGNED-PAYLOAD".into();
    }
    let query = parts.uri.query().map(|query| format!("?{query}")).unwrap_or_default();
    let uri = format!("{}{rest}{query}", state.upstream.endpoint);
    let mut forwarded = Request::builder()
        .method(parts.method.clone())
        .uri(&uri)
        .body(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed())
        .unwrap();
    *forwarded.headers_mut() = headers;
    let host = forwarded.uri().authority().unwrap().to_string();
    forwarded.headers_mut().insert("host", host.parse().unwrap());
    sign_request(&mut forwarded, &state.upstream, &payload_hash);
    match state.client.request(forwarded).await {
        Ok(response) => response.map(|body| body.boxed()),
        Err(error) => answer(StatusCode::BAD_GATEWAY, &format!("front: {error}")),
    }
}

fn take_one(left: &AtomicUsize) -> bool {
    left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

/// Sign as the S3 SDKs do: single-encoded path, no path normalisation, the payload hash in
/// `x-amz-content-sha256`.
fn sign_request<B>(request: &mut Request<B>, upstream: &Upstream, payload_hash: &str) {
    let identity = Credentials::new(&upstream.key_id, &upstream.secret, None, None, "front").into();
    let mut settings = SigningSettings::default();
    settings.percent_encoding_mode = PercentEncodingMode::Single;
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&upstream.region)
        .name("s3")
        .time(std::time::SystemTime::now())
        .settings(settings)
        .build()
        .unwrap()
        .into();
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), value.to_str().unwrap_or_default().to_owned()))
        .collect();
    let uri = request.uri().to_string();
    let signable = SignableRequest::new(
        request.method().as_str(),
        &uri,
        headers.iter().map(|(name, value)| (name.as_str(), value.as_str())),
        SignableBody::Precomputed(payload_hash.to_owned()),
    )
    .unwrap();
    let (instructions, _) = sign(signable, &params).unwrap().into_parts();
    instructions.apply_to_request_http1x(request);
}

/// A TCP front (for PostgreSQL): passes bytes both ways, or, while silent, takes new
/// connections and the bytes of every connection and passes nothing on, in either direction.
/// A connection its client closes is closed upstream too, as a proxy does.
pub struct TcpFront {
    pub port: u16,
    silent: Arc<std::sync::atomic::AtomicBool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TcpFront {
    pub fn start(upstream: std::net::SocketAddr) -> TcpFront {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let silent = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let flag = silent.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let client = tokio::select! {
                        accepted = listener.accept() => match accepted {
                            Ok((client, _)) => client,
                            Err(_) => continue,
                        },
                        _ = &mut stopped => return,
                    };
                    tokio::spawn(pipe(client, upstream, flag.clone()));
                }
            });
            runtime.shutdown_background();
        });
        TcpFront {
            port,
            silent,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn set_silent(&self, silent: bool) {
        self.silent.store(silent, Ordering::SeqCst);
    }
}

impl Drop for TcpFront {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn pipe(
    client: tokio::net::TcpStream,
    upstream: std::net::SocketAddr,
    silent: Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
        return;
    };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let mut from_client = [0u8; 16 * 1024];
    let mut from_server = [0u8; 16 * 1024];
    loop {
        tokio::select! {
            read = client_read.read(&mut from_client) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) if !silent.load(Ordering::SeqCst) => {
                    if server_write.write_all(&from_client[..n]).await.is_err() { return; }
                }
                Ok(_) => {}
            },
            read = server_read.read(&mut from_server) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) if !silent.load(Ordering::SeqCst) => {
                    if client_write.write_all(&from_server[..n]).await.is_err() { return; }
                }
                Ok(_) => {}
            },
        }
    }
}
