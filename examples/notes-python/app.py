"""Notes: `POST /notes` with `{"text": "..."}` adds one, `GET /notes` lists
them, on whichever database the host runs (SQLite or PostgreSQL)."""

import trellis
from trellis import Request, Response, log, sql


def error(status: int, code: str, message: str) -> Response:
    return Response.json({"error": {"code": code, "message": message}}, status)


def handle(request: Request) -> Response:
    if request.method == "POST":
        try:
            body = request.json()
        except ValueError:
            return error(400, "BAD_REQUEST", "the body is not JSON")
        text = body.get("text") if isinstance(body, dict) else None
        if not isinstance(text, str) or not text:
            return error(400, "VALIDATION", "`text` must be a non-empty string")
        sql.execute("INSERT INTO notes (text) VALUES ($1)", text)
        log.info("note added", length=len(text))
        return Response.json({"text": text}, 201)
    notes = [row["text"] for row in sql.query("SELECT text FROM notes ORDER BY text")]
    return Response.json({"notes": notes})


IncomingHandler = trellis.serve(handle)
