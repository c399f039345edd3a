"""A local Orthanc with its DICOMweb plugin on 127.0.0.1: the DICOMweb peer of the Python
tests (tests/python/test_dicomweb.py) and of the benchmark (bench/dicomweb.py), started
one way. Debian's `orthanc` and `orthanc-dicomweb` packages (scripts/test.sh installs
them). The Rust tests start theirs in tests/dicomweb_orthanc.rs.

    proc, base = orthanc.start(folder, user="name:password")   # base: http://127.0.0.1:PORT
    orthanc.request(f"{base}/instances", data=bytes, user=...)  # upload, as the tests do
    orthanc.stop(proc)
"""
import base64
import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request

ORTHANC = "/usr/sbin/Orthanc"
PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
START_SECONDS = 60


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(url, data=None, user=None, timeout=30):
    """GET `url` (POST `data` when given), with HTTP basic credentials `user`
    ("name:password") when given; returns the body."""
    req = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    if user:
        req.add_header("Authorization", "Basic " + base64.b64encode(user.encode()).decode())
    return urllib.request.urlopen(req, timeout=timeout).read()


def start(folder, user=None):
    """Start Orthanc with its storage, configuration and log in `folder` (a pathlib.Path),
    DICOMweb at /dicom-web/, HTTP basic authentication on when `user` is given; waits until
    it answers (at most START_SECONDS). Returns (process, base URL); raises RuntimeError
    with the end of its log when it does not start."""
    for tool in (ORTHANC, PLUGIN):
        if not os.path.exists(tool):
            raise RuntimeError(f"{tool} is missing (apt-get install orthanc orthanc-dicomweb)")
    port = free_port()
    config = {
        "Name": "medfm", "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"), "HttpPort": port, "DicomPort": free_port(),
        "RemoteAccessAllowed": False, "AuthenticationEnabled": user is not None,
        "Plugins": [PLUGIN], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    if user is not None:
        name, password = user.split(":", 1)
        config["RegisteredUsers"] = {name: password}
    (folder / "orthanc.json").write_text(json.dumps(config))
    log_path = folder / "orthanc.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([ORTHANC, str(folder / "orthanc.json")], stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + START_SECONDS
    while True:
        try:
            request(f"{base}/system", user=user, timeout=1)
            return proc, base
        except (OSError, urllib.error.URLError):
            if proc.poll() is not None or time.time() > deadline:
                stop(proc)
                raise RuntimeError("Orthanc did not start:\n" + log_path.read_text()[-2000:])
            time.sleep(0.2)


def stop(proc):
    """Terminate Orthanc and wait for it (killed after 30 s)."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
