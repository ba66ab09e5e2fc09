#!/usr/bin/env bash
# zgpt download and --model org/name against a local server speaking the Hub's protocol
# (tests/hub/fake_hub.py): a plain download into the standard cache layout, a connection cut half way
# then a resume with Range, a corrupted body (refused, nothing published), 401 without the token and
# success with it, 404 for the repo, the file and the revision, no network, a full disk,
# HF_HUB_OFFLINE=1, then eval from the cache (loss equal to the hf: path's) and download on a miss; a sharded
# checkpoint (model.safetensors.index.json and its shards), whole, with a shard gone from the cache, and with one
# missing from the repo; a repo with only pytorch_model.bin, whole or sharded.
set -euo pipefail
: "${ZGPT:?}" "${ZGPT_SRC:?}"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/zgpt-hub.XXXXXX")
HUB_PID=""
stop_hub() { if [ -n "$HUB_PID" ]; then kill "$HUB_PID" 2>/dev/null || true; wait "$HUB_PID" 2>/dev/null || true; HUB_PID=""; fi; }
trap 'stop_hub; rm -rf "$WORK"' EXIT
cd "$WORK"
fail() { echo "FAIL: $*" >&2; exit 1; }
if "$ZGPT" --version | grep -q "libcurl  not compiled in"; then
    echo "SKIP: this zgpt was built without libcurl (install libcurl4-openssl-dev and rebuild)"; exit 0
fi
FIX=$ZGPT_SRC/tests/fixtures/hf_tiny
mkdir nofile && cp "$FIX/config.json" nofile/
# a sharded checkpoint of the same weights (as save_pretrained writes one past max_shard_size), and one whose
# index names a shard the repo lacks
python3 "$ZGPT_SRC/tests/hub/shard_safetensors.py" "$FIX/model.safetensors" sharded --shards 3
cp "$FIX/config.json" sharded/
cp -r sharded holey && rm holey/model-00002-of-00003.safetensors
# start_hub MODE: the server on a free port of 127.0.0.1; HF_ENDPOINT points at it
start_hub() {
    stop_hub
    rm -f port log.txt
    timeout 120 python3 "$ZGPT_SRC/tests/hub/fake_hub.py" --mode "$1" --repo "org/tiny=$FIX" --repo "org/nofile=$WORK/nofile" \
        --repo "org/sharded=$WORK/sharded" --repo "org/holey=$WORK/holey" \
        --repo "org/binonly=$ZGPT_SRC/tests/fixtures/torch_tiny/hf_bin" \
        --repo "org/binsharded=$ZGPT_SRC/tests/fixtures/torch_tiny/hf_bin_sharded" --rename old/tiny=org/tiny \
        --repo "distilbert/distilgpt2=$FIX" --port-file port --log log.txt > /dev/null &
    HUB_PID=$!
    for _ in $(seq 100); do [ -s port ] && break; sleep 0.1; done
    [ -s port ] || fail "the fake hub did not start"
    export HF_ENDPOINT="http://127.0.0.1:$(cat port)"
}
expect_fail() {
    local name=$1 pat=$2
    shift 2
    local rc=0
    "$@" >out.txt 2>err.txt || rc=$?
    [ "$rc" -ne 0 ] || fail "$name: expected a non-zero exit"
    [ "$rc" -lt 128 ] || fail "$name: crashed with status $rc: $(cat err.txt)"
    [ "$(grep -c 'zgpt: error' err.txt)" -eq 1 ] || fail "$name: expected one error line: $(cat err.txt)"
    grep -qE -- "$pat" err.txt || fail "$name: error does not match '$pat': $(cat err.txt)"
    echo "ok $name: $(grep 'zgpt: error' err.txt)"
}
SHA=$(sha256sum "$FIX/model.safetensors" | cut -d' ' -f1)
repo=models--org--tiny
# published CACHE: the blob, the relative symlinks of the snapshot refs/main names, the same bytes
published() {
    local c=$1/$repo commit
    commit=$(cat "$c/refs/main") || fail "no refs/main in $1"
    [ "$(readlink "$c/snapshots/$commit/model.safetensors")" = "../../blobs/$SHA" ] || fail "model link: $(ls -l "$c/snapshots/$commit")"
    readlink "$c/snapshots/$commit/config.json" | grep -qE '^\.\./\.\./blobs/[0-9a-f]{40}$' || fail "config link"
    cmp "$c/snapshots/$commit/model.safetensors" "$FIX/model.safetensors" || fail "model bytes differ"
    cmp "$c/snapshots/$commit/config.json" "$FIX/config.json" || fail "config bytes differ"
    [ -z "$(find "$c" -name '*.incomplete')" ] || fail "an .incomplete file was left"
}
not_published() {
    [ ! -e "$1/$repo/blobs/$SHA" ] || fail "a blob was published: $(ls "$1/$repo/blobs")"
    [ -z "$(find "$1" -name model.safetensors)" ] || fail "a snapshot links the model"
}

# 1. plain download, with progress lines (stderr is not a terminal here)
start_hub normal
HF_HUB_CACHE=$WORK/c1 ZGPT_PROGRESS_INTERVAL=0.001 "$ZGPT" download org/tiny > d1.out 2> d1.err
published c1
grep -qE "^download org/tiny/model.safetensors: .* / 526.57 KiB \([0-9]+%\), .*/s, ETA" d1.err || fail "no progress: $(cat d1.err)"
grep -qE "^download org/tiny/model.safetensors: 526.57 KiB / 526.57 KiB \(100%\), .*done in" d1.err || fail "no final line"
grep -q "auth=-" log.txt && ! grep -q "auth=Bearer" log.txt || fail "a token was sent without HF_TOKEN"
# a second download finds the blobs: HEAD requests only
: > log.txt
HF_HUB_CACHE=$WORK/c1 "$ZGPT" download org/tiny > /dev/null
! grep -q "^GET" log.txt || fail "blobs already in the cache were fetched again: $(cat log.txt)"
# --revision v1 (a tag) and a commit hash
HF_HUB_CACHE=$WORK/c1 "$ZGPT" download org/tiny --revision v1 > /dev/null
[ -s c1/$repo/refs/v1 ] && [ "$(cat c1/$repo/refs/v1)" != "$(cat c1/$repo/refs/main)" ] || fail "refs/v1"
# a revision with slashes (a pull request's ref) goes quoted into the path, as huggingface_hub sends it, and its ref
# file is refs/refs/pr/1
: > log.txt
HF_HUB_CACHE=$WORK/c1 "$ZGPT" download org/tiny --revision refs/pr/1 > /dev/null
grep -q "^HEAD /org/tiny/resolve/refs%2Fpr%2F1/config.json " log.txt || fail "revision not quoted: $(cat log.txt)"
[ -s c1/$repo/refs/refs/pr/1 ] && [ "$(cat c1/$repo/refs/refs/pr/1)" != "$(cat c1/$repo/refs/v1)" ] || fail "refs/refs/pr/1"
# a renamed repo: the hub's relative 307 is followed, and the cache keeps the id asked for (as huggingface_hub does)
HF_HUB_CACHE=$WORK/c1r "$ZGPT" download old/tiny > /dev/null 2> d1r.err || fail "renamed repo: $(cat d1r.err)"
[ -s c1r/models--old--tiny/refs/main ] || fail "renamed repo: $(find c1r)"
cmp c1r/models--old--tiny/snapshots/*/model.safetensors "$FIX/model.safetensors" || fail "renamed repo: bytes"
# distilgpt2, a named model: fetched from distilbert/distilgpt2; a model of another shape under that id is refused
HF_HUB_CACHE=$WORK/c1d "$ZGPT" download distilgpt2 > d1d.out 2> d1d.err || fail "distilgpt2: $(cat d1d.err)"
[ -s c1d/models--distilbert--distilgpt2/refs/main ] || fail "distilgpt2: $(find c1d)"
expect_fail "distilgpt2 shape" "does not hold distilgpt2" env HF_HUB_CACHE=$WORK/c1d "$ZGPT" eval --model distilgpt2 \
    --data x.bin --device cpu

# 2. transient failures are retried within the run, as huggingface_hub retries them. The connection cut half way:
# retried at once from byte N with Range, published in one run
start_hub cut
HF_HUB_CACHE=$WORK/c2 "$ZGPT" download org/tiny > /dev/null 2> d2.err || fail "cut once: $(cat d2.err)"
published c2
grep -qE "note: download org/tiny/model.safetensors: the connection stopped after [0-9]+ bytes .*; trying again in 1 s \(retry 1 of 5\)" d2.err ||
    fail "the retry is not said: $(cat d2.err)"
have=$(grep -oE "stopped after [0-9]+ bytes" d2.err | grep -oE "[0-9]+")
grep -q "GET /cdn/$SHA range=bytes=$have-" log.txt || fail "no Range request from byte $have: $(cat log.txt)"
grep -q "resuming at byte $have" d2.err || fail "the resume is not reported: $(cat d2.err)"
# every GET cut, one retry allowed: the error, an .incomplete file, nothing published; a later run resumes from it
start_hub cutall
expect_fail "cut" "download stopped after [0-9]+ bytes.*resumes" env ZGPT_HUB_RETRIES=1 HF_HUB_CACHE=$WORK/c2b "$ZGPT" download org/tiny
part=c2b/$repo/blobs/$SHA.incomplete
[ -s "$part" ] || fail "no .incomplete file after the cuts"
have=$(stat -c %s "$part")
not_published c2b
start_hub normal
HF_HUB_CACHE=$WORK/c2b "$ZGPT" download org/tiny > /dev/null 2> d2b.err
grep -q "GET /cdn/$SHA range=bytes=$have-" log.txt || fail "no Range request from byte $have: $(cat log.txt)"
grep -q "resuming at byte $have" d2b.err || fail "the resume is not reported: $(cat d2b.err)"
published c2b
# a server that ignores Range (200, the whole body) for a partial file: started over, not appended
mkdir -p c2c/$repo/blobs && head -c 1000 "$FIX/model.safetensors" > c2c/$repo/blobs/$SHA.incomplete
start_hub norange
HF_HUB_CACHE=$WORK/c2c "$ZGPT" download org/tiny > /dev/null 2> d2c.err || fail "Range ignored: $(cat d2c.err)"
grep -q "GET /cdn/$SHA range=bytes=1000-" log.txt || fail "no Range request from byte 1000: $(cat log.txt)"
published c2c
# a partial file that is already whole (a try that failed after its last byte): verified and published, no GET
mkdir -p c2h/$repo/blobs && cp "$FIX/model.safetensors" c2h/$repo/blobs/$SHA.incomplete
: > log.txt
HF_HUB_CACHE=$WORK/c2h "$ZGPT" download org/tiny > /dev/null 2> d2h.err || fail "whole partial file: $(cat d2h.err)"
! grep -q "GET /cdn/$SHA" log.txt || fail "a whole partial file was fetched again: $(cat log.txt)"
published c2h
# 503 and 429 with Retry-After: 0 (each file's first HEAD, each blob's first GET): retried, published
start_hub busy
HF_HUB_CACHE=$WORK/c2d "$ZGPT" download org/tiny > /dev/null 2> d2d.err || fail "busy hub: $(cat d2d.err)"
published c2d
grep -q "config.json: HTTP 503; trying again in 0 s (retry 1 of 5)" d2d.err || fail "503 not retried: $(cat d2d.err)"
grep -q "model.safetensors: HTTP 429; trying again in 0 s" d2d.err || fail "429 not retried: $(cat d2d.err)"
start_hub busy
expect_fail "no retries" "config.json: HTTP 503 from" env ZGPT_HUB_RETRIES=0 HF_HUB_CACHE=$WORK/c2e "$ZGPT" download org/tiny
# a connection that stalls half way: HF_HUB_DOWNLOAD_TIMEOUT (huggingface_hub's variable) ends it, and the retry
# resumes it
start_hub stall
HF_HUB_DOWNLOAD_TIMEOUT=1 HF_HUB_CACHE=$WORK/c2f timeout 60 "$ZGPT" download org/tiny > /dev/null 2> d2f.err ||
    fail "stalled download: $(cat d2f.err)"
published c2f
grep -q "trying again in 1 s" d2f.err || fail "the stall is not retried: $(cat d2f.err)"
# bad settings, said together
expect_fail "bad settings" "2 problems in the download settings" env ZGPT_HUB_RETRIES=x HF_HUB_DOWNLOAD_TIMEOUT=-1 \
    HF_HUB_CACHE=$WORK/c2g "$ZGPT" download org/tiny
grep -q "ZGPT_HUB_RETRIES='x'" err.txt && grep -q "HF_HUB_DOWNLOAD_TIMEOUT='-1'" err.txt || fail "settings: $(cat err.txt)"

# 3. a corrupted body: refused, nothing published, nothing left to resume from
start_hub corrupt
expect_fail "corrupt" "checksum mismatch" env HF_HUB_CACHE=$WORK/c3 "$ZGPT" download org/tiny
not_published c3
[ -z "$(find c3 -name '*.incomplete')" ] || fail "a corrupt partial file was kept"

# 4. a gated repo: 401 without the token or with a wrong one, success with it (sent to the hub only)
start_hub auth
expect_fail "401 without token" "private or gated.*set \\\$HF_TOKEN" env -u HF_TOKEN HF_HUB_CACHE=$WORK/c4 HOME=$WORK "$ZGPT" download org/tiny
expect_fail "401 wrong token" "private or gated.*check that \\\$HF_TOKEN" env HF_TOKEN=wrong HF_HUB_CACHE=$WORK/c4 "$ZGPT" download org/tiny
: > log.txt
HF_TOKEN=secret HF_HUB_CACHE=$WORK/c4 "$ZGPT" download org/tiny > /dev/null
published c4
grep -q "^HEAD /org/tiny/resolve/main/model.safetensors .*auth=Bearer secret" log.txt || fail "no token on the hub request"
# the token file huggingface-cli login writes ($HF_HOME/token)
mkdir -p hfhome && echo secret > hfhome/token
env -u HF_TOKEN HF_HOME=$WORK/hfhome HF_HUB_CACHE=$WORK/c4b "$ZGPT" download org/tiny > /dev/null
published c4b

# 5. 404s: repo, file, revision; a name that is no repo id
start_hub normal
expect_fail "404 repo" "org/missing: repo not found" env HF_HUB_CACHE=$WORK/c5 "$ZGPT" download org/missing
expect_fail "404 file" "org/nofile: none of model.safetensors, model.safetensors.index.json \\(a sharded checkpoint\\), pytorch_model.bin or pytorch_model.bin.index.json at revision 'main'" env HF_HUB_CACHE=$WORK/c5 "$ZGPT" download org/nofile
expect_fail "404 revision" "revision 'nope' not found" env HF_HUB_CACHE=$WORK/c5 "$ZGPT" download org/tiny --revision nope
expect_fail "bad repo id" "not a Hugging Face repo id" "$ZGPT" download a/b/c
[ ! -e c5/models--org--nofile/refs ] || fail "a failed download wrote a ref"

# 6. a full disk (the partial file is /dev/full): one line, nothing published
mkdir -p c6/$repo/blobs && ln -s /dev/full c6/$repo/blobs/$SHA.incomplete
expect_fail "disk full" "No space left on device" env HF_HUB_CACHE=$WORK/c6 "$ZGPT" download org/tiny
[ ! -e c6/$repo/blobs/$SHA ] || fail "a blob was published from a full disk"

# 7. no network
expect_fail "no network" "cannot reach http://127.0.0.1:1 " env HF_ENDPOINT=http://127.0.0.1:1 HF_HUB_CACHE=$WORK/c7 "$ZGPT" download org/tiny

# 8. HF_HUB_OFFLINE=1: nothing is fetched; what the cache has is used
: > log.txt
expect_fail "offline, not cached" "HF_HUB_OFFLINE is set and org/tiny \(main\) is not in the cache" \
    env HF_HUB_OFFLINE=1 HF_HUB_CACHE=$WORK/c8 "$ZGPT" download org/tiny
HF_HUB_OFFLINE=1 HF_HUB_CACHE=$WORK/c1 "$ZGPT" download org/tiny | grep -q "is in the cache" || fail "offline, cached"
expect_fail "offline eval" "not in .*models--org--tiny \(main\); HF_HUB_OFFLINE is set.*zgpt download org/tiny" \
    env HF_HUB_OFFLINE=1 HF_HUB_CACHE=$WORK/c8 "$ZGPT" eval --model org/tiny --data x.bin
[ ! -s log.txt ] || fail "requests were made offline: $(cat log.txt)"

# 9. eval from the cache equals the hf: path; download on a miss; an existing path wins over a repo id
python3 -c "
import random, struct
random.seed(3)
open('val.bin', 'wb').write(struct.pack('<2000H', *[random.randrange(500) for _ in range(2000)]))"
"$ZGPT" eval --model "hf:$FIX" --data val.bin --full --json --device cpu > ref.json
HF_HUB_CACHE=$WORK/c1 "$ZGPT" eval --model org/tiny --data val.bin --full --json --device cpu > c1.json
HF_HUB_CACHE=$WORK/c1 "$ZGPT" eval --model org/tiny@v1 --data val.bin --full --json --device cpu > c1v.json
cmp ref.json c1.json || fail "org/tiny from the cache: $(cat c1.json) vs hf: $(cat ref.json)"
cmp ref.json c1v.json || fail "org/tiny@v1: $(cat c1v.json)"
# --revision on eval and export (sample: the same helper) is the same as @REV; both at once is refused
HF_HUB_CACHE=$WORK/c1 "$ZGPT" eval --model org/tiny --revision v1 --data val.bin --full --json --device cpu > c1r.json
cmp ref.json c1r.json || fail "eval --revision v1: $(cat c1r.json)"
HF_HUB_CACHE=$WORK/c1 "$ZGPT" export --model org/tiny --revision v1 --out exp_v1 > /dev/null || fail "export --revision v1"
expect_fail "revision twice" "already names a revision" env HF_HUB_CACHE=$WORK/c1 "$ZGPT" export --model org/tiny@v1 --revision v1 --out x
: > log.txt
HF_HUB_CACHE=$WORK/c9 "$ZGPT" eval --model org/tiny --data val.bin --full --json --device cpu > c9.json 2> c9.err
cmp ref.json c9.json || fail "download on a miss: $(cat c9.json) $(cat c9.err)"
published c9
grep -q "GET /cdn/" log.txt || fail "eval did not download"
mkdir -p org && cp -r "$FIX" org/tiny
: > log.txt
HF_HUB_CACHE=$WORK/c10 "$ZGPT" eval --model org/tiny --data val.bin --full --json --device cpu > p.json
[ ! -s log.txt ] && [ ! -e c10 ] || fail "the local folder org/tiny was not preferred"

# 10. a sharded checkpoint: the index and every shard it names are fetched and linked; eval equals the single
# file's, from the cache, offline, and from a local folder or its index; a shard missing from the cache is fetched
# alone; a shard missing from the repo is named
: > log.txt
HF_HUB_CACHE=$WORK/c11 "$ZGPT" download org/sharded > /dev/null 2> d11.err || fail "sharded download: $(cat d11.err)"
sc=c11/models--org--sharded
snap=$sc/snapshots/$(cat $sc/refs/main)
for f in config.json model.safetensors.index.json model-0000{1,2,3}-of-00003.safetensors; do
    cmp "$snap/$f" "sharded/$f" || fail "sharded: $f differs or is missing: $(ls -l "$snap")"
    readlink "$snap/$f" | grep -q '^\.\./\.\./blobs/' || fail "sharded: $f is not a blob link"
done
[ "$(grep -c "^GET /cdn/" log.txt)" = 3 ] || fail "sharded: expected 3 shard GETs: $(cat log.txt)"
HF_HUB_CACHE=$WORK/c11 "$ZGPT" eval --model org/sharded --data val.bin --full --json --device cpu > s1.json
cmp ref.json s1.json || fail "org/sharded from the cache: $(cat s1.json) vs $(cat ref.json)"
HF_HUB_OFFLINE=1 HF_HUB_CACHE=$WORK/c11 "$ZGPT" eval --model org/sharded --data val.bin --full --json --device cpu > s2.json
cmp ref.json s2.json || fail "org/sharded offline: $(cat s2.json)"
"$ZGPT" eval --model "hf:$WORK/sharded" --data val.bin --full --json --device cpu > s3.json
cmp ref.json s3.json || fail "hf: sharded folder: $(cat s3.json)"
"$ZGPT" eval --model "hf:$WORK/sharded/model.safetensors.index.json" --data val.bin --full --json --device cpu > s4.json
cmp ref.json s4.json || fail "hf: index path: $(cat s4.json)"
"$ZGPT" eval --model "$WORK/sharded" --data val.bin --full --json --device cpu > s5.json
cmp ref.json s5.json || fail "plain sharded folder: $(cat s5.json)"
rm "$sc/blobs/$(basename "$(readlink "$snap/model-00002-of-00003.safetensors")")"
expect_fail "offline, a shard gone" "not in .*models--org--sharded/snapshots/[0-9a-f]+ \(main\); HF_HUB_OFFLINE is set" \
    env HF_HUB_OFFLINE=1 HF_HUB_CACHE=$WORK/c11 "$ZGPT" eval --model org/sharded --data val.bin --device cpu
: > log.txt
HF_HUB_CACHE=$WORK/c11 "$ZGPT" eval --model org/sharded --data val.bin --full --json --device cpu > s6.json 2> s6.err
cmp ref.json s6.json || fail "a shard fetched again: $(cat s6.json) $(cat s6.err)"
[ "$(grep -c "^GET /cdn/" log.txt)" = 1 ] || fail "only the missing shard should be fetched: $(cat log.txt)"
expect_fail "shard missing in the repo" "org/holey: file 'model-00002-of-00003.safetensors' not found at revision 'main'" \
    env HF_HUB_CACHE=$WORK/c12 "$ZGPT" download org/holey
expect_fail "local shard missing" "shard 'model-00002-of-00003.safetensors' is missing" \
    "$ZGPT" eval --model "hf:$WORK/holey" --data val.bin --device cpu

# 11. a repo with only pytorch_model.bin (older transformers): fetched when it has no safetensors; eval equals the
# safetensors' loss (the same weights), from the cache and offline
: > log.txt
HF_HUB_CACHE=$WORK/c13 "$ZGPT" eval --model org/binonly --data val.bin --full --json --device cpu > b1.json 2> b1.err
cmp ref.json b1.json || fail "org/binonly: $(cat b1.json) $(cat b1.err)"
grep -q "^HEAD /org/binonly/resolve/main/pytorch_model.bin" log.txt || fail "pytorch_model.bin not asked for: $(cat log.txt)"
HF_HUB_OFFLINE=1 HF_HUB_CACHE=$WORK/c13 "$ZGPT" eval --model org/binonly --data val.bin --full --json --device cpu > b2.json
cmp ref.json b2.json || fail "org/binonly offline: $(cat b2.json)"
# and its sharded form (pytorch_model.bin.index.json and two shards, as transformers 4.x wrote past max_shard_size)
HF_HUB_CACHE=$WORK/c14 "$ZGPT" eval --model org/binsharded --data val.bin --full --json --device cpu > b3.json 2> b3.err
cmp ref.json b3.json || fail "org/binsharded: $(cat b3.json) $(cat b3.err)"
HF_HUB_OFFLINE=1 HF_HUB_CACHE=$WORK/c14 "$ZGPT" eval --model org/binsharded --data val.bin --full --json --device cpu > b4.json
cmp ref.json b4.json || fail "org/binsharded offline: $(cat b4.json)"
stop_hub
echo "hub_download: ok"
