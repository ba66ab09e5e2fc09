#!/usr/bin/env bash
# Fuzzes the readers of files users hand zgpt (tests/fuzz/fuzz_inputs.c) with libFuzzer under ASan and UBSan:
#   scripts/fuzz.sh [TARGET...]   TARGET: hjson config zip torch safetensors llmc hfconfig index pickle tokenize
#                                 shard manifest deepspeed (default: all)
# Environment: FUZZ_SECONDS (per target, default 60), FUZZ_BUILD (default build-fuzz), FUZZ_OUT (default
# $FUZZ_BUILD/out: each target's corpus, its log, and any crash-*/leak-*/timeout-* input), FUZZ_DS (the DeepSpeed tag
# folder of the deepspeed target; default tests/fixtures/ds_torch/zero2/global_step100), ZGPT (a zgpt binary that
# makes the shard and checkpoint seeds; default build/zgpt, built with `make build` when missing). Seeds: the test
# fixtures. Needs clang with libFuzzer (Debian: clang). Exits non-zero when a target crashed, leaked or timed out,
# naming the input. Inputs found this way are kept as regression cases in tests/unit/test_inputs.c.
set -euo pipefail

TARGETS_ALL=(hjson config zip torch safetensors llmc hfconfig index pickle tokenize shard manifest deepspeed)
# the library with coverage instrumentation and the sanitizers (no CUDA, MPI or curl: the readers need none)
SAN="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"

target_number() {
    local i
    for i in "${!TARGETS_ALL[@]}"; do [ "${TARGETS_ALL[$i]}" = "$1" ] && { echo $((i + 1)); return; }; done
    echo "fuzz.sh: unknown target '$1' (one of ${TARGETS_ALL[*]})" >&2
    exit 2
}

# the inputs a target starts from (paths, one a line)
seeds() {
    local fix=$SRC/tests/fixtures tmp=$OUT/tmp
    case "$1" in
    hjson | config) ls "$fix"/ds_configs/*.json "$SRC"/configs/*.json ;;
    zip | torch) find "$fix"/torch_tiny "$fix"/ds_torch -name '*.pt' -o -name '*.bin' ;;
    safetensors) ls "$fix"/hf_tiny/model.safetensors ;;
    llmc) # llm.c's fp32 and bf16 model files of the tiny model (llm.c has no fixture of its own here)
        for dt in float32 bfloat16; do
            python3 "$SRC"/tests/hub/make_llmc_model.py "$fix"/hf_tiny/model.safetensors "$fix"/hf_tiny/config.json \
                "$tmp/llmc_$dt.bin" --dtype "$dt" > /dev/null
            echo "$tmp/llmc_$dt.bin"
        done ;;
    hfconfig) find "$fix" -name config.json ;;
    index) find "$fix" -name '*.index.json' ;;
    tokenize) ls "$fix"/tokenizer/*.txt "$fix"/tokenizer/*.bin ;;
    pickle) # the fixtures' data.pkl records
        python3 - "$tmp" "$fix" << 'PY'
import os, sys, zipfile
out, fix = sys.argv[1], sys.argv[2]
for root, _, files in os.walk(fix):
    for f in files:
        p = os.path.join(root, f)
        if not zipfile.is_zipfile(p):
            continue
        for name in zipfile.ZipFile(p).namelist():
            if name.endswith("data.pkl"):
                dst = os.path.join(out, "pkl_" + os.path.basename(root) + "_" + f + ".pkl")
                open(dst, "wb").write(zipfile.ZipFile(p).read(name))
                print(dst)
PY
        ;;
    shard) # zgpt prepare's shard of a little text, and a nanoGPT raw uint16 file
        head -c 4000 "$SRC"/data/tinyshakespeare/input.txt > "$tmp/shard.txt" 2> /dev/null ||
            head -c 4000 "$fix"/tokenizer/stress.txt > "$tmp/shard.txt"
        rm -rf "$tmp/shard"
        "$ZGPT" prepare --input "$tmp/shard.txt" --out "$tmp/shard" > /dev/null 2>&1
        find "$tmp/shard" -name '*val*'
        python3 -c "import struct, sys; open(sys.argv[1], 'wb').write(struct.pack('<300H', *range(300)))" \
            "$tmp/nano_val.bin"
        echo "$tmp/nano_val.bin" ;;
    manifest) ls "$CKPT"/manifest.json ;;
    deepspeed) # the folder's two data.pkl records, each after its selector byte (0: model states, 1: rank 0's optimizer)
        python3 - "$tmp" "$DS" << 'PY'
import os, sys, zipfile
out, ds = sys.argv[1], sys.argv[2]
for sel, name in ((0, "mp_rank_00_model_states.pt"), (0, "zero_pp_rank_0_mp_rank_00_model_states.pt"),
                  (1, "zero_pp_rank_0_mp_rank_00_optim_states.pt")):
    p = os.path.join(ds, name)
    if not os.path.exists(p):
        continue
    z = zipfile.ZipFile(p)
    pkl = [n for n in z.namelist() if n.endswith("data.pkl")][0]
    dst = os.path.join(out, "ds_%d_%s.pkl" % (sel, name))
    open(dst, "wb").write(bytes([sel]) + z.read(pkl))
    print(dst)
PY
        ;;
    esac
}

# a small checkpoint for the manifest target (its files stay; the fuzzed manifest replaces its manifest.json)
make_checkpoint() {
    local tmp=$OUT/tmp
    rm -rf "$tmp/run"
    mkdir -p "$tmp/run/data"
    python3 -c "import struct, sys; open(sys.argv[1], 'wb').write(struct.pack('<2000H', *[i % 97 for i in range(2000)]))" \
        "$tmp/run/data/train.bin"
    cp "$tmp/run/data/train.bin" "$tmp/run/data/val.bin"
    cat > "$tmp/run/cfg.json" << JSON
{"data": "$tmp/run/data", "out_dir": "$tmp/run/out", "n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 8,
 "batch_size": 2, "max_iters": 1, "eval_interval": 1, "eval_iters": 1, "device": "cpu", "background_checkpoint": false}
JSON
    "$ZGPT" train --config "$tmp/run/cfg.json" > "$tmp/run/log" 2>&1 || { cat "$tmp/run/log" >&2; exit 1; }
    CKPT=$tmp/run/out/$(cat "$tmp/run/out/latest")
}

main() {
    cd "$(dirname "$0")/.."
    SRC=$PWD
    local b=${FUZZ_BUILD:-build-fuzz} secs=${FUZZ_SECONDS:-60} targets=("${TARGETS_ALL[@]}") status=0 t n exe corpus f
    OUT=${FUZZ_OUT:-$b/out}
    ZGPT=${ZGPT:-$SRC/build/zgpt}
    DS=${FUZZ_DS:-$SRC/tests/fixtures/ds_torch/zero2/global_step100}
    [ $# -gt 0 ] && targets=("$@")
    command -v clang > /dev/null || { echo "fuzz.sh: clang is needed (apt-get install clang)" >&2; exit 2; }
    for t in "${targets[@]}"; do target_number "$t" > /dev/null; done
    cmake -S . -B "$b" -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo -DZGPT_CUDA=OFF -DZGPT_MPI=OFF \
        -DCMAKE_C_FLAGS="$SAN" > /dev/null
    cmake --build "$b" --target zgpt_lib -j"$(nproc)" > "$b/build.log" 2>&1 || { tail -20 "$b/build.log" >&2; exit 1; }
    local libs
    libs=$(pkg-config --libs libpcre2-8 libcjson openblas libxxhash 2> /dev/null || echo "-lpcre2-8 -lcjson -lopenblas -lxxhash")
    mkdir -p "$OUT/tmp"
    if printf '%s\n' "${targets[@]}" | grep -qxE 'shard|manifest'; then
        [ -x "$ZGPT" ] || make build > /dev/null
        make_checkpoint
    fi
    for t in "${targets[@]}"; do
        n=$(target_number "$t")
        exe=$b/fuzz_$t
        # shellcheck disable=SC2086 # (the flags are words)
        clang $SAN -fsanitize=fuzzer -DFUZZ_TARGET="$n" -D_POSIX_C_SOURCE=200809L -I"$SRC/src" -g -O1 \
            "$SRC/tests/fuzz/fuzz_inputs.c" "$b/libzgpt_lib.a" $libs -lm -lpthread -fopenmp -o "$exe"
        corpus=$OUT/$t
        mkdir -p "$corpus"
        while read -r f; do
            [ -n "$f" ] && cp "$f" "$corpus/seed_$(basename "$(dirname "$f")")_$(basename "$f")"
        done < <(seeds "$t")
        echo "fuzz $t: $secs s from $(find "$corpus" -type f | wc -l) inputs"
        if ! FUZZ_CKPT=${CKPT:-} FUZZ_DS=$DS TMPDIR=$OUT/tmp ASAN_OPTIONS=detect_leaks=1 "$exe" -max_total_time="$secs" -timeout=10 \
            -rss_limit_mb=4096 -max_len=1048576 -artifact_prefix="$OUT/$t-" "$corpus" > "$OUT/$t.log" 2>&1; then
            echo "fuzz $t: FAILED: $(grep -m1 -E 'ERROR|SUMMARY' "$OUT/$t.log")" >&2
            grep -E "Test unit written" "$OUT/$t.log" >&2 || true
            status=1
        else
            echo "fuzz $t: $(grep -E '^#[0-9]+.*DONE' "$OUT/$t.log" | tail -1)"
        fi
    done
    return $status
}

main "$@"
