"""Dask distributed (LocalCluster, 2 worker processes), the futures-API peer of a distributed troika executor.

Usage: python dask_peer.py [TASKS] [CPU_TASKS]
Measures the same three figures as celery_peer.py and prints JSON lines.
"""
import json, math, statistics, sys, time

from distributed import Client, LocalCluster

TASKS = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
CPU_TASKS = int(sys.argv[2]) if len(sys.argv) > 2 else 20


def noop(x):
    return x


def is_prime(n):
    if n < 2:
        return False
    if n == 2:
        return True
    if n % 2 == 0:
        return False
    for i in range(3, int(math.isqrt(n)) + 1, 2):
        if n % i == 0:
            return False
    return True


def main():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, Client(cluster) as client:
        client.gather(client.map(noop, range(50), pure=False))
        t0 = time.perf_counter()
        fs = client.map(noop, range(TASKS), pure=False)
        total = sum(client.gather(fs))
        wall = time.perf_counter() - t0
        assert total == TASKS * (TASKS - 1) // 2
        lat = []
        for i in range(200):
            s = time.perf_counter()
            client.submit(noop, i, pure=False).result()
            lat.append((time.perf_counter() - s) * 1e6)
        lat.sort()
        print(json.dumps({"peer": "dask", "workload": "overhead", "workers": 2, "tasks": TASKS,
                          "wall_s": round(wall, 3), "tasks_per_s": round(TASKS / wall, 1),
                          "p50_us": round(statistics.median(lat), 1), "p99_us": round(lat[int(len(lat) * 0.99) - 1], 1)}))
        t0 = time.perf_counter()
        fs = [client.submit(is_prime, 112272535095293, pure=False) for _ in range(CPU_TASKS)]
        assert all(client.gather(fs))
        wall = time.perf_counter() - t0
        print(json.dumps({"peer": "dask", "workload": "cpu", "workers": 2, "tasks": CPU_TASKS, "wall_s": round(wall, 3)}))


if __name__ == "__main__":
    main()
