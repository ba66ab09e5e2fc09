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
Revisions: "main" and "v1" (another commit) or either commit hash.
Modes: normal; cut (the first CDN GET without Range sends half the body, then closes the connection);
corrupt (the CDN body has one byte changed); auth (the resolve endpoints need "Authorization: Bearer
TOKEN", else 401 with X-Error-Code GatedRepo). --log records one line per request: method, path,
Range and Authorization headers."""
import argparse
import hashlib
import http.server
import os
import sys
import threading
import time


def git_blob_sha1(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", action="append", default=[])
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--mode", default="normal", choices=["normal", "cut", "corrupt", "auth"])
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
        commits = {"main": hashlib.sha1(("main" + rid).encode()).hexdigest(),
                   "v1": hashlib.sha1(("v1" + rid).encode()).hexdigest()}
        repos[rid] = (files, commits)
    blobs = {}
    for files, _ in repos.values():
        for f, data in files.items():
            if f.endswith((".safetensors", ".bin")):
                blobs[hashlib.sha256(data).hexdigest()] = data
    state = {"cut_done": False}
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

        def resolve(self, body):
            parts = self.path.split("/")
            # /org/name/resolve/rev/file
            if len(parts) != 6 or parts[3] != "resolve":
                return self.fail(404, "RepoNotFound")
            rid, rev, fname = parts[1] + "/" + parts[2], parts[4], parts[5]
            if a.mode == "auth" and self.headers.get("Authorization") != "Bearer " + a.token:
                return self.fail(401, "GatedRepo")
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
            if a.mode == "corrupt":
                data = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
            rng = self.headers.get("Range")
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
            cut = False
            with lock:
                if a.mode == "cut" and not rng and not state["cut_done"]:
                    state["cut_done"] = cut = True
            if cut:
                self.wfile.write(data[:len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            rest = data[start:]
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
