//! The database going away: requests fail closed with `503 unavailable` (never
//! "valid"), `/healthz` turns red, and service resumes by itself when the
//! database returns. The outage is a TCP proxy that the test cuts and restores;
//! the shared PostgreSQL server itself is never stopped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

use crate::common::{assert_error, postgres_base, postgres_schema_url, Api, Server};

/// A TCP proxy in front of PostgreSQL that can be cut and restored.
struct Proxy {
    port: u16,
    cut: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Proxy {
    async fn start(target: String) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(AtomicBool::new(false));
        let links = Arc::new(Mutex::new(Vec::new()));
        let (c, l) = (Arc::clone(&cut), Arc::clone(&links));
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if c.load(Ordering::SeqCst) {
                    drop(client); // refused while cut
                    continue;
                }
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                l.lock().unwrap().push(task.abort_handle());
            }
        });
        Proxy { port, cut, links }
    }

    /// Drops every open connection and refuses new ones.
    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for link in self.links.lock().unwrap().drain(..) {
            link.abort();
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn database_outage_fails_closed_and_heals() {
    let base = postgres_base();
    let Some(host_port) = base
        .split('@')
        .nth(1)
        .and_then(|r| r.split('/').next())
        .map(str::to_owned)
    else {
        panic!("ICHIDO_TEST_POSTGRES_URL must look like postgres://user@host:port/db");
    };
    let Some((_, schema)) = postgres_schema_url(&base) else {
        return;
    };
    let proxy = Proxy::start(host_port.clone()).await;
    let via_proxy = base.replacen(&host_port, &format!("127.0.0.1:{}", proxy.port), 1);
    let url = format!("{via_proxy}?options=-csearch_path%3D{schema}");
    let mut server = Server::start_on(
        tempfile::TempDir::new().unwrap(),
        url,
        &[
            "--db-connect-timeout-secs",
            "1",
            "--db-statement-timeout-ms",
            "2000",
        ],
    );
    server.owned_schema = Some(schema);
    let api = server.api("ops");
    api.user("4300000001", "taro", "approver").await;
    let reg = api.token("4300000001", "taro", "event").await;
    assert_eq!(
        api.validate(&reg.token_id, &reg.hotp(1)).await.0,
        StatusCode::OK
    );
    let health = |api: &Api| {
        let (http, url) = (api.http.clone(), format!("{}/healthz", api.base));
        async move { http.get(url).send().await.unwrap().status() }
    };

    proxy.cut();
    // Fail closed: never "valid" while the store cannot be reached.
    let during = api.validate(&reg.token_id, &reg.hotp(2)).await;
    assert_error(&during, 503, "unavailable");
    assert_eq!(health(&api).await, StatusCode::SERVICE_UNAVAILABLE);

    proxy.restore();
    let deadline = Instant::now() + Duration::from_secs(30);
    while health(&api).await != StatusCode::OK {
        assert!(
            Instant::now() < deadline,
            "service did not resume within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The code refused during the outage was never spent; it works once now.
    assert_eq!(
        api.validate(&reg.token_id, &reg.hotp(2)).await.0,
        StatusCode::OK
    );
    assert_error(
        &api.validate(&reg.token_id, &reg.hotp(2)).await,
        401,
        "otp_replayed",
    );
}
