"""store.serve(): the Rust feature server started from Python, answered
over real HTTP with Feast's request and response shapes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import timedelta

import pytest

import feature_store as fs

from conftest import END


def post(url: str, body: dict, headers: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_serve_in_background_answers_like_feasts_server(store):
    store.materialize(END - timedelta(days=1), END)
    with store.serve(port=0, background=True) as server:
        assert server.running() and server.url.startswith("http://127.0.0.1:")
        status, body = post(
            server.url + "/get-online-features",
            {"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": [1001, 9]}},
        )
        assert status == 200, body
        local = store.get_online_features(["driver_hourly_stats:conv_rate"], [{"driver_id": 1001}, {"driver_id": 9}])
        assert body["metadata"]["feature_names"] == ["driver_id", "conv_rate"]
        assert body["results"][1]["statuses"] == ["PRESENT", "NOT_FOUND"]
        assert body["results"][1]["values"][0] == pytest.approx(local.to_dict()["conv_rate"][0])
        status, body = post(server.url + "/get-online-features", {"features": ["driver_hourly_stats:nope"], "entities": {"driver_id": [1]}})
        assert status == 400 and "driver_hourly_stats:nope" in body["error"]
        with urllib.request.urlopen(server.url + "/health", timeout=10) as r:
            assert json.loads(r.read())["status"] == "ok"
    assert not server.running()
    server.stop()  # a second stop does nothing


def test_serve_with_api_keys_and_bad_settings(store):
    with store.serve(port=0, api_keys=["k1"], background=True) as server:
        req = {"feature_service": "driver_activity_v1", "entities": {"driver_id": [1001]}}
        assert post(server.url + "/get-online-features", req)[0] == 401
        assert post(server.url + "/get-online-features", req, {"authorization": "Bearer k2"})[0] == 403
        assert post(server.url + "/get-online-features", req, {"x-api-key": "k1"})[0] == 200
    with pytest.raises(ValueError, match="without API keys"):
        store.serve(host="0.0.0.0", port=0, background=True)
    with pytest.raises(ValueError, match="tls_key"):
        store.serve(port=0, tls_cert="cert.pem", background=True)


def test_foreground_serve_stops_gracefully_on_sigterm(repo, store):
    store.materialize(END - timedelta(days=1), END)
    code = (
        "import sys, feature_store as fs\n"
        "s = fs.FeatureStore(repo_path=sys.argv[1])\n"
        "print('serving', flush=True)\n"
        "s.serve(port=int(sys.argv[2]))\n"
        "print('stopped', flush=True)\n"
    )
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-c", code, str(repo), str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "serving"
        url = f"http://127.0.0.1:{port}/get-online-features"
        for _ in range(100):
            try:
                status, _ = post(url, {"features": ["driver_hourly_stats:conv_rate"], "entities": {"driver_id": [1001]}})
                if status == 200:
                    break
            except OSError:
                time.sleep(0.05)
        else:
            pytest.fail("the server never answered")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert proc.stdout.read().strip() == "stopped"
    finally:
        if proc.poll() is None:
            proc.kill()
