# Round trip of one trivial task at a time through Python's ThreadPoolExecutor
# (the peer that benchmarks/peers/py_overhead.py lacks for threads).
import sys, time
from concurrent.futures import ThreadPoolExecutor

def inc(x):
    return x + 1

if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    with ThreadPoolExecutor(2) as ex:
        ex.submit(inc, 0).result()
        lat = []
        for i in range(n):
            t = time.perf_counter(); ex.submit(inc, i).result(); lat.append(time.perf_counter() - t)
    lat.sort()
    print(f"ThreadPoolExecutor round trip p50 {lat[len(lat)//2]*1e6:.1f} us p99 {lat[int(len(lat)*.99)]*1e6:.1f} us")
