"""A Prometheus text-format endpoint, standard library only.

``Exporter(addr, port, render)`` serves ``GET /metrics`` from a background
thread; ``render()`` returns the exposition text and is called per scrape.
It binds to 127.0.0.1 unless told otherwise.
"""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def label_value(value):
    """Escape a label value as the text format wants (backslash, quote, newline)."""
    s = value if isinstance(value, str) else (
        value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value))
    return s.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def sample(name, labels, value):
    if labels:
        inner = ",".join(f'{k}="{label_value(v)}"' for k, v in labels.items())
        return f"{name}{{{inner}}} {value}\n"
    return f"{name} {value}\n"


def parse_listen(spec, default_host="127.0.0.1"):
    """``PORT``, ``:PORT``, ``HOST:PORT`` or ``[V6]:PORT`` -> (host, port)."""
    spec = spec.strip()
    if spec.startswith("["):
        host, _, port = spec[1:].partition("]:")
    elif ":" in spec:
        host, _, port = spec.rpartition(":")
    else:
        host, port = "", spec
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"not a port: {spec!r} (use HOST:PORT, e.g. 127.0.0.1:9464)")
    return host or default_host, int(port)


class Exporter:
    def __init__(self, host, port, render):
        self.render = render
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path.split("?", 1)[0] not in ("/metrics", "/"):
                    self.send_error(404)
                    return
                try:
                    body = exporter.render().encode()
                except Exception:  # a scrape must never kill the tool
                    self.send_error(500)
                    return
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        if ":" in host:
            import socket

            class V6Server(ThreadingHTTPServer):
                address_family = socket.AF_INET6
            self.server = V6Server((host, port), Handler)
        else:
            self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="prometheus",
                                       daemon=True)

    @property
    def port(self):
        return self.server.server_address[1]

    def start(self):
        self.thread.start()
        return self

    def close(self):
        self.server.shutdown()
        self.server.server_close()
