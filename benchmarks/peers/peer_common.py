"""What celery_peer.py, dask_peer.py and cluster_side_by_side.sh share: the
seeds' trial division and the JSON lines they print (as troika bench --json)."""
import json, math, statistics

# Prime, so the trial division runs to its square root.
PRIME = 112272535095293


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


def print_overhead(peer, tasks, wall, lat):
    """The overhead row: `tasks` at once in `wall` s, then the round trips `lat` (us)."""
    lat = sorted(lat)
    print(json.dumps({"peer": peer, "workload": "overhead", "workers": 2, "tasks": tasks,
                      "wall_s": round(wall, 3), "tasks_per_s": round(tasks / wall, 1),
                      "p50_us": round(statistics.median(lat), 1), "p99_us": round(lat[int(len(lat) * 0.99) - 1], 1)}))


def print_cpu(peer, tasks, wall):
    """The cpu row: `tasks` is_prime(PRIME) on 2 workers in `wall` s."""
    print(json.dumps({"peer": peer, "workload": "cpu", "workers": 2, "tasks": tasks, "wall_s": round(wall, 3)}))
