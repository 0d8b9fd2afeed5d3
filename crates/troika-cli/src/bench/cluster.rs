//! `troika bench --modes cluster`: the cpu and overhead workloads through a
//! local Redis (a redis-server of its own on a Unix socket in a temporary
//! directory) and N local `troika worker` processes of one process each.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use troika_cluster::Cluster;
use troika_workloads::pool::{TUTORIAL_NUMBER, inc, is_prime};

use super::{Measured, Workload};

/// Round trips timed one at a time for p50/p99.
const LATENCY_SAMPLES: u64 = 10_000;

/// A redis-server and workers that go away with this value.
pub(crate) struct LocalCluster {
    dir: PathBuf,
    redis: Child,
    workers: Vec<Child>,
    url: String,
}

impl LocalCluster {
    /// Start redis-server and `workers` workers on queue `bench`.
    pub(crate) fn start(workers: usize) -> anyhow::Result<LocalCluster> {
        let dir = std::env::temp_dir().join(format!("troika-bench-cluster-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let socket = dir.join("redis.sock");
        let redis = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--save",
                "",
                "--appendonly",
                "no",
                "--unixsocket",
            ])
            .arg(&socket)
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context(
                "cannot start redis-server (is it installed? Debian: apt-get install redis-server)",
            )?;
        let url = format!("redis+unix://{}", socket.display());
        let mut local = LocalCluster {
            dir,
            redis,
            workers: Vec::new(),
            url,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            if Instant::now() > deadline {
                bail!("redis-server did not open {} within 20 s", socket.display());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let exe = std::env::current_exe()?;
        for i in 0..workers {
            let child = Command::new(&exe)
                .args([
                    "worker",
                    "--cluster",
                    &local.url,
                    "--queue",
                    "bench",
                    "--processes",
                    "1",
                ])
                .args(["--name", &format!("bench-{i}")])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("cannot start a troika worker")?;
            local.workers.push(child);
        }
        Ok(local)
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Redis's `used_memory`.
    pub(crate) fn used_memory(&self) -> Option<u64> {
        let out = Command::new("redis-cli")
            .arg("-s")
            .arg(self.dir.join("redis.sock"))
            .args(["info", "memory"])
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for worker in &mut self.workers {
            let _ = worker.kill();
            let _ = worker.wait();
        }
        let _ = self.redis.kill();
        let _ = self.redis.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Connect and wait until `workers` workers have announced themselves.
fn connect(local: &LocalCluster, workers: usize) -> anyhow::Result<Cluster> {
    let cluster = Cluster::connect(local.url(), "bench")?;
    // Warm-up: every worker has answered (a worker reads as soon as it is up).
    let deadline = Instant::now() + Duration::from_secs(30);
    while cluster.live_workers() < workers {
        if Instant::now() > deadline {
            bail!(
                "only {} of {workers} workers came up",
                cluster.live_workers()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let warm: Vec<_> = (0..workers as u64 * 50)
        .map(|i| cluster.submit(inc, i))
        .collect();
    for h in warm {
        h.result()?;
    }
    Ok(cluster)
}

/// Run `workload` on a fresh local cluster of `workers` workers.
pub(crate) fn measure(workload: Workload, tasks: u64, workers: usize) -> anyhow::Result<Measured> {
    let local = LocalCluster::start(workers)?;
    let cluster = connect(&local, workers)?;
    match workload {
        Workload::Cpu => {
            let start = Instant::now();
            let handles: Vec<_> = (0..tasks)
                .map(|_| cluster.submit(is_prime, TUTORIAL_NUMBER))
                .collect();
            for h in handles {
                anyhow::ensure!(h.result()?, "{TUTORIAL_NUMBER} is prime");
            }
            Ok(Measured {
                workers,
                wall: start.elapsed(),
                throughput: None,
                latency: None,
                spans: Vec::new(),
            })
        }
        Workload::Overhead => {
            let memory_before = local.used_memory();
            let start = Instant::now();
            let handles: Vec<_> = (0..tasks).map(|i| cluster.submit(inc, i)).collect();
            let mut sum = 0u64;
            for h in handles {
                sum = sum.wrapping_add(h.result()?);
            }
            let wall = start.elapsed();
            anyhow::ensure!(
                sum == (1..=tasks).fold(0u64, u64::wrapping_add),
                "every trivial task's result arrived"
            );
            let mut latencies: Vec<Duration> = (0..tasks.min(LATENCY_SAMPLES))
                .map(|i| {
                    let t = Instant::now();
                    let _ = cluster.submit(inc, i).result();
                    t.elapsed()
                })
                .collect();
            if let (Some(before), Some(after)) = (memory_before, local.used_memory()) {
                eprintln!(
                    "troika bench: cluster: Redis used_memory {before} bytes before the overhead \
                     run, {after} after {tasks} tasks and the round trips"
                );
            }
            latencies.sort_unstable();
            let at = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
            Ok(Measured {
                workers,
                wall,
                throughput: Some(tasks as f64 / wall.as_secs_f64().max(1e-9)),
                latency: Some((at(0.50), at(0.99))),
                spans: Vec::new(),
            })
        }
        Workload::Io => bail!("the cluster mode runs the cpu and overhead workloads only"),
    }
}
