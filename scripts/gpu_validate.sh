#!/usr/bin/env bash
# GPU validation for issue 5, and issue 6's "fast and lean" targets (2+ GPUs), in one run on the GPU
# machine. Builds, then runs, each phase under its own time limit, logging to $LOG_DIR:
#   ops      every CUDA op against fp64 references (tests/gpu/test_ops_cuda.c); a bad ZGPT_GEMV refused
#   attn     issue 21: attention (zgpt's kernels, cuDNN's fused attention) vs torch SDPA's cuDNN backend and
#            LayerNorm's share of the memory bandwidth, GPT-2 XL B=16 (not in the default list); each side timed
#            by single calls and back to back (20 calls between two events: without the host's dispatch); the
#            LayerNorm backward with the projections' bias sums fused, by separate passes, and without them;
#            LayerNorm and copies of its bytes back to back, beside PyTorch's LayerNorm (eager and compiled,
#            bench/torch_baseline/ln_bench.py) timed the same way
#   watchdog (1 GPU) the NCCL communicator's collective watchdog ends a rank whose collective cannot
#            finish while its main thread is blocked in the driver (tests/gpu/test_comm_nccl_watchdog.c)
#   parity   the whole model against HF transformers, GPT-2 XL-shaped random model (fp32, bf16)
#   curve    200 iterations of a small model on Tiny Shakespeare: CUDA fp32 vs the CPU fp32 curve, and
#            CUDA bf16 vs CUDA fp32 over 8 seeds (paired final val losses)
#   resume   bitwise resume on the GPU (bf16): 2N straight == N + resume + N
#   fp16     dynamic loss scaling adapts (starts at 2^32: overflow -> skip + lower, then grows)
#   stepab   (1 GPU) issue 17's one step path against the binary before it (ZG_STEP_BASE): bitwise the
#            same bf16 and fp16 runs, bench ms/step in the same call (not in the default list)
#   stepgraph (1 GPU) the recorded training passes (gpt2_graph.c) against ZGPT_STEP_GRAPH=0: bf16, fp16 with a
#            moving loss scale and 4 micro-steps a step give identical iteration lines and checkpoints; bench
#            124M with and without recording alternately (not in the default list)
#   headchunks (1 GPU) v0.39's LM head in row chunks (lm_head_chunks): the small model trained in 3 chunks against
#            every row at once (losses within bf16 noise), 20 + resume + 20 in chunks against 40 (identical lines,
#            byte-identical checkpoints), zgpt bench XL B=8 and 124M B=16 with auto against 1 (ms/step, peak memory,
#            the chunks); ~3 minutes; ZG_HC_FULL=1: two rounds alternated and XL B=16 too (not in the default list)
#   bench    zgpt bench vs the PyTorch peer on the same card: GPT-2 124M, B=16, T=1024 (+ ratio lines)
#   benchxl  the same for GPT-2 XL (last: the slowest); ZG_XL_BATCHES="16 8" adds B=8 against its peer
#   attloan  issue 21: the attention backward's cuDNN workspace in the model's dead logits buffer (XL B=16
#            peak with and without it, ZGPT_ATT_LOAN=0; identical bf16 loss lines), ~2 minutes
#            (not in the default list)
#   zbench   zgpt bench 124M alone (regression check; not in the default list)
#   trace    (1 GPU) the training step's kernels, zgpt's against the PyTorch peer's (bench/kernel_trace.*):
#            per-step sums by op category, idle time and the top kernels of each, for ZG_TRACE_MODELS
#            (default "124m xl", B=16); the traces (CSV, gzipped) stay in the logs; ~1.5 min for 124m,
#            ~3 for xl (not in the default list)
#   multi    (2+ GPUs) --gpus 2 ZeRO stages 0-3 against 1 GPU with the same global batch, resume at the
#            same and another GPU count; 2 GPUs with 4 micro-steps and grad_accum_local_layers 0, -1, 4
#            (stage 2) and 4 (stage 3)
#   faults   (2+ GPUs) a killed worker (kill -9) and a hung one (SIGSTOP) end the job, naming the rank
#   mpinccl  (2+ GPUs) `mpirun -np 2 zgpt train --device cuda`: the NCCL id over MPI (the path of mpirun
#            and srun across machines), losses against the same run under `--gpus 2` (needs an MPI build)
#   xlstart  seconds from `zgpt train` (GPT-2 XL) to the first finished step
#   guide    (2+ GPUs) the DeepSpeed guide's GPT-2 XL configuration (ZeRO-2, 1 x 32), bf16 and fp16,
#            against the PyTorch peer (FSDP SHARD_GRAD_OP, B=1, ga 32) on all visible GPUs
#   guidelocal (2+ GPUs; issue 22) the guide's bf16 job on 2 GPUs and, with 4+, on 4 GPUs, once per value of
#            grad_accum_local_layers (2 GPUs: ZG_GL2, default "0 -1 17 19"; 4 GPUs: ZG_GL4, default
#            "0 -1 1 2"; 19 and 2 are the largest N whose `zgpt plan` total stays <= 17 / <= 11 GiB): ms/step,
#            ms/micro-step, tokens/s, peak GiB/GPU and the banner's bytes reduced per micro-step, each against
#            the FSDP reference (ZG_FSDP_MS2 / ZG_FSDP_MS4 ms/step, default 2223 / 3626) and issue 22's
#            goals (>= 2x at <= 17 GiB on 2 GPUs, >= 2.5x at <= 11 GiB on 4); at the values in ZG_GL_CARRY0
#            (default "0 -1") once more with ZGPT_REDUCE_CARRY=0 (each micro-step waits for its reductions:
#            the carried reductions' A/B); ~1 min per run (not in the default list)
#   dp2      (2+ GPUs) GPT-2 XL bf16, T=1024, micro-batch 16/GPU, no accumulation: zgpt 1 GPU, zgpt
#            2 GPUs ZeRO-2, torch DDP and FSDP on 2 GPUs: speed ratio, scaling, memory (issue 6)
#   dp4      (4+ GPUs) the same on 4 GPUs (not in the default list)
#   dpwc     (2+ GPUs) zgpt train's per-phase step times (wall_clock_breakdown) for dp2's configuration on
#            1 and 2 GPUs (not in the default list)
#   zero2xl  (2+ GPUs) only dp2's zgpt 2-GPU ZeRO-2 run (kept as an alias; dp2 replaces it by default)
#   ab       A/B variants of dp's zgpt run (ZG_AB, below; not in the default list)
#   gap      (1 GPU) where `zgpt train` loses time against `zgpt bench` (GPT-2 XL, B=16, bf16, one GPU):
#            bench on random tokens, train on Tiny Shakespeare, train on random-word text (a flat token
#            distribution), train with wall_clock_breakdown; the GPU's SM clock, power and throttle
#            reasons sampled every 0.5 s during each (not in the default list)
#   demo     scripts/demo.sh, the README's main job
#   signal   SIGTERM to `zgpt train --gpus all` (the fork launcher, one worker per GPU) becomes a
#            coordinated save and exit 0, and --resume continues (issue 16)
#   ckpt     issue 19: GPT-2 XL shape (scratch), the guide's settings on one GPU (fp16, ZeRO-2, 1 x 32),
#            60 iterations saving every 20 (keep_last_k 1) against the same run without saves: the
#            training stall of each save (the trainer's "training paused" lines; goal <= 1 s), wall clock
#            with/without saves (goal <= 1.15x), the writer's GB/s against dd's direct-write rate on the
#            same disk in the same call (goal >= 80%), bytes per parameter, seconds from `zgpt train
#            --resume` to its first iteration line (goal <= 8 s) with the resume's own timing lines, once
#            with direct reads and the shard read from the start (the defaults), once without that read
#            (ZGPT_CKPT_PREFETCH=0) and once with ZGPT_CKPT_READ=buffered, the checkpoint's pages
#            dropped from the page cache before each; then the guide's schedule (a save every 5
#            iterations, 30 iterations): wall clock against bytes written / dd's rate (disk-bound, not
#            trainer-bound); the snapshot's pinned memory, reserved on a thread from the start, and the
#            first iteration with and without saves; tests/bench/ckpt_write.c on the same disk (4 GiB:
#            save path, windows, bare writer, read-back in both read modes; 18.7 GB: the save path on a
#            file a real save's size); a synchronous save's GB/s; the end of each run's two waits (the
#            last save, the deletion of the checkpoint before it) and each deletion's size and time.
#            ~8-9 minutes, ~5 with ZG_CKPT_EVERY5=0, ~4.5 with ZG_CKPT_QUICK=1 (the runs with and without
#            saves, their notes, the two resumes with direct reads, and dd's direct reads of the shard with
#            1, 8 and 32 streams: the disk's read ceiling), ~6 with ZG_CKPT_BENCH=0 (no writer
#            bench files, no buffered resume)
#            (not in the default list)
#   tb       a CUDA fp16 run with DeepSpeed's tensorboard section: TensorBoard's own EventAccumulator reads
#            its event files and finds metrics.jsonl's values (tests/monitor/tb_check.py; issue 20)
#   gen      issue 21: `zgpt sample` of a random GPT-2 XL (bf16, 512 new tokens from a short prompt, top-k 200)
#            at B=1 and B=8 (and B=1 without the CUDA graph), tokens/s with the load excluded (goals 500 and
#            2,500), against transformers' generate of the same weights in fp32 and bf16 (goal 10x); B=1 and 8
#            again with ZGPT_PDL=0, with ZGPT_SAMPLE=block, with ZGPT_DECODE_COMBINE=kernel (v0.15's
#            attention combine) and with ZGPT_LT_WARMUP=0: the same text as the defaults'; B=8 with
#            ZGPT_GEMV_MAX_N=1 (cuBLASLt's products, v0.18's auto): tokens/s; each run's time split (KV cache,
#            prompt, start, steady state) and steady-state ms/step beside the headline tokens/s
#            (ZG_GEN_VARS="nopdl ltw0 ..." runs only the named variants); ~5-7 min
#            (not in the default list)
#   decode   issue 21 (ZG_DEC_VARS="auto v2g4 ...": only those step-graph variants, no per-op rows or product
#            tables: a short call): the decode-step op bench (ZG_BENCH_ONLY=decode): each op with ZGPT_DECODE=old (cuBLASLt
#            products, one block per head, the one-block sampler reading global memory each pass, no PDL) and
#            =new (gemv_cuda.cu, split decode attention, the multi-block sampler, PDL), and the whole XL step as
#            a CUDA graph at B=1 and B=8 with old, new, gemv / split (one new family alone), auto (unset: the
#            per-shape selection generation runs; the verdict), and auto without PDL (nopdl), with the
#            one-block sampler (block), with neither (v012), and with the few-row products up to 8 rows
#            (gemv8: gemv_cuda.cu's tensor-core form at B=8), and with every few-row product in one kernel (ZGPT_GEMV=v1 / v2; v2g1: one block per SM;
#            v2nopf: no L2 prefetch before the PDL wait, 2 blocks per SM (v0.19's auto); v2g3: 3 blocks per SM (auto since v0.20);
#            v2g3r: 3 per SM with registers for 4; v2g4: 4 per SM; oneblk: decode attention one block per (row, head)
#            at every B, auto's rule at B=8 before v0.18) (tokens/s of the graph alone; the goals 500 and
#            2,500 apply to gen's end-to-end runs); the sampler's verdict (<= 0.05 ms), top-p also with
#            v0.13's radix top-p on the cluster kernel (ZGPT_SAMPLE=cluster-v13: the "(v13)" rows); each XL
#            product alone and 48 x 4 chained in a graph with cuBLASLt / v1 / v2 (GB/s of weights; v2's
#            verdicts: chain and step faster than cuBLASLt's); ~1.5 min
#            (not in the default list)
#   evalhf   issue 21: a small model trained 30 iterations in fp16 on CUDA; `zgpt eval` (fp32, from the
#            master weights) against the exported model's loss in transformers on the same windows (PASS at
#            <= 1e-5 relative); transformers' sharded save_pretrained of the export read by zgpt to the single
#            file's loss; ragged prompts in one batch on CUDA against each prompt alone; ~1 min (not in the
#            default list)
#   dsreal   DeepSpeed checkpoint layouts (ZeRO 1-3, the bf16 optimizer) written by torch.save itself
#            (tests/hub/fake_deepspeed.py --torch) read by zgpt to hf_tiny's loss exactly; the ZeRO-2 and ZeRO-3
#            folders copied to $OUT/ds_torch (tests/fixtures/ds_torch); seconds (not in the default list)
#   benchold the speed of this tree against the previous version's in the same call: `.old/` holds that
#            version's source (gitignored; make it with `git archive REV | tar -x -C .old` and carry it);
#            both are built, then zgpt bench 124M and XL (B=16) and a 124M `zgpt train` run alternately
#            old/new twice, medians and new/old ratios (not in the default list)
#   benchpar (2+ GPUs) bench + benchxl with zgpt on GPU 0 and the PyTorch peer on GPU 1 concurrently
#            (not in the default list)
#   offload  (1 GPU; issue 18) ZeRO-Offload (offload_optimizer cpu): (1) a 100-iteration small-model bf16
#            run at stages 1-3 with offload against the run without, within the bf16 noise measured as
#            the multi phase does, and bitwise resume with offload (and with its delayed parameter
#            update); (2) the guide's job on one GPU (GPT-2 XL scratch, ZeRO-2, 1 x 32, fp16) without
#            offload, with it, with its delayed parameter update (dpu), and with it + recompute: peak GPU
#            memory (goal <= 10 GiB) and tokens/s (goal >= 70% of without); (3) the host AdamW over 1.56B
#            parameters (fp32, and the offload's fp16 mixed precision) against torch.optim.AdamW(fused=True)
#            and the host's copy/triad bandwidth (bench/cpu_adamw_bench.sh); (4) reach: the largest
#            GPT-2-shaped model zgpt plan says fits with and without offload, trained 3 iterations each;
#            (5) offload_param cpu at stage 3: small bf16 run with both offloads bitwise the stage-3 run with
#            offload_optimizer alone, offload_param alone within bf16 noise; the guide's XL job at stage 3
#            with both offloads: peak GPU GiB and tokens/s against stage 2 without offload; (6) Lamb:
#            stage 2 with offload (the host Lamb) against the GPU Lamb without, within their bf16 noise;
#            part (3) prints the host Lamb's time over 1.56B parameters too.
#            ZG_OFFLOAD_PARTS selects parts (default "1 2 3 4 5 6"); ZG_OFFLOAD_VARIANTS part (2)'s runs (default
#            "none off dpu offrc"; dpu: delayed_param_update, reported on its own line; a name ending in "bd",
#            e.g. offbd / dpubd, adds wall_clock_breakdown and notes the last step's offload times; a name
#            containing "v12", e.g. offv12 / offv12bd, runs the offload with ZGPT_OFFLOAD_STEP=v12, v0.12's
#            step path (one GPU: gradients through the layer pool and the shard every micro-step, the host
#            AdamW after every download), and notes this tree's offload against it in the same call),
#            ZG_OFFLOAD_SET extra train options for them; about 12 minutes (not in the default list)
# usage: scripts/gpu_validate.sh [phases...]   (default: all but zbench/zero2xl). Prints a summary at the end.
# Environment:
#   ZG_DP2_SET    extra zgpt train options for both dp2 zgpt runs (and zero2xl), e.g.
#                 ZG_DP2_SET="--set recompute=true --set recompute_num_layers=13" (default: none)
#   ZG_GUIDE_SET  extra zgpt train options for the guide runs (default: none)
#   ZG_GUIDE_PRECS precisions of the guide runs (default: "bf16 fp16"); ZG_GUIDE_TORCH=0 skips its peer
#   ZG_BENCH_SET  extra `zgpt bench` options for bench/benchxl/benchpar/zbench (default: none), e.g.
#                 ZG_BENCH_SET="--recompute layernorm"; passed through verbatim.
# Approximate wall time on 2 x H200 (torch.compile of GPT-2 XL takes 1-2 min per torch run):
#   dp2 ~6-8 min, guide ~5-6 min, benchxl ~3-4 min, bench ~2 min.
# shellcheck disable=SC2046,SC2016 # $(small_cfg/mcfg/xlcfg ...) split into words on purpose; '$X' inside "${X:+...}" does expand
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
RESULTS=${OUT:-/tmp}
mkdir -p "$RESULTS"
LOG_DIR=$(mktemp -d /tmp/zgpt-val-logs.XXXXXX)
PHASES=${*:-"build ops watchdog parity curve resume fp16 bench multi faults xlstart guide dp2 demo benchxl"}
SUMMARY="$RESULTS/gpu-validate-summary.txt"
: > "$SUMMARY"
# Each note also re-packs the logs, so a run stopped at its time limit still returns them.
note() { echo "$*" | tee -a "$SUMMARY"; tar -C "$LOG_DIR" -czf "$RESULTS/gpu-validate-logs.tgz" . 2>/dev/null; }
has() { [[ " $PHASES " == *" $1 "* ]]; }
ZGPT=$ROOT/build-gpu/zgpt
W=$(mktemp -d /tmp/zgpt-val.XXXXXX)
# The GPUs this run may use: CUDA_VISIBLE_DEVICES when set (two instances can share a host on
# disjoint GPUs), else all of nvidia-smi's. GPUS[k] is the k-th one's index for CUDA_VISIBLE_DEVICES.
if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then IFS=, read -r -a GPUS <<< "$CUDA_VISIBLE_DEVICES"
else mapfile -t GPUS < <(seq 0 $(( $(nvidia-smi -L 2>/dev/null | wc -l) - 1 ))); fi
NGPU=${#GPUS[@]}
note "card: $(nvidia-smi -i "${GPUS[0]:-0}" --query-gpu=name,memory.total --format=csv,noheader | head -1), GPUs visible: $NGPU (${GPUS[*]})"
TB=.bench/torch_gpt2_baseline.py
if command -v torchrun >/dev/null 2>&1; then TORCHRUN=(torchrun); else TORCHRUN=(python3 -m torch.distributed.run); fi
read -r -a DP2_SET <<< "${ZG_DP2_SET:-}"
read -r -a GUIDE_SET <<< "${ZG_GUIDE_SET:-}"
read -r -a BENCH_SET <<< "${ZG_BENCH_SET:-}"

# ---- parsing helpers (numbers as plain decimals; "" when absent) ----
# median of the numbers on stdin, one a line
median() { sort -g | awk '{v[NR] = $1} END {if (NR == 0) exit; if (NR % 2) m = v[(NR + 1) / 2]; else m = (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.1f\n", m}'; }
# zgpt train log -> "iter ms tok/s" for every logged, not skipped, iteration >= $2 (default 0)
zg_iters() { sed -nE 's/^iter ([0-9]+): loss [^,]+, time ([0-9.]+) ms, .*tok\/s ([0-9.]+),.*/\1 \2 \3/p' "$1" | awk -v f="${2:-0}" '$1 >= f'; }
zg_ms() { zg_iters "$1" "$2" | awk '{print $2}' | median; }   # median ms per iteration from iteration $2 on
zg_tps() { zg_iters "$1" "$2" | awk '{print $3}' | median; }  # median tokens/s (all ranks) from iteration $2 on
zg_n() { zg_iters "$1" "$2" | wc -l; }                        # how many iterations that median is over
zg_skips() { grep -cE '^iter [0-9]+: ' "$1" | awk -v n="$(zg_iters "$1" 0 | wc -l)" '{print $1 - n}'; } # fp16 skipped steps
# "12.34 GiB" (or B/KiB/MiB/TiB) on stdin -> GiB
to_gib() { awk 'NF >= 2 {f = 1; if ($2 == "B") f = 1 / 2^30; else if ($2 == "KiB") f = 1 / 2^20; else if ($2 == "MiB") f = 1 / 1024;
                 else if ($2 == "TiB") f = 1024; printf "%.2f\n", $1 * f}'; }
zg_mem() { sed -nE 's/^peak [a-z]+ memory per rank: ([0-9.]+ [KMGT]?i?B)$/\1/p' "$1" | tail -1 | to_gib; }   # zgpt train, GiB per GPU
zb_tps() { sed -nE 's/^tokens\/s: ([0-9.]+).*/\1/p' "$1" | tail -1; }                                        # zgpt bench
zb_ms() { sed -nE 's/^ms\/step: ([0-9.]+).*/\1/p' "$1" | tail -1; }
zb_mem() { sed -nE 's/^peak memory: backend ([0-9.]+ [KMGT]?i?B),.*/\1/p' "$1" | tail -1 | to_gib; }
# the PyTorch peer's result line (its last print, rank 0 only): "torch L=... median step X ms  N tok/s  (M per GPU)
#   model TFLOPS/GPU F  maxmem G GiB  loss L"; maxmem is torch.cuda.max_memory_allocated of rank 0 (per GPU)
th_line() { grep -E '^torch L=' "$1" 2>/dev/null | tail -1; }
th_ms() { th_line "$1" | sed -nE 's/.* median step ([0-9.]+) ms .*/\1/p'; }
th_tps() { th_line "$1" | sed -nE 's/.* ([0-9]+) tok\/s .*/\1/p'; }
th_mem() { th_line "$1" | sed -nE 's/.* maxmem ([0-9.]+) GiB.*/\1/p'; }
th_show() { local l; l=$(th_line "$1"); [ -n "$l" ] && echo "$l" || echo "no result: $(tail -1 "$1" 2>/dev/null)"; }
# a / b to 3 decimals, "n/a" when either is missing or b is 0
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a == "" || b == "" || a == "n/a" || b == "n/a" || b + 0 == 0) print "n/a"; else printf "%.3f\n", a / b}'; }
# PASS / FAIL for "$1 $2 $3" (op >=, <=, <, >); a missing number fails
verdict() { awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN {if (v == "" || v == "n/a") {print "FAIL (no number)"; exit}
  v += 0; t += 0; ok = (op == ">=") ? v >= t : (op == "<=") ? v <= t : (op == "<") ? v < t : (op == ">") ? v > t : 0
  print (ok ? "PASS" : "FAIL")}'; }
fmt0() { [ -n "$1" ] && printf "%.0f" "$1" || echo "n/a"; }
na() { [ -n "$1" ] && echo "$1" || echo "n/a"; }
# the PyTorch peer under torchrun: $1 log, $2 processes, then the peer's arguments
torch_dp() { local log=$1 np=$2; shift 2
  timeout -k 20 240 "${TORCHRUN[@]}" --standalone --nproc_per_node="$np" "$TB" "$@" > "$log" 2>&1; }

if has build; then
  t0=$(date +%s)
  if timeout -k 30 900 bash scripts/device-build.sh build-gpu > "$LOG_DIR/build.log" 2>&1; then note "build: ok ($(( $(date +%s) - t0 )) s)"; else note "build: FAILED"; tail -30 "$LOG_DIR/build.log"; exit 1; fi
  note "build: $(source scripts/device-env.sh; "$ZGPT" --version 2>&1 | grep -E '^  (cuda|mpi|nccl) ' | sed -E 's/ +/ /g' | tr '\n' ';')"
fi
source scripts/device-env.sh

if has ops; then
  # (300 s: since issue 21 the attention checks run on both paths and LayerNorm on both kernel families)
  if timeout -k 20 300 build-gpu/gpu_test_ops_cuda > "$LOG_DIR/ops.log" 2>&1; then r=ok; else r=FAILED; fi
  note "ops: $r ($(tail -1 "$LOG_DIR/ops.log"))"
  # a bad ZGPT_GEMV is refused with one line naming it (at the first product: the decode bench's first matmul)
  ZGPT_GEMV=bogus ZG_BENCH_ONLY=decode timeout -k 20 60 build-gpu/gpu_test_ops_cuda --bench > "$LOG_DIR/ops_gemv_bad.log" 2>&1
  rc=$?
  n=$(grep -c 'ZGPT_GEMV=bogus' "$LOG_DIR/ops_gemv_bad.log")
  note "ops: ZGPT_GEMV=bogus exit $rc, $n line(s) naming it $([ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ "$n" -ge 1 ] && echo PASS || echo FAIL)"
fi

# attn (issue 21): at GPT-2 XL's training shape (B=16, T=1024, C=1600, NH=25, bf16), the op bench's attention
# forward/backward on zgpt's kernels and on cuDNN's fused attention (ZGPT_ATTENTION=own|cudnn), against
# PyTorch's SDPA on its cuDNN backend (torch.nn.attention.sdpa_kernel(CUDNN_ATTENTION), same card, medians
# after warm-up), goal >= 1.0x in both directions; LayerNorm forward/backward bandwidth, goal >= 80% of the
# card's (its nominal figure from its memory clock and bus width, 4.8 TB/s on the H200 the goal names; the
# device-to-device copy's GB/s is the practical peak).
if has attn; then
  ZG_BENCH_ONLY=attn timeout -k 20 180 build-gpu/gpu_test_ops_cuda --bench > "$LOG_DIR/attn_bench.log" 2>&1
  timeout -k 20 180 python3 bench/torch_baseline/sdpa_bench.py xl16 > "$LOG_DIR/attn_torch.log" 2>&1
  read -r _ _ _ of _ ob _ _ <<< "$(grep '^ATTN own fwd_ms ' "$LOG_DIR/attn_bench.log")"
  read -r _ _ _ cf _ cb _ cran _ cdq <<< "$(grep '^ATTN cudnn fwd_ms ' "$LOG_DIR/attn_bench.log")"
  read -r _ _ _ _ _ qb _ _ _ _ <<< "$(grep '^ATTN cudnn-dq fwd_ms ' "$LOG_DIR/attn_bench.log")"
  cws=$(sed -nE 's/^ATTN cudnn kept_MiB ([0-9.]+).*/\1/p' "$LOG_DIR/attn_bench.log")
  read -r _ _ _ _ tf _ tb <<< "$(grep '^SDPA cudnn xl16 fwd_ms ' "$LOG_DIR/attn_torch.log")"
  note "attn XL B=16 ms fwd/bwd: zgpt kernels $(na "$of")/$(na "$ob"); zgpt cuDNN path $(na "$cf")/$(na "$cb") (cuDNN ran: $(na "$cran"), zgpt's dQ kernel: $(na "$cdq"), workspace $(na "$cws") MiB);" \
       "backward with cuDNN's own dQ product (ZGPT_SDPA_DQ=cudnn) $(na "$qb");" \
       "torch SDPA cuDNN $(na "$tf")/$(na "$tb")$([ -z "$tf" ] && echo " (torch: $(tail -1 "$LOG_DIR/attn_torch.log"))")"
  # zgpt's backward is deterministic (bitwise resume): torch's with use_deterministic_algorithms(True) too
  read -r _ _ _ _ tdf _ tdb <<< "$(grep '^SDPA cudnn-det xl16 fwd_ms' "$LOG_DIR/attn_torch.log")"
  note "attn torch SDPA cuDNN with use_deterministic_algorithms(True): $(na "$tdf")/$(na "$tdb") ms fwd/bwd$([ -z "$tdf" ] && echo " ($(grep '^SDPA cudnn-det' "$LOG_DIR/attn_torch.log" | head -1))");" \
       "zgpt cuDNN path backward against it $(ratio "$tdb" "$cb")"
  for p in "zgpt kernels:$of:$ob" "zgpt cuDNN path:$cf:$cb" "cuDNN path with cuDNN's dQ:$cf:$qb"; do
    IFS=: read -r lab f b <<< "$p"
    rf=$(ratio "$tf" "$f"); rb=$(ratio "$tb" "$b")
    note "attn speed vs torch SDPA cuDNN, single calls ($lab): forward $rf, backward $rb (torch's host dispatch counted: the goal is judged back to back, below)"
  done
  cp=$(sed -nE 's/^COPY GBs ([0-9.]+).*/\1/p' "$LOG_DIR/attn_bench.log")
  hn=$(sed -nE 's/^HBM nominal_GBs ([0-9]+).*/\1/p' "$LOG_DIR/attn_bench.log")
  # LN: the default (row-group) kernels, with the goal's verdict; LNgroup: ZGPT_LN=group (the backward without
  # its asynchronous next-row copies); LNwarp: the warp-per-row kernels (ZGPT_LN=warp)
  for k in LN LNgroup LNwarp; do
    for d in fwd bwd bwd_y; do
      read -r _ _ _ ms _ mb _ gbs _ pn _ pc <<< "$(grep "^$k $d ms " "$LOG_DIR/attn_bench.log")"
      v=${k#LN}
      note "attn layernorm $d${v:+ (ZGPT_LN=$v)} (XL B=16): $(na "$ms") ms, $(na "$mb") MB, $(na "$gbs") GB/s = $(na "$pn")% of the card's nominal $(na "$hn") GB/s" \
           "$([ "$k" = LN ] && verdict "$pn" ">=" 80) $([ "$k" = LN ] && echo '(>= 80%)'), $(na "$pc")% of the copy's $(na "$cp") GB/s"
    done
  done
  # LN2's backward with the projections' bias sums (v0.36): in the row-group kernel, by passes of their own, none
  read -r _ _ sf _ ss _ sp <<< "$(grep '^LNSUMS ' "$LOG_DIR/attn_bench.log")"
  note "attn layernorm bwd with the projections' bias sums (XL B=16): fused $(na "$sf") ms, separate passes $(na "$ss") ms, without the sums $(na "$sp") ms"
  # the same, timed back to back (20 calls between one pair of events, both sides): the GPU's time per call
  # without the host's dispatch before a single call (torch's backward alone, its forward's graph retained)
  read -r _ _ _ _ sof _ sob <<< "$(grep '^ATTN own stream ' "$LOG_DIR/attn_bench.log")"
  read -r _ _ _ _ scf _ scb <<< "$(grep '^ATTN cudnn stream ' "$LOG_DIR/attn_bench.log")"
  read -r _ _ _ _ _ stf _ stb <<< "$(grep '^SDPA cudnn xl16 stream ' "$LOG_DIR/attn_torch.log")"
  rf=$(ratio "$stf" "$scf"); rb=$(ratio "$stb" "$scb")
  note "attn back to back, ms fwd/bwd: zgpt kernels $(na "$sof")/$(na "$sob"); zgpt cuDNN path $(na "$scf")/$(na "$scb");" \
       "torch SDPA cuDNN $(na "$stf")/$(na "$stb"); cuDNN path vs torch (the goal's figure): forward $rf" \
       "$(verdict "$rf" ">=" 1) (>= 1), backward $rb $(verdict "$rb" ">=" 1) (>= 1)"
  # the ceiling at LayerNorm's size: a device-to-device copy of the forward's and the backward's bytes
  for d in fwd bwd; do
    read -r _ _ _ ms _ mb _ gbs _ pn <<< "$(grep "^COPYLN $d ms " "$LOG_DIR/attn_bench.log")"
    read -r _ _ _ sms _ sgbs _ spn <<< "$(grep "^COPYLN $d stream_ms " "$LOG_DIR/attn_bench.log")"
    note "attn device copy of LayerNorm $d's bytes: $(na "$ms") ms, $(na "$mb") MB, $(na "$gbs") GB/s = $(na "$pn")% of the card's nominal $(na "$hn") GB/s;" \
         "back to back $(na "$sms") ms, $(na "$sgbs") GB/s = $(na "$spn")%"
  done
  # LayerNorm back to back (20 calls between two events: no launch after the first event counted), the goal's
  # share again; and PyTorch's LayerNorm (eager and compiled) and copies of the same bytes, timed the same way
  for d in fwd bwd bwd_y; do
    read -r _ _ _ sms _ sgbs _ spn <<< "$(grep "^LN $d stream_ms " "$LOG_DIR/attn_bench.log")"
    note "attn layernorm $d back to back: $(na "$sms") ms, $(na "$sgbs") GB/s = $(na "$spn")% of nominal $(verdict "$spn" ">=" 80) (>= 80%)"
  done
  timeout -k 20 240 python3 bench/torch_baseline/ln_bench.py > "$LOG_DIR/ln_torch.log" 2>&1
  note "attn torch LayerNorm (XL B=16, back to back): $(grep -E '^LNTORCH' "$LOG_DIR/ln_torch.log" | awk -v n="$hn" '{printf "%s %s ms %s GB/s = %.1f%%; ", $2, $4, $8, (n > 0 ? 100 * $8 / n : 0)}')$(grep -qE '^LNTORCH' "$LOG_DIR/ln_torch.log" || tail -1 "$LOG_DIR/ln_torch.log")"
fi

if has watchdog; then
  if timeout -k 20 200 build-gpu/gpu_test_comm_nccl_watchdog > "$LOG_DIR/watchdog.log" 2>&1; then r=ok; else r=FAILED; fi
  note "watchdog: $r ($(tail -1 "$LOG_DIR/watchdog.log"))"; grep -E "^(ok|FAIL|  )" "$LOG_DIR/watchdog.log" | sed 's/^/watchdog: /' | tee -a "$SUMMARY" >/dev/null
fi

if has parity; then
  if timeout -k 20 200 python3 tests/parity/hf_parity.py --dump build-gpu/parity_hf_dump --B 2 --T 64 \
       --precisions fp32,bf16,fp32:lnout,bf16:lnout --work "$W/parity" > "$LOG_DIR/parity.log" 2>&1; then r=ok; else r=FAILED; fi
  rm -rf "$W/parity"
  note "parity (GPT-2 XL shape vs transformers): $r"; grep -E "^(ok|FAIL) " "$LOG_DIR/parity.log" | tee -a "$SUMMARY" >/dev/null
fi

# A small from-scratch model on Tiny Shakespeare (prepared once).
small_cfg() { # $1 out_dir, then extra --set pairs
  local out=$1; shift
  echo --config configs/shakespeare_small.json --set data="$W/data" --set out_dir="$out" --set max_iters=200 \
       --set eval_interval=50 --set eval_iters=10 --set log_interval=10 --set lr_decay_iters=200 "$@"
}
# (the GPT-2 XL phases train on it too)
# prepared for every call (about a second): a list of the phases that need it missed attloan's training runs
if [ -x "$ZGPT" ]; then
  "$ZGPT" prepare --input data/tinyshakespeare/input.txt --out "$W/data" > "$LOG_DIR/prepare.log" 2>&1
fi
# ab_train TAG VAR KIND [--set ...]: the small model trained with VAR=0 and with VAR=1 ($W/TAG_KIND_0, _1); prints
# "ok, ..." when the iteration lines (loss, lr, grad_norm) are identical, the final checkpoints byte-identical and
# the VAR=1 run kept its recorded passes, else "FAILED ..." with the first differences (and returns 1)
ab_lines() { grep '"loss": [0-9]' "$1/metrics.jsonl" | sed -E 's/, "tokens_per_sec": [^,]+, "time_ms": [^,]+//; s/, "mfu": [^,}]+//'; }
ab_train() {
  local tag=$1 var=$2 kind=$3 v a b same=1 offn f; shift 3
  for v in 0 1; do
    env "$var=$v" timeout -k 20 120 "$ZGPT" train $(small_cfg "$W/${tag}_${kind}_$v" "$@") --device cuda > "$LOG_DIR/${tag}_${kind}_$v.log" 2>&1
  done
  a=$(ab_lines "$W/${tag}_${kind}_0"); b=$(ab_lines "$W/${tag}_${kind}_1")
  for f in "$W/${tag}_${kind}_0/final"/*.bin; do cmp -s "$f" "$W/${tag}_${kind}_1/final/$(basename "$f")" || same=0; done
  offn=$(grep -c "launched op by op" "$LOG_DIR/${tag}_${kind}_1.log")
  if [ -n "$a" ] && [ "$a" = "$b" ] && [ $same = 1 ] && [ "$offn" = 0 ]; then
    echo "ok, $(echo "$a" | wc -l) identical iteration lines (loss, lr, grad_norm), byte-identical final checkpoint, recording kept on"
    return 0
  fi
  echo "FAILED (recording turned off: $offn): $(diff <(echo "$a") <(echo "$b") | head -5 | tr '\n' ' ')"
  return 1
}
vals() { grep '"val_loss"' "$1/metrics.jsonl" | sed -E 's/.*"val_loss": ([0-9.eE+-]+).*/\1/' | tr '\n' ' '; }
maxdiff() { paste <(echo "$1" | tr ' ' '\n') <(echo "$2" | tr ' ' '\n') | awk 'NF==2 {d=$1-$2; if (d<0) d=-d; if (d>m) m=d} END {printf "%.5f", m}'; }

if has curve; then
  # (1) The kernels: CPU fp32 and CUDA fp32 from the same seed take the same steps. Per-iteration train
  #     losses agree within 2e-3 for iterations 0-30. (Later, training at peak lr amplifies any change
  #     in summation order: the two drift apart by up to ~0.1 around step 50 and re-converge, so later
  #     iterations compare statistically, below.)
  # (2) bf16 against the CPU's fp32 "within bf16 noise": one 200-iteration run is chaotic at this lr
  #     (a loss spike or not decides its last val loss to +-0.1; one seed of one build moved 0.13 from
  #     a change that is more accurate per op), so K seeds run on the CPU (fp32), in CUDA fp32 and in
  #     CUDA bf16 (the GPU runs spread over the visible GPUs, the CPU runs in parallel with them), and
  #     the paired differences of the final val losses d_k = bf16_k - cpu_k decide: pass when
  #     |mean d| <= max(0.05, 3 x its standard error). A systematic bf16 loss of 0.1 with the seed
  #     spread seen here (sd ~0.1) fails at K = 8. CUDA fp32 - CPU is reported the same way.
  #     ZG_CURVE_SEEDS (default 8) sets K; ZG_CURVE_ALT=BINARY also runs another build's bf16 seeds
  #     (an A/B diagnosis: its paired difference against the CPU's).
  K=${ZG_CURVE_SEEDS:-8}
  cth=$(( $(nproc) / K )); [ "$cth" -lt 1 ] && cth=1; [ "$cth" -gt 8 ] && cth=8
  for s in $(seq 1337 $((1337 + K - 1))); do
    OMP_NUM_THREADS=$cth OPENBLAS_NUM_THREADS=1 timeout -k 20 400 "$ZGPT" train $(small_cfg "$W/c_cpu_$s" --set seed=$s --set log_interval=1) \
        --device cpu > "$LOG_DIR/curve_cpu_$s.log" 2>&1 &
  done
  jobs_for() { # $1 GPU slot: every NGPU-th (seed, kind) pair, one after the other on that GPU
    local i=0 s kind
    for s in $(seq 1337 $((1337 + K - 1))); do
      for kind in fp32 bf16 ${ZG_CURVE_ALT:+alt}; do
        if [ $((i % NGPU)) = "$1" ]; then
          local bin=$ZGPT dt=$kind
          [ "$kind" = alt ] && bin=$ZG_CURVE_ALT && dt=bf16
          CUDA_VISIBLE_DEVICES=${GPUS[$1]} timeout -k 20 120 "$bin" train $(small_cfg "$W/c_${kind}_$s" --set dtype=$dt --set seed=$s \
              --set log_interval=1) --device cuda > "$LOG_DIR/curve_${kind}_$s.log" 2>&1
        fi
        i=$((i + 1))
      done
    done
  }
  for g in $(seq 0 $((NGPU - 1))); do jobs_for "$g" & done
  wait
  cp "$LOG_DIR/curve_cpu_1337.log" "$LOG_DIR/curve_cpu.log"; cp "$LOG_DIR/curve_fp32_1337.log" "$LOG_DIR/curve_gpu_fp32.log"
  cp "$LOG_DIR/curve_bf16_1337.log" "$LOG_DIR/curve_gpu_bf16.log"
  c=$(vals "$W/c_cpu_1337"); g=$(vals "$W/c_fp32_1337"); b=$(vals "$W/c_bf16_1337")
  note "curve val loss CPU fp32 : $c"
  note "curve val loss CUDA fp32: $g (max |diff| vs CPU $(maxdiff "$c" "$g"))"
  note "curve val loss CUDA bf16: $b (max |diff| vs CPU $(maxdiff "$c" "$b"))"
  tl() { grep -E '^iter ([0-9]|[12][0-9]|30):' "$1" | sed -E 's/^iter ([0-9]+): loss ([0-9.]+).*/\2/'; }
  early=$(maxdiff "$(tl "$LOG_DIR/curve_cpu.log" | tr '\n' ' ')" "$(tl "$LOG_DIR/curve_gpu_fp32.log" | tr '\n' ' ')")
  nearly=$(tl "$LOG_DIR/curve_cpu.log" | wc -l)
  final() { local v; v=$(vals "$1" | awk '{print $NF}'); echo "${v:-NA}"; }  # NA: the run failed
  table=""; for s in $(seq 1337 $((1337 + K - 1))); do
    table+="$s $(final "$W/c_cpu_$s") $(final "$W/c_fp32_$s") $(final "$W/c_bf16_$s") ${ZG_CURVE_ALT:+$(final "$W/c_alt_$s")}"$'\n'; done
  echo "$table" > "$LOG_DIR/curve_seeds.txt"
  note "curve seeds (seed, final val CPU fp32, CUDA fp32, CUDA bf16${ZG_CURVE_ALT:+, alt bf16}): $(echo "$table" | awk 'NF' | tr '\n' ';')"
  # paired statistics of column $1 minus column 2 (the CPU's fp32): n mean sd se
  pstat() { echo "$table" | awk -v c="$1" 'NF >= c && $2 != "NA" && $c != "NA" {d = $c - $2; n++; s += d; q += d * d}
    END {if (n < 2) {print 0, "", "", ""; exit} m = s / n; v = (q - n * m * m) / (n - 1); if (v < 0) v = 0; sd = sqrt(v); printf "%d %.4f %.4f %.4f\n", n, m, sd, sd / sqrt(n)}'; }
  read -r n32 m32 sd32 se32 <<< "$(pstat 3)"
  read -r n16 m16 sd16 se16 <<< "$(pstat 4)"
  spread=$(echo "$table" | awk 'NF >= 2 && $2 != "NA" {n++; s += $2; q += $2 * $2} END {if (n > 1) printf "%.4f", sqrt((q - s * s / n) / (n - 1))}')
  note "curve: fp32 iters 0-30 (CPU vs CUDA, seed 1337) max |diff| $early over $nearly iterations;" \
       "final val minus the CPU's, paired over seeds: CUDA fp32 n $n32 mean $m32 sd $sd32 se $se32;" \
       "CUDA bf16 n $n16 mean $m16 sd $sd16 se $se16 (CPU seed-to-seed sd $spread)"
  if [ -n "${ZG_CURVE_ALT:-}" ]; then read -r na ma sda sea <<< "$(pstat 5)"; note "curve: alt bf16 - CPU over $na seeds: mean $ma, sd $sda, se $sea"; fi
  if [ "$nearly" -ge 31 ] && [ "$n16" -ge 4 ] && awk -v e="$early" -v m="$m16" -v se="$se16" \
       'BEGIN {if (m < 0) m = -m; t = 3 * se; if (t < 0.05) t = 0.05; exit !(e < 0.002 && m <= t)}'; then
    note "curve: ok"; else note "curve: FAILED"; fi
  # eval and sample on the GPU, from the bf16 run's checkpoint: the same loss as the CPU's eval of it,
  # and samples reproducible for a seed.
  ec=$("$ZGPT" eval --model "$W/c_bf16_1337" --data "$W/data/val_000000.bin" --full --json --device cpu 2>&1 | tail -1)
  eg=$("$ZGPT" eval --model "$W/c_bf16_1337" --data "$W/data/val_000000.bin" --full --json --device cuda 2>&1 | tail -1)
  s1=$("$ZGPT" sample --model "$W/c_bf16_1337" --prompt "ROMEO:" --max-new-tokens 40 --seed 7 --device cuda 2>/dev/null)
  s2=$("$ZGPT" sample --model "$W/c_bf16_1337" --prompt "ROMEO:" --max-new-tokens 40 --seed 7 --device cuda 2>/dev/null)
  echo "$s1" > "$LOG_DIR/sample_gpu.log"
  note "eval --full: cpu $ec; cuda $eg"
  if [ -n "$s1" ] && [ "$s1" = "$s2" ]; then note "sample on cuda: reproducible for a seed: ok"; else note "sample on cuda: FAILED"; fi
fi

if has resume; then
  timeout -k 20 90 "$ZGPT" train $(small_cfg "$W/rs" --set max_iters=40 --set eval_interval=20) --device cuda > "$LOG_DIR/resume_straight.log" 2>&1
  timeout -k 20 90 "$ZGPT" train $(small_cfg "$W/rp" --set max_iters=20 --set eval_interval=20) --device cuda > "$LOG_DIR/resume_a.log" 2>&1
  timeout -k 20 90 "$ZGPT" train $(small_cfg "$W/rp" --set max_iters=40 --set eval_interval=20) --device cuda --resume > "$LOG_DIR/resume_b.log" 2>&1
  l1=$(grep '"loss": [0-9]' "$W/rs/metrics.jsonl" | sed -E 's/.*"iter": ([0-9]+), "loss": ([^,]+),.*/\1 \2/')
  l2=$(grep '"loss": [0-9]' "$W/rp/metrics.jsonl" | sed -E 's/.*"iter": ([0-9]+), "loss": ([^,]+),.*/\1 \2/')
  # bf16: model.bin is header only (its checksum is that of the parameters); the weights are the shards' master
  same=1; for f in "$W/rs/final"/*.bin; do cmp -s "$f" "$W/rp/final/$(basename "$f")" || same=0; done
  if [ -n "$l1" ] && [ "$l1" = "$l2" ] && [ $same = 1 ] && "$ZGPT" eval --model "$W/rp" --data "$W/data" --iters 1 > "$LOG_DIR/resume_eval.log" 2>&1; then
    note "resume (CUDA bf16, 40 = 20 + resume + 20): ok, identical losses, byte-identical final model.bin and optimizer shards ($(du -sb "$W/rp/final" | cut -f1) bytes for $(grep -m1 -oE '[0-9.]+M parameters' "$LOG_DIR/resume_a.log")); eval reads it"
  else note "resume: FAILED"; diff <(echo "$l1") <(echo "$l2") | head -5 | tee -a "$SUMMARY"; fi
fi

if has stepab; then
  # Issue 17's one step path against the binary before it (ZG_STEP_BASE: a build-gpu/zgpt of main before
  # the change): one GPU, the same small runs (bf16 40 iterations, fp16 with loss-scale skips 30
  # iterations) give identical per-iteration loss, grad_norm and lr lines and byte-identical final
  # checkpoints; then zgpt bench 124M alternately with both binaries in the same call (ms/step ratio).
  if [ -z "${ZG_STEP_BASE:-}" ] || [ ! -x "$ZG_STEP_BASE" ]; then
    note "stepab: SKIPPED (set ZG_STEP_BASE to the zgpt binary built before the change)"
  else
    step_lines() { grep '"loss": [0-9]' "$1/metrics.jsonl" | sed -E 's/, "tokens_per_sec": [^,]+, "time_ms": [^,]+//; s/, "mfu": [^,}]+//'; }
    ok=1
    for kind in bf16 fp16; do
      sets=(--set max_iters=40 --set eval_interval=20)
      [ $kind = fp16 ] && sets=(--set max_iters=30 --set eval_interval=30 --set fp16.enabled=true --set fp16.loss_scale=0 \
          --set fp16.initial_scale_power=32 --set fp16.loss_scale_window=10 --set fp16.hysteresis=1)
      for who in base new; do
        bin=$ZGPT; [ $who = base ] && bin=$ZG_STEP_BASE
        timeout -k 20 120 "$bin" train $(small_cfg "$W/sab_${kind}_$who" "${sets[@]}") --device cuda > "$LOG_DIR/stepab_${kind}_$who.log" 2>&1
      done
      a=$(step_lines "$W/sab_${kind}_base"); b=$(step_lines "$W/sab_${kind}_new")
      same=1; for f in "$W/sab_${kind}_base/final"/*.bin; do cmp -s "$f" "$W/sab_${kind}_new/final/$(basename "$f")" || same=0; done
      if [ -n "$a" ] && [ "$a" = "$b" ] && [ $same = 1 ]; then
        note "stepab $kind: ok, $(echo "$a" | wc -l) identical iteration lines (loss, lr, grad_norm), byte-identical final checkpoint"
      else
        ok=0; note "stepab $kind: FAILED"; diff <(echo "$a") <(echo "$b") | head -5 | tee -a "$SUMMARY"
      fi
    done
    for r in 1 2; do
      for who in base new; do
        bin=$ZGPT; [ $who = base ] && bin=$ZG_STEP_BASE
        timeout -k 20 120 "$bin" bench --model gpt2 --batch 16 --seq 1024 --device cuda --steps 20 --warmup 3 --no-profile \
            "${BENCH_SET[@]}" > "$LOG_DIR/stepab_bench_${who}_$r.log" 2>&1
      done
    done
    msb=$(grep -h '^ms/step' "$LOG_DIR"/stepab_bench_base_*.log | awk '{s+=$2; n++} END {if (n) printf "%.1f", s/n}')
    msn=$(grep -h '^ms/step' "$LOG_DIR"/stepab_bench_new_*.log | awk '{s+=$2; n++} END {if (n) printf "%.1f", s/n}')
    note "stepab bench 124M B=16 (same call, 2 alternating runs each): before $msb ms/step, after $msn ms/step, ratio $(awk -v a="$msn" -v b="$msb" 'BEGIN { if (b > 0) printf "%.3f", a / b }')"
    [ $ok = 1 ] && note "stepab: ok" || note "stepab: FAILED"
  fi
fi

if has stepgraph; then
  # The recorded training passes (gpt2_graph.c) against the same runs launched op by op (ZGPT_STEP_GRAPH=0),
  # one GPU, one binary: bf16 40 iterations; fp16 30 iterations whose loss scale moves (skips, growth: the
  # forward's recording is redone); bf16 with 4 micro-steps a step (the deferred losses' ring, eval every 10).
  # Identical per-iteration lines and byte-identical final checkpoints; no run may turn recording off. Then
  # zgpt bench 124M with and without recording alternately (ms/step; bench prints the recording counts).
  ok=1
  for kind in bf16 fp16 accum4; do
    sets=(--set max_iters=40 --set eval_interval=20)
    [ $kind = fp16 ] && sets=(--set max_iters=30 --set eval_interval=30 --set fp16.enabled=true --set fp16.loss_scale=0 \
        --set fp16.initial_scale_power=32 --set fp16.loss_scale_window=10 --set fp16.hysteresis=1)
    [ $kind = accum4 ] && sets=(--set max_iters=30 --set eval_interval=10 --set gradient_accumulation_steps=4)
    r=$(ab_train stepgraph ZGPT_STEP_GRAPH $kind "${sets[@]}") || ok=0
    note "stepgraph $kind: $r"
  done
  for r in 1 2; do
    for g in 0 1; do
      ZGPT_STEP_GRAPH=$g timeout -k 20 120 "$ZGPT" bench --model gpt2 --batch 16 --seq 1024 --device cuda --steps 20 --warmup 3 --no-profile \
          "${BENCH_SET[@]}" > "$LOG_DIR/stepgraph_bench_${g}_$r.log" 2>&1
    done
  done
  ms0=$(grep -h '^ms/step' "$LOG_DIR"/stepgraph_bench_0_*.log | awk '{print $2}' | tr '\n' ' ')
  ms1=$(grep -h '^ms/step' "$LOG_DIR"/stepgraph_bench_1_*.log | awk '{print $2}' | tr '\n' ' ')
  note "stepgraph bench 124M B=16 (same call, alternating): op by op $ms0 ms/step, recorded $ms1 ms/step; $(grep -h '^training passes' "$LOG_DIR/stepgraph_bench_1_2.log")"
  [ $ok = 1 ] && note "stepgraph: ok" || note "stepgraph: FAILED"
fi

if has fp16; then
  timeout -k 20 90 "$ZGPT" train $(small_cfg "$W/f16" --set max_iters=60 --set fp16.enabled=true --set fp16.loss_scale=0 \
      --set fp16.initial_scale_power=32 --set fp16.loss_scale_window=10 --set fp16.hysteresis=1) --device cuda > "$LOG_DIR/fp16.log" 2>&1
  rc=$?
  down=$(grep -c "loss scale .* -> " "$LOG_DIR/fp16.log")
  last=$(grep -E '"val_loss"' "$W/f16/metrics.jsonl" | tail -1)
  note "fp16 dynamic loss scale: exit $rc, $down overflow/lower events; last eval $last"
  if [ "$rc" = 0 ] && [ "$down" -ge 1 ]; then note "fp16: ok"; else note "fp16: FAILED"; tail -5 "$LOG_DIR/fp16.log" | tee -a "$SUMMARY"; fi
  grep -m3 "loss scale" "$LOG_DIR/fp16.log" | tee -a "$SUMMARY" >/dev/null
fi

# One GPU, zgpt bench vs the PyTorch peer: $1 label, $2 zgpt bench log, $3 torch log. zgpt's memory is its
# backend's peak (device allocations), torch's its max_memory_allocated.
# zgpt_bench_note LABEL ZLOG: the zgpt bench figures, noted as soon as they exist (before the peer runs)
zgpt_bench_note() {
  note "zgpt $1${ZG_BENCH_SET:+ (ZG_BENCH_SET='$ZG_BENCH_SET')}: $(grep -E '^(tokens/s|ms/step|MFU|peak memory)|error' "$2" | tr '\n' ';')"
}
# bench_peer_report LABEL ZLOG TLOG: the PyTorch peer's result, then the zgpt/torch ratios with verdicts
bench_peer_report() {
  local zt tt zm tm rs mr
  note "torch ${1#* }: $(th_show "$3")"
  zt=$(zb_tps "$2"); tt=$(th_tps "$3"); zm=$(zb_mem "$2"); tm=$(th_mem "$3")
  rs=$(ratio "$zt" "$tt"); mr=$(ratio "$zm" "$tm")
  note "$1 ratio: zgpt/torch tokens/s $rs ($(fmt0 "$zt") / $(fmt0 "$tt")) $(verdict "$rs" ">=" 1) (>= 1);" \
       "zgpt/torch peak memory $mr (${zm:-n/a} / ${tm:-n/a} GiB) $(verdict "$mr" "<=" 1) (<= 1)"
}
if has bench; then
  timeout -k 20 120 "$ZGPT" bench --model gpt2 --batch 16 --seq 1024 --device cuda --steps 20 --warmup 3 "${BENCH_SET[@]}" > "$LOG_DIR/bench_zgpt_124m.log" 2>&1
  zgpt_bench_note "124M B=16" "$LOG_DIR/bench_zgpt_124m.log"
  [ -f $TB ] && timeout -k 20 200 python3 $TB --B 16 --steps 20 > "$LOG_DIR/bench_torch_124m.log" 2>&1
  bench_peer_report "bench 124M B=16" "$LOG_DIR/bench_zgpt_124m.log" "$LOG_DIR/bench_torch_124m.log"
fi

# The multi and faults runs: the small model, global batch 16 sequences (2 micro-steps of 8 on 1 GPU,
# 8 per GPU on 2, 4 per GPU on 4), 100 iterations, peak learning rate 1e-3. At the config's 2e-3 the
# run passes through loss spikes (clipped gradient norms of 4-9 around iteration 40-50) where any
# rounding difference moves the curve by up to 0.15 (seen on 4 GPUs, session 2026-11-28), so a
# comparison there says nothing about correctness.
mcfg() { echo --config configs/shakespeare_small.json --set data="$W/data" --set out_dir="$1" --set max_iters=100 \
    --set eval_interval=25 --set eval_iters=8 --set log_interval=10 --set lr_decay_iters=100 --set learning_rate=1e-3 \
    --set train_batch_size=16 --set batch_size=8 --set gradient_accumulation_steps=auto; }
# eval_iters counts micro-batches: 64 / micro-batch evaluates the same 64 sequences at every GPU count
mev() { echo --set batch_size="$1" --set eval_iters=$((64 / $1)); }
if has multi && [ "$NGPU" -ge 2 ]; then
  # Same global batch on 1 GPU and on 2 (and 4) GPUs. "bf16 noise" is measured on 1 GPU: the largest
  # gap between the reference curve (bf16, 8 x 2 micro-steps) and runs that differ from it only in
  # rounding: fp32, bf16 16 x 1, bf16 4 x 4 (the same 16 sequences per step, summed in another order).
  timeout -k 20 90 "$ZGPT" train $(mcfg "$W/m1") $(mev 8) --set dtype=bf16 --gpus 1 > "$LOG_DIR/multi_1.log" 2>&1
  ref=$(vals "$W/m1"); noise=0
  for var in "f32 8 fp32" "b16 16 bf16" "b4 4 bf16"; do
    set -- $var
    timeout -k 20 90 "$ZGPT" train $(mcfg "$W/m1$1") $(mev "$2") --set dtype="$3" --gpus 1 > "$LOG_DIR/multi_1_$1.log" 2>&1
    d=$(maxdiff "$ref" "$(vals "$W/m1$1")")
    note "multi: 1 GPU $3 micro-batch $2: val $(vals "$W/m1$1") (max |diff| $d)"
    noise=$(awk -v a="$noise" -v b="$d" 'BEGIN {print (b > a) ? b : a}')
  done
  tol=$(awk -v n="$noise" 'BEGIN{printf "%.4f", 2*n + 0.02}')
  note "multi: 1 GPU bf16 val $ref; bf16 noise (largest gap of the rounding variants) $noise -> tolerance $tol"
  mok=1
  counts="2"; [ "$NGPU" -ge 4 ] && counts="2 4"
  for ng in $counts; do
    for st in 0 1 2 3; do
      # micro-batch 16/ng x ng GPUs = the same 16 sequences per step as 1 GPU x 8 x 2 micro-steps
      timeout -k 20 90 "$ZGPT" train $(mcfg "$W/m${ng}s$st") $(mev $((16 / ng))) --set dtype=bf16 \
          --set zero_optimization.stage=$st --gpus $ng > "$LOG_DIR/multi_${ng}_s$st.log" 2>&1
      rc=$?; v=$(vals "$W/m${ng}s$st"); d=$(maxdiff "$ref" "$v")
      note "multi: $ng GPUs stage $st: exit $rc, val $v (max |diff| $d), $(grep 'peak cuda memory' "$LOG_DIR/multi_${ng}_s$st.log")"
      { [ "$rc" = 0 ] && [ "$(echo "$v" | wc -w)" -ge 4 ] && awk -v d="$d" -v t="$tol" 'BEGIN{exit !(d <= t)}'; } || mok=0
    done
  done
  # issue 22: gradients held back to the last micro-step (grad_accum_local_layers; the runs above have no
  # accumulation on 2+ GPUs): 2 GPUs x micro-batch 2 x 4 micro-steps, the same 16 sequences per step
  for var in "2 0" "2 -1" "2 4" "3 4"; do
    set -- $var
    timeout -k 20 90 "$ZGPT" train $(mcfg "$W/m2gl$1_$2") $(mev 2) --set dtype=bf16 --set zero_optimization.stage=$1 \
        --set grad_accum_local_layers=$2 --gpus 2 > "$LOG_DIR/multi_2_gl$1_$2.log" 2>&1
    rc=$?; v=$(vals "$W/m2gl$1_$2"); d=$(maxdiff "$ref" "$v")
    note "multi: 2 GPUs stage $1, 2 x 4 micro-steps, grad_accum_local_layers $2: exit $rc, val $v (max |diff| $d);" \
         "$(grep '^gradients:' "$LOG_DIR/multi_2_gl$1_$2.log" | cut -c1-120)"
    { [ "$rc" = 0 ] && [ "$(echo "$v" | wc -w)" -ge 4 ] && awk -v d="$d" -v t="$tol" 'BEGIN{exit !(d <= t)}'; } || mok=0
  done
  # bitwise resume at the same GPU count (2 GPUs, stage 2): 100 straight == 50 + resume + 50
  # keep_last_k 10: the cross-count resume below starts from iter_50 of this run
  timeout -k 20 90 "$ZGPT" train $(mcfg "$W/m2r") --set dtype=bf16 --set zero_optimization.stage=2 --set max_iters=50 --set keep_last_k=10 --gpus 2 > "$LOG_DIR/multi_r1.log" 2>&1
  timeout -k 20 90 "$ZGPT" train $(mcfg "$W/m2r") --set dtype=bf16 --set zero_optimization.stage=2 --set keep_last_k=10 --gpus 2 --resume > "$LOG_DIR/multi_r2.log" 2>&1
  la=$(grep '"loss": [0-9]' "$W/m2s2/metrics.jsonl" | sed -E 's/.*"iter": ([0-9]+), "loss": ([^,]+),.*/\1 \2/')
  lb=$(grep '"loss": [0-9]' "$W/m2r/metrics.jsonl" | sed -E 's/.*"iter": ([0-9]+), "loss": ([^,]+),.*/\1 \2/')
  if [ -n "$la" ] && [ "$la" = "$lb" ] && cmp -s "$W/m2s2/final/model.bin" "$W/m2r/final/model.bin"; then
    note "multi: resume on 2 GPUs (stage 2, 100 = 50 + resume + 50): ok, identical losses, byte-identical weights"
  else note "multi: resume on 2 GPUs: FAILED"; mok=0; fi
  # resume on another GPU count and stage: 50 iterations on 2 GPUs stage 2 (above), the rest on 1 GPU stage 1
  cp -r "$W/m2r" "$W/m21" 2>/dev/null; rm -rf "$W/m21/final" "$W/m21/iter_100"; echo iter_50 > "$W/m21/latest"
  timeout -k 20 90 "$ZGPT" train $(mcfg "$W/m21") --set dtype=bf16 --set zero_optimization.stage=1 --gpus 1 --resume > "$LOG_DIR/multi_r21.log" 2>&1
  rc=$?; v=$(vals "$W/m21" | awk '{print $NF}'); d=$(maxdiff "$(echo $ref | awk '{print $NF}')" "$v")
  note "multi: 2 GPUs (stage 2) -> resume on 1 GPU (stage 1): exit $rc, final val $v vs 1-GPU run (|diff| $d)"
  { [ "$rc" = 0 ] && awk -v d="$d" -v t="$tol" 'BEGIN{exit !(d <= t)}'; } || mok=0
  # Lamb without offload on 2 GPUs at stage 2 (the cut tensors' first pass on the device, their sums added
  # across the ranks) against Lamb on 1 GPU: within the bf16 noise, as AdamW's stages above
  lamb=(--set optimizer.type=Lamb --set optimizer.params.min_coeff=0.0001 --set optimizer.params.max_coeff=0.3)
  timeout -k 20 90 "$ZGPT" train $(mcfg "$W/ml1") $(mev 8) --set dtype=bf16 "${lamb[@]}" --gpus 1 > "$LOG_DIR/multi_lamb1.log" 2>&1
  timeout -k 20 90 "$ZGPT" train $(mcfg "$W/ml2") $(mev 8) --set dtype=bf16 "${lamb[@]}" --set zero_optimization.stage=2 --gpus 2 > "$LOG_DIR/multi_lamb2.log" 2>&1
  rc=$?; v1=$(vals "$W/ml1"); v=$(vals "$W/ml2"); d=$(maxdiff "$v1" "$v")
  note "multi: Lamb on 2 GPUs (stage 2, no offload): exit $rc, val $v vs 1 GPU $v1 (max |diff| $d, tolerance $tol)"
  { [ "$rc" = 0 ] && [ "$(echo "$v" | wc -w)" -ge 4 ] && awk -v d="$d" -v t="$tol" 'BEGIN{exit !(d <= t)}'; } || mok=0
  [ "$mok" = 1 ] && note "multi: ok" || note "multi: FAILED"
fi

# faults (2+ GPUs): a worker killed (kill -9) or hung (SIGSTOP) ends the whole job with a message
# naming the rank. The victim is the worker whose environment says ZGPT_RANK=1 (not the launcher or
# the `timeout` in front of it, whose command lines match too).
rank_pid() { # $1 a string of the job's command line, $2 rank -> that worker's pid
  local p; for p in $(pgrep -f -- "$1"); do
    tr '\0' '\n' < "/proc/$p/environ" 2>/dev/null | grep -qx "ZGPT_RANK=$2" && { echo "$p"; return; }
  done
}
if has faults && [ "$NGPU" -ge 2 ]; then
  fok=1
  # a dead worker ends the job promptly, naming the rank
  ( timeout -k 20 100 "$ZGPT" train $(mcfg "$W/mk") --set max_iters=100000 --set save_checkpoints=false --gpus 2 > "$LOG_DIR/multi_kill.log" 2>&1; echo "exit $?" >> "$LOG_DIR/multi_kill.log" ) &
  sleep 12; victim=$(rank_pid "out_dir=$W/mk" 1); t0=$(date +%s); kill -9 "$victim" 2>/dev/null
  wait; t1=$(date +%s)
  kmsg=$(grep -E "rank [0-9]+" "$LOG_DIR/multi_kill.log" | tail -2 | tr '\n' ' ')
  note "faults: kill -9 of one worker (pid $victim): job ended in $((t1 - t0)) s, $(tail -1 "$LOG_DIR/multi_kill.log"); message: $kmsg"
  { [ $((t1 - t0)) -le 60 ] && grep -qE "exit [1-9]" "$LOG_DIR/multi_kill.log"; } || fok=0
  # a worker that hangs (stopped, not dead): the other's NCCL wait times out (ZGPT_COMM_TIMEOUT) and
  # the job ends naming the rank, instead of spinning forever
  ( ZGPT_COMM_TIMEOUT=15 timeout -k 20 120 "$ZGPT" train $(mcfg "$W/mh") --set max_iters=100000 --set save_checkpoints=false --gpus 2 > "$LOG_DIR/multi_hang.log" 2>&1; echo "exit $?" >> "$LOG_DIR/multi_hang.log" ) & jp=$!
  sleep 12; victim=$(rank_pid "out_dir=$W/mh" 1); t0=$(date +%s); kill -STOP "$victim" 2>/dev/null
  # still running 40 s later (the timeout is 15 s): where rank 0's threads are, for the log
  ( sleep 40; r0=$(rank_pid "out_dir=$W/mh" 0)
    if [ -n "$r0" ]; then
      { echo "rank 0 (pid $r0) still running 40 s after the SIGSTOP; its threads:"
        for t in /proc/"$r0"/task/*; do echo "$(cat "$t/comm") wchan=$(cat "$t/wchan"); $(head -4 "$t/stack" 2>/dev/null | tr '\n' ' ')"; done
        # the device image has cuda-gdb but no gdb; either gives the host stacks
        dbg=$(command -v gdb || command -v cuda-gdb || true)
        [ -n "$dbg" ] && timeout -k 20 60 "$dbg" -batch -p "$r0" -ex "thread apply all bt 12" 2>&1 | grep -E "^(Thread|#)"
      } > "$LOG_DIR/multi_hang_stacks.log" 2>&1
    fi ) & dp=$!
  wait "$jp"; t1=$(date +%s); kill "$dp" 2>/dev/null; wait "$dp" 2>/dev/null
  hmsg=$(grep -E "timed out|has not finished|rank [0-9]+" "$LOG_DIR/multi_hang.log" | tail -2 | tr '\n' ' ')
  note "faults: SIGSTOP of one worker (pid $victim, ZGPT_COMM_TIMEOUT=15): job ended in $((t1 - t0)) s, $(tail -1 "$LOG_DIR/multi_hang.log"); message: $hmsg"
  { [ $((t1 - t0)) -le 60 ] && grep -qE "exit [1-9]" "$LOG_DIR/multi_hang.log" && grep -qE "timed out|has not finished" "$LOG_DIR/multi_hang.log"; } || fok=0
  [ "$fok" = 1 ] && note "faults: ok" || note "faults: FAILED"
fi

# mpinccl (2+ GPUs): the bootstrap of mpirun/srun (rank 0 makes the NCCL id and broadcasts it over MPI)
# on one machine: a 2-rank stage-2 bf16 run under mpirun must give the losses of the same run under
# --gpus 2 bitwise (the same collectives in the same order; only the bootstrap differs).
if has mpinccl && [ "$NGPU" -ge 2 ]; then
  if ! "$ZGPT" --version | grep -qE '^  mpi '; then note "mpinccl: skipped (this build has no MPI: $("$ZGPT" --version | grep -A4 '^communicators' | tr '\n' ' '))"
  elif ! command -v mpirun > /dev/null; then note "mpinccl: skipped (no mpirun)"
  else
    timeout -k 20 120 "$ZGPT" train $(mcfg "$W/mpg") --set dtype=bf16 --set zero_optimization.stage=2 --set max_iters=40 --gpus 2 > "$LOG_DIR/mpinccl_gpus.log" 2>&1
    timeout -k 20 150 mpirun --allow-run-as-root --oversubscribe -np 2 "$ZGPT" train $(mcfg "$W/mpm") --set dtype=bf16 \
        --set zero_optimization.stage=2 --set max_iters=40 --device cuda > "$LOG_DIR/mpinccl_mpirun.log" 2>&1
    rc=$?
    la=$(grep '"loss": [0-9]' "$W/mpg/metrics.jsonl" 2>/dev/null | sed -E 's/.*"iter": ([0-9]+), "loss": ([^,]+),.*/\1 \2/')
    lb=$(grep '"loss": [0-9]' "$W/mpm/metrics.jsonl" 2>/dev/null | sed -E 's/.*"iter": ([0-9]+), "loss": ([^,]+),.*/\1 \2/')
    if [ "$rc" = 0 ] && [ -n "$la" ] && [ "$la" = "$lb" ] && grep -q "2 ranks (ZeRO stage 2)" "$LOG_DIR/mpinccl_mpirun.log" \
       && grep -q "communicator nccl" "$LOG_DIR/mpinccl_mpirun.log"; then
      note "mpinccl: ok (mpirun -np 2 --device cuda: NCCL over MPI bootstrap, losses bitwise those of --gpus 2)"
    else note "mpinccl: FAILED (exit $rc; $(grep -m1 -E 'error|fatal' "$LOG_DIR/mpinccl_mpirun.log"))"; fi
  fi
fi

# GPT-2 XL from scratch on Tiny Shakespeare with the DeepSpeed guide's settings.
xlcfg() { echo --config configs/gpt2xl_finetune.json --deepspeed configs/ds_config_zero2.json --set init_from=scratch \
    --set n_layer=48 --set n_head=25 --set n_embd=1600 --set data="$W/data" --set out_dir="$1" --set save_checkpoints=false \
    --set eval_iters=1 --set eval_interval=1000 --set log_interval=1; }
# dp's configuration (the issue's "fast and lean" runs): xlcfg in bf16, micro-batch 16 per GPU, no accumulation
dpcfg() { echo $(xlcfg "$1") --set fp16.enabled=false --set bf16.enabled=true --set gradient_accumulation_steps=1 \
    --set train_micro_batch_size_per_gpu=16; }
if has xlstart; then
  t0=$(date +%s.%N)
  timeout -k 20 120 "$ZGPT" train $(xlcfg "$W/xs") --set max_iters=1 --set fp16.enabled=false --set bf16.enabled=true \
      --set gradient_accumulation_steps=1 --set train_micro_batch_size_per_gpu=16 --device cuda 2>&1 | \
    while IFS= read -r line; do echo "$line"; case "$line" in "iter 0:"*) echo "FIRST_STEP_AT $(date +%s.%N)";; esac; done > "$LOG_DIR/xlstart.log"
  t1=$(grep FIRST_STEP_AT "$LOG_DIR/xlstart.log" | awk '{print $2}')
  note "xlstart: GPT-2 XL (B=16, T=1024, bf16, from scratch, eval of 1+1 batches at iter 0): first step finished $(awk -v a="$t0" -v b="${t1:-0}" 'BEGIN{printf "%.1f", b-a}') s after 'zgpt train' started"
fi
# The DeepSpeed guide's GPT-2 XL configuration: ZeRO-2, micro-batch 1 x accumulation 32 on every GPU.
# max_iters 4 (bf16) / 8 (fp16): the medians are over the iterations from 1 that took a step (iteration 0
# warms up; from a loss scale of 2^16 the first 3-4 fp16 steps of this from-scratch run overflow and
# are skipped); a step is ~1.4-3 s.
if has guide && [ "$NGPU" -ge 2 ]; then
  GA=32   # configs/ds_config_zero2.json's gradient_accumulation_steps
  for prec in ${ZG_GUIDE_PRECS:-bf16 fp16}; do
    if [ $prec = bf16 ]; then pp=(--set fp16.enabled=false --set bf16.enabled=true --set max_iters=4); else pp=(--set max_iters=8); fi
    timeout -k 20 200 "$ZGPT" train $(xlcfg "$W/g_$prec") "${pp[@]}" "${GUIDE_SET[@]}" --gpus "$NGPU" > "$LOG_DIR/guide_$prec.log" 2>&1
    rc=$?; gl=$LOG_DIR/guide_$prec.log
    ms=$(zg_ms "$gl" 1); tps=$(zg_tps "$gl" 1)
    [ $prec = bf16 ] && guide_bf16_tps=$tps && guide_bf16_mem=$(zg_mem "$gl")
    note "guide (XL, $NGPU GPUs, ZeRO-2, micro-batch 1 x accumulation $GA, $prec${ZG_GUIDE_SET:+, ZG_GUIDE_SET='$ZG_GUIDE_SET'}): exit $rc;" \
         "$(awk -v m="$ms" 'BEGIN {if (m == "") print "n/a"; else printf "%.1f", m}') ms/step," \
         "$(awk -v m="$ms" -v g=$GA 'BEGIN {if (m == "") print "n/a"; else printf "%.2f", m / g}') ms/micro-step," \
         "$(fmt0 "$tps") tok/s (median of $(zg_n "$gl" 1) iterations from 1; $(zg_skips "$gl") skipped), peak $(na "$(zg_mem "$gl")") GiB/GPU"
  done
  if [ -f $TB ] && [ "${ZG_GUIDE_TORCH:-1}" = 1 ]; then
    # The peer discards its first 5 steps (compile, warm-up) and takes the median of the rest: 8 steps -> 3.
    torch_dp "$LOG_DIR/guide_torch_fsdp.log" "$NGPU" --layers 48 --heads 25 --embd 1600 --B 1 --ga $GA --dp fsdp --steps 8
    rc=$?; tl=$LOG_DIR/guide_torch_fsdp.log
    note "guide torch FSDP (SHARD_GRAD_OP, $NGPU GPUs, B=1 x ga $GA): exit $rc; $(fmt0 "$(th_tps "$tl")") tok/s," \
         "$(na "$(th_ms "$tl")") ms/step, maxmem $(na "$(th_mem "$tl")") GiB/GPU; $(th_show "$tl")"
    r=$(ratio "${guide_bf16_tps:-}" "$(th_tps "$tl")")
    note "guide speed: zgpt bf16 / torch FSDP tokens/s = $r $(verdict "$r" ">=" 1) (>= 1);" \
         "memory zgpt bf16 $(na "${guide_bf16_mem:-}") vs FSDP $(na "$(th_mem "$tl")") GiB/GPU (ratio $(ratio "${guide_bf16_mem:-}" "$(th_mem "$tl")"))"
  else note "guide: $TB missing, no torch comparison"; fi
fi
# Issue 22: the guide's job (bf16) with each grad_accum_local_layers value: how much of the per-micro-step
# gradient reduction holding parts back until the last micro-step saves, and what it costs in memory.
# max_iters 5: the median is over iterations 1-4 (iteration 0 warms up).
if has guidelocal && [ "$NGPU" -ge 2 ]; then
  GA=32
  for np in 2 4; do
    [ "$NGPU" -ge $np ] || { note "guidelocal: $np GPUs: only $NGPU visible, skipped"; continue; }
    if [ $np = 2 ]; then vs=${ZG_GL2:-0 -1 17 19} fsdp=${ZG_FSDP_MS2:-2223} lim=17 goal=2; else vs=${ZG_GL4:-0 -1 1 2} fsdp=${ZG_FSDP_MS4:-3626} lim=11 goal=2.5; fi
    for v in $vs; do
     for carry in 1 0; do
      # ZGPT_REDUCE_CARRY=0 (each micro-step waits for its reductions) as an A/B at the values in ZG_GL_CARRY0
      [ $carry = 1 ] || [[ " ${ZG_GL_CARRY0-0 -1} " == *" $v "* ]] || continue
      gl=$LOG_DIR/guidelocal_${np}_${v}_c$carry.log
      ZGPT_REDUCE_CARRY=$carry timeout -k 20 240 "$ZGPT" train $(xlcfg "$W/gl_${np}_${v}_$carry") --set fp16.enabled=false \
          --set bf16.enabled=true --set max_iters=5 --set grad_accum_local_layers=$v "${GUIDE_SET[@]}" --gpus $np > "$gl" 2>&1
      rc=$?
      ms=$(zg_ms "$gl" 1); tps=$(zg_tps "$gl" 1); mem=$(zg_mem "$gl")
      r=$(awk -v m="$ms" -v f="$fsdp" 'BEGIN {if (m == "" || m + 0 == 0) print "n/a"; else printf "%.3f", f / m}')
      red=$(sed -nE 's/^gradients: .*: ([0-9.]+ MB reduced per micro-step|[0-9.]+ MB per micro-step).*/\1/p; s/^gradients: every micro-step reduces all of them: ([0-9.]+ MB per micro-step).*/\1/p' "$gl" | head -1)
      note "guidelocal (XL, $np GPUs, ZeRO-2, 1 x $GA, bf16, grad_accum_local_layers $v, ZGPT_REDUCE_CARRY=$carry${ZG_GUIDE_SET:+, ZG_GUIDE_SET='$ZG_GUIDE_SET'}): exit $rc;" \
           "$(awk -v m="$ms" 'BEGIN {if (m == "") print "n/a"; else printf "%.1f", m}') ms/step," \
           "$(awk -v m="$ms" -v g=$GA 'BEGIN {if (m == "") print "n/a"; else printf "%.2f", m / g}') ms/micro-step," \
           "$(fmt0 "$tps") tok/s (median of $(zg_n "$gl" 1) iterations from 1), peak $(na "$mem") GiB/GPU" \
           "$(verdict "$mem" "<=" $lim) (<= $lim); $(na "$red") reduced; FSDP $fsdp ms/step / zgpt = $r" \
           "$(verdict "$r" ">=" $goal) (>= $goal)"
     done
    done
  done
fi
# Issue 6 "fast and lean", data parallel on 2 GPUs: GPT-2 XL, bf16, T=1024, micro-batch 16 per GPU, no accumulation.
# zgpt on 1 GPU and on 2 GPUs (ZeRO-2, the config's stage), torch DDP and FSDP (SHARD_GRAD_OP) on 2 GPUs.
# zgpt's medians are over iterations 3-11 (9 steps; 0-2 warm up: iteration 2 was ~10 ms slower in every
# run of session 2026-11-28); the peer's over its steps 5-11 (7 steps). Single steps vary by +-5 ms, so
# medians of 4 steps (the earlier setting) could not resolve differences of 1%.
dp_zgpt() { # $1 run name (log $LOG_DIR/$1.log), $2 GPUs
  timeout -k 20 240 "$ZGPT" train $(dpcfg "$W/$1") --set max_iters=12 "${DP2_SET[@]}" --gpus "$2" > "$LOG_DIR/$1.log" 2>&1
}
dp_show() { # $1 log, $2 exit status
  echo "exit $2; $(na "$(zg_ms "$1" 3)") ms/iter, $(fmt0 "$(zg_tps "$1" 3)") tok/s (median of $(zg_n "$1" 3) iterations from 3)," \
       "peak $(na "$(zg_mem "$1")") GiB/GPU"
}
# dp_run N: zgpt on 1 GPU and on N GPUs (ZeRO-2), torch DDP and FSDP on N GPUs, then the verdicts.
dp_run() {
  local n=$1 D=$LOG_DIR rc dp z1 zn zm td tf fm best bestn sc rs mr
  note "dp$n: GPT-2 XL, bf16, T=1024, micro-batch 16/GPU, no accumulation, $n GPUs; ZG_DP2_SET='${ZG_DP2_SET:-}'"
  dp_zgpt "dp${n}_zgpt1" 1; rc=$?
  note "dp$n zgpt 1 GPU: $(dp_show "$D/dp${n}_zgpt1.log" $rc)"
  dp_zgpt "dp${n}_zgpt$n" "$n"; rc=$?
  note "dp$n zgpt $n GPUs ZeRO-2: $(dp_show "$D/dp${n}_zgpt$n.log" $rc)"
  grep -m3 -E "^iter [2-4]: time \(ms" "$D/dp${n}_zgpt$n.log" | tee -a "$SUMMARY" >/dev/null
  for dp in ddp fsdp; do
    if [ -f $TB ]; then torch_dp "$D/dp${n}_torch_$dp.log" "$n" --layers 48 --heads 25 --embd 1600 --B 16 --dp $dp --steps 12; rc=$?; else rc=missing; fi
    note "dp$n torch $dp $n GPUs: exit $rc; $(fmt0 "$(th_tps "$D/dp${n}_torch_$dp.log")") tok/s, $(na "$(th_ms "$D/dp${n}_torch_$dp.log")") ms/step," \
         "maxmem $(na "$(th_mem "$D/dp${n}_torch_$dp.log")") GiB/GPU; $(th_show "$D/dp${n}_torch_$dp.log")"
  done
  z1=$(zg_tps "$D/dp${n}_zgpt1.log" 3); zn=$(zg_tps "$D/dp${n}_zgpt$n.log" 3); zm=$(zg_mem "$D/dp${n}_zgpt$n.log")
  td=$(th_tps "$D/dp${n}_torch_ddp.log"); tf=$(th_tps "$D/dp${n}_torch_fsdp.log"); fm=$(th_mem "$D/dp${n}_torch_fsdp.log")
  best=$(awk -v a="$td" -v b="$tf" 'BEGIN {m = (a + 0 > b + 0) ? a : b; if (m + 0 > 0) print m}')
  bestn=$(awk -v a="$td" -v b="$tf" 'BEGIN {print (a + 0 > b + 0) ? "DDP" : "FSDP"}')
  sc=$(awk -v a="$zn" -v b="$z1" -v n="$n" 'BEGIN {if (a == "" || b + 0 == 0) print "n/a"; else printf "%.1f\n", 100 * a / (n * b)}')
  rs=$(ratio "$zn" "$best"); mr=$(ratio "$zm" "$fm")
  note "dp$n tokens/s: zgpt 1 GPU $(fmt0 "$z1"), zgpt $n GPUs $(fmt0 "$zn"), torch DDP $(fmt0 "$td"), torch FSDP $(fmt0 "$tf")"
  note "dp$n speed: zgpt $n GPUs / max(DDP, FSDP) = $rs (vs $bestn) $(verdict "$rs" ">=" 1) (>= 1)"
  note "dp$n scaling: zgpt $n GPUs / ($n x zgpt 1 GPU) = $sc% $(verdict "$sc" ">=" 95) (>= 95%)"
  note "dp$n memory: zgpt ${zm:-n/a} GiB/GPU vs FSDP ${fm:-n/a} GiB/GPU (ratio $mr; DDP $(na "$(th_mem "$D/dp${n}_torch_ddp.log")"), zgpt 1 GPU" \
       "$(na "$(zg_mem "$D/dp${n}_zgpt1.log")")) $(verdict "$mr" "<" 1) (< FSDP)"
}
for n in 2 4; do
  if has "dp$n" && [ "$NGPU" -lt "$n" ]; then note "dp$n: skipped ($NGPU GPUs visible, $n needed)"; fi
done
if has zero2xl && [ "$NGPU" -lt 2 ]; then note "zero2xl: skipped ($NGPU GPU visible, 2 needed)"; fi
if has dp2 && [ "$NGPU" -ge 2 ]; then dp_run 2; fi
if has dp4 && [ "$NGPU" -ge 4 ]; then dp_run 4; fi
if ! has dp2 && has zero2xl && [ "$NGPU" -ge 2 ]; then
  dp_zgpt zero2xl 2; rc=$?
  note "zero2xl (XL, 2 GPUs, ZeRO-2, micro-batch 16, bf16${ZG_DP2_SET:+, ZG_DP2_SET='$ZG_DP2_SET'}): $(dp_show "$LOG_DIR/zero2xl.log" $rc)"
fi
# dpwc (2+ GPUs): where a zgpt train step's time goes (wall_clock_breakdown: every phase synchronised,
# so these runs are slower than dp2's and are not timed runs), 1 GPU and 2 GPUs, the dp2 configuration.
if has dpwc && [ "$NGPU" -ge 2 ]; then
  for n in 1 2; do
    timeout -k 20 200 "$ZGPT" train $(dpcfg "$W/wc$n") --set max_iters=5 --set wall_clock_breakdown=true "${DP2_SET[@]}" \
        --gpus "$n" > "$LOG_DIR/dpwc_$n.log" 2>&1
    note "dpwc $n GPU(s) (exit $?):"; grep -E "^iter [2-4]: " "$LOG_DIR/dpwc_$n.log" | tee -a "$SUMMARY" >/dev/null
  done
fi
# ab (1+ GPUs): A/B variants of dp's zgpt run (GPT-2 XL, bf16, micro-batch 16/GPU), one after another on
# the same GPUs: ZG_AB="name|ENV=V ...|--set k=v ...;name2|...|..." (an empty field keeps the default),
# each on ZG_AB_GPUS GPUs (default: all visible; a variant whose name ends in "@1" runs on one).
if has ab; then
  IFS=';' read -r -a AB_VARIANTS <<< "${ZG_AB:-base||}"
  for v in "${AB_VARIANTS[@]}"; do
    IFS='|' read -r ab_name ab_env ab_set <<< "$v"
    ab_name=$(echo "$ab_name" | tr -d ' '); ab_n=${ZG_AB_GPUS:-$NGPU}; [[ "$ab_name" == *@1 ]] && ab_n=1
    read -r -a ab_envs <<< "$ab_env"; read -r -a ab_sets <<< "$ab_set"
    env "${ab_envs[@]}" timeout -k 20 200 "$ZGPT" train $(dpcfg "$W/ab_$ab_name") --set max_iters="${ZG_AB_ITERS:-12}" \
        "${ab_sets[@]}" --gpus "$ab_n" > "$LOG_DIR/ab_$ab_name.log" 2>&1
    note "ab $ab_name ($ab_n GPUs; env '$ab_env'; '$ab_set'): $(dp_show "$LOG_DIR/ab_$ab_name.log" $?)"
    grep -E "^iter [2-6]: time \(ms" "$LOG_DIR/ab_$ab_name.log" | tee -a "$SUMMARY" >/dev/null
    rm -rf "$W/ab_$ab_name"
  done
fi
# gap: one GPU, each run with a clock/power sampler beside it; the summary gives per run the median
# ms/step and the median SM clock (MHz) and power (W), and the throttle reasons seen.
if has gap; then
  gap_run() { # $1 name, then the command
    local name=$1; shift
    local gi=${CUDA_VISIBLE_DEVICES:-0}
    nvidia-smi -i "${gi%%,*}" --query-gpu=clocks.sm,power.draw,clocks_throttle_reasons.active \
        --format=csv,noheader,nounits -lms 500 > "$LOG_DIR/gap_smi_$name.csv" 2>/dev/null &
    local smi=$!
    "$@" > "$LOG_DIR/gap_$name.log" 2>&1
    local rc=$?
    kill $smi 2>/dev/null; wait $smi 2>/dev/null
    local clk pw thr
    col() { awk -F', ' -v c="$1" '$1 + 0 > 0 {print $c}' "$LOG_DIR/gap_smi_$name.csv"; } # column $1 of the valid samples
    clk=$(col 1 | median); pw=$(col 2 | median)
    thr=$(col 3 | sort | uniq -c | sort -rn | head -3 | tr -s ' ' | tr '\n' ';')
    echo "exit $rc; SM clock median $(na "$clk") MHz, power median $(na "$pw") W, throttle reasons (count value): $thr"
  }
  python3 -c "
import random
random.seed(5)
words = [''.join(random.choices('abcdefghijklmnopqrstuvwxyz', k=random.randint(2, 9))) for _ in range(30000)]
print(' '.join(random.choice(words) for _ in range(600000)))" > "$W/random_words.txt"
  "$ZGPT" prepare --input "$W/random_words.txt" --out "$W/rdata" > "$LOG_DIR/gap_prepare.log" 2>&1
  g1=$(gap_run bench "$ZGPT" bench --model gpt2-xl --batch 16 --seq 1024 --device cuda --steps 8 --warmup 2 --no-profile "${BENCH_SET[@]}")
  note "gap bench (random tokens): $(grep -E '^ms/step' "$LOG_DIR/gap_bench.log" | tr '\n' ' ') $g1"
  for d in text rand; do
    dset=(); [ $d = rand ] && dset=(--set data="$W/rdata")
    g1=$(gap_run "train_$d" "$ZGPT" train $(dpcfg "$W/gap_$d") --set max_iters=12 "${DP2_SET[@]}" "${dset[@]}" --gpus 1)
    note "gap train ($d): $(na "$(zg_ms "$LOG_DIR/gap_train_$d.log" 3)") ms/iter (median from iteration 3); $g1"
  done
  g1=$(gap_run wc "$ZGPT" train $(dpcfg "$W/gap_wc") --set max_iters=6 --set wall_clock_breakdown=true "${DP2_SET[@]}" --gpus 1)
  note "gap train, each phase synchronised: $g1"; grep -E "^iter [2-5]: time" "$LOG_DIR/gap_wc.log" | tee -a "$SUMMARY" >/dev/null
fi
if has ckpt; then
  # stamp: prefixes each line with seconds since the start of the command
  stamp() { python3 -u -c 'import sys, time
t0 = time.time()
for l in sys.stdin: print(f"{time.time() - t0:.2f} {l}", end="", flush=True)'; }
  since() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a - b }'; }
  xl=(--config configs/gpt2xl_finetune.json --deepspeed configs/ds_config_zero2.json --set init_from=scratch
      --set n_layer=48 --set n_head=25 --set n_embd=1600 --set data="$W/data" --set max_iters=60 --set eval_interval=20
      --set eval_iters=1 --set always_save_checkpoint=true --set keep_last_k=1 --set log_interval=1)
  dd if=/dev/zero of="$W/dd.bin" bs=64M count=192 oflag=direct 2> "$LOG_DIR/ckpt_dd.log"; rm -f "$W/dd.bin"
  ddrate=$(grep -oE '[0-9.]+ [GM]B/s' "$LOG_DIR/ckpt_dd.log" | tail -1)
  ddgbs=$(echo "$ddrate" | awk '{ print ($2 == "MB/s") ? $1 / 1000 : $1 }')
  t0=$(date +%s.%N); timeout -k 20 400 "$ZGPT" train "${xl[@]}" --set out_dir="$W/c0" --set save_checkpoints=false 2>&1 | stamp > "$LOG_DIR/ckpt_nosave.log"
  t1=$(date +%s.%N); timeout -k 20 500 "$ZGPT" train "${xl[@]}" --set out_dir="$W/c1" 2>&1 | stamp > "$LOG_DIR/ckpt_save.log"
  t2=$(date +%s.%N)
  # the end hands the unlinks of the checkpoint the last save replaced to a process of its own (rm -rf):
  # how long after the run's exit it finished (the next runs here start after it, on a quiet disk)
  for i in $(seq 1 600); do ls -a "$W/c1" | grep -q '^\.trash\.' || break; sleep 0.05; done
  trash_after=$(since "$(date +%s.%N)" "$t2")
  bytes=$(du -sb "$W/c1/$(cat "$W/c1/latest" 2>/dev/null)" 2>/dev/null | cut -f1)
  np=$(grep -oE '[0-9.]+M parameters' "$LOG_DIR/ckpt_save.log" | head -1)
  bpp=$(awk -v b="${bytes:-0}" -v p="${np%M parameters}" 'BEGIN { if (p > 0) printf "%.2f", b / (p * 1e6); else print "n/a" }')
  wall0=$(since "$t1" "$t0"); wall1=$(since "$t2" "$t1")
  ratio=$(awk -v a="$wall1" -v b="$wall0" 'BEGIN { printf "%.3f", a / b }')
  note "ckpt: dd oflag=direct $ddrate; without saves $wall0 s, with 3 saves $wall1 s: ${ratio}x ($(awk -v r="$ratio" 'BEGIN { print (r <= 1.15) ? "PASS" : "FAIL" }') <= 1.15x); checkpoint $bytes bytes for $np = $bpp B/param"
  # (a) the stall of each save, as the trainer measures it (snapshot queued; includes waiting for a save in flight)
  stalls=$(grep -oE 'checkpoint iter_[0-9]+: training paused [0-9.]+ s for the snapshot( \(and [0-9.]+ s)?' "$LOG_DIR/ckpt_save.log" |
      sed -E 's/checkpoint (iter_[0-9]+): training paused ([0-9.]+) s for the snapshot/\1 \2/; s/ \(and ([0-9.]+) s/ +\1 waiting/')
  maxstall=$(echo "$stalls" | awk 'BEGIN { m = -1 } NF >= 2 { s = $2 + ($3 ~ /^\+/ ? substr($3, 2) : 0); if (s > m) m = s } END { print m }')
  note "ckpt: stall per save: $(echo "$stalls" | tr '\n' ';') max ${maxstall} s ($(awk -v m="$maxstall" 'BEGIN { print (m >= 0 && m <= 1) ? "PASS" : "FAIL" }') <= 1 s)"
  # (a2) pauses the stall lines do not count: time between consecutive iteration lines beyond the
  # iteration's own time (evaluations, saves' publication, deleting old checkpoints), with and without saves,
  # from iteration 10 (the first ones are the start's: warm-up, fp16 skips)
  maxpause() { awk '/^[0-9.]+ iter [0-9]+:.* time [0-9.]+ ms/ { t = $1; it = $3; sub(/:$/, "", it); match($0, /time [0-9.]+ ms/)
      ms = substr($0, RSTART + 5, RLENGTH - 8); if (p != "" && it + 0 >= 10) { g = t - p - ms / 1000; if (g > m) { m = g; at = it } } p = t }
      END { printf "%.2f %s", m, at }' "$1"; }
  read -r p1 a1 <<< "$(maxpause "$LOG_DIR/ckpt_save.log")"; read -r p0 a0 <<< "$(maxpause "$LOG_DIR/ckpt_nosave.log")"
  note "ckpt: longest pause between iteration lines: with saves $p1 s (before iter $a1), without $p0 s (before iter $a0): the saves add $(awk -v a="$p1" -v b="$p0" 'BEGIN { printf "%.2f", a - b }') s ($(awk -v a="$p1" -v b="$p0" 'BEGIN { print (a - b <= 1) ? "PASS" : "FAIL" }') <= 1 s)"
  note "ckpt: iteration times around saves: $(grep -E '^[0-9.]+ iter (19|20|21|22|39|40|41|42|59):' "$LOG_DIR/ckpt_save.log" | sed -E 's/ lr .*//' | tr '\n' ';')"
  # (c) the writer: GB/s from the copies landing to the last file written, against dd in this call
  wrates=$(grep -oE 'checkpoint iter_[0-9]+: wrote [0-9.]+ GB in [0-9.]+ s \([0-9.]+ GB/s[^)]*\)' "$LOG_DIR/ckpt_save.log")
  best=$(echo "$wrates" | grep -oE '\([0-9.]+ GB/s' | tr -d '(' | awk '{ if ($1 > m) m = $1 } END { print m + 0 }')
  pct=$(awk -v w="$best" -v d="$ddgbs" 'BEGIN { if (d > 0) printf "%.0f", 100 * w / d; else print 0 }')
  note "ckpt: writer: $(echo "$wrates" | tr '\n' ';') best $best GB/s = $pct% of dd direct ($(awk -v p="$pct" 'BEGIN { print (p >= 80) ? "PASS" : "FAIL" }') >= 80%)"
  note "ckpt: save lines: $(grep -iE 'checkpoint|snapshot|background' "$LOG_DIR/ckpt_save.log" | head -10 | tr '\n' ';')"
  # (c2) the start-up cost of a save-enabled run: the snapshot's pinned host memory, reserved on a thread
  # from the start (the line says how long it took there and whether anything waited for it), and the
  # first iteration: when its line came and its own time, without and with saves
  it0() { grep -m1 -E '^[0-9.]+ iter [0-9]+:' "$1" | sed -E 's/^([0-9.]+) iter ([0-9]+):.* time ([0-9.]+ ms).*/line at \1 s, its time \3/'; }
  note "ckpt: start-up: $(grep -oE 'checkpoint snapshot: .*' "$LOG_DIR/ckpt_save.log" | head -1); first iteration without saves: $(it0 "$LOG_DIR/ckpt_nosave.log"); with saves: $(it0 "$LOG_DIR/ckpt_save.log")"
  # (c2b) what the end of the run waited for (the last save's writes; the deletion of the checkpoint
  # before it, keep_last_k 1), and each deletion on the retention thread (rename to .trash.<tag>, then
  # the files unlinked by several threads)
  endline() { grep -oE 'end: waited [0-9.]+ s for the last save, [0-9.]+ s for retention' "$1" | head -1; }
  dels() { grep -oE 'checkpoint: (removed iter_[0-9]+ \([0-9.]+ GB\) in [0-9.]+ s, [a-z ]+|removing iter_[0-9]+ \([0-9.]+ GB\) goes on in process [0-9]+ after this run)' "$1" | tr '\n' ';'; }
  note "ckpt: end of the run with saves: $(na "$(endline "$LOG_DIR/ckpt_save.log")") (the run's last line at $(tail -1 "$LOG_DIR/ckpt_save.log" | cut -d' ' -f1) s, its last iteration line at $(grep -m1 -E '^[0-9.]+ iter 59:' "$LOG_DIR/ckpt_save.log" | cut -d' ' -f1) s); deletions: $(na "$(dels "$LOG_DIR/ckpt_save.log")"); the handed-on removal done ${trash_after} s after the run's exit"
  # evict DIR: the checkpoint's files leave the page cache (fsync, then POSIX_FADV_DONTNEED through dd's
  # nocache flag), so that a resume reads the disk; prints what the page cache still holds of them
  evict() {
    local f
    while IFS= read -r f; do sync "$f"; dd if="$f" iflag=nocache count=0 status=none; done < <(find "$1" -type f)
    if command -v fincore > /dev/null; then
      find "$1" -type f -name '*.bin' -print0 | xargs -0 fincore -b -n -o RES | awk '{ s += $1 } END { printf "%.2f GB cached", s / 1e9 }'
    else
      printf "fincore absent: cached bytes unknown"
    fi
  }
  # (e) resume: the first iteration line's time after the start, and where the time went, with the
  # default read strategy (direct) from a cold page cache: the master read and uploaded through pinned
  # staging, the Adam moments read by a thread into the snapshot's pinned buffer (in place) and uploaded
  # from it at the first update; the resume lines give bytes, GB/s, upload waits and the ready time
  cached=$(evict "$W/c1")
  ZGPT_CKPT_READ=direct timeout -k 20 300 "$ZGPT" train "${xl[@]}" --set out_dir="$W/c1" --set max_iters=62 --resume 2>&1 | stamp > "$LOG_DIR/ckpt_resume.log"
  first=$(grep -m1 -E '^[0-9.]+ iter [0-9]+:' "$LOG_DIR/ckpt_resume.log" | cut -d' ' -f1)
  note "ckpt: resume (direct reads, $cached before): first iteration line at ${first:-n/a} s after the start ($(awk -v f="${first:-999}" 'BEGIN { print (f <= 8) ? "PASS" : "FAIL" }') <= 8 s); $(grep -E '^[0-9.]+ (resume:|checkpoint snapshot:)' "$LOG_DIR/ckpt_resume.log" | tr '\n' ';')"
  note "ckpt: end of the resumed run: $(na "$(endline "$LOG_DIR/ckpt_resume.log")"); deletions: $(na "$(dels "$LOG_DIR/ckpt_resume.log")")"
  # (e0t) the same resume with twice the reads in flight (ZGPT_CKPT_READ_THREADS=16: 16 threads on 8 MiB
  # each of a 128 MiB piece, two pieces at once: 32 reads), from a cold page cache again: whether more
  # concurrency raises the read rate on this disk (dd's 32 streams below say what the disk gives)
  cached=$(evict "$W/c1")
  ZGPT_CKPT_READ_THREADS=16 ZGPT_CKPT_READ=direct timeout -k 20 300 "$ZGPT" train "${xl[@]}" --set out_dir="$W/c1" --set max_iters=63 --resume 2>&1 | stamp > "$LOG_DIR/ckpt_resume16.log"
  first16=$(grep -m1 -E '^[0-9.]+ iter [0-9]+:' "$LOG_DIR/ckpt_resume16.log" | cut -d' ' -f1)
  note "ckpt: resume with 32 reads in flight (ZGPT_CKPT_READ_THREADS=16, $cached before): first iteration line at ${first16:-n/a} s against ${first:-n/a} s with the default 16; $(grep -E '^[0-9.]+ resume:' "$LOG_DIR/ckpt_resume16.log" | tr '\n' ';')"
  # (e0) the same resume without the shard's read from the start (ZGPT_CKPT_PREFETCH=0: v0.14's path, the
  # reads after the start-up), from a cold page cache again: the prefetch's gain in the same call (not with
  # ZG_CKPT_QUICK=1)
  if [ "${ZG_CKPT_QUICK:-0}" != 1 ]; then
  cached=$(evict "$W/c1")
  ZGPT_CKPT_PREFETCH=0 ZGPT_CKPT_READ=direct timeout -k 20 300 "$ZGPT" train "${xl[@]}" --set out_dir="$W/c1" --set max_iters=64 --resume 2>&1 | stamp > "$LOG_DIR/ckpt_resume0.log"
  first0=$(grep -m1 -E '^[0-9.]+ iter [0-9]+:' "$LOG_DIR/ckpt_resume0.log" | cut -d' ' -f1)
  note "ckpt: resume without the read from the start (ZGPT_CKPT_PREFETCH=0, direct reads, $cached before): first iteration line at ${first0:-n/a} s against ${first:-n/a} s with it; $(grep -E '^[0-9.]+ (resume:|checkpoint snapshot:)' "$LOG_DIR/ckpt_resume0.log" | tr '\n' ';')"
  fi
  # (e1) the disk's own direct-read rate on the checkpoint's largest file (the optimizer shard), from a cold
  # page cache, with 1, 8 (the resume reader's threads) and 32 concurrent streams over disjoint slices:
  # whether the resume's read rate above is the disk's ceiling or the reader's (issue 19: <= 8 s needs
  # >= 2.34 GB/s for the XL shard); ~35 s
  shard=$(find "$W/c1" -type f -name '*.bin' -printf '%s %p\n' | sort -n | tail -1 | cut -d' ' -f2-)
  if [ -n "$shard" ]; then
    sbytes=$(stat -c %s "$shard"); chunks=$(( sbytes / (64 << 20) )); rr=""
    for n in 1 8 32; do
      evict "$W/c1" > /dev/null
      t0=$(date +%s.%N); pids=()
      for k in $(seq 0 $(( n - 1 ))); do
        lo=$(( chunks * k / n )); hi=$(( chunks * (k + 1) / n ))
        dd if="$shard" of=/dev/null bs=64M iflag=direct skip=$lo count=$(( hi - lo )) status=none &
        pids+=($!)
      done
      wait "${pids[@]}"
      rr="$rr$n stream(s) $(awk -v b="$sbytes" -v c="$chunks" -v t0="$t0" -v t1="$(date +%s.%N)" 'BEGIN { printf "%.2f GB/s", c * 67108864 / (t1 - t0) / 1e9 }'), "
    done
    note "ckpt: direct reads of the shard ($(awk -v b="$sbytes" 'BEGIN { printf "%.2f GB", b / 1e9 }'), cold page cache, dd bs=64M): ${rr}against the resume's read above"
  fi
  # ZG_CKPT_QUICK=1 stops here (the runs with and without saves and the direct resume: ~3.5 minutes)
  if [ "${ZG_CKPT_QUICK:-0}" = 1 ]; then rm -rf "$W/c0" "$W/c1"; else
  # ZG_CKPT_BENCH=0 skips (c3), (e2) and (c4): the writer's bench files and the buffered resume
  if [ "${ZG_CKPT_BENCH:-1}" != 0 ]; then
  # (c3) the writer alone on this disk (tests/bench/ckpt_write.c): 4 GiB through the save path, the
  # synchronous save's windows and the bare writer, then that file read back with each read strategy
  # (page cache dropped first); (c4) below: the save path on a file as large as a real save (17.4 GiB =
  # 18.7 GB: a short file can ride the disk's write cache, a save's 18.7 GB sustained ran at 0.95 GB/s)
  timeout -k 20 150 "$ROOT/build-gpu/bench_ckpt_write" "$W" 4 1 > "$LOG_DIR/ckpt_bench.log" 2>&1
  note "ckpt: bench 4 GiB: $(grep -E 'GB/s' "$LOG_DIR/ckpt_bench.log" | sed -E 's/ = ([0-9.]+ GB\/s).*/ \1/; s/ in [0-9.]+ s//' | tr '\n' ';') vs dd $ddrate"
  rm -rf "$W/bench"
  # (e2) the same resume with buffered reads (ZGPT_CKPT_READ=buffered), from a cold page cache again, and a
  # synchronous save at its end (background_checkpoint false): the same writer threads from two windows
  cached=$(evict "$W/c1")
  ZGPT_CKPT_READ=buffered timeout -k 20 300 "$ZGPT" train "${xl[@]}" --set out_dir="$W/c1" --set max_iters=66 --set background_checkpoint=false --resume 2>&1 | stamp > "$LOG_DIR/ckpt_sync.log"
  first=$(grep -m1 -E '^[0-9.]+ iter [0-9]+:' "$LOG_DIR/ckpt_sync.log" | cut -d' ' -f1)
  note "ckpt: resume (buffered reads, $cached before): first iteration line at ${first:-n/a} s after the start; $(grep -E '^[0-9.]+ resume:' "$LOG_DIR/ckpt_sync.log" | tr '\n' ';')"
  note "ckpt: synchronous save: $(grep -oE 'checkpoint iter_[0-9]+: saved synchronously: .*' "$LOG_DIR/ckpt_sync.log" | head -1) (dd direct $ddrate)"
  # (f) the guide's schedule: a save every 5 iterations (~5 s apart), bound by the disk (ZG_CKPT_EVERY5=0
  # skips it: ~3.5 minutes)
  rm -rf "$W/c0" "$W/c1"
  # (c4) the save path on a file a real save's size (after the checkpoints are gone: the disk holds 64 GiB)
  BENCH_PATHS=save timeout -k 20 150 "$ROOT/build-gpu/bench_ckpt_write" "$W" 17.4 1 > "$LOG_DIR/ckpt_bench_big.log" 2>&1
  note "ckpt: bench 18.7 GB (a real save's size): $(grep -E 'GB/s' "$LOG_DIR/ckpt_bench_big.log" | sed -E 's/ in [0-9.]+ s//' | tr '\n' ';') vs dd $ddrate"
  rm -rf "$W/bench"
  else rm -rf "$W/c0" "$W/c1"; fi
  if [ "${ZG_CKPT_EVERY5:-1}" != 0 ]; then
  t3=$(date +%s.%N); timeout -k 20 400 "$ZGPT" train "${xl[@]}" --set out_dir="$W/c5" --set max_iters=30 --set eval_interval=5 2>&1 | stamp > "$LOG_DIR/ckpt_every5.log"
  t4=$(date +%s.%N)
  nsaves=$(grep -c '^[0-9.]* saved checkpoint' "$LOG_DIR/ckpt_every5.log")
  wall5=$(since "$t4" "$t3")
  disk5=$(awk -v n="$nsaves" -v b="${bytes:-0}" -v d="$ddgbs" 'BEGIN { if (d > 0) printf "%.1f", n * b / 1e9 / d; else print "n/a" }')
  train5=$(awk -v w="$wall0" 'BEGIN { printf "%.1f", w * 30 / 60 }')
  r5=$(awk -v w="$wall5" -v d="$disk5" 'BEGIN { if (d > 0) printf "%.2f", w / d; else print "n/a" }')
  note "ckpt: every 5 iterations (30 iterations, $nsaves saves): wall $wall5 s; bytes written / dd rate = $disk5 s; wall / (bytes / dd rate) = ${r5}x; the same iterations without saves ~$train5 s (half the 60-iteration run); disk-bound when wall ~ max(disk, training) + startup; stalls (snapshot + waiting for the save in flight): $(grep -oE 'training paused [0-9.]+ s for the snapshot( \(and [0-9.]+ s)?' "$LOG_DIR/ckpt_every5.log" | sed -E 's/training paused ([0-9.]+) s for the snapshot/\1/; s/ \(and ([0-9.]+) s/ + \1/' | tr '\n' ';')"
  note "ckpt: every 5 iterations, end of the run: $(na "$(endline "$LOG_DIR/ckpt_every5.log")"); deletions: $(na "$(dels "$LOG_DIR/ckpt_every5.log")")"
  rm -rf "$W/c5"
  fi
  fi
fi
# ZeRO-Offload on one GPU (issue 18). Each run has its own time limit; the parts are independent.
if has offload; then
  OFF=(--set zero_optimization.offload_optimizer.device=cpu --set zero_optimization.offload_optimizer.pin_memory=true)
  parts=" ${ZG_OFFLOAD_PARTS:-1 2 3 4 5 6} "
  # the 1-GPU bf16 reference (8 x 2 micro-steps) and its noise: the gap to a run that differs only in
  # rounding (4 x 4); sets ref, noise and tol (2 x noise + 0.02, as in multi)
  offload_ref_noise() {
    timeout -k 20 90 "$ZGPT" train $(mcfg "$W/of_ref") $(mev 8) --set dtype=bf16 --gpus 1 > "$LOG_DIR/offload_ref.log" 2>&1
    timeout -k 20 90 "$ZGPT" train $(mcfg "$W/of_var") $(mev 4) --set dtype=bf16 --gpus 1 > "$LOG_DIR/offload_var.log" 2>&1
    ref=$(vals "$W/of_ref"); noise=$(maxdiff "$ref" "$(vals "$W/of_var")")
    tol=$(awk -v n="$noise" 'BEGIN{printf "%.4f", 2*n + 0.02}')
  }
  if [[ $parts == *" 1 "* ]]; then
    # (1) correctness: the same 16 sequences per step (8 x 2) on one GPU, bf16; the noise is the gap to a
    # run that differs only in rounding (4 x 4 micro-steps), tolerance 2 x noise + 0.02 as in multi
    offload_ref_noise
    note "offload: 1 GPU bf16 without offload: val $ref; bf16 noise $noise -> tolerance $tol"
    for st in 1 2 3; do
      timeout -k 20 120 "$ZGPT" train $(mcfg "$W/of_s$st") $(mev 8) --set dtype=bf16 --set zero_optimization.stage=$st "${OFF[@]}" \
          --gpus 1 > "$LOG_DIR/offload_s$st.log" 2>&1
      rc=$?; v=$(vals "$W/of_s$st"); d=$(maxdiff "$ref" "$v")
      ok=$( { [ $rc = 0 ] && [ "$(echo "$v" | wc -w)" -ge 4 ] && grep -q "ZeRO-Offload at stage $st" "$LOG_DIR/offload_s$st.log" \
              && awk -v d="$d" -v t="$tol" 'BEGIN{exit !(d <= t)}'; } && echo PASS || echo FAIL)
      note "offload: stage $st with offload_optimizer cpu: exit $rc, val $v (max |diff| $d vs tolerance $tol): $ok"
    done
    # bitwise resume with offload (stage 2): 100 straight (of_s2) == 50 + resume + 50
    timeout -k 20 90 "$ZGPT" train $(mcfg "$W/of_r") $(mev 8) --set dtype=bf16 --set zero_optimization.stage=2 "${OFF[@]}" \
        --set max_iters=50 --gpus 1 > "$LOG_DIR/offload_r1.log" 2>&1
    timeout -k 20 90 "$ZGPT" train $(mcfg "$W/of_r") $(mev 8) --set dtype=bf16 --set zero_optimization.stage=2 "${OFF[@]}" \
        --gpus 1 --resume > "$LOG_DIR/offload_r2.log" 2>&1
    la=$(grep '"loss": [0-9]' "$W/of_s2/metrics.jsonl" 2>/dev/null | sed -E 's/.*"iter": ([0-9]+), "loss": ([^,]+),.*/\1 \2/')
    lb=$(grep '"loss": [0-9]' "$W/of_r/metrics.jsonl" 2>/dev/null | sed -E 's/.*"iter": ([0-9]+), "loss": ([^,]+),.*/\1 \2/')
    same=1; for f in "$W/of_s2/final"/*.bin; do cmp -s "$f" "$W/of_r/final/$(basename "$f")" || same=0; done
    if [ -n "$la" ] && [ "$la" = "$lb" ] && [ $same = 1 ]; then
      note "offload: resume with offload (stage 2, 100 = 50 + resume + 50): PASS, identical losses, byte-identical model.bin and shards"
    else note "offload: resume with offload: FAIL"; diff <(echo "$la") <(echo "$lb") | head -4 | tee -a "$SUMMARY"; fi
    # the delayed parameter update (stage 2): its curve against the reference (information: the gradients
    # are one update late, so it need not stay within the rounding tolerance), and bitwise resume
    # (100 straight == 50 + resume + 50: the straight run flushes at its evaluation at 50)
    DPU=("${OFF[@]}" --set zero_optimization.offload_optimizer.delayed_param_update=true)
    for r in of_d:100: of_dr:50: of_dr:100:--resume; do
      IFS=: read -r dn di dres <<< "$r"
      timeout -k 20 120 "$ZGPT" train $(mcfg "$W/$dn") $(mev 8) --set dtype=bf16 --set zero_optimization.stage=2 "${DPU[@]}" \
          --set max_iters=$di $dres --gpus 1 >> "$LOG_DIR/offload_dpu_$dn.log" 2>&1
    done
    v=$(vals "$W/of_d"); d=$(maxdiff "$ref" "$v")
    la=$(grep '"loss": [0-9]' "$W/of_d/metrics.jsonl" 2>/dev/null | sed -E 's/.*"iter": ([0-9]+), "loss": ([^,]+),.*/\1 \2/')
    lb=$(grep '"loss": [0-9]' "$W/of_dr/metrics.jsonl" 2>/dev/null | sed -E 's/.*"iter": ([0-9]+), "loss": ([^,]+),.*/\1 \2/')
    same=1; for f in "$W/of_d/final"/*.bin; do cmp -s "$f" "$W/of_dr/final/$(basename "$f")" || same=0; done
    ok=$( { [ -n "$la" ] && [ "$la" = "$lb" ] && [ $same = 1 ] && [ "$(echo "$v" | wc -w)" -ge 4 ]; } && echo PASS || echo FAIL)
    note "offload: delayed parameter update (stage 2): val $v (max |diff| $d vs the rounding tolerance $tol, information);" \
         "resume 100 = 50 + resume + 50 bitwise (losses, model.bin, shards): $ok"
  fi
  if [[ $parts == *" 2 "* ]]; then
    # (2) the guide's job on one GPU: GPT-2 XL scratch, ZeRO-2, micro-batch 1 x 32, fp16 (loss scale from
    # 2^10 so that nearly every step is a real one: skipped steps run no optimizer); median over the
    # non-skipped iterations from 1
    read -r -a OG_SET <<< "${ZG_OFFLOAD_SET:-}"
    for v in ${ZG_OFFLOAD_VARIANTS:-none off dpu offrc}; do
      sets=("${OG_SET[@]}"); [[ $v != none* ]] && sets+=("${OFF[@]}")
      [ $v = offrc ] && sets+=(--set recompute=true --set recompute_layernorm=true)
      [[ $v == dpu* ]] && sets+=(--set zero_optimization.offload_optimizer.delayed_param_update=true)
      # a variant ending in "bd" (offbd, dpubd) adds wall_clock_breakdown: where the offload's time goes
      [[ $v == *bd ]] && sets+=(--set wall_clock_breakdown=true)
      # a variant containing "v12" (offv12, offv12bd): v0.12's offload step path, for the same-call comparison
      envs=(); [[ $v == *v12* ]] && envs=(ZGPT_OFFLOAD_STEP=v12)
      env ${envs[@]+"${envs[@]}"} timeout -k 20 150 "$ZGPT" train $(xlcfg "$W/og_$v") --set max_iters=7 \
          --set fp16.initial_scale_power=10 "${sets[@]}" --gpus "${ZG_OFFLOAD_GPUS:-1}" > "$LOG_DIR/offload_guide_$v.log" 2>&1
      rc=$?; gl=$LOG_DIR/offload_guide_$v.log
      eval "og_tps_$v=\$(zg_tps \"\$gl\" 1)"; eval "og_mem_$v=\$(zg_mem \"\$gl\")"
      note "offload guide (XL, ${ZG_OFFLOAD_GPUS:-1} GPU(s), ZeRO-2, 1 x 32, fp16, $v): exit $rc; $(na "$(zg_ms "$gl" 1)") ms/step," \
           "$(fmt0 "$(zg_tps "$gl" 1)") tok/s (median of $(zg_n "$gl" 1) from 1; $(zg_skips "$gl") skipped)," \
           "peak $(na "$(zg_mem "$gl")") GiB GPU; $(grep -oE 'host memory held per rank[^;]*' "$gl" | tail -1)"
      [[ $v == *bd ]] && note "offload guide ($v) breakdown, last step: $(grep -E 'time \(ms, each phase|ZeRO-Offload \(ms\)' "$gl" | tail -2 | sed 's/^iter [0-9]*: //' | tr '\n' ';')"
    done
    r=$(ratio "${og_tps_off:-}" "${og_tps_none:-}")
    note "offload guide: with offload $(na "${og_mem_off:-}") GiB (goal <= 10): $(verdict "${og_mem_off:-}" "<=" 10);" \
         "with recompute $(na "${og_mem_offrc:-}") GiB; without $(na "${og_mem_none:-}") GiB;" \
         "tokens/s with/without $r (goal >= 0.70): $(verdict "$r" ">=" 0.70); with recompute $(ratio "${og_tps_offrc:-}" "${og_tps_none:-}")"
    for v in ${ZG_OFFLOAD_VARIANTS:-}; do # this tree's offload step against v0.12's, same call
      [[ $v == *v12* ]] || continue
      nv=${v/v12/}; eval "ogv_a=\${og_tps_$nv:-}; ogv_b=\${og_tps_$v:-}"
      note "offload guide: $nv (this tree) vs $v (ZGPT_OFFLOAD_STEP=v12, v0.12's step): tokens/s ratio $(ratio "$ogv_a" "$ogv_b")" \
           "(expected > 1: the v0.13 prediction in docs/PERFORMANCE.md)"
    done
    rd=$(ratio "${og_tps_dpu:-}" "${og_tps_none:-}")
    note "offload guide, delayed parameter update (reported separately; gradients one update late):" \
         "$(na "${og_mem_dpu:-}") GiB (goal <= 10): $(verdict "${og_mem_dpu:-}" "<=" 10); tokens/s with/without $rd" \
         "(goal >= 0.70): $(verdict "$rd" ">=" 0.70)"
  fi
  if [[ $parts == *" 3 "* ]]; then
    # (3) the host AdamW over GPT-2 XL's 1.56B parameters, torch's fused CPU AdamW in the same call
    BUILD="$W/bench-build" timeout -k 20 300 bash bench/cpu_adamw_bench.sh 1558611200 5 > "$LOG_DIR/offload_adamw.log" 2>&1
    note "offload adamw: exit $?; $(grep -E '^(host memory|cpu adamw|offload adamw|offload lamb|torch)' "$LOG_DIR/offload_adamw.log" | tr '\n' ';')"
    zs=$(sed -nE 's/^cpu adamw: .* ([0-9.]+) s per update.*/\1/p' "$LOG_DIR/offload_adamw.log")
    ts=$(sed -nE 's/^torch AdamW.*: ([0-9.]+) s per update.*/\1/p' "$LOG_DIR/offload_adamw.log")
    note "offload adamw: zgpt fp32 ${zs:-n/a} s vs torch fused ${ts:-n/a} s: speed ratio $(ratio "$ts" "$zs") (goal >= 1.0): $(verdict "$(ratio "$ts" "$zs")" ">=" 1.0)"
  fi
  if [[ $parts == *" 4 "* ]]; then
    # (4) reach: GPT-2-shaped ladder (layers heads channels); zgpt plan picks the largest that fits the
    # GPU (92% of it) and the host (85% of MemAvailable: the offload's 16 B/parameter + the trainer's fp32
    # copy, 4 B/parameter); each trains 3 iterations (bf16, micro-batch 1 x 1024 tokens, no accumulation).
    avail=$(awk '/MemAvailable/ {print $2 * 1024}' /proc/meminfo)
    gpu_total=$(nvidia-smi -i "${GPUS[0]:-0}" --query-gpu=memory.total --format=csv,noheader,nounits | head -1)
    for mode in none off; do
      best=""
      # 1.56B, 2.65B, 4.24B, 5.12B, 5.14B, 6.35B, 6.65B, 7.46B, 8.27B, 12.8B, 21.9B, 52B parameters: steps of ~10%
      # around where one H200 or H100 and a 128 GiB host run out (4-8B), so the ratio is not the ladder's rounding
      # (every shape's n_embd a multiple of n_head: an invalid one is skipped by the plan, which left a gap from
      # 2.65B to 6.35B in v0.17's run)
      for shape in "48 25 1600" "32 32 2560" "36 24 3072" "32 28 3584" "44 24 3072" "40 28 3584" "32 32 4096" \
                   "36 32 4096" "40 32 4096" \
                   "40 40 5120" "48 48 6144" "64 64 8192"; do
        set -- $shape
        python3 -c "import json,sys; json.dump({'n_layer':$1,'n_head':$2,'n_embd':$3,'block_size':1024,'init_from':'scratch',
          'train_micro_batch_size_per_gpu':1,'gradient_accumulation_steps':1,'bf16':{'enabled':True},
          'zero_optimization':{'stage':2,'offload_optimizer':{'device':'cpu' if '$mode'=='off' else 'none'}}}, sys.stdout)" > "$W/reach.json"
        if ! "$ZGPT" plan "$W/reach.json" --json > "$W/reach_plan.json" 2> "$W/reach_plan.err"; then
          note "offload reach ($mode): the ladder's L=$1 H=$2 C=$3 is refused by zgpt plan: $(head -1 "$W/reach_plan.err")"
          continue
        fi
        fits=$(python3 -c "import json; p=json.load(open('$W/reach_plan.json'))
print(int(p['gpu_bytes_per_rank'] <= 0.92 * $gpu_total * 2**20 and p['host_bytes_per_rank'] + 4 * p['num_params'] <= 0.85 * $avail))")
        [ "$fits" = 1 ] && best="$shape $(python3 -c "import json; print(json.load(open('$W/reach_plan.json'))['num_params'])")"
      done
      if [ -z "$best" ]; then note "offload reach ($mode): nothing fits by the plan"; continue; fi
      set -- $best
      sets=(); [ $mode = off ] && sets=("${OFF[@]}")
      timeout -k 20 170 "$ZGPT" train $(xlcfg "$W/reach_$mode") --set n_layer=$1 --set n_head=$2 --set n_embd=$3 \
          --set fp16.enabled=false --set bf16.enabled=true --set gradient_accumulation_steps=1 --set max_iters=3 \
          --set eval_interval=1000 "${sets[@]}" --gpus 1 > "$LOG_DIR/offload_reach_$mode.log" 2>&1
      rc=$?
      eval "reach_$mode=$4"
      note "offload reach ($mode): L=$1 H=$2 C=$3, $4 parameters: exit $rc; $(fmt0 "$(zg_tps "$LOG_DIR/offload_reach_$mode.log" 1)") tok/s," \
           "peak $(na "$(zg_mem "$LOG_DIR/offload_reach_$mode.log")") GiB GPU; $(grep -m1 'zgpt: error' "$LOG_DIR/offload_reach_$mode.log")"
    done
    note "offload reach: $(ratio "${reach_off:-}" "${reach_none:-}") x the parameters (goal >= 2; the host's $(awk -v a="$avail" 'BEGIN{printf "%.0f", a / 2^30}') GiB available bounds it at 20 B/parameter)"
  fi
  if [[ $parts == *" 5 "* ]]; then
    # (5) offload_param cpu at stage 3 (the parameter shard in host memory, each layer uploaded before use).
    # Correctness: with offload_optimizer too it is the stage-3 offload_optimizer run moved, not changed
    # (the same bytes reach the same kernels): bitwise against part 1's stage-3 run; alone (the GPU
    # optimizer stepping through the slot buffers) within the bf16 noise of the run without offload.
    OPA=(--set zero_optimization.offload_param.device=cpu --set zero_optimization.offload_param.pin_memory=true)
    [ -n "${tol:-}" ] || offload_ref_noise
    [ -d "$W/of_s3/final" ] || timeout -k 20 120 "$ZGPT" train $(mcfg "$W/of_s3") $(mev 8) --set dtype=bf16 \
        --set zero_optimization.stage=3 "${OFF[@]}" --gpus 1 > "$LOG_DIR/offload_s3.log" 2>&1
    timeout -k 20 150 "$ZGPT" train $(mcfg "$W/op_both") $(mev 8) --set dtype=bf16 --set zero_optimization.stage=3 "${OFF[@]}" \
        "${OPA[@]}" --gpus 1 > "$LOG_DIR/offload_param_both.log" 2>&1
    rc=$?
    la=$(grep '"loss": [0-9]' "$W/of_s3/metrics.jsonl" 2>/dev/null | sed -E 's/.*"iter": ([0-9]+), "loss": ([^,]+),.*/\1 \2/')
    lb=$(grep '"loss": [0-9]' "$W/op_both/metrics.jsonl" 2>/dev/null | sed -E 's/.*"iter": ([0-9]+), "loss": ([^,]+),.*/\1 \2/')
    ok=$( { [ $rc = 0 ] && [ -n "$la" ] && [ "$la" = "$lb" ] && cmp -s "$W/of_s3/final/model.bin" "$W/op_both/final/model.bin" \
            && grep -q "parameters in host memory, each layer uploaded before use" "$LOG_DIR/offload_param_both.log"; } && echo PASS || echo FAIL)
    note "offload_param: stage 3 + offload_optimizer, 1 GPU bf16, 100 iterations vs the same without offload_param: exit $rc; identical losses and model.bin: $ok"
    timeout -k 20 150 "$ZGPT" train $(mcfg "$W/op_gpu") $(mev 8) --set dtype=bf16 --set zero_optimization.stage=3 "${OPA[@]}" \
        --gpus 1 > "$LOG_DIR/offload_param_gpuopt.log" 2>&1
    rc=$?; v=$(vals "$W/op_gpu"); d=$(maxdiff "$ref" "$v")
    ok=$( { [ $rc = 0 ] && [ "$(echo "$v" | wc -w)" -ge 4 ] && awk -v d="$d" -v t="$tol" 'BEGIN{exit !(d <= t)}'; } && echo PASS || echo FAIL)
    note "offload_param alone (GPU AdamW through the slot buffers), stage 3: exit $rc, val $v (max |diff| $d vs tolerance $tol): $ok"
    # the guide's XL job (1 x 32, fp16) at stage 3 with both offloads against stage 2 without offload
    # (part 2's run when it ran): peak GPU memory (goal: below stage 2 with offload_optimizer alone, the
    # parameters' 3 GiB less) and tokens/s
    read -r -a OG_SET <<< "${ZG_OFFLOAD_SET:-}"
    for v in none s3both; do
      [ $v = none ] && [ -n "${og_tps_none:-}" ] && continue
      sets=("${OG_SET[@]}"); [ $v = s3both ] && sets+=(--set zero_optimization.stage=3 "${OFF[@]}" "${OPA[@]}")
      timeout -k 20 200 "$ZGPT" train $(xlcfg "$W/og_$v") --set max_iters=7 --set fp16.initial_scale_power=10 "${sets[@]}" \
          --gpus 1 > "$LOG_DIR/offload_guide_$v.log" 2>&1
      rc=$?; gl=$LOG_DIR/offload_guide_$v.log
      eval "og_tps_$v=\$(zg_tps \"\$gl\" 1)"; eval "og_mem_$v=\$(zg_mem \"\$gl\")"
      note "offload_param guide (XL, 1 GPU, 1 x 32, fp16, $v): exit $rc; $(na "$(zg_ms "$gl" 1)") ms/step," \
           "$(fmt0 "$(zg_tps "$gl" 1)") tok/s (median of $(zg_n "$gl" 1) from 1; $(zg_skips "$gl") skipped)," \
           "peak $(na "$(zg_mem "$gl")") GiB GPU"
    done
    note "offload_param guide: stage 3 + both offloads peak $(na "${og_mem_s3both:-}") GiB vs stage 2 without offload" \
         "$(na "${og_mem_none:-}") GiB, stage 2 + offload_optimizer $(na "${og_mem_off:-}") GiB (part 2);" \
         "below stage 2 without offload: $(verdict "$(ratio "${og_mem_s3both:-}" "${og_mem_none:-}")" "<" 1.0);" \
         "tokens/s stage3+both / stage 2 none $(ratio "${og_tps_s3both:-}" "${og_tps_none:-}")"
  fi
  if [[ $parts == *" 6 "* ]]; then
    # (6) Lamb with offload: the host Lamb (same fp32 formula as the GPU's) against the GPU Lamb without
    # offload, 1 GPU bf16, within the Lamb runs' own rounding noise (8 x 2 against 4 x 4 micro-steps)
    LAMB=(--set optimizer.type=Lamb --set optimizer.params.min_coeff=0.0001)
    timeout -k 20 90 "$ZGPT" train $(mcfg "$W/of_lref") $(mev 8) --set dtype=bf16 "${LAMB[@]}" --gpus 1 > "$LOG_DIR/offload_lref.log" 2>&1
    timeout -k 20 90 "$ZGPT" train $(mcfg "$W/of_lvar") $(mev 4) --set dtype=bf16 "${LAMB[@]}" --gpus 1 > "$LOG_DIR/offload_lvar.log" 2>&1
    lref=$(vals "$W/of_lref"); lnoise=$(maxdiff "$lref" "$(vals "$W/of_lvar")")
    ltol=$(awk -v n="$lnoise" 'BEGIN{printf "%.4f", 2*n + 0.02}')
    timeout -k 20 120 "$ZGPT" train $(mcfg "$W/of_l2") $(mev 8) --set dtype=bf16 --set zero_optimization.stage=2 "${LAMB[@]}" \
        "${OFF[@]}" --gpus 1 > "$LOG_DIR/offload_l2.log" 2>&1
    rc=$?; v=$(vals "$W/of_l2"); d=$(maxdiff "$lref" "$v")
    ok=$( { [ $rc = 0 ] && [ "$(echo "$v" | wc -w)" -ge 4 ] && grep -q "optimizer state and Lamb on the CPU" "$LOG_DIR/offload_l2.log" \
            && awk -v d="$d" -v t="$ltol" 'BEGIN{exit !(d <= t)}'; } && echo PASS || echo FAIL)
    note "offload: Lamb, stage 2 with offload_optimizer cpu vs the GPU Lamb without: exit $rc, val $v vs $lref (max |diff| $d vs tolerance $ltol, noise $lnoise): $ok"
  fi
fi
if has signal; then
  "$ZGPT" train $(small_cfg "$W/sig" --set max_iters=100000 --set eval_interval=100000) --gpus all > "$LOG_DIR/signal.log" 2>&1 &
  pid=$!
  for _ in $(seq 600); do grep -q '"loss": [0-9]' "$W/sig/metrics.jsonl" 2>/dev/null && break; sleep 0.1; done
  sleep 1; kill -TERM $pid; st=0; timeout -k 20 120 tail --pid=$pid -f /dev/null; wait $pid || st=$?
  at=$(cat "$W/sig/latest" 2>/dev/null)
  timeout -k 20 120 "$ZGPT" train $(small_cfg "$W/sig" --set max_iters=$(( ${at#iter_} + 5 )) --set eval_interval=100000) --gpus all --resume \
      > "$LOG_DIR/signal_resume.log" 2>&1; st2=$?
  note "signal (SIGTERM to --gpus all): exit $st, saved ${at:-nothing}: $(grep -E 'received|ended cleanly' "$LOG_DIR/signal.log" | tr '\n' ' '); resume: exit $st2"
fi
if has tb; then
  timeout -k 20 120 "$ZGPT" train $(small_cfg "$W/tbrun" --set max_iters=30 --set eval_interval=10 --set log_interval=2 \
      --set fp16.enabled=true --set tensorboard.enabled=true --set tensorboard.output_path="$W/tb" --set tensorboard.job_name=gpu) \
      --device cuda > "$LOG_DIR/tb_train.log" 2>&1
  python3 tests/monitor/tb_check.py "$W/tb/gpu" "$W/tbrun/metrics.jsonl" 2 > "$LOG_DIR/tb_check.log" 2>&1
  note "tb (EventAccumulator on a CUDA fp16 run): exit $?; $(tail -2 "$LOG_DIR/tb_check.log" | tr '\n' ' ')"
fi
if has demo; then
  ZGPT_DEMO_OUT="$W/demo" timeout -k 20 200 bash scripts/demo.sh "$ZGPT" > "$LOG_DIR/demo.log" 2>&1
  note "demo (scripts/demo.sh, the README's main job): exit $?; $(grep -E '^(demo: training on|val loss:)' "$LOG_DIR/demo.log" | tr '\n' ' ')"
fi
if has zbench; then
  timeout -k 20 120 "$ZGPT" bench --model gpt2 --batch 16 --seq 1024 --device cuda --steps 20 --warmup 3 --no-profile "${BENCH_SET[@]}" > "$LOG_DIR/zbench.log" 2>&1
  note "zgpt 124M B=16 (regression check): $(grep -E '^(tokens/s|ms/step|peak memory)' "$LOG_DIR/zbench.log" | tr '\n' ';')"
fi
if has trace; then
  # zgpt is traced from its start: the window is its last timed steps (ms/step x (steps - 1)); the peer's
  # trace starts after `skip` optimizer steps, so its default window (the last 40%) holds only timed steps
  for mdl in ${ZG_TRACE_MODELS:-124m xl}; do
    if [ "$mdl" = xl ]; then zsteps=6; zargs=(--model gpt2-xl --warmup 2); targs=(--layers 48 --heads 25 --embd 1600 --steps 8); skip=5; lim=300
    else zsteps=20; zargs=(--model gpt2 --warmup 3); targs=(--steps 25); skip=12; lim=200; fi
    zc=$LOG_DIR/trace_zgpt_$mdl.csv; tc=$LOG_DIR/trace_torch_$mdl.csv
    timeout -k 20 "$lim" bash bench/kernel_trace.sh run "$zc" -- "$ZGPT" bench "${zargs[@]}" --batch 16 --seq 1024 --device cuda --steps "$zsteps" --no-profile > "$LOG_DIR/trace_zgpt_$mdl.log" 2>&1
    [ -f $TB ] && timeout -k 20 "$lim" python3 bench/kernel_trace.py torch $TB --out "$tc" --skip-steps "$skip" -- "${targs[@]}" --B 16 > "$LOG_DIR/trace_torch_$mdl.log" 2>&1
    zms=$(zb_ms "$LOG_DIR/trace_zgpt_$mdl.log"); tms=$(th_ms "$LOG_DIR/trace_torch_$mdl.log")
    if [ -s "$zc" ] && [ -s "$tc" ] && [ -n "$zms" ] && [ -n "$tms" ]; then
      zwin=$(awk -v m="$zms" -v n="$zsteps" 'BEGIN { printf "%.1f", m * (n - 1) }')
      python3 bench/kernel_trace.py compare "$zc" "$tc" --step-ms-a "$zms" --step-ms-b "$tms" --last-ms-a "$zwin" --labels zgpt,torch > "$LOG_DIR/trace_cmp_$mdl.txt" 2>&1
      python3 bench/kernel_trace.py summarize "$zc" --step-ms "$zms" --last-ms "$zwin" --label "zgpt $mdl" --top 30 > "$LOG_DIR/trace_sum_zgpt_$mdl.txt" 2>&1
      python3 bench/kernel_trace.py summarize "$tc" --step-ms "$tms" --label "torch $mdl" --top 30 > "$LOG_DIR/trace_sum_torch_$mdl.txt" 2>&1
      note "trace $mdl B=16 (ms a step, zgpt vs torch, each under its tracer: $zms vs $tms): $(grep -E '^(GPU busy \(kernels\)|idle|attention|matmul|layernorm|classifier|optimizer|elementwise)' "$LOG_DIR/trace_cmp_$mdl.txt" | tr -s ' ' | tr '\n' ';')"
    else
      note "trace $mdl: no comparison (zgpt ms/step '${zms}', torch '${tms}'; see trace_*_$mdl.log)"
    fi
    gzip -f "$zc" "$tc" 2>/dev/null
  done
fi
if has attloan; then
  # The attention backward's cuDNN workspace in the model's dead logits (ops->scratch_lend, gpt2_backward):
  # GPT-2 XL B=16 with and without the loan (ZGPT_ATT_LOAN=0): the peak lower by about the workspace (803
  # MiB measured in v0.10), the speed unchanged; then 40 bf16 iterations of the small model both ways:
  # identical loss lines (the same kernel; only its workspace's address moved)
  for v in 1 0; do
    ZGPT_ATT_LOAN=$v timeout -k 20 150 "$ZGPT" bench --model gpt2-xl --batch 16 --seq 1024 --device cuda --steps 6 --warmup 2 --no-profile > "$LOG_DIR/attloan_bench_$v.log" 2>&1
    zgpt_bench_note "XL B=16 ZGPT_ATT_LOAN=$v" "$LOG_DIR/attloan_bench_$v.log"
    ZGPT_ATT_LOAN=$v timeout -k 20 120 "$ZGPT" train $(small_cfg "$W/al$v" --set max_iters=40 --set eval_interval=20) --set dtype=bf16 --device cuda > "$LOG_DIR/attloan_train_$v.log" 2>&1
  done
  m1=$(zb_mem "$LOG_DIR/attloan_bench_1.log"); m0=$(zb_mem "$LOG_DIR/attloan_bench_0.log")
  l1=$(grep -E '^iter [0-9]+: loss' "$LOG_DIR/attloan_train_1.log" | sed -E 's/, time.*//'); l0=$(grep -E '^iter [0-9]+: loss' "$LOG_DIR/attloan_train_0.log" | sed -E 's/, time.*//')
  note "attloan: XL B=16 peak ${m1:-n/a} GiB lent vs ${m0:-n/a} GiB own workspace ($(awk -v a="${m1:-0}" -v b="${m0:-0}" 'BEGIN { printf "%.3f GiB less", b - a }'); $(awk -v a="${m1:-0}" -v b="${m0:-0}" 'BEGIN { print (a > 0 && b - a >= 0.5) ? "PASS" : "FAIL" }') >= 0.5 GiB); tokens/s $(zb_tps "$LOG_DIR/attloan_bench_1.log") vs $(zb_tps "$LOG_DIR/attloan_bench_0.log"); training loss lines $( [ -n "$l1" ] && [ "$l1" = "$l0" ] && echo "identical (PASS)" || echo "DIFFER (FAIL)")"
fi
if has headchunks; then
  hc_losses() { grep '"loss": [0-9]' "$1/metrics.jsonl" | sed -E 's/.*"loss": ([^,]+),.*/\1/' | tr '\n' ' '; }
  for v in 1 3; do
    timeout -k 20 120 "$ZGPT" train $(small_cfg "$W/hc_$v" --set max_iters=60 --set eval_interval=30 --set log_interval=1 \
      --set lm_head_chunks=$v) --device cuda > "$LOG_DIR/hc_train_$v.log" 2>&1
  done
  a=$(hc_losses "$W/hc_1"); b=$(hc_losses "$W/hc_3"); d=$(maxdiff "$a" "$b"); n=$(echo "$a" | wc -w)
  d0=$(maxdiff "$(echo "$a" | cut -d' ' -f1-10)" "$(echo "$b" | cut -d' ' -f1-10)")
  va=$(vals "$W/hc_1"); vb=$(vals "$W/hc_3"); dv=$(maxdiff "$va" "$vb")
  note "headchunks training (bf16, 60 iterations, 3 chunks of 192/192/128 rows vs every row): $n loss lines, max |diff|" \
       "$d (iterations 0-9: $d0), val losses $va vs $vb (max |diff| $dv): $(awk -v x="$d0" -v y="$dv" -v n="$n" \
       'BEGIN { print (n >= 60 && x <= 0.01 && y <= 0.05) ? "PASS" : "FAIL" }') (first 10 within 0.01, val within 0.05)"
  hc=(--set lm_head_chunks=3 --set log_interval=1)
  timeout -k 20 90 "$ZGPT" train $(small_cfg "$W/hcs" --set max_iters=40 --set eval_interval=20 "${hc[@]}") --device cuda > "$LOG_DIR/hc_straight.log" 2>&1
  timeout -k 20 90 "$ZGPT" train $(small_cfg "$W/hcp" --set max_iters=20 --set eval_interval=20 "${hc[@]}") --device cuda > "$LOG_DIR/hc_a.log" 2>&1
  timeout -k 20 90 "$ZGPT" train $(small_cfg "$W/hcp" --set max_iters=40 --set eval_interval=20 "${hc[@]}") --device cuda --resume > "$LOG_DIR/hc_b.log" 2>&1
  # (the resumed run's peak memory differs from the straight one's: compared without it)
  a=$(ab_lines "$W/hcs" | sed -E 's/, "peak_memory_bytes": [0-9]+//'); b=$(ab_lines "$W/hcp" | sed -E 's/, "peak_memory_bytes": [0-9]+//'); same=1
  for f in "$W/hcs/final"/*.bin; do cmp -s "$f" "$W/hcp/final/$(basename "$f")" || same=0; done
  if [ -n "$a" ] && [ "$a" = "$b" ] && [ $same = 1 ]; then
    note "headchunks resume (3 chunks, 40 = 20 + resume + 20): ok, $(echo "$a" | wc -l) identical iteration lines, byte-identical final checkpoint"
  else note "headchunks resume: FAILED $(diff <(echo "$a") <(echo "$b") | head -4 | tr '\n' ' ')"; fi
  # ZG_HC_FULL=1: two rounds alternated and XL B=16 too (~3 minutes more)
  for r in $(seq 1 $([ "${ZG_HC_FULL:-0}" = 1 ] && echo 2 || echo 1)); do
    for v in 0 1; do
      timeout -k 20 150 "$ZGPT" bench --model gpt2-xl --batch 8 --seq 1024 --device cuda --steps 6 --warmup 2 --no-profile --lm-head-chunks $v > "$LOG_DIR/hc_xl8_${v}_$r.log" 2>&1
      timeout -k 20 120 "$ZGPT" bench --model gpt2 --batch 16 --seq 1024 --device cuda --steps 20 --warmup 3 --no-profile --lm-head-chunks $v > "$LOG_DIR/hc_124m_${v}_$r.log" 2>&1
    done
  done
  for v in 0 1; do
    [ "${ZG_HC_FULL:-0}" = 1 ] || break
    timeout -k 20 150 "$ZGPT" bench --model gpt2-xl --batch 16 --seq 1024 --device cuda --steps 6 --warmup 2 --no-profile --lm-head-chunks $v > "$LOG_DIR/hc_xl16_${v}_1.log" 2>&1
  done
  for m in xl8 124m xl16; do
    for v in 0 1; do
      note "headchunks bench $m --lm-head-chunks $v: ms/step $(grep -h '^ms/step' "$LOG_DIR"/hc_${m}_${v}_*.log | awk '{print $2}' | tr '\n' ' ')" \
           "peak $(zb_mem "$LOG_DIR/hc_${m}_${v}_1.log") GiB; $(grep -h '^LM head' "$LOG_DIR/hc_${m}_${v}_1.log" | head -1)$(grep -h -iE 'error|fatal' "$LOG_DIR"/hc_${m}_${v}_*.log | head -1)"
    done
  done
fi

if has benchxl; then
  # ZG_XL_BATCHES: the micro-batches to run, each against its peer (default 16; issue 21 also names 8)
  for xb in ${ZG_XL_BATCHES:-16}; do
    sfx=$([ "$xb" = 16 ] || echo "_b$xb")
    timeout -k 20 150 "$ZGPT" bench --model gpt2-xl --batch "$xb" --seq 1024 --device cuda --steps 6 --warmup 2 --no-profile "${BENCH_SET[@]}" > "$LOG_DIR/bench_zgpt_xl$sfx.log" 2>&1
    zgpt_bench_note "XL B=$xb" "$LOG_DIR/bench_zgpt_xl$sfx.log"
    [ -f $TB ] && timeout -k 20 240 python3 $TB --layers 48 --heads 25 --embd 1600 --B "$xb" --steps 8 > "$LOG_DIR/bench_torch_xl$sfx.log" 2>&1
    bench_peer_report "benchxl XL B=$xb" "$LOG_DIR/bench_zgpt_xl$sfx.log" "$LOG_DIR/bench_torch_xl$sfx.log"
  done
fi
if has benchold && [ -d .old/src ]; then
  ( cd .old && bash scripts/device-build.sh build-gpu ) > "$LOG_DIR/benchold_build.log" 2>&1 || note "benchold: the old tree did not build ($(tail -3 "$LOG_DIR/benchold_build.log" | tr '\n' ' '))"
  OLDZ=$ROOT/.old/build-gpu/zgpt
  note "benchold: old $("$OLDZ" --version 2>&1 | head -1), new $("$ZGPT" --version 2>&1 | head -1)"
  for round in 1 2; do
    for v in old new; do
      z=$ZGPT; [ $v = old ] && z=$OLDZ
      timeout -k 20 120 "$z" bench --model gpt2 --batch 16 --seq 1024 --device cuda --steps 20 --warmup 3 --no-profile > "$LOG_DIR/bo_${v}_124m_$round.log" 2>&1
      timeout -k 20 150 "$z" bench --model gpt2-xl --batch 16 --seq 1024 --device cuda --steps 6 --warmup 2 --no-profile > "$LOG_DIR/bo_${v}_xl_$round.log" 2>&1
      timeout -k 20 120 "$z" train $(small_cfg "$W/bo_$v$round" --set max_iters=40 --set eval_interval=1000 --set log_interval=1 --set save_checkpoints=false) --device cuda > "$LOG_DIR/bo_${v}_train_$round.log" 2>&1
    done
  done
  for kind in 124m xl; do
    o=$(for r in 1 2; do zb_tps "$LOG_DIR/bo_old_${kind}_$r.log"; done | median); n=$(for r in 1 2; do zb_tps "$LOG_DIR/bo_new_${kind}_$r.log"; done | median)
    note "benchold bench $kind B=16 tokens/s: old $(na "$o"), new $(na "$n"), new/old $(ratio "$n" "$o")"
  done
  o=$(for r in 1 2; do zg_tps "$LOG_DIR/bo_old_train_$r.log" 5; done | median); n=$(for r in 1 2; do zg_tps "$LOG_DIR/bo_new_train_$r.log" 5; done | median)
  note "benchold train small tokens/s (median from iter 5): old $(na "$o"), new $(na "$n"), new/old $(ratio "$n" "$o")"
  ol=$(grep -E '^iter 39:' "$LOG_DIR/bo_old_train_1.log" | sed -E 's/, time.*//'); nl=$(grep -E '^iter 39:' "$LOG_DIR/bo_new_train_1.log" | sed -E 's/, time.*//')
  if [ -n "$ol" ] && [ "$ol" = "$nl" ]; then note "benchold train: iter 39 loss identical ($nl)"; else note "benchold train: iter 39 old '$ol' new '$nl' (differ)"; fi
fi
# benchpar (2+ GPUs): bench + benchxl with zgpt on GPU 0 while the PyTorch peer runs on GPU 1 at the
# same time (two identical cards of one host), to fit both into one device call; bench/benchxl run
# them one after the other on the same card.
if has benchpar && [ "$NGPU" -ge 2 ]; then
  g0=${GPUS[0]}; g1=${GPUS[1]}
  note "benchpar: zgpt on GPU $g0 ($(nvidia-smi -i "$g0" --query-gpu=name --format=csv,noheader)), PyTorch on GPU $g1 ($(nvidia-smi -i "$g1" --query-gpu=name --format=csv,noheader)), concurrently"
  ( if [ -f $TB ]; then
      CUDA_VISIBLE_DEVICES=$g1 timeout -k 20 200 python3 $TB --B 16 --steps 20 > "$LOG_DIR/bench_torch_124m.log" 2>&1
      CUDA_VISIBLE_DEVICES=$g1 timeout -k 20 260 python3 $TB --layers 48 --heads 25 --embd 1600 --B 16 --steps 8 > "$LOG_DIR/bench_torch_xl.log" 2>&1
    fi ) &
  tpid=$!
  CUDA_VISIBLE_DEVICES=$g0 timeout -k 20 120 "$ZGPT" bench --model gpt2 --batch 16 --seq 1024 --device cuda --steps 20 --warmup 3 "${BENCH_SET[@]}" > "$LOG_DIR/bench_zgpt_124m.log" 2>&1
  CUDA_VISIBLE_DEVICES=$g0 timeout -k 20 150 "$ZGPT" bench --model gpt2-xl --batch 16 --seq 1024 --device cuda --steps 8 --warmup 2 "${BENCH_SET[@]}" > "$LOG_DIR/bench_zgpt_xl.log" 2>&1
  wait $tpid
  zgpt_bench_note "124M B=16" "$LOG_DIR/bench_zgpt_124m.log"
  bench_peer_report "benchpar 124M B=16" "$LOG_DIR/bench_zgpt_124m.log" "$LOG_DIR/bench_torch_124m.log"
  zgpt_bench_note "XL B=16" "$LOG_DIR/bench_zgpt_xl.log"
  bench_peer_report "benchpar XL B=16" "$LOG_DIR/bench_zgpt_xl.log" "$LOG_DIR/bench_torch_xl.log"
  cp "$LOG_DIR/bench_zgpt_124m.log" "$LOG_DIR/bench_zgpt_xl.log" "$RESULTS/" 2>/dev/null
fi
# gen (issue 21): generation on the GPU against transformers' generate, the same random GPT-2 XL weights.
# decode (issue 21): per op, old against new kernels in the same call; the step graph's tokens/s
if has decode; then
  ZG_BENCH_ONLY=decode timeout -k 20 300 build-gpu/gpu_test_ops_cuda --bench > "$LOG_DIR/decode_bench.log" 2>&1
  # table rows "| op (old) | ms | ..." under "### decode step ops, GPT-2 XL: B=n": one note per op, old -> new
  awk -F'|' '/^### decode step ops/ {match($0, /B=[0-9]+/); b = substr($0, RSTART, RLENGTH)}
    /\((old|new)\) *\|/ {lab = $2; gsub(/^ +| +$/, "", lab); v = lab; sub(/.*\(/, "", v); sub(/\).*/, "", v)
      sub(/ \((old|new)\)$/, "", lab); ms = $3 + 0
      if (v == "old") old[b, lab] = ms; else printf "decode %s %s: old %.4f ms, new %.4f ms (%.2fx)\n", b, lab, old[b, lab], ms, (ms > 0 ? old[b, lab] / ms : 0)}' \
    "$LOG_DIR/decode_bench.log" > "$LOG_DIR/decode_notes.txt"
  while IFS= read -r line; do note "$line"; done < "$LOG_DIR/decode_notes.txt"
  for b in 1 8; do
    # auto (ZGPT_DECODE unset) is what generation runs: the verdict is on it; gemv / split: one new family alone
    # nopdl / block / v012: auto without PDL, with the one-block sampler, with neither (v0.12's auto);
    # gemv8: auto with the few-row products up to 8 rows (the tensor-core form at B=8)
    # (a variant ZG_DEC_VARS left out has no DECSTEP line: no entry here, and no note that compares it)
    line=""
    for v in old new gemv split nopdl block v012 gemv8 v1 v2 v2g1 v2nopf comb2 oneblk v2g3 v2g3r v2g4; do
      read -r _ _ _ _ ms _ tok <<< "$(grep "^DECSTEP B=$b $v " "$LOG_DIR/decode_bench.log")"
      eval "dms_$v=\$ms; dms${b}_$v=\$ms"
      [ -n "$ms" ] && line="$line$v $(na "$ms") ms $(fmt0 "$tok") tok/s, "
    done
    read -r _ _ _ _ ams _ atok <<< "$(grep "^DECSTEP B=$b auto " "$LOG_DIR/decode_bench.log")"
    goal=$([ "$b" = 1 ] && echo 500 || echo 2500)
    note "decode step graph B=$b (XL, 48 layers + head + top-k 200): ${line}auto $(na "$ams") ms $(fmt0 "$atok") tok/s $(verdict "$atok" ">=" "$goal") (>= $goal, graph alone)"
    # PDL, the multi-block sampler and both (v0.12's auto) against auto: only the variants that ran
    parts=""
    [ -n "${dms_nopdl:-}" ] && parts="${parts}PDL saves $(awk -v a="$dms_nopdl" -v b="$ams" 'BEGIN {if (b == "") print "n/a"; else printf "%.4f", a - b}') ms (nopdl/auto $(ratio "$dms_nopdl" "$ams")), "
    [ -n "${dms_block:-}" ] && parts="${parts}the multi-block sampler $(awk -v a="$dms_block" -v b="$ams" 'BEGIN {if (b == "") print "n/a"; else printf "%.4f", a - b}') ms (block/auto $(ratio "$dms_block" "$ams")), "
    [ -n "${dms_v012:-}" ] && parts="${parts}both against v0.12's auto: v012/auto $(ratio "$dms_v012" "$ams"), "
    [ -n "$parts" ] && note "decode step graph B=$b: ${parts%, }"
    # issue 21, v0.18: auto splits decode attention at B=8 too; oneblk keeps one block per (row, head)
    [ -n "${dms_oneblk:-}" ] && note "decode step graph B=$b: auto $(na "$ams") ms against decode attention one block per (row, head) (oneblk)" \
         "$(na "${dms_oneblk:-}") ms: saves $(awk -v a="${dms_oneblk:-}" -v b="$ams" 'BEGIN {if (a == "" || b == "") print "n/a"; else printf "%.4f", a - b}') ms"
    # issue 21, v0.16: split attention's combine in its last chunk block (auto) against a kernel of its own
    # (comb2, v0.15's form; its reads batched since v0.23): a gain is a lower ms for auto (split attention runs
    # at B <= 10 since v0.18; v0.23 measured comb2 faster at B=8, 3.03 against 3.13 ms)
    [ -n "${dms_comb2:-}" ] && note "decode step graph B=$b: attention combine fused (auto) $(na "$ams") ms against a kernel of its own (comb2)" \
         "$(na "${dms_comb2:-}") ms: saves $(awk -v a="${dms_comb2:-}" -v b="$ams" 'BEGIN {if (a == "" || b == "") print "n/a"; else printf "%.4f", a - b}') ms"
  done
  # issue 21, v0.14: the few-row products (ZGPT_GEMV): each XL product alone (a cold layer's weights each
  # run) and 48 x 4 of them chained in a graph, cuBLASLt / v1 / v2 (v2g1: one block per SM, v2nopf: no
  # L2 prefetch before the PDL wait); v2's verdict: faster than cuBLASLt chained, and its step graph.
  # With ZG_DEC_VARS the bench runs only step graphs: these tables and the per-op rows say so once.
  dec_all=1; [ -n "${ZG_DEC_VARS:-}" ] && dec_all=0
  [ "$dec_all" = 0 ] && note "decode: ZG_DEC_VARS=\"$ZG_DEC_VARS\": only those step graphs ran (no per-op rows, product tables or sampler rows)"
  for b in 1 8; do
    [ "$dec_all" = 1 ] || break
    for shp in qkv proj fc fcproj; do
      line=""
      for k in cublaslt v1 v2 v2g1 v2nopf v2g3 v2g3r v2g4 v2g3pf; do
        read -r _ _ _ _ _ ms _ gbs <<< "$(grep "^GEMV B=$b $shp $k " "$LOG_DIR/decode_bench.log")"
        line="$line$k $(na "$ms") ms $(fmt0 "$gbs") GB/s, "
      done
      note "decode gemv B=$b $shp alone: ${line%, }"
    done
    line=""
    for k in cublaslt v1 v2 v2g1 v2nopf v2g3 v2g3r v2g4 v2g3pf; do
      read -r _ _ _ _ ms _ gbs <<< "$(grep "^GEMVCHAIN B=$b $k " "$LOG_DIR/decode_bench.log")"
      line="$line$k $(na "$ms") ms $(fmt0 "$gbs") GB/s, "
      eval "gch_$k=\$ms"
    done
    note "decode gemv B=$b chain (48 x 4 products, graph): ${line%, }; v2/cublaslt $(ratio "${gch_v2:-}" "${gch_cublaslt:-}") $(verdict "$(ratio "${gch_v2:-}" "${gch_cublaslt:-}")" "<" 1) (< 1)"
    read -r _ _ _ _ v2ms _ _ <<< "$(grep "^DECSTEP B=$b v2 " "$LOG_DIR/decode_bench.log")"
    read -r _ _ _ _ ams _ _ <<< "$(grep "^DECSTEP B=$b auto " "$LOG_DIR/decode_bench.log")"
    note "decode step graph B=$b with ZGPT_GEMV=v2: $(na "$v2ms") ms against auto $(na "$ams") ms: v2/auto $(ratio "$v2ms" "$ams")"
    # v0.20: 3 blocks per SM (auto: fc's groups evenly) against v0.19's 2 (v2nopf); v2g3r: 3 with registers
    # for 4 (the next product's block fits beside them: PDL's early start); v2g4: 4 per SM
    eval "g3=\${dms${b}_v2g3:-}; g2=\${dms${b}_v2nopf:-}"
    for k in v2g3r v2g4; do
      eval "kch=\${gch_$k:-}; kms=\${dms${b}_$k:-}"
      note "decode B=$b v2 $k against v2g3 (auto's grid): chain $(na "$kch") / $(na "${gch_v2g3:-}") ms," \
           "step graph $(na "$kms") / $(na "$g3") ms ($(ratio "$kms" "$g3"); < 1: $k is faster)"
    done
    note "decode B=$b v2 with 3 blocks per SM (v2g3) against 2 (v2nopf): chain $(na "${gch_v2g3:-}") / $(na "${gch_v2nopf:-}") ms," \
         "step graph $(na "$g3") / $(na "$g2") ms ($(ratio "$g3" "$g2"); < 1: 3 per SM is faster)"
  done
  # the sampler alone (old = the one-block kernel, new = the cluster kernel; goal <= 0.05 ms); top-p also
  # against the cluster kernel with v0.13's radix top-p (v13 rows: ZGPT_SAMPLE=cluster-v13)
  for b in 1 8; do
    [ "$dec_all" = 1 ] || break
    for c in "T=0.8 top-k 200" "top-p 0.9" "T=0.7 top-k 200 top-p 0.95"; do
      ms=$(sed -nE "s/^decode B=$b sample $c: old [0-9.]+ ms, new ([0-9.]+) ms.*/\1/p" "$LOG_DIR/decode_notes.txt" | tail -1)
      v13=$(awk -F'|' -v b="B=$b" -v lab="sample $c (v13)" '/^### decode step ops/ {ok = index($0, b ",") > 0}
        ok {l = $2; gsub(/^ +| +$/, "", l); if (l == lab) print $3 + 0}' "$LOG_DIR/decode_bench.log" | tail -1)
      note "decode sampler B=$b $c: multi-block $(na "$ms") ms [$(verdict "$ms" "<=" 0.05) <= 0.05]${v13:+ (the v0.13 radix top-p: $v13 ms)}"
    done
  done
  [ "$dec_all" = 0 ] || [ -s "$LOG_DIR/decode_notes.txt" ] || note "decode: FAILED (no bench rows: $(tail -1 "$LOG_DIR/decode_bench.log"))"
  [ "$dec_all" = 1 ] || grep -q "^DECSTEP" "$LOG_DIR/decode_bench.log" || note "decode: FAILED (no step graph: $(tail -1 "$LOG_DIR/decode_bench.log"))"
fi

if has gen; then
  GEN_PROMPT="The meaning of life is"
  gids=$(printf '%s' "$GEN_PROMPT" | "$ZGPT" tokenize)
  timeout -k 20 240 python3 tests/parity/hf_generate.py --out "$W/genxl" --prompt-ids "$gids" --B 1,8 --new 512 \
      --top-k 200 --dtypes fp32,bf16 > "$LOG_DIR/gen_hf.log" 2>&1
  hf_tps() { sed -nE "s/^hf generate dtype=$1 B=$2 .* tokens_per_s=([0-9.]+)/\1/p" "$LOG_DIR/gen_hf.log" | tail -1; }
  # the headline (all the time after the load) and the steady state beside it (v0.14)
  zs_tps() { sed -nE 's/^zgpt sample: [0-9]+ rows, .*: ([0-9.]+) tokens\/s(;.*)?$/\1/p' "$1" | tail -1; }
  zs_steady() { sed -nE 's/^zgpt sample: [0-9]+ rows, .*; steady state ([0-9.]+) ms\/step = ([0-9.]+) tokens\/s$/\1 ms\/step = \2 tok\/s/p' "$1" | tail -1; }
  zs_split() { sed -nE 's/^zgpt sample: time split: (.*)$/\1/p' "$1" | tail -1; }
  zs_load() { sed -nE 's/^zgpt sample: model loaded in ([0-9.]+) s.*/\1/p' "$1" | tail -1; }
  zs_prompt() { sed -nE 's/^zgpt sample: time split: .*; prompt ([0-9.]+) s .*/\1/p' "$1" | tail -1; }
  for run in "1" "8" "1 --no-graph"; do
    read -r B extra <<< "$run"; tag=b$B${extra:+_nograph}
    timeout -k 10 100 "$ZGPT" sample --model "hf:$W/genxl" --prompt "$GEN_PROMPT" --num-samples "$B" --max-new-tokens 512 \
        --top-k 200 --device cuda --dtype bf16 $extra > "$LOG_DIR/gen_zgpt_$tag.out" 2> "$LOG_DIR/gen_zgpt_$tag.log"
    note "gen zgpt B=$B${extra:+ (no graph)}: exit $?; $(grep -E '^zgpt sample: ' "$LOG_DIR/gen_zgpt_$tag.log" | tr '\n' ' ')"
  done
  # where the time after the load goes (v0.14): the prompt, the start (the direct first step, the
  # recording and instantiation of the second, waiting for both), and the steady state per step
  for tag in b1 b8; do
    note "gen zgpt ${tag/b/B=} time split: $(na "$(zs_split "$LOG_DIR/gen_zgpt_$tag.log")"); steady state $(na "$(zs_steady "$LOG_DIR/gen_zgpt_$tag.log")")" \
         "against the headline $(na "$(zs_tps "$LOG_DIR/gen_zgpt_$tag.log")") tok/s"
  done
  # the same seed without PDL and with the one-block sampler: the same texts (PDL changes no bit; both
  # samplers draw by the same definition), with split attention's combine as a kernel of its own (v0.15's
  # form: the same arithmetic): the same texts too; and the tokens/s each gives
  for B in 1 8; do
    # ltw0: cuBLASLt's start-up at the first product instead of on a thread during the load (v0.20): the
    # same text, the prompt's time with the start-up in it
    for var in "nopdl ZGPT_PDL=0" "block ZGPT_SAMPLE=block" "comb2 ZGPT_DECODE_COMBINE=kernel" "oneblk ZGPT_DECODE=oneblock" "ltw0 ZGPT_LT_WARMUP=0"; do
      read -r vn venv <<< "$var"
      [ -n "${ZG_GEN_VARS:-}" ] && ! grep -qw "$vn" <<< "$ZG_GEN_VARS" && continue
      env "$venv" timeout -k 10 100 "$ZGPT" sample --model "hf:$W/genxl" --prompt "$GEN_PROMPT" --num-samples "$B" \
          --max-new-tokens 512 --top-k 200 --device cuda --dtype bf16 > "$LOG_DIR/gen_zgpt_b${B}_$vn.out" 2> "$LOG_DIR/gen_zgpt_b${B}_$vn.log"
      rc=$?
      same=$(cmp -s "$LOG_DIR/gen_zgpt_b$B.out" "$LOG_DIR/gen_zgpt_b${B}_$vn.out" && [ -s "$LOG_DIR/gen_zgpt_b$B.out" ] && echo PASS || echo FAIL)
      # one block per (row, head) sums the attention in another order than split attention (auto at B <= 10)
      [ "$vn" = oneblk ] && same="${same/PASS/same}"; [ "$vn" = oneblk ] && same="${same/FAIL/differs (another order of sums: information)}"
      note "gen zgpt B=$B $venv: exit $rc; $(na "$(zs_tps "$LOG_DIR/gen_zgpt_b${B}_$vn.log")") tok/s against $(na "$(zs_tps "$LOG_DIR/gen_zgpt_b$B.log")") with the defaults" \
           "(steady state $(na "$(zs_steady "$LOG_DIR/gen_zgpt_b${B}_$vn.log")") against $(na "$(zs_steady "$LOG_DIR/gen_zgpt_b$B.log")");" \
           "prompt $(na "$(zs_prompt "$LOG_DIR/gen_zgpt_b${B}_$vn.log")") s against $(na "$(zs_prompt "$LOG_DIR/gen_zgpt_b$B.log")") s); text identical to the defaults' (same seed): $same"
    done
  done
  # B=8 with cuBLASLt's products (auto's limit back at 1 row, its rule before v0.19): tokens/s only (another
  # order of sums than the few-row kernel's, so the text may differ)
  ZGPT_GEMV_MAX_N=1 timeout -k 10 100 "$ZGPT" sample --model "hf:$W/genxl" --prompt "$GEN_PROMPT" --num-samples 8 \
      --max-new-tokens 512 --top-k 200 --device cuda --dtype bf16 > "$LOG_DIR/gen_zgpt_b8_gemv1.out" 2> "$LOG_DIR/gen_zgpt_b8_gemv1.log"
  note "gen zgpt B=8 ZGPT_GEMV_MAX_N=1 (cuBLASLt products, v0.18's auto): exit $?; $(na "$(zs_tps "$LOG_DIR/gen_zgpt_b8_gemv1.log")") tok/s against $(na "$(zs_tps "$LOG_DIR/gen_zgpt_b8.log")") with the defaults"
  z1=$(zs_tps "$LOG_DIR/gen_zgpt_b1.log"); z8=$(zs_tps "$LOG_DIR/gen_zgpt_b8.log")
  note "gen: zgpt bf16 tokens/s (load excluded: $(na "$(zs_load "$LOG_DIR/gen_zgpt_b1.log")") s) B=1 $(na "$z1") [$(verdict "$z1" ">=" 500) >= 500]," \
       "B=8 $(na "$z8") [$(verdict "$z8" ">=" 2500) >= 2500]; B=1 without the graph $(na "$(zs_tps "$LOG_DIR/gen_zgpt_b1_nograph.log")")"
  for dt in fp32 bf16; do
    h1=$(hf_tps $dt 1); h8=$(hf_tps $dt 8); r1=$(ratio "$z1" "$h1"); r8=$(ratio "$z8" "$h8")
    note "gen: transformers generate $dt tokens/s B=1 $(na "$h1"), B=8 $(na "$h8"); zgpt/HF B=1 $r1 [$(verdict "$r1" ">=" 10) >= 10]," \
         "B=8 $r8 [$(verdict "$r8" ">=" 10) >= 10]"
  done
  rm -rf "$W/genxl"
fi
# evalhf (issue 21): eval of an fp16-trained checkpoint = the exported model's loss in transformers.
if has evalhf; then
  timeout -k 20 120 "$ZGPT" train $(small_cfg "$W/ev16" --set max_iters=30 --set eval_interval=30 --set fp16.enabled=true) \
      --device cuda > "$LOG_DIR/evalhf_train.log" 2>&1
  head -c 60000 data/tinyshakespeare/input.txt | "$ZGPT" tokenize > "$W/ev_ids.txt"
  python3 -c "import sys, numpy as np; np.array(open(sys.argv[1]).read().split(), dtype=np.uint16).tofile(sys.argv[2])" \
      "$W/ev_ids.txt" "$W/val.bin"
  "$ZGPT" eval --model "$W/ev16" --data "$W/val.bin" --full --seq 64 --batch 16 --json --device cuda > "$LOG_DIR/evalhf_zgpt.log" 2>&1
  "$ZGPT" eval --model "$W/ev16" --data "$W/val.bin" --full --seq 64 --batch 16 --json --device cpu > "$LOG_DIR/evalhf_zgpt_cpu.log" 2>&1
  "$ZGPT" export --model "$W/ev16" --out "$W/ev16hf" > "$LOG_DIR/evalhf_export.log" 2>&1
  timeout -k 20 120 python3 tests/parity/hf_eval.py --model "$W/ev16hf" --tokens "$W/val.bin" --seq 64 \
      --save-sharded "$W/ev16sh" --max-shard-size 5MB > "$LOG_DIR/evalhf_hf.log" 2>&1
  # transformers' own sharded checkpoint of the export: zgpt reads it to the same loss as the single file
  "$ZGPT" eval --model "hf:$W/ev16hf" --data "$W/val.bin" --full --seq 64 --batch 16 --json --device cpu > "$LOG_DIR/evalhf_single.log" 2>&1
  "$ZGPT" eval --model "hf:$W/ev16sh" --data "$W/val.bin" --full --seq 64 --batch 16 --json --device cpu > "$LOG_DIR/evalhf_sharded.log" 2>&1
  nsh=$(ls "$W/ev16sh" 2>/dev/null | grep -c '^model-.*\.safetensors$')
  shv=$([ -s "$W/ev16sh/model.safetensors.index.json" ] && [ "$nsh" -gt 1 ] && [ -s "$LOG_DIR/evalhf_single.log" ] &&
        cmp -s "$LOG_DIR/evalhf_single.log" "$LOG_DIR/evalhf_sharded.log" && echo PASS || echo FAIL)
  note "evalhf: transformers' save_pretrained(max_shard_size 5MB) wrote $nsh shards + index; zgpt eval (cpu) of it" \
       "$(sed -nE 's/^\{"loss": ([0-9.eE+-]+),.*/\1/p' "$LOG_DIR/evalhf_sharded.log" | tail -1) against the single file's" \
       "$(sed -nE 's/^\{"loss": ([0-9.eE+-]+),.*/\1/p' "$LOG_DIR/evalhf_single.log" | tail -1): identical [$shv]" \
       "$(grep -h 'zgpt: error' "$LOG_DIR/evalhf_sharded.log" | head -1)"
  zl=$(sed -nE 's/^\{"loss": ([0-9.eE+-]+),.*/\1/p' "$LOG_DIR/evalhf_zgpt.log" | tail -1)
  zc=$(sed -nE 's/^\{"loss": ([0-9.eE+-]+),.*/\1/p' "$LOG_DIR/evalhf_zgpt_cpu.log" | tail -1)
  hl=$(sed -nE 's/^hf eval loss=([0-9.eE+-]+) .*/\1/p' "$LOG_DIR/evalhf_hf.log" | tail -1)
  rel=$(awk -v a="$zl" -v b="$hl" 'BEGIN {if (a == "" || b == "") print "n/a"; else {d = (a - b) / b; if (d < 0) d = -d; printf "%.2e\n", d}}')
  relc=$(awk -v a="$zc" -v b="$hl" 'BEGIN {if (a == "" || b == "") print "n/a"; else {d = (a - b) / b; if (d < 0) d = -d; printf "%.2e\n", d}}')
  note "evalhf (fp16-trained checkpoint, 30 iterations): zgpt eval cuda fp32 $(na "$zl"), cpu $(na "$zc"); transformers fp32 of the export $(na "$hl");" \
       "relative difference cuda $rel [$(verdict "$rel" "<=" 1e-5) <= 1e-5], cpu $relc [$(verdict "$relc" "<=" 1e-5) <= 1e-5]"
  # ragged prompts on CUDA: each row of one batch against the prompt alone (seed + row); greedy and top-k
  printf 'ROMEO:\nThe king is\n\nFirst Citizen:\nBefore we proceed any further, hear me speak.\n' > "$W/prompts.txt"
  for mode in "--temperature 0" "--top-k 50"; do
    "$ZGPT" sample --model "$W/ev16" --prompt-file "$W/prompts.txt" --max-new-tokens 24 --seed 11 --device cuda $mode > "$W/rag.txt" 2>/dev/null
    same=0; n=0
    while IFS= read -r line; do
      "$ZGPT" sample --model "$W/ev16" ${line:+--prompt "$line"} --max-new-tokens 24 --seed $((11 + n)) --device cuda $mode > "$W/one.txt" 2>/dev/null
      awk -v k=$n 'BEGIN {RS = "\n---------------\n"} NR == k + 1 {print}' "$W/rag.txt" > "$W/rag_$n.txt"
      awk 'BEGIN {RS = "\n---------------\n"} NR == 1 {print}' "$W/one.txt" | cmp -s - "$W/rag_$n.txt" && same=$((same + 1))
      n=$((n + 1))
    done < "$W/prompts.txt"
    note "evalhf: ragged batch on cuda ($mode): $same of $n rows equal the prompt sampled alone (rows may differ where cuBLAS rounds a batch of $n rows differently from one)"
  done
fi
if has dsreal; then
  # DeepSpeed checkpoint layouts written by torch.save itself (tests/hub/fake_deepspeed.py --torch: GPU storages, views of
  # padded storages, nn.Parameter, torch.Size, torch's AdamW state): zgpt reads hf_tiny's fp32 weights back exactly.
  # z2 and z3 are copied to $RESULTS/ds_torch for tests/fixtures/ds_torch.
  python3 -c "
import random, struct
random.seed(7)
import os; os.makedirs('$W/dsv', exist_ok=True); open('$W/dsv/val.bin', 'wb').write(struct.pack('<1000H', *[random.randrange(500) for _ in range(1000)]))"
  "$ZGPT" eval --model hf:tests/fixtures/hf_tiny --data "$W/dsv/val.bin" --full --json --device cpu > "$LOG_DIR/ds_ref.json" 2>&1
  tv=$(python3 -c "import torch; print(torch.__version__)" 2>&1 | tail -1)
  for spec in "z1:--stage 1 --world 2" "z2:--stage 2 --world 2 --groups 2" \
              "z3:--stage 3 --world 2 --subgroups 2 --shuffle --frozen transformer.wpe.weight" \
              "bf:--stage 1 --world 2 --bf16-optimizer --groups 2"; do
    name=${spec%%:*}
    read -r -a dargs <<< "${spec#*:}"
    python3 tests/hub/fake_deepspeed.py "$W/ds_$name" tests/fixtures/hf_tiny/model.safetensors "${dargs[@]}" --torch \
        > "$LOG_DIR/ds_$name.gen.log" 2>&1
    cp tests/fixtures/hf_tiny/config.json "$W/ds_$name/"
    "$ZGPT" eval --model "$W/ds_$name" --data "$W/dsv/val.bin" --full --json --device cpu > "$LOG_DIR/ds_$name.json" \
        2> "$LOG_DIR/ds_$name.err"
    v=$([ -s "$LOG_DIR/ds_$name.json" ] && cmp -s "$LOG_DIR/ds_ref.json" "$LOG_DIR/ds_$name.json" && echo PASS || echo FAIL)
    note "dsreal $name (${spec#*:}; torch $tv): $(cat "$LOG_DIR/ds_$name.json") against hf_tiny's $(cat "$LOG_DIR/ds_ref.json") [$v]" \
         "$(grep -h 'zgpt: error\|Error' "$LOG_DIR/ds_$name.err" "$LOG_DIR/ds_$name.gen.log" | head -2)"
  done
  mkdir -p "$RESULTS/ds_torch" && cp -r "$W/ds_z2" "$W/ds_z3" "$RESULTS/ds_torch/" 2>/dev/null
fi
rm -rf "$W" "$LOG_DIR"
echo "==== summary ===="; cat "$SUMMARY"
