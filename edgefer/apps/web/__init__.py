"""The operator's page: a small HTTP server (``server``), the state it shows (``status``), the
capped-rate JPEG preview (``preview``) and the static page itself (``static/``, package data)."""
