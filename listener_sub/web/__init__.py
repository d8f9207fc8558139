"""The web face: `listener-sub play` (people as listeners and speakers) and `listener-sub study` (human listener
studies), server-rendered pages over FastAPI, served by uvicorn."""
