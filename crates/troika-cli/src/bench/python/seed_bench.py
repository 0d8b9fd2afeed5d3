# The seeds' experiment in Python, for `troika bench --compare-python`.
#
# Written for troika (shipped inside the troika binary and run with
# `python3 -`): the seed's own is_prime by trial division, run serially, on a
# ThreadPoolExecutor and on a ProcessPoolExecutor, plus the io and overhead
# workloads, each printed as one JSON line in troika bench's format, with the
# per-task spans for the report's timeline.
#
# usage: python3 seed_bench.py WORKLOADS TASKS_CPU TASKS_IO TASKS_OVERHEAD WORKERS
import asyncio, json, math, os, sys, threading, time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

SEED_NUMBER = 112272535095293
IO_WAIT = 0.05
IO_THREADS = 64
IO_PROCESSES = 8
SPANS = 2000


def is_prime(n):
    if n < 2:
        return False
    elif n == 2:
        return True
    elif n % 2 == 0:
        return False
    sq_n = int(math.floor(math.sqrt(n)))
    for i in range(3, sq_n + 1, 2):
        if n % i == 0:
            return False
    return True


def who():
    return (os.getpid(), threading.get_ident())


def timed_prime(args):
    n, origin = args
    start = time.time() - origin
    value = is_prime(n)
    return value, who(), start, time.time() - origin


def timed_wait(origin):
    start = time.time() - origin
    time.sleep(IO_WAIT)
    return None, who(), start, time.time() - origin


def inc(x):
    return x + 1


def spans_of(outcomes):
    lanes = {}
    spans = []
    for _, worker, start, end in outcomes:
        lane = lanes.setdefault(worker, len(lanes))
        spans.append([lane, start, end])
    return spans


def row(workload, mode, workers, tasks, wall, outcomes=(), **extra):
    data = {"workload": workload, "mode": mode, "workers": workers, "tasks": tasks,
            "wall_s": wall, "spans": spans_of(outcomes)}
    data.update(extra)
    print(json.dumps(data), flush=True)


def cpu(tasks, workers):
    origin = time.time()
    outcomes = [timed_prime((SEED_NUMBER, origin)) for _ in range(tasks)]
    row("cpu", "python-serial", 1, tasks, time.time() - origin, outcomes)
    for name, executor in (("python-threads", ThreadPoolExecutor), ("python-processes", ProcessPoolExecutor)):
        origin = time.time()
        with executor(workers) as pool:
            outcomes = list(pool.map(timed_prime, [(SEED_NUMBER, origin)] * tasks))
        row("cpu", name, workers, tasks, time.time() - origin, outcomes)


async def async_wait(origin):
    start = time.time() - origin
    await asyncio.sleep(IO_WAIT)
    return None, who(), start, time.time() - origin


async def all_waits(tasks, origin):
    return await asyncio.gather(*(async_wait(origin) for _ in range(tasks)))


def io(tasks):
    origin = time.time()
    outcomes = [timed_wait(origin) for _ in range(tasks)]
    row("io", "python-serial", 1, tasks, time.time() - origin, outcomes)
    for name, executor, workers in (("python-threads", ThreadPoolExecutor, IO_THREADS),
                                    ("python-processes", ProcessPoolExecutor, IO_PROCESSES)):
        origin = time.time()
        with executor(workers) as pool:
            outcomes = list(pool.map(timed_wait, [origin] * tasks))
        row("io", name, workers, tasks, time.time() - origin, outcomes)
    origin = time.time()
    outcomes = asyncio.run(all_waits(tasks, origin))
    row("io", "python-asyncio", tasks, tasks, time.time() - origin, outcomes)


def overhead(tasks, workers):
    origin = time.time()
    for i in range(tasks):
        inc(i)
    wall = time.time() - origin
    row("overhead", "python-serial", 1, tasks, wall, tasks_per_s=tasks / wall)
    for name, executor in (("python-threads", ThreadPoolExecutor), ("python-processes", ProcessPoolExecutor)):
        with executor(workers) as pool:
            pool.submit(inc, 0).result()
            origin = time.time()
            futures = [pool.submit(inc, i) for i in range(tasks)]
            for f in futures:
                f.result()
            wall = time.time() - origin
            latencies = []
            for i in range(min(tasks, 2000)):
                t = time.perf_counter()
                pool.submit(inc, i).result()
                latencies.append(time.perf_counter() - t)
        latencies.sort()
        row("overhead", name, workers, tasks, wall, tasks_per_s=tasks / wall,
            p50_us=latencies[len(latencies) // 2] * 1e6,
            p99_us=latencies[int(len(latencies) * 0.99)] * 1e6)


if __name__ == "__main__":
    workloads = sys.argv[1].split(",")
    tasks_cpu, tasks_io, tasks_overhead, workers = map(int, sys.argv[2:6])
    if "cpu" in workloads:
        cpu(tasks_cpu, workers)
    if "io" in workloads:
        io(tasks_io)
    if "overhead" in workloads:
        overhead(tasks_overhead, workers)
