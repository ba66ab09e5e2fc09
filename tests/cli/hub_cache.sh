#!/usr/bin/env bash
# --model / init_from find models in a Hugging Face cache laid out as huggingface_hub / transformers
# write it (blobs, relative symlinks in snapshots/<commit>, refs/main), through each of HF_HUB_CACHE,
# HF_HOME, XDG_CACHE_HOME and HOME; named models under their current and older repo ids; revisions;
# the error for missing weights names every place searched and the download command.
set -euo pipefail
: "${ZGPT:?}" "${ZGPT_SRC:?}"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/zgpt-hubcache.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
fail() { echo "FAIL: $*" >&2; exit 1; }
FIX=$ZGPT_SRC/tests/fixtures/hf_tiny
export HF_HUB_OFFLINE=1 # nothing here may reach a network
unset HF_HUB_CACHE HF_HOME XDG_CACHE_HOME HF_ENDPOINT ZGPT_MODELS
# make_cache HUB REPO_FOLDER [REF COMMIT]: the transformers layout under HUB
make_cache() {
    local d=$1/$2 ref=${3:-main} commit=${4:-0123456789abcdef0123456789abcdef01234567}
    local sha cfg
    sha=$(sha256sum "$FIX/model.safetensors" | cut -d' ' -f1)
    cfg=$(sha1sum "$FIX/config.json" | cut -d' ' -f1)
    mkdir -p "$d/blobs" "$d/snapshots/$commit" "$d/refs"
    cp "$FIX/model.safetensors" "$d/blobs/$sha"
    cp "$FIX/config.json" "$d/blobs/$cfg"
    ln -sfn "../../blobs/$sha" "$d/snapshots/$commit/model.safetensors"
    ln -sfn "../../blobs/$cfg" "$d/snapshots/$commit/config.json"
    printf '%s' "$commit" > "$d/refs/$ref"
}
python3 -c "
import random, struct
random.seed(5)
open('val.bin', 'wb').write(struct.pack('<1000H', *[random.randrange(500) for _ in range(1000)]))"
"$ZGPT" eval --model "hf:$FIX" --data val.bin --full --json --device cpu > ref.json
ev() { "$ZGPT" eval --model "$1" --data val.bin --full --json --device cpu; }

make_cache "$WORK/a" models--org--tiny
HF_HUB_CACHE=$WORK/a ev org/tiny > a.json && cmp ref.json a.json || fail "HF_HUB_CACHE"
make_cache "$WORK/hfhome/hub" models--org--tiny
HF_HOME=$WORK/hfhome ev org/tiny > b.json && cmp ref.json b.json || fail "HF_HOME"
make_cache "$WORK/xdg/huggingface/hub" models--org--tiny
XDG_CACHE_HOME=$WORK/xdg ev org/tiny > c.json && cmp ref.json c.json || fail "XDG_CACHE_HOME"
make_cache "$WORK/home/.cache/huggingface/hub" models--org--tiny
HOME=$WORK/home ev org/tiny > d.json && cmp ref.json d.json || fail "HOME"
# HF_HUB_CACHE wins over HF_HOME
HF_HUB_CACHE=$WORK/a HF_HOME=$WORK/nothing ev org/tiny > e.json && cmp ref.json e.json || fail "HF_HUB_CACHE first"
# read in place: nothing was copied into zgpt's own folders
[ ! -e "$WORK/home/.cache/zgpt" ] || fail "files were copied"
# a revision through refs/<tag>, and a commit hash
make_cache "$WORK/a" models--org--tiny v2 fedcba9876543210fedcba9876543210fedcba98
HF_HUB_CACHE=$WORK/a ev org/tiny@v2 > f.json && cmp ref.json f.json || fail "@v2"
HF_HUB_CACHE=$WORK/a ev org/tiny@fedcba9876543210fedcba9876543210fedcba98 > g.json && cmp ref.json g.json || fail "@commit"
# a dangling snapshot link is not a model
rm "$WORK/a/models--org--tiny/blobs/"$(sha256sum "$FIX/model.safetensors" | cut -d' ' -f1)
HF_HUB_CACHE=$WORK/a ev org/tiny > /dev/null 2> h.err && fail "a dangling link was used"
grep -q "not in .*models--org--tiny/snapshots/0123456789abcdef0123456789abcdef01234567 (main)" h.err || fail "dangling: $(cat h.err)"

# named models: found under openai-community/<name> and under the older <name> (the tiny model is not
# a GPT-2, so the shape check names the folder it found)
make_cache "$WORK/n1" models--openai-community--gpt2
HF_HUB_CACHE=$WORK/n1 ev gpt2 > /dev/null 2> n1.err && fail "tiny accepted as gpt2"
grep -q "n1/models--openai-community--gpt2/snapshots/.* does not hold gpt2" n1.err || fail "new id: $(cat n1.err)"
make_cache "$WORK/n2" models--gpt2-xl
HF_HUB_CACHE=$WORK/n2 ev gpt2-xl > /dev/null 2> n2.err && fail "tiny accepted as gpt2-xl"
grep -q "n2/models--gpt2-xl/snapshots/.* does not hold gpt2-xl" n2.err || fail "old id: $(cat n2.err)"

# missing weights: every place searched, and the command that fetches them; one line
HOME=$WORK/empty ev gpt2-xl > /dev/null 2> m.err && fail "missing weights accepted"
[ "$(wc -l < m.err)" -eq 1 ] || fail "expected one line: $(cat m.err)"
for p in "empty/.cache/zgpt/models/gpt2-xl" "empty/.cache/huggingface/hub/models--openai-community--gpt2-xl (main)" \
         "empty/.cache/huggingface/hub/models--gpt2-xl (main)" "zgpt download gpt2-xl"; do
    grep -qF "$p" m.err || fail "the error lacks '$p': $(cat m.err)"
done
echo "hub_cache: ok"
