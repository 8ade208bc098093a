"""A Flask (WSGI) application: a page, a JSON API, a POST echo (form or JSON), a streamed response and
file downloads with send_file (which hands the open file to the server's wsgi.file_wrapper).

Downloads come from $DOWNLOADS_DIR, or the `downloads/` directory next to this module.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

from flask import (
    Flask,
    Response,
    abort,
    jsonify,
    render_template_string,
    request,
    send_file,
    stream_with_context,
)
from werkzeug.security import safe_join

DOWNLOADS = Path(os.environ.get("DOWNLOADS_DIR") or Path(__file__).with_name("downloads")).resolve()

app = Flask(__name__)

ITEMS = [
    {"id": 1, "name": "kettle", "price": 24.5},
    {"id": 2, "name": "teapot", "price": 18.0},
    {"id": 3, "name": "mug", "price": 6.25},
]

PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>ring3 + Flask</title></head>
<body>
<h1>Hello from Flask</h1>
<p>Served through <code>{{ server }}</code> by a WSGI worker thread.</p>
<ul>{% for item in items %}<li>{{ item.name }}</li>{% endfor %}</ul>
</body>
</html>
"""


@app.get("/")
def index() -> str:
    return render_template_string(PAGE, server=request.environ.get("SERVER_SOFTWARE", "?"), items=ITEMS)


@app.get("/api/items")
def items() -> Response:
    return jsonify(items=ITEMS, count=len(ITEMS))


@app.get("/api/items/<int:item_id>")
def item(item_id: int) -> Response:
    for entry in ITEMS:
        if entry["id"] == item_id:
            return jsonify(entry)
    abort(404)


@app.post("/echo")
def echo() -> Response:
    """Echo the request: a JSON body as `json`, a form as `form`, plus how it arrived."""
    payload: dict[str, object] = {
        "content_type": request.mimetype,
        "content_length": request.content_length,
        "query": request.args.to_dict(),
    }
    if request.is_json:
        payload["json"] = request.get_json()
    else:
        payload["form"] = request.form.to_dict()
        payload["files"] = {name: len(f.read()) for name, f in request.files.items()}
    return jsonify(payload)


@app.get("/stream")
def stream() -> Response:
    """`n` lines, `delay` seconds apart, sent as they are produced (the generator runs in the worker
    thread)."""
    count = request.args.get("n", 5, type=int)
    delay = request.args.get("delay", 0.2, type=float)

    def lines() -> Iterator[str]:
        for index in range(count):
            if index:
                time.sleep(delay)
            yield f"line {index} of {count} for {request.remote_addr}\n"

    return Response(stream_with_context(lines()), mimetype="text/plain")


@app.get("/download/<path:name>")
def download(name: str) -> Response:
    path = safe_join(str(DOWNLOADS), name)
    if path is None or not os.path.isfile(path):
        abort(404)
    return send_file(path, as_attachment=request.args.get("attachment") == "1")
