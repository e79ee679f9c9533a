"""FastAPI + ferrolimit: per-IP limits for anonymous callers, per-user for signed-in ones, an API-key limit shared
by two routes. Run it to serve it on a free port, fire a burst and print each response's headers (`make demo`)."""

import socket
import threading
import time

import httpx
import uvicorn
from fastapi import FastAPI, Request

from ferrolimit import FakeClock, FastLimit, rate_limit


async def api_key(request: Request) -> str | None:
    return request.headers.get("x-api-key")


def create_app(clock: FakeClock | None = None) -> FastAPI:
    app = FastAPI(title="ferrolimit demo")
    limiter = FastLimit(user_id_func=lambda r: r.headers.get("x-user"), clock=clock)  # a stand-in for auth
    limiter.init_app(app)
    search = rate_limit("3/10s", key=api_key, name="search")  # one quota for both routes

    @app.get("/hello", dependencies=[rate_limit(ip="5/min", user="20/min")])
    async def hello() -> dict[str, str]:
        return {"hello": "world"}

    @app.get("/search", dependencies=[search])
    @app.get("/suggest", dependencies=[search])
    async def find(q: str = "") -> dict[str, str]:
        return {"q": q}

    return app


app = create_app()


def demo(burst: int = 7) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]})
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{listener.getsockname()[1]}") as client:
            for number in range(1, burst + 1):
                response = client.get("/hello")  # limited to 5/min per IP
                shown = [f"{k}: {v}" for k, v in response.headers.items() if "ratelimit" in k or k == "retry-after"]
                print(f"GET /hello {number}: {response.status_code}  " + "  ".join(shown))
    finally:
        server.should_exit = True
        thread.join()


if __name__ == "__main__":
    demo()
