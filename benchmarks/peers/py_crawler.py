# The Python tutorials' crawlers: threads with requests, and asyncio+aiohttp under a Semaphore(N).
import asyncio, aiohttp, requests, sys, time
from concurrent.futures import ThreadPoolExecutor

base, n, conc = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
urls = [f"{base}/page/{i}?delay_ms=100" for i in range(n)]

def get_url(url):
    with requests.get(url) as res:
        return res.status_code, len(res.text)

async def main():
    sem = asyncio.Semaphore(conc)
    async with aiohttp.ClientSession() as session:
        async def fetch(url):
            async with sem:
                async with session.get(url) as res:
                    return res.status, len(await res.text())
        return await asyncio.gather(*(fetch(u) for u in urls))

t = time.time(); r = asyncio.run(main()); dt = time.time() - t
print(f"asyncio+aiohttp sem={conc}: {n} pages {dt:.2f} s ({n/dt:.0f} pages/s), ok={sum(s==200 for s,_ in r)}")
t = time.time()
with ThreadPoolExecutor(conc) as pool:
    r = list(pool.map(get_url, urls))
dt = time.time() - t
print(f"ThreadPoolExecutor({conc})+requests: {n} pages {dt:.2f} s ({n/dt:.0f} pages/s), ok={sum(s==200 for s,_ in r)}")
