#!/usr/bin/env bash
# Reliability of one training process around its out_dir (issue 16). Each case failed before the fix:
#  1. links: `best` or an old `iter_N` that is a symlink to the user's folder: the run refuses to start
#     and nothing behind the link is touched (it used to be emptied by the save and by retention).
#  2. a save that cannot create its staging folder ends with a clean error, keeping the last good
#     checkpoint (it used to segfault).
#  3. the out_dir lock: a second run (and a second prepare into one folder) is refused, naming the
#     holder; a lock left by a dead run is taken over.
#  4. stale `best`/`final` after a crash between `latest` and the links are repaired on --resume;
#     leftovers of interrupted saves are removed at start.
#  5. messages: a stop before the first iteration says nothing was saved; a failed `best` link is a
#     warning that says the checkpoint itself is complete.
#  6. `latest` could not be written (disk full): the unpublished folder is removed, `latest` and the
#     previous checkpoint stay, and a retry succeeds.
#  7. hardening: metrics.jsonl on a full disk ends the run with an error; a hand-edited state.json
#     with iter 1e300 is refused; `latest` holding "." is refused in one short line; a CRLF `latest`
#     resumes.
TEST_NAME=train_faults
source "$(dirname "$0")/train_common.inc"
T=(--config tiny.json --set max_iters=6 --set eval_interval=3 --set eval_iters=1)

# ---- 1. symbolic links are never followed -------------------------------------------------------
mkdir -p archive o1
echo keep > archive/keep.txt
ln -s "$PWD/archive" o1/best
expect_fail "best is a link" "o1/best' is a symbolic link .*archive" "$ZGPT" train "${T[@]}" --set out_dir=o1
[ "$(cat archive/keep.txt)" = keep ] || fail "the folder behind o1/best was changed: $(ls -la archive)"
[ -L o1/best ] || fail "the user's link o1/best was removed"
# an old iter_N that is a link (retention would have deleted through it): refused the same way
"$ZGPT" train "${T[@]}" --set out_dir=o1b --set keep_last_k=1 > /dev/null
ln -s "$PWD/archive" o1b/iter_0
expect_fail "iter_0 is a link" "iter_0' is a symbolic link" "$ZGPT" train "${T[@]}" --set out_dir=o1b --set max_iters=9 --resume
[ "$(cat archive/keep.txt)" = keep ] || fail "the folder behind o1b/iter_0 was changed"

# ---- 2. the staging folder cannot be created: a clean error, the last checkpoint intact ----------
"$ZGPT" train "${T[@]}" --set out_dir=o2 --set max_iters=3 > /dev/null
mkdir -p o2/.partial.iter_6/blocker   # a folder zgpt will not remove (it only removes files)
rc=0; "$ZGPT" train "${T[@]}" --set out_dir=o2 --resume > o2.log 2> o2.err || rc=$?
[ $rc -eq 1 ] || fail "unremovable staging folder: status $rc (expected 1): $(cat o2.err)"
grep -q "zgpt: error: saving checkpoint o2/iter_6 failed (the last good checkpoint o2/iter_3 is intact)" o2.err ||
    fail "unremovable staging folder: message: $(cat o2.err)"
[ "$(cat o2/latest)" = iter_3 ] || fail "latest moved: $(cat o2/latest)"
"$ZGPT" eval --model o2 --data data --iters 1 > /dev/null ||
    fail "the last good checkpoint does not load"
echo "ok unremovable staging folder: $(grep error o2.err)"

# ---- 3. one run per out_dir (and per prepare folder) --------------------------------------------
mkdir -p o3
printf 'zgpt train, pid 4242 on host elsewhere, since 2026-01-01 00:00:00\n' > o3/.lock
# hold_lock FILE: a process (one, so that killing it releases the lock) holding FILE's flock;
# wait_held FILE: until it holds it (python's start can take seconds on a loaded machine)
hold_lock() { rm -f "$1.held"; python3 -c 'import fcntl, sys, time; f = open(sys.argv[1], "a"); fcntl.flock(f, fcntl.LOCK_EX); open(sys.argv[1] + ".held", "w").close(); time.sleep(60)' "$1" & }
wait_held() { for i in $(seq 1 200); do [ -e "$1.held" ] && { rm -f "$1.held"; return 0; }; sleep 0.1; done; fail "the lock holder did not start"; }
hold_lock o3/.lock
holder=$!
wait_held o3/.lock
expect_fail "out_dir locked" "'o3' is in use by another zgpt run \(zgpt train, pid 4242 on host elsewhere" \
    "$ZGPT" train "${T[@]}" --set out_dir=o3
hold_lock data/.lock
holder2=$!
wait_held data/.lock
expect_fail "prepare folder locked" "'data' is in use by another zgpt run" "$ZGPT" prepare --input corpus.txt --out data
kill $holder $holder2; wait $holder $holder2 2>/dev/null || true
# the holder is gone: its lock file stays, and the next run takes it over
"$ZGPT" train "${T[@]}" --set out_dir=o3 > o3.log || fail "a stale lock was not taken over: $(cat o3.log)"
grep -q "zgpt train, pid" o3/.lock || fail "the lock file does not name its holder: $(cat o3/.lock)"
# two real runs at once: the second is refused while the first trains (which still finishes)
"$ZGPT" train "${T[@]}" --set out_dir=o3b --set max_iters=100000 --set eval_interval=100000 > o3b.log 2>&1 &
first=$!
for i in $(seq 1 300); do grep -q '"loss"' o3b/metrics.jsonl 2>/dev/null && break; sleep 0.1; done
expect_fail "second run" "'o3b' is in use by another zgpt run \(zgpt train, pid $first " \
    "$ZGPT" train "${T[@]}" --set out_dir=o3b --set max_iters=100000
kill -TERM $first; wait $first || fail "the first run did not stop cleanly: $(tail -3 o3b.log)"
grep -q "saved checkpoint o3b/iter_" o3b.log || fail "the first run did not save on SIGTERM: $(tail -3 o3b.log)"

# ---- 4. stale best/final and leftovers are repaired on --resume ---------------------------------
"$ZGPT" train "${T[@]}" --set out_dir=o4 --set always_save_checkpoint=true > o4.log
best_iter=$(python3 -c 'import json; print(json.load(open("o4/best/state.json"))["iter"])')
# a crash between `latest` and the links: final and best still hold an older checkpoint
rm -rf o4/final o4/best && cp -al o4/iter_3 o4/final && cp -al o4/iter_0 o4/best 2>/dev/null || cp -al o4/iter_3 o4/best
mkdir -p o4/.partial.best o4/.partial.iter_9 && echo x > o4/.partial.best/model.bin
echo x > o4/latest.tmp.999999; echo x > o4/metrics.jsonl.tmp.999999
"$ZGPT" train "${T[@]}" --set out_dir=o4 --resume > o4r.log || fail "resume: $(cat o4r.log)"
[ "$(python3 -c 'import json; print(json.load(open("o4/final/state.json"))["iter"])')" = 6 ] ||
    fail "final was not repaired: $(cat o4/final/state.json | head -5)"
[ "$(python3 -c 'import json; print(json.load(open("o4/best/state.json"))["iter"])')" = "$best_iter" ] ||
    fail "best was not repaired to iteration $best_iter"
for f in .partial.best .partial.iter_9 latest.tmp.999999 metrics.jsonl.tmp.999999; do
    [ ! -e o4/$f ] || fail "leftover $f was not removed"
done
grep -q "note: removed what an interrupted run left in o4" o4r.log || fail "no note about the leftovers: $(cat o4r.log)"
echo "ok stale links repaired on resume (final -> 6, best -> $best_iter), leftovers removed"

# ---- 5. messages --------------------------------------------------------------------------------
ZGPT_TEST_STOP_AT_ITER=0 "$ZGPT" train "${T[@]}" --set out_dir=o5 > o5.log || fail "stop at 0: status $?"
grep -q "no iteration has run, so there is nothing to save" o5.log || fail "stop at 0: $(cat o5.log)"
grep -q "no checkpoint was written, so there is nothing to resume" o5.log || fail "stop at 0: $(cat o5.log)"
grep -q "continue with" o5.log && fail "stop at 0 promises a resume: $(cat o5.log)"
[ ! -e o5/latest ] || fail "stop at 0 wrote a checkpoint"
# the `best` link cannot be made: a warning that says the checkpoint itself is complete; the run goes on
mkdir -p o5b/.partial.best/blocker
"$ZGPT" train "${T[@]}" --set out_dir=o5b > o5b.log 2> o5b.err || fail "a failed best link ended the run: $(cat o5b.err)"
grep -q "warning: checkpoint o5b/iter_3 is complete and 'latest' names it, but pointing 'best' at it failed" o5b.err ||
    fail "best link failure message: $(cat o5b.err)"
[ "$(cat o5b/latest)" = iter_6 ] || fail "latest after a failed best link: $(cat o5b/latest)"
echo "ok messages: stop before the first iteration; a failed best link is a warning"

# ---- 6. `latest` cannot be written: the new folder is not left behind ---------------------------
"$ZGPT" train "${T[@]}" --set out_dir=o6a --set max_iters=3 > /dev/null
cp -a o6a o6b
"$ZGPT" train "${T[@]}" --set out_dir=o6a --resume > /dev/null
bytes=$(cat o6a/iter_6/* | wc -c)   # what the save of iter_6 writes before `latest`
rc=0; ZGPT_TEST_FAIL_WRITE_AFTER=$((bytes + 3)) "$ZGPT" train "${T[@]}" --set out_dir=o6b --resume > o6.log 2> o6.err || rc=$?
[ $rc -eq 1 ] || fail "latest write failure: status $rc: $(cat o6.err)"
grep -q "checkpoint 'o6b/iter_6' was written but 'latest' could not be updated" o6.err || fail "latest failure: $(cat o6.err)"
[ "$(cat o6b/latest)" = iter_3 ] && [ ! -e o6b/iter_6 ] || fail "after a failed latest: latest $(cat o6b/latest), $(ls o6b)"
ls -a o6b | grep -q 'tmp\|partial' && fail "temporaries left: $(ls -a o6b)"
"$ZGPT" train "${T[@]}" --set out_dir=o6b --resume > /dev/null || fail "the retry failed"
[ "$(cat o6b/latest)" = iter_6 ] || fail "the retry did not publish iter_6"
echo "ok a failed latest write removes the unpublished folder; the retry succeeds"

# ---- 7. hardening -------------------------------------------------------------------------------
# metrics.jsonl on a full disk (a file size limit stands in for it): an error, not exit 0
rc=0
( trap '' XFSZ; ulimit -f 1; exec "$ZGPT" train "${T[@]}" --set out_dir=o7 --set max_iters=200 --set save_checkpoints=false ) \
    > o7.log 2> o7.err || rc=$?
[ $rc -eq 1 ] || fail "metrics on a full disk: status $rc: $(cat o7.err)"
grep -q "zgpt: error: cannot write 'o7/metrics.jsonl': File too large" o7.err || fail "metrics full: $(cat o7.err)"
echo "ok metrics.jsonl write failure: $(cat o7.err)"
# a hand-edited state.json whose manifest entry was updated to match (as a careful editor would)
"$ZGPT" train "${T[@]}" --set out_dir=o8 --set max_iters=3 > /dev/null
command -v xxhsum > /dev/null || fail "xxhsum is missing (scripts/install-deps.sh installs the xxhash package)"
python3 - <<'PY'
import json, subprocess
d = "o8/iter_3"
s = json.load(open(d + "/state.json")); s["iter"] = 1e300
open(d + "/state.json", "w").write(json.dumps(s))
out = subprocess.run(["xxhsum", "-H3", d + "/state.json"], capture_output=True, text=True, check=True).stdout
m = json.load(open(d + "/manifest.json"))
for f in m["files"]:
    if f["name"] == "state.json":
        f["size"] = len(open(d + "/state.json", "rb").read()); f["xxh3"] = out.split("=")[1].strip()
open(d + "/manifest.json", "w").write(json.dumps(m))
PY
rc=0; timeout 60 "$ZGPT" train "${T[@]}" --set out_dir=o8 --set max_iters=9 --resume > o8.log 2> err.txt || rc=$?
[ $rc -eq 1 ] || fail "state.json iter 1e300: status $rc (124: it looped): $(cat err.txt)"
grep -q "state.json is corrupt, out of range" err.txt || fail "state.json iter 1e300: $(cat err.txt)"
echo "ok state.json with iter 1e300 is refused: $(cat err.txt)"
# `latest` holding "." and a CRLF `latest`
printf '.\n' > o8/latest
expect_fail "latest is ." "o8/latest' is corrupt \(it holds \"\.\"" "$ZGPT" train "${T[@]}" --set out_dir=o8 --resume
[ "$(wc -c < err.txt)" -lt 300 ] || fail "the message for latest '.' is $(wc -c < err.txt) bytes long"
"$ZGPT" train "${T[@]}" --set out_dir=o8c --set max_iters=3 > /dev/null
printf 'iter_3\r\n' > o8c/latest
"$ZGPT" train "${T[@]}" --set out_dir=o8c --resume > o8c.log 2>&1 || fail "CRLF latest: $(cat o8c.log)"
echo "ok latest '.' refused in one line; CRLF latest resumes"
echo "PASS train_faults"
