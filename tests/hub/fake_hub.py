#!/usr/bin/env python3
"""A local stand-in for the Hugging Face Hub's file protocol (python3 stdlib), for zgpt's download tests.

  fake_hub.py --repo ORG/NAME=DIR [--repo ...] --port-file FILE [--mode MODE] [--log FILE] [--token T]

Binds 127.0.0.1 on a free port and writes the port to FILE. Serves, like huggingface.co:
  HEAD/GET /{repo}/resolve/{revision}/{file}
    *.safetensors, *.bin (LFS): 302 to /cdn/{sha256} with X-Repo-Commit, X-Linked-Etag ("sha256"),
                         X-Linked-Size and the pointer's ETag
    other files:         200 with the content, ETag (git blob sha1) and X-Repo-Commit
    404 with X-Error-Code RepoNotFound / RevisionNotFound / EntryNotFound
  GET /cdn/{sha256}: the blob, with Range (206), in pieces of --chunk bytes --chunk-delay seconds apart (default
                    64 KiB, 5 ms), so that a download lasts long enough for zgpt's progress lines whatever the
                    machine's speed (one write of the whole blob could end inside the client's first interval).
Revisions: "main", "v1" and "refs/pr/1" (other commits; quoted in the path as huggingface_hub quotes them:
refs%2Fpr%2F1) or a commit hash. --rename OLD=ORG/NAME: OLD (an id with or without an org) answers every resolve
with a relative 307 to ORG/NAME's, as the hub does for a renamed repo.
Modes: normal; cut (the first CDN GET without Range sends half the body, then closes the connection);
cutall (every CDN GET sends half of what it was asked for, then closes); stall (the first CDN GET without Range
sends half the body, then holds the connection 30 s); busy (the first HEAD of each file answers 503 and the first
CDN GET of each blob 429, with Retry-After: 0); norange (the CDN ignores Range: 200 and the whole body);
corrupt (the CDN body has one byte changed); auth (the resolve endpoints need "Authorization: Bearer
TOKEN", else 401 with X-Error-Code GatedRepo). --log records one line per request: method, path,
Range and Authorization headers."""
import argparse
import hashlib
import http.server
import os
import sys
import re
import threading
import time
import urllib.parse


def git_blob_sha1(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", action="append", default=[])
    ap.add_argument("--rename", action="append", default=[])
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--mode", default="normal",
                    choices=["normal", "cut", "cutall", "stall", "busy", "norange", "corrupt", "auth"])
    ap.add_argument("--token", default="secret")
    ap.add_argument("--log")
    ap.add_argument("--chunk", type=int, default=64 * 1024)
    ap.add_argument("--chunk-delay", type=float, default=0.005)
    a = ap.parse_args()
    repos = {}
    for spec in a.repo:
        rid, d = spec.split("=", 1)
        files = {f: open(os.path.join(d, f), "rb").read() for f in os.listdir(d)
                 if os.path.isfile(os.path.join(d, f))}
        commits = {rev: hashlib.sha1((rev + rid).encode()).hexdigest() for rev in ("main", "v1", "refs/pr/1")}
        repos[rid] = (files, commits)
    blobs = {}
    for files, _ in repos.values():
        for f, data in files.items():
            if f.endswith((".safetensors", ".bin")):
                blobs[hashlib.sha256(data).hexdigest()] = data
    renames = dict(spec.split("=", 1) for spec in a.rename)
    state = {"cut_done": False, "busy": set()}
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def record(self):
            if a.log:
                with lock, open(a.log, "a") as f:
                    f.write(f"{self.command} {self.path} range={self.headers.get('Range', '-')} "
                            f"auth={self.headers.get('Authorization', '-')}\n")

        def fail(self, code, error_code):
            self.send_response(code)
            self.send_header("X-Error-Code", error_code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def once(self, key):
            """True the first time key is seen (busy mode's one failure per file)"""
            with lock:
                if key in state["busy"]:
                    return False
                state["busy"].add(key)
                return True

        def resolve(self, body):
            # /[org/]name/resolve/rev/file, the revision and the file name percent-encoded
            m = re.match(r"^/([^/]+(?:/[^/]+)?)/resolve/([^/]+)/([^/?]+)$", self.path)
            if not m:
                return self.fail(404, "RepoNotFound")
            rid, rev, fname = m.group(1), urllib.parse.unquote(m.group(2)), urllib.parse.unquote(m.group(3))
            if rid in renames:
                self.send_response(307)
                self.send_header("Location", f"/{renames[rid]}/resolve/{m.group(2)}/{m.group(3)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if a.mode == "auth" and self.headers.get("Authorization") != "Bearer " + a.token:
                return self.fail(401, "GatedRepo")
            if a.mode == "busy" and self.command == "HEAD" and self.once(("HEAD", rid, fname)):
                self.send_response(503)
                self.send_header("Retry-After", "0")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if rid not in repos:
                return self.fail(404, "RepoNotFound")
            files, commits = repos[rid]
            commit = commits.get(rev, rev if rev in commits.values() else None)
            if commit is None:
                return self.fail(404, "RevisionNotFound")
            if fname not in files:
                return self.fail(404, "EntryNotFound")
            data = files[fname]  # "v1" is another commit with the same content
            if fname.endswith((".safetensors", ".bin")):
                sha = hashlib.sha256(data).hexdigest()
                pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {len(data)}\n".encode()
                self.send_response(302)
                self.send_header("Location", f"http://127.0.0.1:{self.server.server_port}/cdn/{sha}")
                self.send_header("X-Repo-Commit", commit)
                self.send_header("ETag", '"%s"' % git_blob_sha1(pointer))
                self.send_header("X-Linked-Etag", '"%s"' % sha)
                self.send_header("X-Linked-Size", str(len(data)))
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("X-Repo-Commit", commit)
            self.send_header("ETag", '"%s"' % git_blob_sha1(data))
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)

        def cdn(self, body):
            sha = self.path.split("/")[2].split("?")[0]
            if sha not in blobs:
                return self.fail(404, "EntryNotFound")
            data = blobs[sha]
            if a.mode == "busy" and self.once(("GET", sha)):
                self.send_response(429)
                self.send_header("Retry-After", "0")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if a.mode == "corrupt":
                data = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
            rng = None if a.mode == "norange" else self.headers.get("Range")
            start = 0
            if rng and rng.startswith("bytes=") and rng.endswith("-"):
                start = int(rng[6:-1])
                if start >= len(data):
                    return self.fail(416, "RangeNotSatisfiable")
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            if not body:
                return
            cut = a.mode == "cutall"
            with lock:
                if a.mode in ("cut", "stall") and not rng and not state["cut_done"]:
                    state["cut_done"] = cut = True
            rest = data[start:]
            if cut:
                self.wfile.write(rest[:len(rest) // 2])
                self.wfile.flush()
                if a.mode == "stall":
                    time.sleep(30)
                self.close_connection = True
                return
            for i in range(0, len(rest), a.chunk):
                if i:
                    time.sleep(a.chunk_delay)
                self.wfile.write(rest[i:i + a.chunk])
                self.wfile.flush()

        def handle_any(self, body):
            self.record()
            if self.path.startswith("/cdn/"):
                self.cdn(body)
            else:
                self.resolve(body)

        def do_HEAD(self):
            self.handle_any(False)

        def do_GET(self):
            self.handle_any(True)

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    tmp = a.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(srv.server_port))
    os.rename(tmp, a.port_file)
    print(srv.server_port, flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
