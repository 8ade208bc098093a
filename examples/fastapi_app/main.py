"""A FastAPI application: a JSON endpoint, a JSON POST validated by a pydantic model, a streamed response
and a WebSocket echo, with a page at / whose script talks to the WebSocket from a browser."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse, StreamingResponse
from pydantic import BaseModel, Field

PAGE = Path(__file__).with_name("index.html")
ECHO_PREFIX = "echo: "

app = FastAPI(title="ring3 FastAPI example")


class Order(BaseModel):
    item: str = Field(min_length=1)
    quantity: int = Field(gt=0)
    unit_price: float = Field(ge=0)


class Priced(BaseModel):
    item: str
    quantity: int
    total: float


@app.get("/", response_class=HTMLResponse)
async def index() -> str:
    return PAGE.read_text(encoding="utf-8")


@app.get("/api/hello")
async def hello(name: str = "world") -> dict[str, str]:
    return {"message": f"Hello, {name}!", "server": "ring3"}


@app.post("/api/orders")
async def create_order(order: Order) -> Priced:
    return Priced(item=order.item, quantity=order.quantity, total=round(order.quantity * order.unit_price, 2))


@app.get("/stream")
async def stream(chunks: int = 5, delay: float = 0.2) -> StreamingResponse:
    """`chunks` lines, `delay` seconds apart: each line leaves as soon as it is produced."""

    async def lines() -> AsyncIterator[str]:
        for index in range(chunks):
            if index:
                await asyncio.sleep(delay)
            yield f"chunk {index}\n"

    return StreamingResponse(lines(), media_type="text/plain")


@app.websocket("/ws")
async def echo(websocket: WebSocket) -> None:
    """Each text message comes back with ECHO_PREFIX in front; 'bye' closes the socket (code 1000)."""
    await websocket.accept()
    try:
        while True:
            text = await websocket.receive_text()
            await websocket.send_text(ECHO_PREFIX + text)
            if text == "bye":
                await websocket.close(code=1000)
                return
    except WebSocketDisconnect:
        pass
