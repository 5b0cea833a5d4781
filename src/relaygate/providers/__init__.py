"""Provider adapters: pure translation per provider; `http.py` is the one shared client."""
