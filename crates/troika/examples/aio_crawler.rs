//! An `asyncio` crawler as Python writes it with aiohttp: 50 pages fetched at
//! once under an `asyncio.Semaphore(10)`, against a tiny local axum server
//! the example starts itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use futures::StreamExt;
use tokio::sync::Semaphore;

/// Each page takes this long to serve (a slow site, scaled down).
const PAGE_DELAY: Duration = Duration::from_millis(20);

/// How many requests the server is answering right now, and the most ever.
#[derive(Default)]
struct Load {
    now: AtomicUsize,
    peak: AtomicUsize,
}

async fn page(State(load): State<Arc<Load>>, Path(n): Path<u32>) -> String {
    let now = load.now.fetch_add(1, Ordering::SeqCst) + 1;
    load.peak.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(PAGE_DELAY).await;
    load.now.fetch_sub(1, Ordering::SeqCst);
    format!(
        "<html><title>page {n}</title><body>{}</body></html>",
        "lorem ipsum ".repeat(50)
    )
}

/// Python's `async_post`: hold a semaphore slot for the whole request.
async fn fetch(
    client: reqwest::Client,
    semaphore: Arc<Semaphore>,
    url: String,
) -> Result<usize, String> {
    let _slot = semaphore.acquire().await.map_err(|e| e.to_string())?;
    let response = client.get(&url).send().await.map_err(|e| e.to_string())?;
    let body = response.text().await.map_err(|e| e.to_string())?;
    Ok(body.len())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The local site: 127.0.0.1 on a free port, nothing past loopback.
    let load = Arc::new(Load::default());
    let app = axum::Router::new()
        .route("/page/{n}", axum::routing::get(page))
        .with_state(Arc::clone(&load));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let client = reqwest::Client::new();
    let urls: Vec<String> = (1..=50).map(|n| format!("{base}/page/{n}")).collect();

    // 1. Python's way: a task per URL, a Semaphore(10) inside each, then gather.
    let semaphore = Arc::new(Semaphore::new(10));
    let started = Instant::now();
    let fetches = urls
        .iter()
        .map(|url| fetch(client.clone(), Arc::clone(&semaphore), url.clone()));
    let sizes = troika::aio::gather(fetches).await;
    let ok = sizes.iter().filter(|s| matches!(s, Ok(Ok(_)))).count();
    println!(
        "gather + Semaphore(10): {ok}/50 pages in {:.0} ms, at most {} requests at once",
        started.elapsed().as_secs_f64() * 1e3,
        load.peak.swap(0, Ordering::SeqCst)
    );

    // 2. The same bound without a semaphore: map_bounded pulls the next URL
    //    only when one of the ten finishes, and keeps input order.
    let started = Instant::now();
    let unlimited = Arc::new(Semaphore::new(Semaphore::MAX_PERMITS));
    let sizes: Vec<_> = troika::aio::map_bounded(urls, 10, |url| {
        fetch(client.clone(), Arc::clone(&unlimited), url)
    })
    .collect()
    .await;
    let bytes: usize = sizes
        .iter()
        .filter_map(|s| s.as_ref().ok()?.as_ref().ok())
        .sum();
    println!(
        "map_bounded(10): {} pages, {bytes} bytes in {:.0} ms, at most {} requests at once",
        sizes.len(),
        started.elapsed().as_secs_f64() * 1e3,
        load.peak.load(Ordering::SeqCst)
    );
    Ok(())
}
