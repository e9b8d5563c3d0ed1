"""moto's S3-compatible server, with each request handled under one lock.

moto checks a conditional write (If-Match / If-None-Match) and then writes,
without a lock, and its server is threaded: two concurrent conditional PUTs
can both pass the check and one update is lost, which S3 itself never does.
The registry's compare-and-swap tests need S3's semantics, so scripts/test.sh
points the harness (MOTO_SERVER) at this wrapper. Usage as moto_server:
-H HOST -p PORT.
"""

import argparse
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    args = parser.parse_args()
    app = DomainDispatcherApplication(create_backend_app)
    lock = threading.Lock()

    def serialized(environ, start_response):
        with lock:
            # The body is built under the lock too: a check and its write stay together.
            return list(app(environ, start_response))

    run_simple(args.host, args.port, serialized, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
