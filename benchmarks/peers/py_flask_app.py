# The Python tutorials' two Flask apps merged into one: /is_prime/<numbers> on a ProcessPoolExecutor, / fanning out on a ThreadPoolExecutor.
import flask, json, math, time, sys
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

app = flask.Flask(__name__)
process_pool = None
thread_pool = ThreadPoolExecutor()

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

@app.route("/is_prime/<numbers>")
def api_is_prime(numbers):
    number_list = [int(i) for i in numbers.split(",")]
    results = process_pool.map(is_prime, number_list)
    return dict(zip(number_list, results))

def read_file():
    time.sleep(0.1); return "file result"
def read_db():
    time.sleep(0.2); return "db result"
def read_api():
    time.sleep(0.3); return "api result"

@app.route("/")
def index():
    f, d, a = thread_pool.submit(read_file), thread_pool.submit(read_db), thread_pool.submit(read_api)
    return json.dumps({"result_file": f.result(), "result_db": d.result(), "result_api": a.result()})

if __name__ == "__main__":
    process_pool = ProcessPoolExecutor()
    app.run(host="127.0.0.1", port=int(sys.argv[1]) if len(sys.argv) > 1 else 8000, threaded=True)
