# The Python tutorials' CPU-bound experiment: is_prime(112272535095293) N times, serial, ThreadPoolExecutor, ProcessPoolExecutor.
import math, sys, time
from concurrent.futures import ThreadPoolExecutor, ProcessPoolExecutor

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100
parameter = [112272535095293] * N

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

def single_thread():
    for number in parameter:
        is_prime(number)

def multi_thread():
    with ThreadPoolExecutor() as pool:
        list(pool.map(is_prime, parameter))

def multi_process():
    with ProcessPoolExecutor() as pool:
        list(pool.map(is_prime, parameter))

if __name__ == "__main__":
    for name, f in [("single_thread", single_thread), ("multi_thread", multi_thread), ("multi_process", multi_process)]:
        t = time.time(); f(); print(f"{name} {time.time()-t:.3f} s", flush=True)
