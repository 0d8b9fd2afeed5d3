"""Dask distributed (LocalCluster, 2 worker processes), the futures-API peer of a distributed troika executor.

Usage: python dask_peer.py [TASKS] [CPU_TASKS]
Measures the same three figures as celery_peer.py and prints JSON lines.
"""
import sys, time

from distributed import Client, LocalCluster

from peer_common import PRIME, is_prime, print_cpu, print_overhead

TASKS = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
CPU_TASKS = int(sys.argv[2]) if len(sys.argv) > 2 else 20


def noop(x):
    return x


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
        print_overhead("dask", TASKS, wall, lat)
        t0 = time.perf_counter()
        fs = [client.submit(is_prime, PRIME, pure=False) for _ in range(CPU_TASKS)]
        assert all(client.gather(fs))
        wall = time.perf_counter() - t0
        print_cpu("dask", CPU_TASKS, wall)


if __name__ == "__main__":
    main()
