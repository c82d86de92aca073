"""{{name}}: a Trellis route handler. `GET /` answers 200 with JSON built
from the capabilities its route grants ({{grants_list}})."""

import trellis
from trellis import Request, Response
# trellis:if sql
from trellis import sql
# trellis:end
# trellis:if log
from trellis import log
# trellis:end
# trellis:if config
from trellis import config
# trellis:end
# trellis:if cache
from trellis import cache
# trellis:end
# trellis:if metrics
from trellis import metrics
# trellis:end
# trellis:if rate-limit
from trellis import rate_limit
# trellis:end


def handle(request: Request) -> Response:
    if request.path != "/":
        return Response.json({"error": {"code": "NOT_FOUND", "message": "no such page"}}, 404)
    body = {"message": "Hello from {{name}}!"}
    # trellis:if sql
    # Parameters bind as $1, $2, ... on SQLite and PostgreSQL alike.
    rows = sql.query("SELECT 1 + $1 AS answer", 41)
    body["answer"] = rows[0]["answer"]
    # trellis:end
    # trellis:if config
    # `config = { greeting = "..." }` on the route sets it.
    body["greeting"] = config.get("greeting")
    # trellis:end
    # trellis:if cache
    visits = int(cache.get("visits") or b"0") + 1
    cache.set("visits", str(visits).encode(), 60_000)
    body["visits"] = visits
    # trellis:end
    # trellis:if rate-limit
    # The `per_client` policy is defined in trellis.toml.
    decision = rate_limit.check("per_client", "anonymous")
    if not decision.allowed:
        return Response.json({"error": {"code": "RATE_LIMITED", "message": "slow down"}}, 429)
    body["remaining"] = decision.remaining
    # trellis:end
    # trellis:if metrics
    metrics.count("index_requests")
    # trellis:end
    # trellis:if log
    log.info("handled", path=request.path)
    # trellis:end
    return Response.json(body)


# componentize-py exports the class named after the interface.
IncomingHandler = trellis.serve(handle)
