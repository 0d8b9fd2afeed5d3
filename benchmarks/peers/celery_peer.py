"""Celery on a Redis broker, the peer of a distributed troika executor.

Usage: CELERY_PEER_URL=redis://HOST:PORT/DB python celery_peer.py [TASKS] [CPU_TASKS]
Starts a prefork worker with 2 processes in a child process, then measures:
  throughput: TASKS trivial tasks submitted at once, all results collected
  round trip: 200 sequential apply_async().get() of a trivial task
  cpu: the seeds' is_prime(112272535095293) x CPU_TASKS (default 20) by trial division
Prints JSON lines like troika bench --json.
"""
import os, subprocess, sys, time

from celery import Celery

import peer_common

URL = os.environ.get("CELERY_PEER_URL", "redis://127.0.0.1:16379/0")
app = Celery("celery_peer", broker=URL, backend=URL)
app.conf.update(worker_prefetch_multiplier=64, task_acks_late=True, result_expires=600,
                worker_hijack_root_logger=False, broker_connection_retry_on_startup=True)


@app.task
def noop(x):
    return x


@app.task
def is_prime(n):
    return peer_common.is_prime(n)


def main():
    tasks = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    cpu_tasks = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "celery_peer", "worker",
                               "--concurrency=2", "--pool=prefork", "--loglevel=WARNING"],
                              cwd=os.path.dirname(os.path.abspath(__file__)))
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if noop.delay(1).get(timeout=5) == 1:
                    break
            except Exception:
                time.sleep(0.5)
        for _ in range(50):
            noop.delay(0).get(timeout=10)
        t0 = time.perf_counter()
        rs = [noop.delay(i) for i in range(tasks)]
        total = sum(r.get(timeout=300) for r in rs)
        wall = time.perf_counter() - t0
        assert total == tasks * (tasks - 1) // 2
        lat = []
        for i in range(200):
            s = time.perf_counter()
            noop.delay(i).get(timeout=10)
            lat.append((time.perf_counter() - s) * 1e6)
        peer_common.print_overhead("celery", tasks, wall, lat)
        t0 = time.perf_counter()
        rs = [is_prime.delay(peer_common.PRIME) for _ in range(cpu_tasks)]
        assert all(r.get(timeout=600) for r in rs)
        wall = time.perf_counter() - t0
        peer_common.print_cpu("celery", cpu_tasks, wall)
    finally:
        worker.terminate()
        worker.wait(timeout=30)


if __name__ == "__main__":
    main()
