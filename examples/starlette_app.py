"""A Starlette app limited by the pure ASGI middleware: 100/min per client everywhere, tighter on /login and
on /api/*, nothing on /health, WebSocket connections counted too, and messages limited per client."""

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from ferrolimit import FakeClock, RateLimitMiddleware, WebSocketRateLimit


async def hello(request: Request) -> JSONResponse:
    return JSONResponse({"hello": request.path_params.get("name", "world")})


def create_app(clock: FakeClock | None = None) -> Starlette:
    messages = WebSocketRateLimit("5/s", clock=clock)

    async def chat(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                text = await websocket.receive_text()
                decision = await messages.hit(websocket)
                reply = (
                    {"echo": text} if decision.allowed else {"error": "slow down", "retry_after": decision.retry_after}
                )
                await websocket.send_json(reply)
        except WebSocketDisconnect:
            pass

    routes = [
        Route("/", hello),
        Route("/login", hello, methods=["POST"]),
        Route("/api/hello/{name}", hello),
        Route("/health", hello),
        WebSocketRoute("/chat", chat),
    ]
    rules = {"/login": "5/min", "/api/*": "20/min", "/health": None}
    limits = Middleware(RateLimitMiddleware, limit="100/min", rules=rules, algorithm="gcra", clock=clock)
    return Starlette(routes=routes, middleware=[limits])


app = create_app()
