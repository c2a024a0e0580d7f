"""previsit as a service: an HTTP API (and, beside it, web pages) over the intake graph.

Sessions are LangGraph threads in a checkpointer (SQLite, or Postgres for several workers), so a
restarted or second server process picks up every session where it was.
"""
