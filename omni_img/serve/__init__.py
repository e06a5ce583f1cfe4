"""`omni-img serve`: one process that loads a bundle once and serves many requests.

Modules, each using only those above it:

    errors    RequestError (an HTTP status and one line) and the JSON body errors carry
    limits    the bounds of bodies, uploads, the queue, open requests, batches, sessions
    overload  the bound on open requests, answered with the JSON 503 + Retry-After
    bodies    request bodies (JSON, multipart, urlencoded) -> fields, size-bounded
    parsing   fields -> a checked GenerateRequest, in two dialects
    sessions  multi-turn sessions in memory, bounded in count and idle age
    worker    the one model thread, its bounded queue (503 + Retry-After when full), and
              the gathering of batches
    jobs      what the worker runs for a request: the turn, the bands, the signed PNGs
    batching  a batch of requests sampled together (sampling.batched), each as if alone
    events    responses in the Images API's conventions (partial_image, completed)
    app       the Starlette application: routes, errors, API key
    running   uvicorn, in the foreground or on a background thread
    commands  the command line
"""
